import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { pino } from 'pino';
import { c as createTar } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cifar10Dir, requireSharedData } from '../../../../test/support/shared.js';
import { fetchDataset, type FetchProgress } from './fetch.js';
import { openDatasetSplit } from './split.js';

const silentLogger = pino({ level: 'silent' });

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

describe('fetchDataset from a local server', () => {
  let workDir: string;
  let archivePath: string;
  let archiveSha256: string;
  let archiveBytes: number;
  let otherArchivePath: string;
  let otherArchiveSha256: string;
  let server: http.Server;
  let baseUrl: string;
  let requestCount = 0;

  beforeAll(async () => {
    requireSharedData();
    workDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-fetch-'));

    // Same layout as the official archive: cifar-10-batches-bin/ with the six .bin files and batches.meta.txt.
    archivePath = path.join(workDir, 'cifar-10-binary.tar.gz');
    await createTar(
      { file: archivePath, cwd: path.dirname(cifar10Dir), gzip: { level: 1 }, portable: true, filter: (entry) => !entry.endsWith('READY') },
      [path.basename(cifar10Dir)],
    );
    archiveSha256 = await sha256File(archivePath);
    archiveBytes = (await stat(archivePath)).size;

    // A valid .tar.gz without the dataset folder.
    const otherSource = path.join(workDir, 'other-source');
    await mkdir(path.join(otherSource, 'cifar-10-batches-py'), { recursive: true });
    await writeFile(path.join(otherSource, 'cifar-10-batches-py', 'data_batch_1'), 'not the binary version');
    otherArchivePath = path.join(workDir, 'other.tar.gz');
    await createTar({ file: otherArchivePath, cwd: otherSource, gzip: true, portable: true }, ['cifar-10-batches-py']);
    otherArchiveSha256 = await sha256File(otherArchivePath);

    const routes: Record<string, string> = { '/cifar-10-binary.tar.gz': archivePath, '/other.tar.gz': otherArchivePath };
    server = http.createServer((request, response) => {
      requestCount += 1;
      if (request.url === '/reset.tar.gz') {
        // Announces 1 MB, sends 1 KB, then drops the connection.
        response.writeHead(200, { 'content-type': 'application/gzip', 'content-length': 1_000_000 });
        response.write(Buffer.alloc(1_000), () => response.destroy());
        return;
      }
      const file = routes[request.url ?? ''];
      if (file === undefined) {
        response.writeHead(404).end('not found');
        return;
      }
      stat(file).then(
        (fileStat) => {
          response.writeHead(200, { 'content-type': 'application/gzip', 'content-length': fileStat.size });
          createReadStream(file).pipe(response);
        },
        () => response.writeHead(500).end(),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await rm(workDir, { recursive: true, force: true });
  });

  it('downloads, verifies and unpacks', async () => {
    const targetDir = await mkdtemp(path.join(workDir, 'target-'));
    const progress: FetchProgress[] = [];

    const result = await fetchDataset('cifar10', targetDir, {
      url: `${baseUrl}/cifar-10-binary.tar.gz`,
      sha256: archiveSha256,
      logger: silentLogger,
      onProgress: (update) => progress.push(update),
    });

    expect(result.datasetDir).toBe(path.join(targetDir, 'cifar-10-batches-bin'));
    expect(result.alreadyPresent).toBe(false);
    expect(result.archiveSha256).toBe(archiveSha256);
    expect(result.downloadedBytes).toBe(archiveBytes);
    expect(progress.at(-1)).toEqual({ receivedBytes: archiveBytes, totalBytes: archiveBytes });
    expect(await readdir(targetDir)).toEqual(['cifar-10-batches-bin']);

    const fetched = await openDatasetSplit(result.datasetDir, { dataset: 'cifar10', split: 'train' });
    const original = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'train' });
    expect(fetched.fingerprint).toBe(original.fingerprint);

    const metaText = await readFile(path.join(result.datasetDir, 'batches.meta.txt'), 'utf8');
    expect(metaText).toBe(await readFile(path.join(cifar10Dir, 'batches.meta.txt'), 'utf8'));

    // A second fetch finds the complete folder and sends no request.
    const requestsBefore = requestCount;
    const again = await fetchDataset('cifar10', targetDir, { url: `${baseUrl}/cifar-10-binary.tar.gz`, sha256: archiveSha256, logger: silentLogger });
    expect(again.alreadyPresent).toBe(true);
    expect(requestCount).toBe(requestsBefore);
  });

  it('wrong checksum leaves nothing', async () => {
    const targetDir = await mkdtemp(path.join(workDir, 'target-'));
    const wrongSha256 = '0'.repeat(64);

    const fetching = fetchDataset('cifar10', targetDir, { url: `${baseUrl}/cifar-10-binary.tar.gz`, sha256: wrongSha256, logger: silentLogger });

    await expect(fetching).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH', details: { expected: wrongSha256, actual: archiveSha256 } });
    await expect(fetching).rejects.toThrow(`has SHA-256 ${archiveSha256}, expected ${wrongSha256}`);
    expect(await readdir(targetDir)).toEqual([]);
  });

  it('HTTP 404 leaves nothing', async () => {
    const targetDir = await mkdtemp(path.join(workDir, 'target-'));

    const fetching = fetchDataset('cifar10', targetDir, { url: `${baseUrl}/missing.tar.gz`, sha256: archiveSha256, logger: silentLogger });

    await expect(fetching).rejects.toMatchObject({ code: 'DOWNLOAD_FAILED', retryable: true });
    await expect(fetching).rejects.toThrow(/HTTP 404/);
    expect(await readdir(targetDir)).toEqual([]);
  });

  it('dropped connection leaves nothing', async () => {
    const targetDir = await mkdtemp(path.join(workDir, 'target-'));

    const fetching = fetchDataset('cifar10', targetDir, { url: `${baseUrl}/reset.tar.gz`, sha256: archiveSha256, logger: silentLogger });

    await expect(fetching).rejects.toMatchObject({ code: 'DOWNLOAD_FAILED' });
    await expect(fetching).rejects.toThrow(/failed after 1000 bytes/);
    expect(await readdir(targetDir)).toEqual([]);
  });

  it('rejects an archive without the folder', async () => {
    const targetDir = await mkdtemp(path.join(workDir, 'target-'));

    const fetching = fetchDataset('cifar10', targetDir, { url: `${baseUrl}/other.tar.gz`, sha256: otherArchiveSha256, logger: silentLogger });

    await expect(fetching).rejects.toThrow(/does not contain cifar-10-batches-bin\/data_batch_1\.bin/);
    expect(await readdir(targetDir)).toEqual([]);
  });

  it('rejects an incomplete existing folder', async () => {
    const targetDir = await mkdtemp(path.join(workDir, 'target-'));
    await mkdir(path.join(targetDir, 'cifar-10-batches-bin'));

    const fetching = fetchDataset('cifar10', targetDir, { url: `${baseUrl}/cifar-10-binary.tar.gz`, sha256: archiveSha256, logger: silentLogger });

    await expect(fetching).rejects.toMatchObject({ code: 'DATASET_INVALID' });
    await expect(fetching).rejects.toThrow(/exists but lacks data_batch_1\.bin/);
  });

  it('rejects a malformed sha256 option', async () => {
    await expect(fetchDataset('cifar10', workDir, { url: `${baseUrl}/cifar-10-binary.tar.gz`, sha256: 'abc', logger: silentLogger })).rejects.toThrow(
      /Invalid expected SHA-256 "abc"/,
    );
  });

  it('rejects a non-HTTP URL', async () => {
    await expect(fetchDataset('cifar10', workDir, { url: 'file:///etc/passwd', logger: silentLogger })).rejects.toThrow(/protocol file: is not supported/);
  });
});
