import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';

import { x as extractTar, type ReadEntry } from 'tar';

import { CachefleetError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { DATASET_NAMES, getDatasetFormat, isDatasetName, type DatasetFormat, type DatasetName } from './formats.js';
import { statOrUndefined } from './stat.js';

/** Official archive of a dataset: its download URL, SHA-256 and size. */
export interface DatasetArchive {
  url: string;
  sha256: string;
  bytes: number;
}

/**
 * The official archives. Digests and sizes as listed by TensorFlow Datasets in
 * `tensorflow_datasets/url_checksums/cifar10.txt` and `cifar100.txt` (github.com/tensorflow/datasets,
 * commit 333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5); the same digests appear in
 * ankane/torchvision-ruby's CIFAR-10 and CIFAR-100 loaders.
 */
export const DATASET_ARCHIVES: Record<DatasetName, DatasetArchive> = {
  cifar10: {
    url: 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
    sha256: 'c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd',
    bytes: 170_052_171,
  },
  cifar100: {
    url: 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz',
    sha256: '58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec',
    bytes: 168_513_733,
  },
};

export interface FetchProgress {
  receivedBytes: number;
  /** From the response's Content-Length; undefined when the server sends none. */
  totalBytes: number | undefined;
}

export interface FetchDatasetOptions {
  /** Archive URL, e.g. a mirror; default the official URL. */
  url?: string;
  /** Expected SHA-256 of the archive, lowercase hex; default the official archive's digest. */
  sha256?: string;
  logger?: Logger;
  /** Called after every received chunk of the archive. */
  onProgress?: (progress: FetchProgress) => void;
  signal?: AbortSignal;
}

export interface FetchDatasetResult {
  dataset: DatasetName;
  /** The unpacked folder, `<dir>/cifar-10-batches-bin` or `<dir>/cifar-100-binary`: pass it to `openDatasetSplit`. */
  datasetDir: string;
  /** True when a complete dataset folder already existed, which was then left unchanged. */
  alreadyPresent: boolean;
  /** SHA-256 of the downloaded archive, or undefined when nothing was downloaded. */
  archiveSha256: string | undefined;
  downloadedBytes: number;
}

/**
 * Downloads the official archive of `name`, verifies its SHA-256 and unpacks it into `dir`,
 * creating `dir/cifar-10-batches-bin` (or `dir/cifar-100-binary`) as `tar xzf` would.
 * Download and unpacking happen in a temporary folder inside `dir`. The dataset folder appears
 * through one rename after every step succeeded, and the temporary folder is deleted in all cases.
 * Does nothing when the dataset folder already contains every expected file.
 */
export async function fetchDataset(name: DatasetName, dir: string, options: FetchDatasetOptions = {}): Promise<FetchDatasetResult> {
  const format = validateName(name);
  const archive = DATASET_ARCHIVES[name];
  const url = validateUrl(options.url ?? archive.url);
  const expectedSha256 = validateSha256(options.sha256 ?? archive.sha256);
  const logger = options.logger ?? createLogger('datasets.fetch');
  const datasetDir = path.join(path.resolve(dir), format.folderName);

  if (await isCompleteDatasetDir(datasetDir, format)) {
    logger.info({ dataset: name, datasetDir }, 'dataset already present, nothing downloaded');
    return { dataset: name, datasetDir, alreadyPresent: true, archiveSha256: undefined, downloadedBytes: 0 };
  }

  await mkdir(path.dirname(datasetDir), { recursive: true });
  // Same parent as the target, so the final rename stays on one file system and is atomic.
  const tempDir = await mkdtemp(path.join(path.dirname(datasetDir), `.${format.folderName}.fetch-`));
  const startedAt = Date.now();
  try {
    logger.info({ dataset: name, url, datasetDir }, 'dataset download started');
    const archivePath = path.join(tempDir, 'archive.tar.gz');
    const { sha256, bytes } = await downloadFile(url, archivePath, options);
    if (sha256 !== expectedSha256) {
      throw new CachefleetError(
        'CHECKSUM_MISMATCH',
        `Downloaded ${format.displayName} archive from ${url} has SHA-256 ${sha256}, expected ${expectedSha256} (${bytes} bytes received). ` +
          'The download is corrupt or the server sent another file; nothing was unpacked. Run the fetch again, or pass the right sha256 for a mirror.',
        { url, expected: expectedSha256, actual: sha256, bytes },
      );
    }

    const unpackDir = path.join(tempDir, 'unpacked');
    await mkdir(unpackDir);
    await unpackArchive(archivePath, unpackDir, format);
    const unpackedDatasetDir = path.join(unpackDir, format.folderName);
    await requireCompleteUnpack(unpackedDatasetDir, format, url);

    const alreadyPresent = !(await renameUnlessPresent(unpackedDatasetDir, datasetDir, format));
    logger.info({ dataset: name, datasetDir, bytes, sha256, durationMs: Date.now() - startedAt, alreadyPresent }, 'dataset download finished');
    return { dataset: name, datasetDir, alreadyPresent, archiveSha256: sha256, downloadedBytes: bytes };
  } finally {
    await rm(tempDir, { recursive: true, force: true });
  }
}

/** Streams the response body of `url` into `file` while hashing it. */
async function downloadFile(url: string, file: string, options: FetchDatasetOptions): Promise<{ sha256: string; bytes: number }> {
  let response: Response;
  try {
    response = await fetch(url, { signal: options.signal });
  } catch (error) {
    throw new CachefleetError('DOWNLOAD_FAILED', `Download of ${url} failed: ${errorMessage(error)}. Check the network and run the fetch again.`, { url }, { cause: error });
  }
  if (!response.ok || response.body === null) {
    throw new CachefleetError(
      'DOWNLOAD_FAILED',
      `Download of ${url} failed: the server responded with HTTP ${response.status} ${response.statusText}. Check the URL and run the fetch again.`,
      { url, status: response.status },
    );
  }

  const contentLength = Number(response.headers.get('content-length'));
  const totalBytes = Number.isSafeInteger(contentLength) && contentLength > 0 ? contentLength : undefined;
  const hash = createHash('sha256');
  let receivedBytes = 0;

  const body = Readable.fromWeb(response.body as unknown as NodeReadableStream<Uint8Array>);
  try {
    await pipeline(
      body,
      async function* hashChunks(source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          receivedBytes += chunk.length;
          options.onProgress?.({ receivedBytes, totalBytes });
          yield chunk;
        }
      },
      createWriteStream(file),
    );
  } catch (error) {
    throw new CachefleetError(
      'DOWNLOAD_FAILED',
      `Download of ${url} failed after ${receivedBytes} bytes: ${errorMessage(error)}. Run the fetch again.`,
      { url, receivedBytes },
      { cause: error },
    );
  }

  return { sha256: hash.digest('hex'), bytes: receivedBytes };
}

