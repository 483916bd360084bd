import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { c as createTar } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { openDatasetSplit, writeSyntheticDataset } from '@cachefleet/core';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../apps/coordinator/dist/cli.js');

async function cachefleet(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { env: { ...process.env, CACHEFLEET_LOG_LEVEL: 'warn' } });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const failure = error as { stdout: string; stderr: string; code: number };
    return { stdout: failure.stdout, stderr: failure.stderr, code: failure.code };
  }
}

describe('cachefleet datasets fetch command', () => {
  let dir: string;
  let server: http.Server;
  let url: string;
  let sha256: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-fetch-cli-'));
    const source = path.join(dir, 'source');
    const datasetDir = await writeSyntheticDataset(source, { dataset: 'cifar10' });
    const archive = path.join(dir, 'cifar-10-binary.tar.gz');
    await createTar({ file: archive, cwd: source, gzip: true, portable: true }, [path.basename(datasetDir)]);
    const bytes = await readFile(archive);
    sha256 = createHash('sha256').update(bytes).digest('hex');

    server = http.createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'application/gzip', 'content-length': bytes.length }).end(bytes);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/cifar-10-binary.tar.gz`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('downloads, verifies and unpacks', async () => {
    const target = path.join(dir, 'fetched');

    const result = await cachefleet(['datasets', 'fetch', 'cifar10', target, '--url', url, '--sha256', sha256]);
    const split = await openDatasetSplit(target, { dataset: 'cifar10', split: 'test' });

    expect(result.code).toBe(0);
    expect(split.size).toBe(10);
  });

  it('leaves nothing behind on a wrong checksum', async () => {
    const target = path.join(dir, 'wrong');

    const result = await cachefleet(['datasets', 'fetch', 'cifar10', target, '--url', url, '--sha256', '0'.repeat(64)]);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/CHECKSUM_MISMATCH/);
    expect(await readdir(target).catch(() => [])).toEqual([]);
  });

  it('rejects an unknown dataset name', async () => {
    const result = await cachefleet(['datasets', 'fetch', 'mnist', path.join(dir, 'mnist')]);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Unknown dataset "mnist": choose cifar10 or cifar100/);
  });
});
