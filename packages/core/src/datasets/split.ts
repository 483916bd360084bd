import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { CachefleetError } from '../errors.js';
import {
  DATASET_NAMES,
  IMAGE_BYTES,
  LABEL_MODES,
  SPLIT_NAMES,
  fetchCommand,
  findLabelField,
  getDatasetFormat,
  isDatasetName,
  isLabelMode,
  isSplitName,
  type DatasetFormat,
  type DatasetName,
  type LabelField,
  type LabelMode,
  type SplitName,
} from './formats.js';
import { combineFileDigests } from './identity.js';
import { validateRecordRange } from './ranges.js';
import { readRecordPixels, scanRecordFile } from './record-file.js';
import { statOrUndefined } from './stat.js';

export interface OpenDatasetSplitOptions {
  dataset: DatasetName;
  split: SplitName;
  /** Label granularity of `labels`: `fine` (default) or, for CIFAR-100 only, `coarse`. */
  labelMode?: LabelMode;
}

/** One split of a dataset on disk, with its labels in memory and its pixels read on demand. */
export interface DatasetSplit {
  readonly dataset: DatasetName;
  readonly split: SplitName;
  readonly labelMode: LabelMode;
  /** Absolute path of the folder that contains the files, e.g. `.../cifar-10-batches-bin`. */
  readonly dir: string;
  /** Absolute paths of the split's record files, in record order. */
  readonly files: string[];
  /** SHA-256 of each file in `files`, lowercase hex. */
  readonly fileDigests: string[];
  /** Number of records (images). */
  readonly size: number;
  readonly numClasses: number;
  /** Class names in label order, from the dataset's label names file. */
  readonly classNames: string[];
  /** SHA-256 over the files' SHA-256 digests (see `combineFileDigests`): the split's content identity. */
  readonly fingerprint: string;
  /** Label of each record, in `0..numClasses - 1`. */
  readonly labels: Int32Array;
  /**
   * Reads the pixels of records `[start, end)` as uint8 NHWC (n × 32 × 32 × 3), reading only
   * those records from disk. Rejects a range outside `0 <= start < end <= size` with INVALID_ARGUMENT.
   */
  readPixels(start: number, end: number): Promise<Uint8Array>;
}

/**
 * Opens one split of CIFAR-10 or CIFAR-100 in the binary layout of the official archives.
 * `dir` is the unpacked folder (`cifar-10-batches-bin`, `cifar-100-binary`) or the folder that
 * contains it. Reads every file of the split once to validate it, hash it and load its labels.
 * NOTE: record counts are not compared with the official ones (10,000 per CIFAR-10 file), so a
 * file cut at a record boundary opens as a smaller split, with a fingerprint of its own.
 */
export async function openDatasetSplit(dir: string, options: OpenDatasetSplitOptions): Promise<DatasetSplit> {
  const { format, split, labelField } = validateOptions(options);
  const datasetDir = await resolveDatasetDir(path.resolve(dir), format);
  const fixHint = refetchHint(format, datasetDir);

  const files = format.splitFiles[split].map((file) => path.join(datasetDir, file));
  for (const file of files) {
    await requireFile(file, format, datasetDir);
  }
  const classNames = await readClassNames(datasetDir, format, labelField, fixHint);

  const scans = [];
  for (const file of files) {
    scans.push(await scanRecordFile(file, format, fixHint));
  }

  const size = scans.reduce((total, scan) => total + scan.recordCount, 0);
  const labels = new Int32Array(size);
  let offset = 0;
  for (const scan of scans) {
    labels.set(scan.labels.get(labelField.mode) as Uint8Array, offset);
    offset += scan.recordCount;
  }
  const fileDigests = scans.map((scan) => scan.sha256);
  const recordCounts = scans.map((scan) => scan.recordCount);

  return {
    dataset: format.name,
    split,
    labelMode: labelField.mode,
    dir: datasetDir,
    files,
    fileDigests,
    size,
    numClasses: labelField.numClasses,
    classNames,
    fingerprint: combineFileDigests(fileDigests),
    labels,
    readPixels: (start, end) => readSplitPixels(format, files, recordCounts, size, start, end),
  };
}

