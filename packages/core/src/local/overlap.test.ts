import { describe, expect, it } from 'vitest';

import { createShard, type KeyShard } from '../store/shard-io.js';
import { assertNoOverlap } from './overlap.js';

const TRAIN = 'a'.repeat(64);
const TEST = 'b'.repeat(64);

function shardOf(fingerprint: string, indices: number[], mirrored: number[]): KeyShard {
  const count = indices.length;
  return createShard(
    {
      count,
      dim: 1,
      numClasses: 2,
      modelFingerprint: 'model',
      keyLayers: ['layer'],
      preprocessingHash: 'prep',
      dataset: { name: 'cifar10', split: 'train', fingerprint },
      recordRange: { start: Math.min(...indices), end: Math.max(...indices) + 1 },
      includesMirrors: mirrored.includes(1),
      zeroKeyRecords: [],
    },
    {
      keys: new Float32Array(count).fill(1),
      logProbs: new Float32Array(count * 2),
      labels: new Int32Array(count),
      recordIndices: Uint32Array.from(indices),
      mirrored: Uint8Array.from(mirrored),
    },
  );
}

describe('cache overlap check', () => {
  it('accepts disjoint records', () => {
    const cache = shardOf(TRAIN, [0, 1, 2], [0, 0, 0]);
    const queries = shardOf(TRAIN, [3, 4], [0, 0]);

    expect(() => assertNoOverlap([queries], [cache], 'Test')).not.toThrow();
  });

  it('rejects a shared record identity', () => {
    const cache = shardOf(TRAIN, [0, 1, 2], [0, 0, 0]);
    const queries = shardOf(TRAIN, [2, 3], [0, 0]);

    expect(() => assertNoOverlap([queries], [cache], 'Test')).toThrow(/query record 2 of cifar10 train is also in the cache/);
  });

  it('tells a mirror image apart', () => {
    const cache = shardOf(TRAIN, [0, 1], [0, 0]);
    const queries = shardOf(TRAIN, [1], [1]);

    expect(() => assertNoOverlap([queries], [cache], 'Test')).not.toThrow();
  });

  it('tells another dataset split apart', () => {
    const cache = shardOf(TRAIN, [0, 1], [0, 0]);
    const queries = shardOf(TEST, [0, 1], [0, 0]);

    expect(() => assertNoOverlap([queries], [cache], 'Test')).not.toThrow();
  });
});
