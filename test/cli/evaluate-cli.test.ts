import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { reportSchema } from '@cachefleet/core';

import { cifar10Dir, resnet20Path } from '../support/shared.js';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../apps/coordinator/dist/cli.js');

async function cachefleet(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { env: { ...process.env, CACHEFLEET_LOG_LEVEL: 'warn' }, maxBuffer: 64 * 1024 * 1024 });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const failure = error as { stdout: string; stderr: string; code: number };
    return { stdout: failure.stdout, stderr: failure.stderr, code: failure.code };
  }
}

describe('cachefleet evaluate command', () => {
  let dir: string;
  const common = () => ['evaluate', '--data', cifar10Dir, '--model', resnet20Path, '--key-layers', '49,57,64', '--store', path.join(dir, 'store'), '--limit', '64', '--threads', '1'];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-cli-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the report file and prints the table', async () => {
    const reportPath = path.join(dir, 'report.json');

    const result = await cachefleet([...common(), '--thetas', '10:90:5', '--lambdas', '0.1,0.5,0.9', '--report', reportPath]);
    const report = reportSchema.parse(JSON.parse(await readFile(reportPath, 'utf8')));

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/baseline \(λ = 0\)/);
    expect(report.grid?.thetas).toEqual([10, 30, 50, 70, 90]);
    expect(report.predictions.cache).toHaveLength(64);
  });

  it('prints the report as JSON', async () => {
    const result = await cachefleet([...common(), '--theta', '50', '--lambda', '0.5', '--theta-cache-only', '40', '--json']);
    const report = reportSchema.parse(JSON.parse(result.stdout));

    expect(report.cache.theta).toBe(50);
    expect(report.cacheOnly.theta).toBe(40);
  });

  it('rejects theta without lambda', async () => {
    const result = await cachefleet([...common(), '--theta', '50']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error INVALID_ARGUMENT: Only one of θ \(50\) and λ/);
  });

  it('rejects a non-numeric theta', async () => {
    const result = await cachefleet([...common(), '--theta', 'abc', '--lambda', '0.5']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/"abc" is not a finite number/);
  });

  it('names a missing key layer', async () => {
    const result = await cachefleet([...common(), '--key-layers', 'no_such_layer']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/KEY_LAYER_NOT_FOUND.*no_such_layer/);
  });
});