/** Unpacks only regular files and folders under the dataset's top folder, so an archive cannot write elsewhere. */
async function unpackArchive(archivePath: string, unpackDir: string, format: DatasetFormat): Promise<void> {
  const prefix = `${format.folderName}/`;
  try {
    await extractTar({
      file: archivePath,
      cwd: unpackDir,
      strict: true,
      filter: (entryPath, entry) => {
        const type = (entry as ReadEntry).type;
        const inside = entryPath === format.folderName || entryPath.startsWith(prefix);
        return inside && (type === 'File' || type === 'OldFile' || type === 'Directory');
      },
    });
  } catch (error) {
    throw new CachefleetError(
      'DATASET_INVALID',
      `Unpacking the ${format.displayName} archive failed: ${errorMessage(error)}. Either the file with the expected SHA-256 is not a valid .tar.gz ` +
        `or the disk is full; check the sha256 option and the free space in ${path.dirname(path.dirname(unpackDir))}.`,
      { archivePath },
      { cause: error },
    );
  }
}

async function requireCompleteUnpack(unpackedDatasetDir: string, format: DatasetFormat, url: string): Promise<void> {
  const missing = await findMissingFiles(unpackedDatasetDir, format);
  if (missing.length > 0) {
    throw new CachefleetError(
      'DATASET_INVALID',
      `The ${format.displayName} archive from ${url} does not contain ${missing.map((file) => `${format.folderName}/${file}`).join(', ')}; ` +
        'it is not the binary version of the dataset. Pass the URL of the official binary archive.',
      { url, missing },
    );
  }
}

/** Renames the unpacked folder into place; returns false when a concurrent fetch put a complete folder there first. */
async function renameUnlessPresent(source: string, target: string, format: DatasetFormat): Promise<boolean> {
  try {
    await rename(source, target);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isCompleteDatasetDir(target, format))) {
      return false;
    }
    throw error;
  }
}

/**
 * Returns true when `datasetDir` contains every file of the format, false when it does not exist.
 * Throws DATASET_INVALID for a folder that exists but is incomplete, because unpacking over it
 * could mix two downloads.
 */
async function isCompleteDatasetDir(datasetDir: string, format: DatasetFormat): Promise<boolean> {
  if ((await statOrUndefined(datasetDir)) === undefined) {
    return false;
  }
  const missing = await findMissingFiles(datasetDir, format);
  if (missing.length > 0) {
    throw new CachefleetError(
      'DATASET_INVALID',
      `${format.displayName} folder ${datasetDir} exists but lacks ${missing.join(', ')}. Delete the folder and run the fetch again.`,
      { datasetDir, missing },
    );
  }
  return true;
}

async function findMissingFiles(datasetDir: string, format: DatasetFormat): Promise<string[]> {
  const expected = [...format.splitFiles.train, ...format.splitFiles.test, ...format.labelFields.map((field) => field.namesFile)];
  const missing: string[] = [];
  for (const file of expected) {
    const fileStat = await statOrUndefined(path.join(datasetDir, file));
    if (fileStat === undefined || !fileStat.isFile()) {
      missing.push(file);
    }
  }
  return missing;
}

function validateName(name: DatasetName): DatasetFormat {
  if (!isDatasetName(name)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid dataset "${String(name)}": expected one of ${DATASET_NAMES.join(', ')}.`, { name });
  }
  return getDatasetFormat(name);
}

function validateUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid archive URL "${url}": it cannot be parsed. Pass an http:// or https:// URL.`, { url });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid archive URL "${url}": protocol ${parsed.protocol} is not supported. Pass an http:// or https:// URL.`, { url });
  }
  return url;
}

function validateSha256(digest: string): string {
  const normalized = digest.toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(normalized)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid expected SHA-256 "${digest}": expected 64 hex digits.`, { sha256: digest });
  }
  return normalized;
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? ` (${error.cause.message})` : '';
    return `${error.message}${cause}`;
  }
  return String(error);
}
