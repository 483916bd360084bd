import { CachefleetError } from '../errors.js';
import { createEmptyPartials, mergePartialsInto } from './partials.js';
import { MAX_BLOCK_PAIRS, type ScoringEngine } from './scoring-engine.js';
import { assertInteger, assertLabels, assertLength, assertMinimumLength, assertThetas } from './validation.js';

/**
 * Queries per scoring call. Per 256 queries against 2,048 keys of dim 12,288 with T = 33
 * (onnxruntime-node 1.31.1, 2 threads, best of 25), blocks of 128, 256, 512 and 1,024 queries
 * took 37.1, 33.6, 32.5 and 32.4 ms: larger blocks spread the fixed work of a call over more
 * queries. At 512 each [B, N] tensor of the graph is 4 MiB.
 */
export const DEFAULT_QUERY_BLOCK_SIZE = 512;

/**
 * Keys per scoring call and per merged partial. It fixes the blocks whose partials are merged,
 * so bit-identical results need the same value on every run. At dim 12,288 a block is 96 MiB
 * of float32 keys. Each block adds T·Q·C log-add-exp merges in JavaScript, about 6 % of the
 * scoring time at T = 33, 10 classes and dim 12,288. That share grows with the class count.
 */
export const DEFAULT_KEY_BLOCK_SIZE = 2048;

/** Keys with labels as a producer yields them; only the first `count` rows are read. */
export interface KeyBlock {
  /** Row-major [count, dim] L2-normalised keys, or a larger buffer whose first rows are used. */
  keys: Float32Array;
  labels: Int32Array;
  count: number;
}

export interface ScoreProgress {
  keysScored: number;
  keyBlocksScored: number;
}

export interface ScoreAgainstCacheOptions {
  /** Row-major [numQueries, dim] L2-normalised queries. */
  queries: Float32Array;
  numQueries: number;
  dim: number;
  numClasses: number;
  thetas: readonly number[];
  /** Keys in cache order. The chunking of the stream does not change the result. */
  keyBlocks: Iterable<KeyBlock> | AsyncIterable<KeyBlock>;
  queryBlockSize?: number;
  keyBlockSize?: number;
  /** Called after each scored key block, in order. */
  onProgress?: (progress: ScoreProgress) => void;
}

/**
 * Scores every query against a whole cache and returns [T][Q][C] partials (see ScoringEngine for
 * their exact meaning). The key stream is regrouped into blocks of exactly `keyBlockSize` keys
 * (the last may be shorter), each block is scored for every query block, and the block partials
 * are merged into the result one after the other in stream order. The result therefore does not
 * depend on how the stream is chunked. It is bit-identical between runs with the same key
 * sequence, thetas, `keyBlockSize`, `queryBlockSize` and onnxruntime build. A query block of
 * another size changed the last bit of some partials with onnxruntime-node 1.31.1, probably
 * because it picks GEMM and exp kernels by shape. Thread counts 1 and 2 gave identical bits.
 *
 * Memory: the result (T·Q·C floats), one staging block of keyBlockSize·dim floats (allocated only
 * when the stream's blocks do not fall on block boundaries) and the engine's
 * queryBlockSize × keyBlockSize tensors, whatever the cache size.
 *
 * Throws EMPTY_CACHE when the stream yields no key, CLASS_COUNT_MISMATCH for a label at or above
 * numClasses and INVALID_ARGUMENT for malformed options or blocks.
 */
