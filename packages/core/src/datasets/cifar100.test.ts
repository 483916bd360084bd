import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { openDatasetSplit } from './split.js';
import { syntheticLabel, syntheticPixel, writeSyntheticDataset } from './synthetic.js';

const RECORD_BYTES = 3074;

describe('CIFAR-100 reader on synthetic files', () => {
  let parentDir: string;
  let datasetDir: string;

  beforeAll(async () => {
    parentDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-cifar100-'));
    datasetDir = await writeSyntheticDataset(parentDir, { dataset: 'cifar100', trainRecordsPerFile: 250, testRecordsPerFile: 40 });
  });

  afterAll(async () => {
    await rm(parentDir, { recursive: true, force: true });
  });

  it('returns fine labels by default', async () => {
    const split = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'train' });

    expect(split.labelMode).toBe('fine');
    expect(split.numClasses).toBe(100);
    expect(Array.from(split.labels)).toEqual(Array.from({ length: 250 }, (_, i) => syntheticLabel('cifar100', 'fine', i)));
  });

  it('returns coarse labels on request', async () => {
    const split = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'train', labelMode: 'coarse' });

    expect(split.numClasses).toBe(20);
    expect(Array.from(split.labels)).toEqual(Array.from({ length: 250 }, (_, i) => syntheticLabel('cifar100', 'coarse', i)));
  });

  it('fine and coarse labels differ', async () => {
    const fine = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'test' });
    const coarse = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'test', labelMode: 'coarse' });

    // Record 37: fine label 37, coarse label 7.
    expect(fine.labels[37]).toBe(37);
    expect(coarse.labels[37]).toBe(7);
  });

  it('reads matching class names', async () => {
    const fine = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'test' });
    const coarse = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'test', labelMode: 'coarse' });

    expect(fine.classNames.length).toBe(100);
    expect(coarse.classNames.length).toBe(20);
    expect(coarse.classNames[19]).toBe('coarse_class_19');
  });

  it('label mode keeps the fingerprint', async () => {
    const fine = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'train' });
    const coarse = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'train', labelMode: 'coarse' });

    expect(coarse.fingerprint).toBe(fine.fingerprint);
  });

  it('skips both label bytes', async () => {
    const split = await openDatasetSplit(datasetDir, { dataset: 'cifar100', split: 'train' });
    const pixels = await split.readPixels(100, 103);

    for (let image = 0; image < 3; image++) {
      for (const [row, column, channel] of [[0, 0, 0], [0, 1, 2], [31, 31, 1], [12, 30, 2]]) {
        const actual = pixels[image * 3072 + (row * 32 + column) * 3 + channel];
        expect(actual, `image ${image}, row ${row}, column ${column}, channel ${channel}`).toBe(syntheticPixel(100 + image, row, column, channel));
      }
    }
  });

  it('accepts the parent folder', async () => {
    const split = await openDatasetSplit(parentDir, { dataset: 'cifar100', split: 'test' });

    expect(split.dir).toBe(datasetDir);
  });

  it('rejects a fine label of 100', async () => {
    const copyDir = await writeSyntheticDataset(await mkdtemp(path.join(os.tmpdir(), 'cachefleet-cifar100-bad-')), { dataset: 'cifar100' });
    const file = path.join(copyDir, 'test.bin');
    const bytes = await readFile(file);
    bytes[3 * RECORD_BYTES + 1] = 100;
    await writeFile(file, bytes);

    try {
      await expect(openDatasetSplit(copyDir, { dataset: 'cifar100', split: 'test', labelMode: 'coarse' })).rejects.toThrow(
        `${file}: the fine label at byte offset 9223 (record 3) is 100, outside 0..99`,
      );
    } finally {
      await rm(path.dirname(copyDir), { recursive: true, force: true });
    }
  });

  it('rejects a coarse label of 20', async () => {
    const copyDir = await writeSyntheticDataset(await mkdtemp(path.join(os.tmpdir(), 'cachefleet-cifar100-bad-')), { dataset: 'cifar100' });
    const file = path.join(copyDir, 'train.bin');
    const bytes = await readFile(file);
    bytes[5 * RECORD_BYTES] = 20;
    await writeFile(file, bytes);

    try {
      await expect(openDatasetSplit(copyDir, { dataset: 'cifar100', split: 'train' })).rejects.toMatchObject({
        code: 'DATASET_INVALID',
        details: { offset: 15_370, value: 20, labelMode: 'coarse' },
      });
    } finally {
      await rm(path.dirname(copyDir), { recursive: true, force: true });
    }
  });

  it('rejects a partial record', async () => {
    const copyDir = await writeSyntheticDataset(await mkdtemp(path.join(os.tmpdir(), 'cachefleet-cifar100-bad-')), { dataset: 'cifar100' });
    const file = path.join(copyDir, 'test.bin');
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, bytes.length - 1));

    try {
      await expect(openDatasetSplit(copyDir, { dataset: 'cifar100', split: 'test' })).rejects.toThrow(
        /not a whole number of 3074-byte records \(the record at byte offset 27666 has only 3073 bytes\)/,
      );
    } finally {
      await rm(path.dirname(copyDir), { recursive: true, force: true });
    }
  });
});
