import { describe, expect, it } from 'vitest';
import { dropRows, normalizeKeys } from './keys.js';

describe('normalizeKeys', () => {
  it('scales rows to unit norm', () => {
    const features = new Float32Array([3, 4, 0, 1e-20, 0, 2e-20, -6, 0, 8]);

    normalizeKeys(features, 3, 3);

    // Expected values are exact fractions; 1e-7 covers float32 rounding of each value.
    expect(features[0]).toBeCloseTo(0.6, 7);
    expect(features[1]).toBeCloseTo(0.8, 7);
    expect(features[3]).toBeCloseTo(1 / Math.sqrt(5), 7);
    expect(features[5]).toBeCloseTo(2 / Math.sqrt(5), 7);
    expect(features[6]).toBeCloseTo(-0.6, 7);
    expect(features[8]).toBeCloseTo(0.8, 7);
  });

  it('reports zero rows unchanged', () => {
    const features = new Float32Array([0, 0, 1, 1, 0, 0]);

    const result = normalizeKeys(features, 3, 2);

    expect(result.zeroRows).toEqual([0, 2]);
    expect(Array.from(features.subarray(0, 2))).toEqual([0, 0]);
    expect(Array.from(features.subarray(4, 6))).toEqual([0, 0]);
  });

  it('rejects NaN naming the row', () => {
    const features = new Float32Array([1, 0, 0, Number.NaN]);

    expect(() => normalizeKeys(features, 2, 2)).toThrow(/row 1 has the value NaN at column 1/);
  });

  it('rejects infinity with its code', () => {
    const features = new Float32Array([Number.POSITIVE_INFINITY, 0]);

    expect(() => normalizeKeys(features, 1, 2)).toThrow(expect.objectContaining({ code: 'NON_FINITE_ACTIVATION' }));
  });

  it('rejects a wrong length', () => {
    expect(() => normalizeKeys(new Float32Array(5), 2, 3)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('dropRows', () => {
  it('removes listed rows and labels', () => {
    const features = new Float32Array([0, 0, 1, 1, 2, 2, 3, 3]);
    const labels = new Int32Array([10, 11, 12, 13]);

    const kept = dropRows(features, labels, 4, 2, [2, 0, 2]);

    expect(kept.count).toBe(2);
    expect(Array.from(kept.features)).toEqual([1, 1, 3, 3]);
    expect(Array.from(kept.labels)).toEqual([11, 13]);
  });

  it('rejects an index out of range', () => {
    expect(() => dropRows(new Float32Array(4), new Int32Array(2), 2, 2, [2])).toThrow(/Row index 2 to drop is outside the 2 rows/);
  });
});
