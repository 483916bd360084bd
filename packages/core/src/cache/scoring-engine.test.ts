import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizeKeys } from './keys.js';
import { referencePartials } from './partials.js';
import { createScoringEngine, type ScoringEngine } from './scoring-engine.js';

/** Deterministic uniform numbers in [0, 1) (mulberry32), so failures reproduce. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

function randomUnitRows(random: () => number, rows: number, dim: number): Float32Array {
  const features = Float32Array.from({ length: rows * dim }, () => random() - 0.5);
  normalizeKeys(features, rows, dim);
  return features;
}

describe('createScoringEngine', () => {
  let engine: ScoringEngine;

  beforeAll(async () => {
    engine = await createScoringEngine({ threads: 1 });
  });

  afterAll(async () => {
    await engine.dispose();
  });

  it('matches hand-computed log sums', async () => {
    const query = new Float32Array([1, 0]);
    const keys = new Float32Array([1, 0, 0, 1, 0.6, 0.8]);

    const partials = await engine.scorePartials(query, 1, keys, 3, new Int32Array([0, 1, 1]), 2, 2, [1, 2]);

    // log(e^0 + e^0.6) = 1.0374880 and log(e^0 + e^1.2) = 1.4632825; tolerance 1e-6.
    expect(partials[0]).toBeCloseTo(1, 6);
    expect(partials[1]).toBeCloseTo(1.037488, 6);
    expect(partials[2]).toBeCloseTo(2, 6);
    expect(partials[3]).toBeCloseTo(1.4632825, 6);
  });

  it('matches float64 reference on random data', async () => {
    const random = seededRandom(7);
    const [numQueries, numKeys, dim, numClasses] = [13, 301, 64, 7];
    const thetas = [10, 37.5, 90];
    const queries = randomUnitRows(random, numQueries, dim);
    const keys = randomUnitRows(random, numKeys, dim);
    const labels = Int32Array.from({ length: numKeys }, () => Math.floor(random() * numClasses));

    const partials = await engine.scorePartials(queries, numQueries, keys, numKeys, labels, dim, numClasses, thetas);
    const reference = referencePartials(queries, numQueries, keys, numKeys, labels, dim, numClasses, thetas);

    expect(partials.length).toBe(reference.length);
    // Relative 1e-5: float32 GEMM and exp against float64, scaled by theta up to 90.
    const worst = Math.max(...reference.map((value, index) => Math.abs(partials[index] - value) / Math.abs(value)));
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  it('keeps theta 200 finite', async () => {
    // Query equal to the class-0 key: theta * q·k = 200 overflows float32 exp without a shift.
    const query = new Float32Array([0.6, 0.8]);
    const keys = new Float32Array([0.6, 0.8, 0.8, 0.6, 0, 1]);

    const partials = await engine.scorePartials(query, 1, keys, 3, new Int32Array([0, 1, 1]), 2, 2, [200]);

    // float32 q·q may differ from 1 by one rounding step: tolerance 1e-4 at 200.
    expect(partials[0]).toBeCloseTo(200, 4);
    // Class 1: log(e^192 + e^160) = 192 + log(1 + e^-32) = 192 to float32 precision (1e-4 at 192).
    expect(partials[1]).toBeCloseTo(192, 4);
  });

  it('underflows far classes to -Infinity', async () => {
    // Class 1 lies 200 * (1 - 0.5) = 100 nats below class 0, beyond the float32 range of e^-87.3.
    const query = new Float32Array([1, 0]);
    const keys = new Float32Array([1, 0, 0.5, Math.sqrt(0.75)]);

    const partials = await engine.scorePartials(query, 1, keys, 2, new Int32Array([0, 1]), 2, 2, [200]);

    expect(partials[0]).toBe(200);
    expect(partials[1]).toBe(Number.NEGATIVE_INFINITY);
  });

  it('scores a zero key', async () => {
    // A zero key has similarity 0 with every query: it adds exp(0) = 1 to its class.
    const query = new Float32Array([0, 1]);
    const keys = new Float32Array([0, 0, 0, 1]);

    const partials = await engine.scorePartials(query, 1, keys, 2, new Int32Array([0, 1]), 2, 2, [10]);

    expect(partials[0]).toBe(0);
    expect(partials[1]).toBe(10);
  });

  it('rejects a label beyond classes', async () => {
    const call = engine.scorePartials(new Float32Array(2), 1, new Float32Array(2), 1, new Int32Array([3]), 2, 3, [10]);

    await expect(call).rejects.toThrow(expect.objectContaining({ code: 'CLASS_COUNT_MISMATCH' }));
  });

  it('rejects an empty key block', async () => {
    const call = engine.scorePartials(new Float32Array(2), 1, new Float32Array(0), 0, new Int32Array(0), 2, 3, [10]);

    await expect(call).rejects.toThrow(/numKeys must be an integer of at least 1, got 0/);
  });

  it('rejects a non-positive theta', async () => {
    const call = engine.scorePartials(new Float32Array(2), 1, new Float32Array(2), 1, new Int32Array(1), 2, 1, [10, 0]);

    await expect(call).rejects.toThrow(/thetas\[1\] is 0/);
  });

  it('rejects NaN features', async () => {
    const call = engine.scorePartials(new Float32Array([Number.NaN, 0]), 1, new Float32Array([1, 0]), 1, new Int32Array(1), 2, 1, [10]);

    await expect(call).rejects.toThrow(expect.objectContaining({ code: 'NON_FINITE_ACTIVATION' }));
  });
});

describe('disposed scoring engine', () => {
  it('rejects later calls', async () => {
    const engine = await createScoringEngine({ threads: 1 });
    await engine.dispose();
    await engine.dispose();

    const call = engine.scorePartials(new Float32Array(2), 1, new Float32Array(2), 1, new Int32Array(1), 2, 1, [10]);

    await expect(call).rejects.toThrow(expect.objectContaining({ code: 'BACKEND_UNAVAILABLE' }));
  });
});
