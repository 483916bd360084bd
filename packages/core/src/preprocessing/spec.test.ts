import { describe, expect, it } from 'vitest';

import { createPreprocessingSpec, parsePreprocessingSpec, preprocessingHash, type PreprocessingSpec } from './spec.js';

const imageSize = 2 * 2 * 3;

function makeSpec(): PreprocessingSpec {
  return createPreprocessingSpec({
    height: 2,
    width: 2,
    channels: 3,
    mean: Float32Array.from({ length: imageSize }, (_, i) => 0.4 + i / 100),
    std: Float32Array.from({ length: imageSize }, (_, i) => 0.2 + i / 1000),
    source: {
      dataset: 'cifar10',
      splits: [
        { split: 'train', fingerprint: 'a'.repeat(64), size: 50_000 },
        { split: 'test', fingerprint: 'b'.repeat(64), size: 10_000 },
      ],
      recordCount: 60_000,
    },
  });
}

/** Copies an object with its keys in reverse order, recursively. */
function reverseKeys(value: unknown): unknown {
  if (Array.isArray(value)) {
    return value.map(reverseKeys);
  }
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).reverse().map(([key, item]) => [key, reverseKeys(item)]));
  }
  return value;
}

describe('preprocessing spec', () => {
  it('records the statistics source', () => {
    const spec = makeSpec();

    expect(spec.standardization.source.recordCount).toBe(60_000);
    expect(spec.standardization.source.splits.map((split) => split.split)).toEqual(['train', 'test']);
  });

  it('stores float32 mean values', () => {
    const spec = makeSpec();

    expect(spec.standardization.mean[1]).toBe(Math.fround(0.41));
  });

  it('survives a JSON round trip', () => {
    const spec = makeSpec();
    const restored = parsePreprocessingSpec(JSON.parse(JSON.stringify(spec)));

    expect(preprocessingHash(restored)).toBe(preprocessingHash(spec));
  });

  it('hash ignores key order', () => {
    const spec = makeSpec();
    const reordered = reverseKeys(spec) as PreprocessingSpec;

    expect(JSON.stringify(reordered)).not.toBe(JSON.stringify(spec));
    expect(preprocessingHash(reordered)).toBe(preprocessingHash(spec));
  });

  it('hash changes with one value', () => {
    const spec = makeSpec();
    const changed = structuredClone(spec);
    changed.standardization.std[11] = Math.fround(changed.standardization.std[11] + 1e-6);

    expect(preprocessingHash(changed)).not.toBe(preprocessingHash(spec));
  });

  it('hash changes with the source', () => {
    const spec = makeSpec();
    const changed = structuredClone(spec);
    changed.standardization.source.splits[1].fingerprint = 'd'.repeat(64);

    expect(preprocessingHash(changed)).not.toBe(preprocessingHash(spec));
  });

  it('rejects a wrong value count', () => {
    const spec = structuredClone(makeSpec());
    spec.standardization.mean.pop();

    expect(() => parsePreprocessingSpec(spec)).toThrow(/expected 12 values \(height × width × channels\), got 11/);
  });

  it('rejects a zero std', () => {
    const spec = structuredClone(makeSpec());
    spec.standardization.std[0] = 0;

    expect(() => parsePreprocessingSpec(spec)).toThrow(/standard deviation greater than 0/);
  });

  it('rejects non-float32 values', () => {
    const spec = structuredClone(makeSpec());
    spec.standardization.mean[0] = 0.1;

    expect(() => parsePreprocessingSpec(spec)).toThrow(/representable as float32/);
  });

  it('rejects an unknown version', () => {
    const spec = { ...makeSpec(), version: 2 };

    expect(() => parsePreprocessingSpec(spec)).toThrow(/Invalid preprocessing spec/);
  });
});
