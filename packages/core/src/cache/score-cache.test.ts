import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizeKeys } from './keys.js';
import { referencePartials } from './partials.js';
import { scoreAgainstCache, type KeyBlock, type ScoreAgainstCacheOptions } from './score-cache.js';
import { createScoringEngine, type ScoringEngine } from './scoring-engine.js';

function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

const [numQueries, numKeys, dim, numClasses] = [37, 500, 48, 6];
const thetas = [10, 50, 90];
const random = seededRandom(11);
const queries = Float32Array.from({ length: numQueries * dim }, () => random() - 0.5);
const keys = Float32Array.from({ length: numKeys * dim }, () => random() - 0.5);
const labels = Int32Array.from({ length: numKeys }, () => Math.floor(random() * numClasses));
normalizeKeys(queries, numQueries, dim);
normalizeKeys(keys, numKeys, dim);

/** Yields the keys in chunks of `chunkSize` rows, as a key store reader would. */
function* chunksOf(chunkSize: number): Generator<KeyBlock> {
  for (let first = 0; first < numKeys; first += chunkSize) {
    const end = Math.min(first + chunkSize, numKeys);
    yield { keys: keys.slice(first * dim, end * dim), labels: labels.slice(first, end), count: end - first };
  }
}

function options(overrides: Partial<ScoreAgainstCacheOptions>): ScoreAgainstCacheOptions {
  return { queries, numQueries, dim, numClasses, thetas, keyBlocks: chunksOf(numKeys), ...overrides };
}

describe('scoreAgainstCache', () => {
  let engine: ScoringEngine;

  beforeAll(async () => {
    engine = await createScoringEngine({ threads: 1 });
  });

  afterAll(async () => {
    await engine.dispose();
  });

  it('merged key blocks equal whole', async () => {
    const whole = await scoreAgainstCache(engine, options({ keyBlockSize: numKeys }));
    const merged = await scoreAgainstCache(engine, options({ keyBlockSize: 64, queryBlockSize: 8 }));

    // Relative 1e-5: float32 partials of 8 blocks merged one by one.
    const worst = Math.max(...whole.map((value, index) => Math.abs(merged[index] - value) / Math.abs(value)));
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  it('matches float64 reference', async () => {
    const partials = await scoreAgainstCache(engine, options({ keyBlockSize: 100, queryBlockSize: 16 }));
    const reference = referencePartials(queries, numQueries, keys, numKeys, labels, dim, numClasses, thetas);

    const worst = Math.max(...reference.map((value, index) => Math.abs(partials[index] - value) / Math.abs(value)));
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  it('repeats bit for bit', async () => {
    const first = await scoreAgainstCache(engine, options({ keyBlockSize: 64 }));
    const second = await scoreAgainstCache(engine, options({ keyBlockSize: 64 }));

    expect(Buffer.from(second.buffer).equals(Buffer.from(first.buffer))).toBe(true);
  });

  it('ignores stream chunking bit for bit', async () => {
    const aligned = await scoreAgainstCache(engine, options({ keyBlockSize: 64, keyBlocks: chunksOf(128) }));
    const ragged = await scoreAgainstCache(engine, options({ keyBlockSize: 64, keyBlocks: chunksOf(7) }));

    expect(Buffer.from(ragged.buffer).equals(Buffer.from(aligned.buffer))).toBe(true);
  });

  it('ignores thread count bit for bit', async () => {
    // Observed with onnxruntime-node 1.31.1 on x86-64; a fleet mixing thread counts relies on it.
    const twoThreads = await createScoringEngine({ threads: 2 });
    try {
      const single = await scoreAgainstCache(engine, options({ keyBlockSize: 64 }));
      const double = await scoreAgainstCache(twoThreads, options({ keyBlockSize: 64 }));

      expect(Buffer.from(double.buffer).equals(Buffer.from(single.buffer))).toBe(true);
    } finally {
      await twoThreads.dispose();
    }
  });

  it('accepts async key streams', async () => {
    async function* asyncChunks(): AsyncGenerator<KeyBlock> {
      yield* chunksOf(50);
    }

    const fromSync = await scoreAgainstCache(engine, options({ keyBlockSize: 64, keyBlocks: chunksOf(50) }));
    const fromAsync = await scoreAgainstCache(engine, options({ keyBlockSize: 64, keyBlocks: asyncChunks() }));

    expect(Buffer.from(fromAsync.buffer).equals(Buffer.from(fromSync.buffer))).toBe(true);
  });

  it('reads only counted rows', async () => {
    // A reused buffer with NaN rows past `count`; scoring them would make the result NaN.
    const padded = (first: number, end: number): KeyBlock => {
      const buffer = new Float32Array((end - first + 3) * dim).fill(Number.NaN);
      buffer.set(keys.subarray(first * dim, end * dim));
      const bufferLabels = new Int32Array(end - first + 3).fill(numClasses);
      bufferLabels.set(labels.subarray(first, end));
      return { keys: buffer, labels: bufferLabels, count: end - first };
    };

    const exact = await scoreAgainstCache(engine, options({ keyBlockSize: 64, keyBlocks: chunksOf(100) }));
    const fromPadded = await scoreAgainstCache(engine, options({ keyBlockSize: 64, keyBlocks: [padded(0, 100), padded(100, 500)] }));

    expect(Buffer.from(fromPadded.buffer).equals(Buffer.from(exact.buffer))).toBe(true);
  });

  it('reports progress per key block', async () => {
    const reports: number[] = [];

    await scoreAgainstCache(engine, options({ keyBlockSize: 200, onProgress: (progress) => reports.push(progress.keysScored) }));

    expect(reports).toEqual([200, 400, 500]);
  });

  it('rejects an empty cache', async () => {
    const empty: KeyBlock[] = [{ keys: new Float32Array(0), labels: new Int32Array(0), count: 0 }];

    await expect(scoreAgainstCache(engine, options({ keyBlocks: empty }))).rejects.toThrow(expect.objectContaining({ code: 'EMPTY_CACHE' }));
  });

  it('rejects a class-count mismatch', async () => {
    const badLabels = labels.slice();
    badLabels[321] = numClasses;
    const blocks = [{ keys: keys.subarray(0, 300 * dim), labels: badLabels.subarray(0, 300), count: 300 }, { keys: keys.subarray(300 * dim), labels: badLabels.subarray(300), count: 200 }];

    await expect(scoreAgainstCache(engine, options({ keyBlocks: blocks }))).rejects.toThrow(/cache key labels\[321\] is class 6, but numClasses is 6/);
  });

  it('rejects oversized blocks', async () => {
    await expect(scoreAgainstCache(engine, options({ queryBlockSize: 37, keyBlockSize: 2 ** 25 }))).rejects.toThrow(/queryBlockSize 37 × keyBlockSize 33554432 exceeds/);
  });

  it('rejects a short key buffer', async () => {
    const blocks = [{ keys: new Float32Array(dim), labels: new Int32Array(2), count: 2 }];

    await expect(scoreAgainstCache(engine, options({ keyBlocks: blocks }))).rejects.toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
