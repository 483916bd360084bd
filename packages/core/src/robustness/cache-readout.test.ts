import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cacheLogProbabilities, referencePartials } from '../cache/partials.js';
import { CacheReadout, type CacheKeySet } from './cache-readout.js';

const DIM = 24;
const CLASSES = 4;
const QUERIES = 5;
const THETAS = [12, 40];
/** Block sizes that are not multiples of each other, so keys of one class span several blocks. */
const BLOCK_SIZES = [70, 1, 33];

function sequence(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
}

/** Row-normalised random vectors, so that similarities lie in [-1, 1] like real keys. */
function unitRows(rows: number, seed: number): Float32Array {
  const next = sequence(seed);
  const values = Float32Array.from({ length: rows * DIM }, next);
  for (let row = 0; row < rows; row += 1) {
    const norm = Math.hypot(...values.subarray(row * DIM, (row + 1) * DIM));
    for (let k = 0; k < DIM; k += 1) values[row * DIM + k] /= norm;
  }
  return values;
}

const totalKeys = BLOCK_SIZES.reduce((sum, size) => sum + size, 0);
const keys = unitRows(totalKeys, 3);
const labels = Int32Array.from({ length: totalKeys }, (_, k) => (k * 7) % CLASSES);
const queries = unitRows(QUERIES, 9);

function keySet(): CacheKeySet {
  let offset = 0;
  const blocks = BLOCK_SIZES.map((count) => {
    const block = { keys: keys.subarray(offset * DIM, (offset + count) * DIM), labels: labels.subarray(offset, offset + count), count };
    offset += count;
    return block;
  });
  return { blocks, dim: DIM, numClasses: CLASSES };
}

/** ∂ log p_cache(y | q) / ∂q in float64: θ (Σ_{k∈y} w^y_k k − Σ_k w_k k), with w the softmax weights within class y and over all keys. */
function referenceLogProbabilityGradient(query: Float32Array, label: number, theta: number): Float64Array {
  const scores = Array.from({ length: totalKeys }, (_, k) => {
    let dot = 0;
    for (let j = 0; j < DIM; j += 1) dot += query[j] * keys[k * DIM + j];
    return theta * dot;
  });
  const maximum = Math.max(...scores);
  const weights = scores.map((score) => Math.exp(score - maximum));
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  const classTotal = weights.reduce((sum, weight, k) => sum + (labels[k] === label ? weight : 0), 0);

  const gradient = new Float64Array(DIM);
  for (let k = 0; k < totalKeys; k += 1) {
    const coefficient = theta * ((labels[k] === label ? weights[k] / classTotal : 0) - weights[k] / total);
    for (let j = 0; j < DIM; j += 1) gradient[j] += coefficient * keys[k * DIM + j];
  }
  return gradient;
}

describe('CacheReadout', () => {
  let readout: CacheReadout;

  beforeAll(async () => {
    readout = await CacheReadout.create(keySet(), 1);
  });

  afterAll(async () => {
    await readout.dispose();
  });

  it('scores like the float64 reference', async () => {
    const scores = await readout.score(queries, QUERIES, THETAS);
    const reference = cacheLogProbabilities(Float32Array.from(referencePartials(queries, QUERIES, keys, totalKeys, labels, DIM, CLASSES, THETAS)), THETAS.length, QUERIES, CLASSES);

    for (let i = 0; i < reference.length; i += 1) {
      expect(scores.logProbabilities[i]).toBeCloseTo(reference[i], 4);
    }
  });

  it('counts every key', () => {
    expect(readout.numKeys).toBe(totalKeys);
  });

  it('query gradient matches the closed form', async () => {
    const scores = await readout.score(queries, QUERIES, THETAS);

    for (const [thetaIndex, theta] of THETAS.entries()) {
      // Upstream ∂/∂p_cache(c) = [c = y] / p_cache(y) makes the loss log p_cache(y).
      const targets = Array.from({ length: QUERIES }, (_, q) => (q * 3) % CLASSES);
      const upstream = new Float64Array(QUERIES * CLASSES);
      targets.forEach((label, q) => {
        upstream[q * CLASSES + label] = 1 / Math.exp(scores.logProbabilities[(thetaIndex * QUERIES + q) * CLASSES + label]);
      });
      const gradient = await readout.queryGradient(scores, thetaIndex, upstream);

      targets.forEach((label, q) => {
        const expected = referenceLogProbabilityGradient(queries.subarray(q * DIM, (q + 1) * DIM), label, theta);
        const norm = Math.hypot(...expected);
        const error = Math.hypot(...expected.map((value, j) => value - gradient[q * DIM + j]));
        expect(error / norm, `θ ${theta}, query ${q}`).toBeLessThan(1e-4);
      });
    }
  });

  it('rejects a theta index it did not score', async () => {
    const scores = await readout.score(queries, QUERIES, THETAS);

    await expect(readout.queryGradient(scores, 2, new Float64Array(QUERIES * CLASSES))).rejects.toThrow(/thetaIndex 2 is outside the 2 thetas/);
  });

  it('rejects an empty cache', async () => {
    await expect(CacheReadout.create({ blocks: [{ keys: new Float32Array(0), labels: new Int32Array(0), count: 0 }], dim: DIM, numClasses: CLASSES }, 1)).rejects.toThrow(/no keys/);
  });
});
