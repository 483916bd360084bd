import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { normalizeKeys } from './keys.js';
import { referencePartials } from './partials.js';
import { createScoringEngine, type ScoringEngine } from './scoring-engine.js';
import { foldPartials, scoreShardPartials, type ShardKeys } from './shard-partials.js';

const [numQueries, dim, numClasses] = [20, 32, 4];
const thetas = [10, 60];

function randomRows(rows: number, seed: number): Float32Array {
  let state = seed;
  const values = Float32Array.from({ length: rows * dim }, () => {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
    return state / 2_147_483_648 - 0.5;
  });
  normalizeKeys(values, rows, dim);
  return values;
}

function shardOf(count: number, seed: number): ShardKeys {
  return { keys: randomRows(count, seed), labels: Int32Array.from({ length: count }, (_, i) => (i * 7 + seed) % numClasses), count };
}

describe('shard-by-shard scoring', () => {
  let engine: ScoringEngine;
  const queries = randomRows(numQueries, 3);
  const shards = [shardOf(300, 5), shardOf(129, 8), shardOf(41, 13)];
  const options = { queries, numQueries, dim, numClasses, thetas, keyBlockSize: 64 };

  beforeAll(async () => {
    engine = await createScoringEngine({ threads: 1 });
  });

  afterAll(async () => {
    await engine.dispose();
  });

  it('returns one partial per shard', async () => {
    const partials = await scoreShardPartials(engine, shards, options);

    expect(partials).toHaveLength(3);
  });

  it('scores a shard the same alone', async () => {
    const together = await scoreShardPartials(engine, shards, options);
    const alone = await scoreShardPartials(engine, [shards[1]], options);

    expect(alone[0]).toEqual(together[1]);
  });

  it('folds to the whole-cache partials', async () => {
    const folded = foldPartials(await scoreShardPartials(engine, shards, options));
    const allKeys = new Float32Array(470 * dim);
    const allLabels = new Int32Array(470);
    let row = 0;
    for (const shard of shards) {
      allKeys.set(shard.keys, row * dim);
      allLabels.set(shard.labels, row);
      row += shard.count;
    }
    const reference = referencePartials(queries, numQueries, allKeys, 470, allLabels, dim, numClasses, thetas);

    for (let i = 0; i < reference.length; i += 1) {
      expect(Math.abs(folded[i] - reference[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(reference[i])));
    }
  });

  it('rejects folding no partials', () => {
    expect(() => foldPartials([])).toThrow(/every shard is empty/);
  });
});
