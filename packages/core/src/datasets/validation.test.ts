import { copyFile, mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { cifar10Dir, requireSharedData } from '../../../../test/support/shared.js';
import { openDatasetSplit } from './split.js';

const RECORD_BYTES = 3073;
const FILE_BYTES = 10_000 * RECORD_BYTES;

describe('CIFAR-10 reader on damaged copies', () => {
  let datasetDir: string;
  let testFile: string;

  beforeAll(() => {
    requireSharedData();
  });

  beforeEach(async () => {
    // A folder with only the test split and the label names, copied from the real dataset.
    datasetDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-damaged-'));
    testFile = path.join(datasetDir, 'test_batch.bin');
    await copyFile(path.join(cifar10Dir, 'test_batch.bin'), testFile);
    await copyFile(path.join(cifar10Dir, 'batches.meta.txt'), path.join(datasetDir, 'batches.meta.txt'));
  });

  afterEach(async () => {
    await rm(datasetDir, { recursive: true, force: true });
  });

  it('opens the intact copy', async () => {
    const split = await openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });

    expect(split.size).toBe(10_000);
  });

  it('rejects a truncated file', async () => {
    // 1,000 bytes short: the last record (index 9,999, at byte offset 30,726,927) keeps 2,073 bytes.
    await truncate(testFile, FILE_BYTES - 1_000);
    const opening = openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });

    await expect(opening).rejects.toMatchObject({ code: 'DATASET_INVALID' });
    await expect(opening).rejects.toThrow(testFile);
    await expect(opening).rejects.toThrow(/size 30729000 bytes is not a whole number of 3073-byte records/);
    await expect(opening).rejects.toThrow(/byte offset 30726927 has only 2073 bytes/);
  });

  it('rejects an oversized file', async () => {
    const original = await readFile(testFile);
    await writeFile(testFile, Buffer.concat([original, Buffer.alloc(100, 7)]));
    const opening = openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });

    await expect(opening).rejects.toMatchObject({ code: 'DATASET_INVALID', details: { offset: FILE_BYTES, remainder: 100 } });
    await expect(opening).rejects.toThrow(/byte offset 30730000 has only 100 bytes/);
  });

  it('rejects an empty file', async () => {
    await truncate(testFile, 0);

    await expect(openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' })).rejects.toThrow(/test_batch\.bin: it is empty/);
  });

  it('rejects a label out of range', async () => {
    const bytes = await readFile(testFile);
    bytes[777 * RECORD_BYTES] = 10;
    await writeFile(testFile, bytes);
    const opening = openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });

    await expect(opening).rejects.toMatchObject({ code: 'DATASET_INVALID', details: { offset: 2_387_721, value: 10, record: 777 } });
    await expect(opening).rejects.toThrow(`${testFile}: the label at byte offset 2387721 (record 777) is 10, outside 0..9`);
  });

  it('rejects a label in the last record', async () => {
    const bytes = await readFile(testFile);
    bytes[9_999 * RECORD_BYTES] = 255;
    await writeFile(testFile, bytes);

    await expect(openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' })).rejects.toThrow(/offset 30726927 \(record 9999\) is 255/);
  });

  it('reports a missing record file', async () => {
    await unlink(testFile);
    const opening = openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });

    await expect(opening).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
    await expect(opening).rejects.toThrow(`CIFAR-10 file not found: ${testFile}`);
    await expect(opening).rejects.toThrow(`cachefleet datasets fetch cifar10 ${datasetDir}`);
  });

  it('reports a missing train file', async () => {
    const opening = openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'train' });

    await expect(opening).rejects.toThrow(`CIFAR-10 file not found: ${path.join(datasetDir, 'data_batch_1.bin')}`);
  });

  it('reports missing label names', async () => {
    await unlink(path.join(datasetDir, 'batches.meta.txt'));

    await expect(openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' })).rejects.toThrow(/file not found: .*batches\.meta\.txt/);
  });

  it('rejects a wrong label count', async () => {
    await writeFile(path.join(datasetDir, 'batches.meta.txt'), 'airplane\nautomobile\n');

    await expect(openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' })).rejects.toThrow(/lists 2 names, expected 10/);
  });

  it('detects truncation after opening', async () => {
    const split = await openDatasetSplit(datasetDir, { dataset: 'cifar10', split: 'test' });
    await truncate(testFile, 5_000 * RECORD_BYTES);

    await expect(split.readPixels(4_999, 5_001)).rejects.toThrow(/ends at byte offset 15365000/);
  });
});
