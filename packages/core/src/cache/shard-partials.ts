import { CachefleetError } from '../errors.js';
import { mergePartialsInto } from './partials.js';
import { scoreAgainstCache, type ScoreProgress } from './score-cache.js';
import type { ScoringEngine } from './scoring-engine.js';

/** Keys of one cache shard, as stored: L2-normalised rows with their labels. */
export interface ShardKeys {
  keys: Float32Array;
  labels: Int32Array;
  count: number;
}

export interface ScoreShardsOptions {
  queries: Float32Array;
  numQueries: number;
  dim: number;
  numClasses: number;
  thetas: readonly number[];
  queryBlockSize?: number;
  keyBlockSize?: number;
  /** Called after each key block with the keys scored so far over all shards. */
  onProgress?: (progress: ScoreProgress) => void;
}

/**
 * Scores queries against each shard on its own, returning one [T][Q][C] partial per shard in
 * shard order. Key blocks never span two shards, so a shard's partial is the same whichever
 * process computes it and whichever other shards are scored with it: this is what lets the
 * fleet split a cache into shard groups and still reproduce the local run bit for bit.
 */
export async function scoreShardPartials(engine: ScoringEngine, shards: readonly ShardKeys[], options: ScoreShardsOptions): Promise<Float32Array[]> {
  const partials: Float32Array[] = [];
  let keysBefore = 0;

  for (const shard of shards) {
    if (shard.count === 0) continue;
    const offset = keysBefore;
    partials.push(
      await scoreAgainstCache(engine, {
        ...options,
        keyBlocks: [shard],
        onProgress: (progress) => options.onProgress?.({ keysScored: offset + progress.keysScored, keyBlocksScored: progress.keyBlocksScored }),
      }),
    );
    keysBefore += shard.count;
  }
  return partials;
}

/**
 * Merges per-shard partials with log-add-exp from left to right, into a new array. Merging in
 * one fixed order (the cache's shard order) makes the result bit-for-bit reproducible.
 */
export function foldPartials(partials: readonly Float32Array[]): Float32Array {
  if (partials.length === 0) {
    throw new CachefleetError('EMPTY_CACHE', 'The cache has no keys to score against: every shard is empty. Build the cache from a non-empty record range.');
  }
  const result = Float32Array.from(partials[0]);
  for (let i = 1; i < partials.length; i += 1) mergePartialsInto(result, partials[i]);
  return result;
}
