import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { openDatasetSplit, type DatasetSplit } from '../datasets/split.js';
import { writeSyntheticDataset } from '../datasets/synthetic.js';
import { computeStatistics } from './statistics.js';
import { loadOrComputeStatistics, statisticsCacheKey } from './statistics-cache.js';

const silentLogger = pino({ level: 'silent' });

describe('loadOrComputeStatistics', () => {
  let workDir: string;
  let train: DatasetSplit;
  let test: DatasetSplit;

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-statistics-cache-'));
    const datasetDir = await writeSyntheticDataset(workDir, { dataset: 'cifar10', trainRecordsPerFile: 30, testRecordsPerFile: 20 });
    train = await openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'train' });
    test = await openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });
  });

  afterAll(async () => {
    await rm(workDir, { recursive: true, force: true });
  });

  it('computes and writes on miss', async () => {
    const cacheDir = path.join(workDir, 'miss');

    const statistics = await loadOrComputeStatistics([train, test], { cacheDir, logger: silentLogger });

    const direct = await computeStatistics([train, test]);
    expect(Array.from(statistics.std)).toEqual(Array.from(direct.std));
    expect(await readdir(cacheDir)).toEqual([`pixel-statistics-${statisticsCacheKey([train, test])}.json`]);
  });

  it('reads the cached file on hit', async () => {
    const cacheDir = path.join(workDir, 'hit');
    await loadOrComputeStatistics([train, test], { cacheDir, logger: silentLogger });
    const file = path.join(cacheDir, `pixel-statistics-${statisticsCacheKey([train, test])}.json`);
    // Change the file so that a value read from it differs from a recomputed one.
    const content = JSON.parse(await readFile(file, 'utf8'));
    content.mean[0] = 0.5;
    await writeFile(file, JSON.stringify(content));

    const statistics = await loadOrComputeStatistics([train, test], { cacheDir, logger: silentLogger });

    expect(statistics.mean[0]).toBe(0.5);
  });

  it('replaces a corrupt file', async () => {
    const cacheDir = path.join(workDir, 'corrupt');
    await loadOrComputeStatistics([train, test], { cacheDir, logger: silentLogger });
    const file = path.join(cacheDir, `pixel-statistics-${statisticsCacheKey([train, test])}.json`);
    await writeFile(file, '{"version": 1, "mean": [');

    const statistics = await loadOrComputeStatistics([train, test], { cacheDir, logger: silentLogger });

    expect(statistics.source.recordCount).toBe(170);
    expect(JSON.parse(await readFile(file, 'utf8')).source.recordCount).toBe(170);
  });

  it('keys depend on split order', () => {
    expect(statisticsCacheKey([test, train])).not.toBe(statisticsCacheKey([train, test]));
  });
});
