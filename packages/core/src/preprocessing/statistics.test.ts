import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cifar10Dir, referenceDir, requireSharedData } from '../../../../test/support/shared.js';
import { openDatasetSplit, type DatasetSplit } from '../datasets/split.js';
import { writeSyntheticDataset } from '../datasets/synthetic.js';
import { computeStatistics, type PixelStatistics } from './statistics.js';

async function readFloat32(file: string): Promise<Float32Array> {
  const bytes = await readFile(file);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    max = Math.max(max, Math.abs(a[i] - b[i]));
  }
  return max;
}

describe('computeStatistics on all 60,000 CIFAR-10 images', () => {
  let train: DatasetSplit;
  let test: DatasetSplit;
  let statistics: PixelStatistics;

  beforeAll(async () => {
    requireSharedData();
    train = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'train' });
    test = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'test' });
    statistics = await computeStatistics([train, test]);
  });

  it('mean matches the reference', async () => {
    const reference = await readFloat32(path.join(referenceDir, 'cifar10-pixel-mean-all60k.f32'));

    expect(statistics.mean.length).toBe(32 * 32 * 3);
    expect(maxAbsDifference(statistics.mean, reference)).toBeLessThanOrEqual(1e-6);
  });

  it('std matches the reference', async () => {
    const reference = await readFloat32(path.join(referenceDir, 'cifar10-pixel-std-all60k.f32'));

    expect(statistics.std.length).toBe(32 * 32 * 3);
    expect(maxAbsDifference(statistics.std, reference)).toBeLessThanOrEqual(1e-6);
  });

  it('records the source splits', () => {
    expect(statistics.source).toEqual({
      dataset: 'cifar10',
      splits: [
        { split: 'train', fingerprint: train.fingerprint, size: 50_000 },
        { split: 'test', fingerprint: test.fingerprint, size: 10_000 },
      ],
      recordCount: 60_000,
    });
  });

  it('ignores the chunk size', async () => {
    const byThousand = await computeStatistics([test]);
    const byOdd = await computeStatistics([test], { chunkRecords: 777 });

    expect(Buffer.from(byOdd.mean.buffer).equals(Buffer.from(byThousand.mean.buffer))).toBe(true);
    expect(Buffer.from(byOdd.std.buffer).equals(Buffer.from(byThousand.std.buffer))).toBe(true);
  });

  it('rejects a split passed twice', async () => {
    await expect(computeStatistics([test, test])).rejects.toThrow(/cifar10 test split .* was passed twice/);
  });
});

describe('computeStatistics argument checks', () => {
  let parentDir: string;

  beforeAll(async () => {
    parentDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-statistics-'));
  });

  afterAll(async () => {
    await rm(parentDir, { recursive: true, force: true });
  });

  it('rejects an empty split list', async () => {
    await expect(computeStatistics([])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('rejects mixed datasets', async () => {
    const cifar10 = await openDatasetSplit(await writeSyntheticDataset(parentDir, { dataset: 'cifar10' }), { dataset: 'cifar10', split: 'test' });
    const cifar100 = await openDatasetSplit(await writeSyntheticDataset(parentDir, { dataset: 'cifar100' }), { dataset: 'cifar100', split: 'test' });

    await expect(computeStatistics([cifar10, cifar100])).rejects.toThrow(/splits of cifar10 and cifar100 were mixed/);
  });

  it('rejects a zero standard deviation', async () => {
    const single = await openDatasetSplit(await writeSyntheticDataset(path.join(parentDir, 'single'), { dataset: 'cifar10', testRecordsPerFile: 1 }), {
      dataset: 'cifar10',
      split: 'test',
    });

    await expect(computeStatistics([single])).rejects.toThrow(/row 0, column 0, channel 0\) has the same value in all 1 records/);
  });

  it('matches a direct computation', async () => {
    const split = await openDatasetSplit(await writeSyntheticDataset(path.join(parentDir, 'direct'), { dataset: 'cifar10', testRecordsPerFile: 7 }), {
      dataset: 'cifar10',
      split: 'test',
    });
    const pixels = await split.readPixels(0, 7);

    const statistics = await computeStatistics([split], { chunkRecords: 3 });

    // Two-pass float64 mean and population variance at (row 3, column 5, channel 2).
    const index = (3 * 32 + 5) * 3 + 2;
    const values = Array.from({ length: 7 }, (_, record) => pixels[record * 3072 + index] / 255);
    const mean = values.reduce((sum, value) => sum + value, 0) / 7;
    const std = Math.sqrt(values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / 7);
    expect(statistics.mean[index]).toBe(Math.fround(mean));
    expect(Math.abs(statistics.std[index] - std)).toBeLessThanOrEqual(1e-7);
  });
});