export async function scoreAgainstCache(engine: ScoringEngine, options: ScoreAgainstCacheOptions): Promise<Float32Array> {
  const { queries, numQueries, dim, numClasses, thetas } = options;
  const queryBlockSize = options.queryBlockSize ?? DEFAULT_QUERY_BLOCK_SIZE;
  const keyBlockSize = options.keyBlockSize ?? DEFAULT_KEY_BLOCK_SIZE;
  assertInteger('numQueries', numQueries, 1);
  assertInteger('dim', dim, 1);
  assertInteger('numClasses', numClasses, 1);
  assertInteger('queryBlockSize', queryBlockSize, 1);
  assertInteger('keyBlockSize', keyBlockSize, 1);
  assertThetas(thetas);
  assertLength('queries', queries, numQueries * dim, `[numQueries=${numQueries}, dim=${dim}]`);
  assertBlockPairs(Math.min(queryBlockSize, numQueries), keyBlockSize);

  const result = createEmptyPartials(thetas.length, numQueries, numClasses);
  const scoreBlock = async (keys: Float32Array, labels: Int32Array, count: number): Promise<void> => {
    for (let first = 0; first < numQueries; first += queryBlockSize) {
      const size = Math.min(queryBlockSize, numQueries - first);
      const block = queries.subarray(first * dim, (first + size) * dim);
      const partials = await engine.scorePartials(block, size, keys, count, labels, dim, numClasses, thetas);
      mergeQueryBlock(result, partials, thetas.length, numQueries, numClasses, first, size);
    }
  };

  const staging = new KeyStaging(keyBlockSize, dim);
  let keysSeen = 0;
  let keysScored = 0;
  let keyBlocksScored = 0;
  const scoreAndReport = async (keys: Float32Array, labels: Int32Array, count: number): Promise<void> => {
    await scoreBlock(keys, labels, count);
    keysScored += count;
    keyBlocksScored += 1;
    options.onProgress?.({ keysScored, keyBlocksScored });
  };

  for await (const block of options.keyBlocks) {
    assertKeyBlock(block, dim, numClasses, keysSeen);
    keysSeen += block.count;

    let row = 0;
    while (row < block.count) {
      // A stream aligned with the block boundaries is scored in place, without a copy.
      if (staging.count === 0 && block.count - row >= keyBlockSize) {
        const end = row + keyBlockSize;
        await scoreAndReport(block.keys.subarray(row * dim, end * dim), block.labels.subarray(row, end), keyBlockSize);
        row = end;
        continue;
      }

      row += staging.append(block, row);
      if (staging.count === keyBlockSize) {
        await scoreAndReport(staging.keys, staging.labels, keyBlockSize);
        staging.clear();
      }
    }
  }

  if (staging.count > 0) {
    const count = staging.count;
    await scoreAndReport(staging.keys.subarray(0, count * dim), staging.labels.subarray(0, count), count);
  }

  if (keysSeen === 0) {
    throw new CachefleetError('EMPTY_CACHE', 'The cache yielded no keys, so there is nothing to score against. Build the cache from at least one labelled image.', {});
  }

  return result;
}

/** Merges [T][size][C] partials of queries first..first+size into the [T][Q][C] result. */
function mergeQueryBlock(
  result: Float32Array,
  partials: Float32Array,
  numThetas: number,
  numQueries: number,
  numClasses: number,
  first: number,
  size: number,
): void {
  for (let t = 0; t < numThetas; t += 1) {
    const targetStart = (t * numQueries + first) * numClasses;
    const target = result.subarray(targetStart, targetStart + size * numClasses);
    const source = partials.subarray(t * size * numClasses, (t + 1) * size * numClasses);
    mergePartialsInto(target, source);
  }
}

function assertBlockPairs(queryBlockSize: number, keyBlockSize: number): void {
  if (queryBlockSize * keyBlockSize > MAX_BLOCK_PAIRS) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `queryBlockSize ${queryBlockSize} × keyBlockSize ${keyBlockSize} exceeds the ${MAX_BLOCK_PAIRS} query-key pairs one scoring call may hold in memory. Lower one of them, or leave both at their defaults (${DEFAULT_QUERY_BLOCK_SIZE} and ${DEFAULT_KEY_BLOCK_SIZE}).`,
      { queryBlockSize, keyBlockSize, maxBlockPairs: MAX_BLOCK_PAIRS },
    );
  }
}

function assertKeyBlock(block: KeyBlock, dim: number, numClasses: number, firstKey: number): void {
  assertInteger('keyBlocks[].count', block.count, 0);
  assertMinimumLength('keyBlocks[].keys', block.keys, block.count * dim, `[count=${block.count}, dim=${dim}]`);
  assertMinimumLength('keyBlocks[].labels', block.labels, block.count, `[count=${block.count}]`);

  // Labels are numbered by their position in the whole key stream, which the caller can look up.
  assertLabels('cache key labels', block.labels, block.count, numClasses, firstKey);
}

/** Buffer that regroups keys from arbitrary stream chunks into blocks of a fixed size. */
class KeyStaging {
  private keyBuffer: Float32Array | undefined;
  private labelBuffer: Int32Array | undefined;
  count = 0;

  constructor(
    private readonly capacity: number,
    private readonly dim: number,
  ) {}

  get keys(): Float32Array {
    this.keyBuffer ??= new Float32Array(this.capacity * this.dim);
    return this.keyBuffer;
  }

  get labels(): Int32Array {
    this.labelBuffer ??= new Int32Array(this.capacity);
    return this.labelBuffer;
  }

  /** Copies rows from `row` on until the block is full or the source ends; returns the rows copied. */
  append(block: KeyBlock, row: number): number {
    const rows = Math.min(this.capacity - this.count, block.count - row);
    this.keys.set(block.keys.subarray(row * this.dim, (row + rows) * this.dim), this.count * this.dim);
    this.labels.set(block.labels.subarray(row, row + rows), this.count);
    this.count += rows;
    return rows;
  }

  clear(): void {
    this.count = 0;
  }
}
