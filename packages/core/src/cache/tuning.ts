/**
 * Grid search over theta (cache inverse temperature) and lambda (cache weight) for the mixture
 * p(y|x) = (1 - lambda) * softmax(model)(y) + lambda * p_cache(y|x), the cache model of Orhan
 * (2018), "A Simple Cache Model for Image Recognition". Partials are computed once per theta;
 * every lambda reuses them.
 */
import { CachefleetError } from '../errors.js';
import { logSumExpRow, partialsLength } from './partials.js';
import { assertInteger, assertLabels, assertLambda, assertLambdas, assertLength, assertThetas } from './validation.js';

/** Returns `count` evenly spaced values from `start` to `stop`, both included. */
export function linspace(start: number, stop: number, count: number): number[] {
  assertInteger('count', count, 1);
  if (!Number.isFinite(start) || !Number.isFinite(stop)) {
    throw new CachefleetError('INVALID_ARGUMENT', `linspace needs finite ends, got start ${start} and stop ${stop}. Pass finite numbers.`, {
      start,
      stop,
    });
  }

  if (count === 1) {
    return [start];
  }
  return Array.from({ length: count }, (_, index) => (index === count - 1 ? stop : start + ((stop - start) * index) / (count - 1)));
}

/** Theta grid 10, 12.5, …, 90: a step of 2.5 over the range searched for CIFAR ResNets. */
export const DEFAULT_THETAS: readonly number[] = Object.freeze(linspace(10, 90, 33));

/** Lambda grid 0.1, 0.125, …, 0.9. */
export const DEFAULT_LAMBDAS: readonly number[] = Object.freeze(linspace(0.1, 0.9, 33));

export interface EvaluateGridOptions {
  /** Row-major [Q][C] model log-probabilities or logits; each row goes through softmax. */
  modelLogProbs: Float32Array;
  /** Row-major [T][Q][C] cache partials for the same queries, one slice per theta. */
  partials: Float32Array;
  /** True class of each query; its length sets Q. */
  labels: Int32Array;
  thetas: readonly number[];
  lambdas: readonly number[];
}

/** Correct counts and accuracies of the mixture for every (theta, lambda) of a grid. */
export interface GridEvaluation {
  numQueries: number;
  numClasses: number;
  thetas: number[];
  lambdas: number[];
  /** correct[thetaIndex][lambdaIndex]: queries whose predicted class is their label. */
  correct: number[][];
  accuracy: number[][];
  /** Correct counts of the cache alone (lambda = 1), per theta. */
  cacheOnlyCorrect: number[];
  cacheOnlyAccuracy: number[];
  /** Correct count of the model alone (lambda = 0). */
  baselineCorrect: number;
  baselineAccuracy: number;
}

/** One point of the grid with its score. */
export interface GridChoice {
  thetaIndex: number;
  lambdaIndex: number;
  theta: number;
  lambda: number;
  correct: number;
  accuracy: number;
}

/**
 * Counts correct predictions of the mixture for every theta and lambda, plus the cache alone per
 * theta and the model alone. Predictions take the class of highest mixture probability, the
 * lowest class index on ties; the mixture is computed in float64.
 */
export function evaluateGrid(options: EvaluateGridOptions): GridEvaluation {
  const { modelLogProbs, partials, labels, thetas, lambdas } = options;
  assertThetas(thetas);
  assertLambdas(lambdas);
  const numQueries = labels.length;
  const numClasses = deriveClassCount(modelLogProbs, numQueries);
  assertLength('partials', partials, partialsLength(thetas.length, numQueries, numClasses), `[T=${thetas.length}][Q=${numQueries}][C=${numClasses}]`);
  assertLabels('labels', labels, numQueries, numClasses);

  const modelProbabilities = softmaxRows(modelLogProbs, numQueries, numClasses);
  const cacheProbabilities = new Float64Array(numClasses);
  const correct = thetas.map(() => new Array<number>(lambdas.length).fill(0));
  const cacheOnlyCorrect = new Array<number>(thetas.length).fill(0);

  for (let t = 0; t < thetas.length; t += 1) {
    for (let q = 0; q < numQueries; q += 1) {
      const modelStart = q * numClasses;
      fillCacheProbabilities(cacheProbabilities, partials, (t * numQueries + q) * numClasses, numClasses, q, t);

      for (let l = 0; l < lambdas.length; l += 1) {
        if (argmaxMixture(modelProbabilities, modelStart, cacheProbabilities, numClasses, lambdas[l]) === labels[q]) {
          correct[t][l] += 1;
        }
      }
      if (argmaxMixture(modelProbabilities, modelStart, cacheProbabilities, numClasses, 1) === labels[q]) {
        cacheOnlyCorrect[t] += 1;
      }
    }
  }

  let baselineCorrect = 0;
  for (let q = 0; q < numQueries; q += 1) {
    if (argmaxRow(modelProbabilities, q * numClasses, numClasses) === labels[q]) {
      baselineCorrect += 1;
    }
  }

  return {
    numQueries,
    numClasses,
    thetas: [...thetas],
    lambdas: [...lambdas],
    correct,
    accuracy: correct.map((row) => row.map((count) => count / numQueries)),
    cacheOnlyCorrect,
    cacheOnlyAccuracy: cacheOnlyCorrect.map((count) => count / numQueries),
    baselineCorrect,
    baselineAccuracy: baselineCorrect / numQueries,
  };
}

/**
 * Returns the grid point with the most correct predictions. Counts are compared as integers;
 * ties go to the lowest theta, then to the lowest lambda, the smoothest mixture of the tied ones.
 */
