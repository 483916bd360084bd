import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { cifar10Dir, referenceDir, requireSharedData } from '../../../../test/support/shared.js';
import { openDatasetSplit, type DatasetSplit } from '../datasets/split.js';
import { createDefaultPreprocessingSpec } from './default-spec.js';
import { createPreprocessingSpec, preprocessingHash, type PreprocessingSpec } from './spec.js';
import { preprocess } from './standardize.js';

async function readFloat32(file: string): Promise<Float32Array> {
  const bytes = await readFile(path.join(referenceDir, file));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    max = Math.max(max, Math.abs(a[i] - b[i]));
  }
  return max;
}

/** Builds a spec whose mean and std are the values of the reference files. */
async function referenceSpec(test: DatasetSplit): Promise<PreprocessingSpec> {
  return createPreprocessingSpec({
    height: 32,
    width: 32,
    channels: 3,
    mean: await readFloat32('cifar10-pixel-mean-all60k.f32'),
    std: await readFloat32('cifar10-pixel-std-all60k.f32'),
    source: { dataset: 'cifar10', splits: [{ split: 'test', fingerprint: test.fingerprint, size: test.size }], recordCount: test.size },
  });
}

describe('preprocess on CIFAR-10 test images', () => {
  let test: DatasetSplit;
  let expected: Float32Array;
  let pixels: Uint8Array;

  beforeAll(async () => {
    requireSharedData();
    test = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'test' });
    expected = await readFloat32('cifar10-test-first100-input.f32');
    pixels = await test.readPixels(0, 100);
  });

  it('matches reference with reference statistics', async () => {
    const input = preprocess(pixels, 100, await referenceSpec(test));

    expect(input.length).toBe(100 * 32 * 32 * 3);
    expect(maxAbsDifference(input, expected)).toBeLessThanOrEqual(1e-6);
  });

  it('matches reference with computed statistics', async () => {
    const spec = await createDefaultPreprocessingSpec(cifar10Dir);
    const input = preprocess(pixels, 100, spec);

    expect(maxAbsDifference(input, expected)).toBeLessThanOrEqual(1e-6);
    // Pinned so that any change to the statistics or the hash's canonical form is noticed.
    expect(preprocessingHash(spec)).toBe('98a4503a4bbb30c05db6e9f937f6f09bf83ae5212d247b92f91304981cf41f1b');
  });

  it('rejects a wrong pixel count', async () => {
    const spec = await referenceSpec(test);

    expect(() => preprocess(pixels, 99, spec)).toThrow(/has 307200 bytes, expected 304128 for 99 images/);
  });
});

describe('preprocess arithmetic', () => {
  const fingerprint = 'c'.repeat(64);
  const imageSize = 2 * 2 * 3;

  function smallSpec(mean: number, std: number): PreprocessingSpec {
    return createPreprocessingSpec({
      height: 2,
      width: 2,
      channels: 3,
      mean: new Float32Array(imageSize).fill(mean),
      std: new Float32Array(imageSize).fill(std),
      source: { dataset: 'cifar10', splits: [{ split: 'train', fingerprint, size: 2 }], recordCount: 2 },
    });
  }

  it('rounds each step to float32', () => {
    const mean = Math.fround(0.4733630120754242);
    const std = Math.fround(0.2515689432621002);
    const pixels = new Uint8Array(imageSize).fill(200);

    const input = preprocess(pixels, 1, smallSpec(mean, std));

    const expectedValue = Math.fround(Math.fround(Math.fround(200 / 255) - mean) / std);
    expect(input[0]).toBe(expectedValue);
  });

  it('maps 0 and 255 exactly', () => {
    const pixels = new Uint8Array(imageSize);
    pixels[1] = 255;

    const input = preprocess(pixels, 1, smallSpec(0.5, 0.25));

    expect(input[0]).toBe(-2);
    expect(input[1]).toBe(2);
  });

  it('accepts zero images', () => {
    expect(preprocess(new Uint8Array(0), 0, smallSpec(0.5, 0.25)).length).toBe(0);
  });
});
