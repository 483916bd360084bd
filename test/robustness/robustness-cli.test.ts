import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { robustnessReportSchema, type RobustnessReport } from '@cachefleet/core';

import { cifar10Dir, requireSharedData, resnet32Path } from '../support/shared.js';

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

// A quick run: a cache of the first 100 train and validation records with their mirror images
// (400 keys, extracted into a fresh key store), 6 test images in slices of 3, and small grids.
describe('cachefleet robustness command', () => {
  let dir: string;
  let report: RobustnessReport;
  let result: { stdout: string; stderr: string; code: number };
  const common = () => ['robustness', '--data', cifar10Dir, '--model', resnet32Path, '--key-layers', '82,92,103', '--store', path.join(dir, 'store'), '--limit', '100', '--threads', '1'];
  const small = ['--images', '6', '--single-pixel-images', '2', '--white-box-images', '2', '--sweep-images', '2', '--slice-size', '3', '--grid-size', '8', '--max-pixels', '40'];

  beforeAll(async () => {
    requireSharedData();
    dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-robustness-cli-'));
    result = await cachefleet([...common(), ...small, '--seed', '7', '--report', path.join(dir, 'report.json'), '--plot', path.join(dir, 'plot.svg'), '--json', '--no-progress']);
    if (result.code !== 0) throw new Error(`cachefleet robustness failed (${result.code}): ${result.stderr.slice(-3000)}`);
    report = robustnessReportSchema.parse(JSON.parse(await readFile(path.join(dir, 'report.json'), 'utf8')));
  }, 300_000);

  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('writes the report it prints', () => {
    expect(robustnessReportSchema.parse(JSON.parse(result.stdout))).toEqual(report);
  });

  it('records the seeded subset', () => {
    expect([report.subset.seed, report.subset.size, report.subset.records.length]).toEqual([7, 6, 6]);
  });

  it('runs every attack and setting', () => {
    const rows = report.attacks.map((row) => `${row.setting}/${row.attacked}/${row.attack}/${row.images}`);

    expect(rows).toEqual([
      'transfer/baseline/fgsm/6',
      'transfer/baseline/iterative-fgsm/6',
      'transfer/baseline/single-pixel/2',
      'transfer/baseline/blur/6',
      'white-box/baseline/fgsm/2',
      'white-box/cache/fgsm/2',
      'white-box/cacheOnly/fgsm/2',
      'white-box/baseline/iterative-fgsm/2',
      'white-box/cache/iterative-fgsm/2',
      'white-box/cacheOnly/iterative-fgsm/2',
    ]);
  });

  it('uses the 400-key cache', () => {
    expect(report.context.cache.keys).toBe(400);
  });

  it('draws the plot as SVG', async () => {
    const svg = await readFile(path.join(dir, 'plot.svg'), 'utf8');

    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('accuracy under attack');
  });

  it('rejects a subset larger than the test split', async () => {
    const failure = await cachefleet([...common(), '--images', '10001']);

    expect(failure.code).toBe(1);
    expect(failure.stderr).toMatch(/Subset size 10001 is invalid/);
  });

  it('rejects a fleet run without a cache', async () => {
    const failure = await cachefleet([...common(), '--fleet', '--storage', path.join(dir, 'objects')]);

    expect(failure.code).toBe(1);
    expect(failure.stderr).toMatch(/A fleet run needs --storage URL and --cache/);
  });
});
