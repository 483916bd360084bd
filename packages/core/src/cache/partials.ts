/**
 * Per-class log-sum-exp partials of the cache model (Orhan 2018, "A Simple Cache Model for Image
 * Recognition"). For a block of queries q and a block of keys k with labels y_k,
 *
 *   L[t][q][c] = log(sum over keys k with y_k = c of exp(theta_t * q·k)),
 *
 * stored row-major [T][Q][C] in a Float32Array, -Infinity for a class without keys in the block.
 * Partials of disjoint key blocks combine exactly with log-add-exp, so a cache is scored block by
 * block and merged in a fixed block order.
 */
import { CachefleetError } from '../errors.js';
import { assertInteger, assertLength, assertThetas } from './validation.js';

/** Returns the number of values of a [T][Q][C] partials array. */
export function partialsLength(numThetas: number, numQueries: number, numClasses: number): number {
  return numThetas * numQueries * numClasses;
}

/** Allocates [T][Q][C] partials of an empty key set: every value is -Infinity, the log of 0. */
export function createEmptyPartials(numThetas: number, numQueries: number, numClasses: number): Float32Array {
  return new Float32Array(partialsLength(numThetas, numQueries, numClasses)).fill(Number.NEGATIVE_INFINITY);
}

/**
 * Returns log(exp(a) + exp(b)) without overflow. -Infinity is the identity, so merging with an
 * empty partial returns the other value unchanged, bit for bit.
 */
export function logAddExp(a: number, b: number): number {
  if (a === Number.NEGATIVE_INFINITY) {
    return b;
  }
  if (b === Number.NEGATIVE_INFINITY) {
    return a;
  }

  const larger = a > b ? a : b;
  const smaller = a > b ? b : a;
  return larger + Math.log1p(Math.exp(smaller - larger));
}

/**
 * Merges `source` into `target` element by element with log-add-exp, in float64 rounded once to
 * float32 per element. The operation is symmetric but not associative in float32, so callers that
 * need bit-identical results merge blocks in one fixed order.
 */
export function mergePartialsInto(target: Float32Array, source: Float32Array): void {
  assertLength('source', source, target.length, `of target (${target.length} values)`);

  for (let index = 0; index < target.length; index += 1) {
    target[index] = logAddExp(target[index], source[index]);
  }
}

/**
 * Turns [T][Q][C] partials into log p_cache(c | q) for each theta, normalising each query over
 * the classes in float64. Classes without keys stay -Infinity.
 *
 * Throws EMPTY_CACHE when every class of a query is -Infinity, which means no key was scored.
 */
export function cacheLogProbabilities(partials: Float32Array, numThetas: number, numQueries: number, numClasses: number): Float32Array {
  assertInteger('numThetas', numThetas, 1);
  assertInteger('numQueries', numQueries, 0);
  assertInteger('numClasses', numClasses, 1);
  assertLength('partials', partials, partialsLength(numThetas, numQueries, numClasses), `[T=${numThetas}][Q=${numQueries}][C=${numClasses}]`);

  const logProbabilities = new Float32Array(partials.length);

  for (let row = 0; row < numThetas * numQueries; row += 1) {
    const start = row * numClasses;
    const normaliser = logSumExpRow(partials, start, numClasses);

    if (normaliser === Number.NEGATIVE_INFINITY) {
      throw new CachefleetError(
        'EMPTY_CACHE',
        `Partials of query ${row % numQueries} at theta index ${Math.floor(row / numQueries)} are -Infinity for every class, so no key was scored. Score against a cache with at least one key.`,
        { query: row % numQueries, thetaIndex: Math.floor(row / numQueries) },
      );
    }

    for (let c = 0; c < numClasses; c += 1) {
      logProbabilities[start + c] = partials[start + c] - normaliser;
    }
  }

  return logProbabilities;
}

/** Returns log(sum of exp(values[start + c])) over `length` values, in float64. */
export function logSumExpRow(values: ArrayLike<number>, start: number, length: number): number {
  let maximum = Number.NEGATIVE_INFINITY;
  for (let c = 0; c < length; c += 1) {
    maximum = Math.max(maximum, values[start + c]);
  }

  if (maximum === Number.NEGATIVE_INFINITY || !Number.isFinite(maximum)) {
    return maximum;
  }

  let sum = 0;
  for (let c = 0; c < length; c += 1) {
    sum += Math.exp(values[start + c] - maximum);
  }
  return maximum + Math.log(sum);
}

/**
 * Computes [T][Q][C] partials in float64 with scalar loops, as the reference the tests compare
 * the scoring engine with. Each class gets its own maximum shift, so no class underflows. The
 * cost is O(T·Q·N·dim): use it only on small inputs.
 */
export function referencePartials(
  queries: Float32Array,
  numQueries: number,
  keys: Float32Array,
  numKeys: number,
  keyLabels: Int32Array,
  dim: number,
  numClasses: number,
  thetas: readonly number[],
): Float64Array {
  assertThetas(thetas);
  assertLength('queries', queries, numQueries * dim, `[numQueries=${numQueries}, dim=${dim}]`);
  assertLength('keys', keys, numKeys * dim, `[numKeys=${numKeys}, dim=${dim}]`);
  assertLength('keyLabels', keyLabels, numKeys, `[numKeys=${numKeys}]`);

  const numThetas = thetas.length;
  const partials = new Float64Array(partialsLength(numThetas, numQueries, numClasses)).fill(Number.NEGATIVE_INFINITY);
  const similarities = new Float64Array(numKeys);

  for (let q = 0; q < numQueries; q += 1) {
    for (let k = 0; k < numKeys; k += 1) {
      let dot = 0;
      for (let j = 0; j < dim; j += 1) {
        dot += queries[q * dim + j] * keys[k * dim + j];
      }
      similarities[k] = dot;
    }

    for (let t = 0; t < numThetas; t += 1) {
      const rowStart = (t * numQueries + q) * numClasses;
      const classMaximum = new Float64Array(numClasses).fill(Number.NEGATIVE_INFINITY);
      for (let k = 0; k < numKeys; k += 1) {
        const c = keyLabels[k];
        classMaximum[c] = Math.max(classMaximum[c], thetas[t] * similarities[k]);
      }

      const classSum = new Float64Array(numClasses);
      for (let k = 0; k < numKeys; k += 1) {
        const c = keyLabels[k];
        classSum[c] += Math.exp(thetas[t] * similarities[k] - classMaximum[c]);
      }

      for (let c = 0; c < numClasses; c += 1) {
        if (classSum[c] > 0) {
          partials[rowStart + c] = classMaximum[c] + Math.log(classSum[c]);
        }
      }
    }
  }

  return partials;
}
