import { createHash } from 'node:crypto';

import { CachefleetError } from '../errors.js';

/** Name of the generator and shuffle below, recorded in reports so a subset can be rebuilt elsewhere. */
export const SUBSET_ALGORITHM = 'mulberry32 + Fisher-Yates, first `size` of the shuffled record indices';

/**
 * Returns a pseudo-random generator of floats in [0, 1) from a 32-bit seed: mulberry32
 * (Tommy Ettinger, public domain), small and fast, and good enough to pick images and pixels.
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Shuffles `values` in place (Fisher–Yates) with `random` and returns them. */
export function shuffle<T extends { length: number; [index: number]: number }>(values: T, random: () => number): T {
  for (let i = values.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    const swap = values[i];
    values[i] = values[j];
    values[j] = swap;
  }
  return values;
}

/** A declared random subset of a split's records. */
export interface RecordSubset {
  seed: number;
  size: number;
  /** Records in the split, in subset order. */
  indices: number[];
  /** SHA-256 of the indices as comma-separated decimal text, to compare subsets across runs. */
  sha256: string;
}

/**
 * Picks `size` distinct records of a split of `splitSize` records with `seed`. The first k
 * records of a subset of size n are the subset of size k with the same seed, so that parts of an
 * evaluation run on smaller prefixes of one subset.
 */
export function pickSubset(splitSize: number, size: number, seed: number): RecordSubset {
  if (!Number.isInteger(size) || size < 1 || size > splitSize) {
    throw new CachefleetError('INVALID_ARGUMENT', `Subset size ${size} is invalid: give a whole number from 1 to ${splitSize}, the records of the split.`, { size, splitSize });
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new CachefleetError('INVALID_ARGUMENT', `Seed ${seed} is invalid: give a whole number from 0 to 4294967295.`, { seed });
  }

  const order = shuffle(Int32Array.from({ length: splitSize }, (_, i) => i), mulberry32(seed));
  const indices = Array.from(order.subarray(0, size));
  return { seed, size, indices, sha256: createHash('sha256').update(indices.join(',')).digest('hex') };
}

/** Derives a 32-bit seed for one image from the run's seed and the image's record index, so a result never depends on how images are batched. */
export function imageSeed(seed: number, recordIndex: number): number {
  let state = (seed ^ Math.imul(recordIndex + 1, 0x9e3779b1)) >>> 0;
  state = Math.imul(state ^ (state >>> 16), 0x85ebca6b) >>> 0;
  state = Math.imul(state ^ (state >>> 13), 0xc2b2ae35) >>> 0;
  return (state ^ (state >>> 16)) >>> 0;
}