export function pickBest(evaluation: GridEvaluation): GridChoice {
  const { thetas, lambdas, correct } = evaluation;
  let best: GridChoice | undefined;

  for (let t = 0; t < thetas.length; t += 1) {
    for (let l = 0; l < lambdas.length; l += 1) {
      const candidate: GridChoice = {
        thetaIndex: t,
        lambdaIndex: l,
        theta: thetas[t],
        lambda: lambdas[l],
        correct: correct[t][l],
        accuracy: correct[t][l] / evaluation.numQueries,
      };
      if (best === undefined || isBetterChoice(candidate, best)) {
        best = candidate;
      }
    }
  }

  if (best === undefined) {
    throw new CachefleetError('INVALID_ARGUMENT', 'The grid evaluation has no thetas or lambdas. Evaluate a grid with at least one of each.', {});
  }
  return best;
}

function isBetterChoice(candidate: GridChoice, best: GridChoice): boolean {
  if (candidate.correct !== best.correct) {
    return candidate.correct > best.correct;
  }
  if (candidate.theta !== best.theta) {
    return candidate.theta < best.theta;
  }
  return candidate.lambda < best.lambda;
}

/**
 * Predicts the class of each query under the mixture with one theta's [Q][C] partials and one
 * lambda, with the same float64 arithmetic and tie rule (lowest class index) as evaluateGrid.
 */
export function predictClasses(modelLogProbs: Float32Array, partialsOneTheta: Float32Array, lambda: number, numClasses: number): Int32Array {
  assertLambda(lambda);
  assertInteger('numClasses', numClasses, 1);
  const numQueries = modelLogProbs.length / numClasses;
  if (!Number.isInteger(numQueries)) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `modelLogProbs has ${modelLogProbs.length} values, which is not a whole number of rows of ${numClasses} classes. Pass [Q][C] log-probabilities and the class count C.`,
      { modelLogProbsLength: modelLogProbs.length, numClasses },
    );
  }
  assertLength('partialsOneTheta', partialsOneTheta, numQueries * numClasses, `[Q=${numQueries}][C=${numClasses}]`);

  const modelProbabilities = softmaxRows(modelLogProbs, numQueries, numClasses);
  const cacheProbabilities = new Float64Array(numClasses);
  const predictions = new Int32Array(numQueries);

  for (let q = 0; q < numQueries; q += 1) {
    fillCacheProbabilities(cacheProbabilities, partialsOneTheta, q * numClasses, numClasses, q, 0);
    predictions[q] = argmaxMixture(modelProbabilities, q * numClasses, cacheProbabilities, numClasses, lambda);
  }

  return predictions;
}

function deriveClassCount(modelLogProbs: Float32Array, numQueries: number): number {
  const numClasses = numQueries === 0 ? 0 : modelLogProbs.length / numQueries;
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `modelLogProbs has ${modelLogProbs.length} values, which is not a whole number of classes for the ${numQueries} labels. Pass [Q][C] log-probabilities for the labelled queries.`,
      { modelLogProbsLength: modelLogProbs.length, numQueries },
    );
  }
  return numClasses;
}

/** Returns softmax of each row of a [rows][C] array in float64. */
function softmaxRows(logits: Float32Array, rows: number, numClasses: number): Float64Array {
  const probabilities = new Float64Array(rows * numClasses);

  for (let row = 0; row < rows; row += 1) {
    const start = row * numClasses;
    const normaliser = logSumExpRow(logits, start, numClasses);
    if (!Number.isFinite(normaliser)) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Model log-probabilities of query ${row} have no finite softmax (log-sum-exp ${normaliser}). Check the model output for NaN, +Infinity or a row of -Infinity.`,
        { query: row, logSumExp: normaliser },
      );
    }
    for (let c = 0; c < numClasses; c += 1) {
      probabilities[start + c] = Math.exp(logits[start + c] - normaliser);
    }
  }

  return probabilities;
}

/** Writes p_cache over the classes of one [C] partials row into `target`, in float64. */
function fillCacheProbabilities(target: Float64Array, partials: Float32Array, start: number, numClasses: number, query: number, thetaIndex: number): void {
  const normaliser = logSumExpRow(partials, start, numClasses);
  if (!Number.isFinite(normaliser)) {
    throw new CachefleetError(
      'EMPTY_CACHE',
      `Cache partials of query ${query} at theta index ${thetaIndex} have log-sum-exp ${normaliser}, so no key was scored or a partial is invalid. Score against a non-empty cache.`,
      { query, thetaIndex, logSumExp: normaliser },
    );
  }

  for (let c = 0; c < numClasses; c += 1) {
    target[c] = Math.exp(partials[start + c] - normaliser);
  }
}

function argmaxMixture(modelProbabilities: Float64Array, modelStart: number, cacheProbabilities: Float64Array, numClasses: number, lambda: number): number {
  let bestClass = 0;
  let bestValue = Number.NEGATIVE_INFINITY;

  for (let c = 0; c < numClasses; c += 1) {
    const value = (1 - lambda) * modelProbabilities[modelStart + c] + lambda * cacheProbabilities[c];
    if (value > bestValue) {
      bestValue = value;
      bestClass = c;
    }
  }
  return bestClass;
}

function argmaxRow(values: Float64Array, start: number, length: number): number {
  let bestClass = 0;
  for (let c = 1; c < length; c += 1) {
    if (values[start + c] > values[start + bestClass]) {
      bestClass = c;
    }
  }
  return bestClass;
}
