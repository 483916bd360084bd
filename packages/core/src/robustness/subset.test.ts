import { describe, expect, it } from 'vitest';

import { imageSeed, pickSubset } from './subset.js';

describe('pickSubset', () => {
  it('repeats with the same seed', () => {
    expect(pickSubset(10_000, 50, 7).indices).toEqual(pickSubset(10_000, 50, 7).indices);
  });

  it('differs between seeds', () => {
    expect(pickSubset(10_000, 50, 7).sha256).not.toBe(pickSubset(10_000, 50, 8).sha256);
  });

  it('picks distinct records in range', () => {
    const { indices } = pickSubset(1000, 1000, 3);

    expect(new Set(indices).size).toBe(1000);
    expect(Math.min(...indices)).toBe(0);
    expect(Math.max(...indices)).toBe(999);
  });

  it('keeps smaller subsets as prefixes', () => {
    expect(pickSubset(10_000, 1000, 2018).indices.slice(0, 200)).toEqual(pickSubset(10_000, 200, 2018).indices);
  });

  it('rejects a size beyond the split', () => {
    expect(() => pickSubset(100, 101, 1)).toThrow(/Subset size 101 is invalid/);
  });

  it('rejects a negative seed', () => {
    expect(() => pickSubset(100, 10, -1)).toThrow(/Seed -1 is invalid/);
  });
});

describe('imageSeed', () => {
  it('differs between records', () => {
    const seeds = new Set(Array.from({ length: 1000 }, (_, record) => imageSeed(2018, record)));

    expect(seeds.size).toBe(1000);
  });
});