async function readSplitPixels(
  format: DatasetFormat,
  files: readonly string[],
  recordCounts: readonly number[],
  size: number,
  start: number,
  end: number,
): Promise<Uint8Array> {
  validateRecordRange({ start, end }, size, 'pixel range');
  const out = new Uint8Array((end - start) * IMAGE_BYTES);

  // Walk the files in order; each file covers records [fileStart, fileStart + recordCounts[i]).
  let fileStart = 0;
  for (let i = 0; i < files.length && fileStart < end; i++) {
    const fileEnd = fileStart + recordCounts[i];
    const first = Math.max(start, fileStart);
    const last = Math.min(end, fileEnd);
    if (first < last) {
      await readRecordPixels(files[i], format, first - fileStart, last - first, out, (first - start) * IMAGE_BYTES);
    }
    fileStart = fileEnd;
  }
  return out;
}

function validateOptions(options: OpenDatasetSplitOptions): { format: DatasetFormat; split: SplitName; labelField: LabelField } {
  const { dataset, split } = options;
  const labelMode = options.labelMode ?? 'fine';

  if (!isDatasetName(dataset)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid dataset "${String(dataset)}": expected one of ${DATASET_NAMES.join(', ')}.`, {
      dataset,
    });
  }
  if (!isSplitName(split)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid split "${String(split)}": expected one of ${SPLIT_NAMES.join(', ')}.`, { split });
  }
  if (!isLabelMode(labelMode)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid label mode "${String(labelMode)}": expected one of ${LABEL_MODES.join(', ')}.`, {
      labelMode,
    });
  }

  const format = getDatasetFormat(dataset);
  const labelField = findLabelField(format, labelMode);
  if (labelField === undefined) {
    const modes = format.labelFields.map((field) => field.mode).join(', ');
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid label mode "${labelMode}" for ${format.displayName}: it has only ${modes} labels.`,
      { dataset, labelMode },
    );
  }
  return { format, split, labelField };
}

/** Returns `dir` when it contains the dataset files, or `dir/<archive folder>` when that does. */
async function resolveDatasetDir(dir: string, format: DatasetFormat): Promise<string> {
  const fetchParent = path.basename(dir) === format.folderName ? path.dirname(dir) : dir;
  const dirStat = await statOrUndefined(dir);
  if (dirStat === undefined || !dirStat.isDirectory()) {
    throw new CachefleetError(
      'DATASET_NOT_FOUND',
      `${format.displayName} folder not found: ${dir} ${dirStat === undefined ? 'does not exist' : 'is a file, not a folder'}. ` +
        `Download it with \`${fetchCommand(format.name, fetchParent)}\`, which creates ${path.join(fetchParent, format.folderName)}.`,
      { dir, dataset: format.name },
    );
  }

  const probe = format.splitFiles.test[0];
  if ((await statOrUndefined(path.join(dir, probe))) === undefined) {
    const nested = path.join(dir, format.folderName);
    if ((await statOrUndefined(nested))?.isDirectory() === true) {
      return nested;
    }
  }
  return dir;
}

async function requireFile(file: string, format: DatasetFormat, datasetDir: string): Promise<void> {
  const fileStat = await statOrUndefined(file);
  if (fileStat === undefined || !fileStat.isFile()) {
    throw new CachefleetError(
      'DATASET_NOT_FOUND',
      `${format.displayName} file not found: ${file}. ${refetchHint(format, datasetDir)}`,
      { path: file, dataset: format.name },
    );
  }
}

/** Reads one class name per line; like the originals the files may end with empty lines, which are skipped. */
async function readClassNames(datasetDir: string, format: DatasetFormat, field: LabelField, fixHint: string): Promise<string[]> {
  const file = path.join(datasetDir, field.namesFile);
  await requireFile(file, format, datasetDir);

  const text = await readFile(file, 'utf8');
  const names = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  if (names.length !== field.numClasses) {
    throw new CachefleetError(
      'DATASET_INVALID',
      `Invalid ${format.displayName} label names file ${file}: it lists ${names.length} names, expected ${field.numClasses}. ${fixHint}`,
      { path: file, count: names.length, expected: field.numClasses },
    );
  }
  return names;
}

/** Says how to replace a broken dataset folder, never advising to delete a folder that fetch did not create. */
function refetchHint(format: DatasetFormat, datasetDir: string): string {
  if (path.basename(datasetDir) === format.folderName) {
    return `Delete ${datasetDir} and download the dataset again with \`${fetchCommand(format.name, path.dirname(datasetDir))}\`.`;
  }
  const fetchedDir = path.join(datasetDir, format.folderName);
  return `Download the dataset with \`${fetchCommand(format.name, datasetDir)}\`, which creates ${fetchedDir}, and use that folder.`;
}
