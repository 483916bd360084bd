import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { cifar10Dir, requireSharedData } from '../../../../test/support/shared.js';
import { combineFileDigests } from './identity.js';
import { openDatasetSplit, type DatasetSplit } from './split.js';

// SHA-256 of the original CIFAR-10 binary files, as published in ankane/torchvision-ruby
// (lib/torchvision/datasets/cifar10.rb).
const PUBLISHED_DIGESTS = {
  train: [
    'cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5',
    'a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed',
    'bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67',
    '014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48',
    '755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add',
  ],
  test: ['8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b'],
};

const CLASS_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const RECORD_BYTES = 3073;

function countPerClass(labels: Int32Array, numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (const label of labels) {
    counts[label] += 1;
  }
  return counts;
}

/** Reads one raw record of a CIFAR-10 file, bypassing the reader under test. */
async function readRawRecord(file: string, record: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(RECORD_BYTES);
    await handle.read(buffer, 0, RECORD_BYTES, record * RECORD_BYTES);
    return buffer;
  } finally {
    await handle.close();
  }
}

describe('CIFAR-10 reader on real files', () => {
  let train: DatasetSplit;
  let test: DatasetSplit;

  beforeAll(async () => {
    requireSharedData();
    train = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'train' });
    test = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'test' });
  });

  it('train has 5,000 per class', () => {
    expect(train.size).toBe(50_000);
    expect(countPerClass(train.labels, 10)).toEqual(new Array(10).fill(5_000));
  });

  it('test has 1,000 per class', () => {
    expect(test.size).toBe(10_000);
    expect(countPerClass(test.labels, 10)).toEqual(new Array(10).fill(1_000));
  });

  it('reads class names in order', () => {
    expect(train.classNames).toEqual(CLASS_NAMES);
    expect(train.numClasses).toBe(10);
  });

  it('file digests match published values', () => {
    expect(train.fileDigests).toEqual(PUBLISHED_DIGESTS.train);
    expect(test.fileDigests).toEqual(PUBLISHED_DIGESTS.test);
  });

  it('fingerprint combines file digests', () => {
    expect(train.fingerprint).toBe(combineFileDigests(PUBLISHED_DIGESTS.train));
    expect(test.fingerprint).not.toBe(train.fingerprint);
  });

  it('lists train files in order', () => {
    expect(train.files.map((file) => path.basename(file))).toEqual([1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`));
  });

  it('returns pixels in HWC order', async () => {
    // Record 12,345 of the train split is record 2,345 of data_batch_2.bin.
    const raw = await readRawRecord(train.files[1], 2_345);
    const pixels = await train.readPixels(12_345, 12_346);

    expect(pixels.length).toBe(32 * 32 * 3);
    for (const [row, column] of [[0, 0], [5, 7], [31, 31], [16, 0]]) {
      for (let channel = 0; channel < 3; channel++) {
        const expected = raw[1 + channel * 1024 + row * 32 + column];
        expect(pixels[(row * 32 + column) * 3 + channel], `row ${row}, column ${column}, channel ${channel}`).toBe(expected);
      }
    }
  });

  it('label matches the raw record', async () => {
    const raw = await readRawRecord(train.files[1], 2_345);

    expect(train.labels[12_345]).toBe(raw[0]);
  });

  it('reads across file boundaries', async () => {
    const across = await train.readPixels(9_998, 10_002);
    const before = await train.readPixels(9_998, 10_000);
    const after = await train.readPixels(10_000, 10_002);

    expect(Buffer.from(across).equals(Buffer.concat([before, after]))).toBe(true);
  });

  it('reads the last record', async () => {
    const raw = await readRawRecord(test.files[0], 9_999);
    const pixels = await test.readPixels(9_999, 10_000);

    expect(pixels[(31 * 32 + 31) * 3 + 2]).toBe(raw[1 + 2 * 1024 + 31 * 32 + 31]);
  });

  it('rejects a range beyond the split', async () => {
    await expect(test.readPixels(9_990, 10_001)).rejects.toThrow(/end 10001 is beyond the split, which has 10000 records/);
  });

  it('rejects an empty pixel range', async () => {
    await expect(test.readPixels(5, 5)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('accepts the parent folder', async () => {
    const viaParent = await openDatasetSplit(path.dirname(cifar10Dir), { dataset: 'cifar10', split: 'test' });

    expect(viaParent.dir).toBe(cifar10Dir);
    expect(viaParent.fingerprint).toBe(test.fingerprint);
  });

  it('rejects coarse labels', async () => {
    await expect(openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'test', labelMode: 'coarse' })).rejects.toThrow(
      /CIFAR-10: it has only fine labels/,
    );
  });

  it('rejects an unknown split', async () => {
    await expect(openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'validation' as 'test' })).rejects.toThrow(
      /Invalid split "validation": expected one of train, test/,
    );
  });

  it('missing folder names the fix', async () => {
    const missing = path.join(os.tmpdir(), `cachefleet-missing-${process.pid}`, 'cifar-10-batches-bin');
    const error = openDatasetSplit(missing, { dataset: 'cifar10', split: 'train' });

    await expect(error).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
    await expect(error).rejects.toThrow(`cachefleet datasets fetch cifar10 ${path.dirname(missing)}`);
  });
});
