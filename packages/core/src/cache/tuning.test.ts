import { describe, expect, it } from 'vitest';
import { DEFAULT_LAMBDAS, DEFAULT_THETAS, evaluateGrid, linspace, pickBest, predictClasses, type GridEvaluation } from './tuning.js';

function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/** Counts correct argmaxes of (1 - lambda) softmax(model) + lambda softmax(partials), written out plainly. */
function countCorrectDirectly(modelLogProbs: Float32Array, partials: Float32Array, labels: Int32Array, numClasses: number, lambda: number): number {
  const softmax = (values: Float32Array, start: number): number[] => {
    const row = Array.from(values.subarray(start, start + numClasses));
    const maximum = Math.max(...row);
    const exps = row.map((value) => Math.exp(value - maximum));
    const sum = exps.reduce((total, value) => total + value, 0);
    return exps.map((value) => value / sum);
  };

  let correct = 0;
  labels.forEach((label, q) => {
    const model = softmax(modelLogProbs, q * numClasses);
    const cache = softmax(partials, q * numClasses);
    const mixture = model.map((probability, c) => (1 - lambda) * probability + lambda * cache[c]);
    correct += mixture.indexOf(Math.max(...mixture)) === label ? 1 : 0;
  });
  return correct;
}

const logOf = (values: number[]): Float32Array => Float32Array.from(values, Math.log);

// Two queries of class 1. Model: q0 [0.6, 0.4], q1 [0.3, 0.7]. Cache at theta index 0:
// q0 [0.1, 0.9], q1 [0.8, 0.2]; at theta index 1: q0 [0.5, 0.5], q1 [0.2, 0.8].
// At theta index 0, q0 is right for lambda > 0.2 and q1 for lambda < 0.4.
const handCase = {
  modelLogProbs: logOf([0.6, 0.4, 0.3, 0.7]),
  partials: logOf([0.1, 0.9, 0.8, 0.2, 0.5, 0.5, 0.2, 0.8]),
  labels: new Int32Array([1, 1]),
  thetas: [10, 20],
  lambdas: [0.1, 0.3, 0.5],
};

describe('linspace', () => {
  it('includes both ends', () => {
    expect(linspace(10, 90, 33)[0]).toBe(10);
    expect(linspace(10, 90, 33)[32]).toBe(90);
    expect(linspace(10, 90, 33)[1]).toBe(12.5);
    expect(linspace(4, 8, 1)).toEqual([4]);
  });

  it('sizes the default grids', () => {
    expect(DEFAULT_THETAS.length).toBe(33);
    expect(DEFAULT_LAMBDAS.length).toBe(33);
    expect(DEFAULT_LAMBDAS[0]).toBe(0.1);
    expect(DEFAULT_LAMBDAS[32]).toBe(0.9);
  });
});

describe('evaluateGrid', () => {
  it('counts hand-computed mixtures', () => {
    const evaluation = evaluateGrid(handCase);

    expect(evaluation.correct).toEqual([
      [1, 2, 1],
      [1, 1, 1],
    ]);
    expect(evaluation.accuracy[0][1]).toBe(1);
  });

  it('scores cache alone and model alone', () => {
    const evaluation = evaluateGrid(handCase);

    // Theta index 1, q0: the cache tie [0.5, 0.5] goes to class 0, the lowest index.
    expect(evaluation.cacheOnlyCorrect).toEqual([1, 1]);
    expect(evaluation.baselineCorrect).toBe(1);
    expect(evaluation.baselineAccuracy).toBe(0.5);
  });

  it('lambda sweep equals direct prediction', () => {
    const random = seededRandom(3);
    const [numQueries, numClasses] = [400, 5];
    const thetas = [10, 30, 60];
    const modelLogProbs = Float32Array.from({ length: numQueries * numClasses }, () => 4 * random());
    const partials = Float32Array.from({ length: thetas.length * numQueries * numClasses }, () => 50 + 10 * random());
    const labels = Int32Array.from({ length: numQueries }, () => Math.floor(random() * numClasses));

    const evaluation = evaluateGrid({ modelLogProbs, partials, labels, thetas, lambdas: DEFAULT_LAMBDAS });

    for (let t = 0; t < thetas.length; t += 1) {
      DEFAULT_LAMBDAS.forEach((lambda, l) => {
        const direct = countCorrectDirectly(modelLogProbs, partials.subarray(t * numQueries * numClasses), labels, numClasses, lambda);
        expect(evaluation.correct[t][l], `theta ${thetas[t]}, lambda ${lambda}`).toBe(direct);
      });
    }
  });

  it('rejects a non-positive theta', () => {
    expect(() => evaluateGrid({ ...handCase, thetas: [10, -1] })).toThrow(/thetas\[1\] is -1, but every theta must be a finite float32 number above 0/);
  });

  it('rejects a lambda above one', () => {
    expect(() => evaluateGrid({ ...handCase, lambdas: [0.5, 1.5] })).toThrow(/lambdas\[1\] is 1.5, but a mixture weight must lie in \[0, 1\]/);
  });

  it('rejects an empty lambda grid', () => {
    expect(() => evaluateGrid({ ...handCase, lambdas: [] })).toThrow(/lambdas is empty/);
  });

  it('rejects a label beyond classes', () => {
    expect(() => evaluateGrid({ ...handCase, labels: new Int32Array([1, 2]) })).toThrow(expect.objectContaining({ code: 'CLASS_COUNT_MISMATCH' }));
  });

  it('rejects NaN model output', () => {
    const modelLogProbs = Float32Array.from([0, Number.NaN, 0, 0]);

    expect(() => evaluateGrid({ ...handCase, modelLogProbs })).toThrow(/query 0 have no finite softmax/);
  });

  it('rejects mismatched partials length', () => {
    expect(() => evaluateGrid({ ...handCase, partials: new Float32Array(6) })).toThrow(/partials has 6 values/);
  });
});

describe('pickBest', () => {
  it('breaks ties by theta, then lambda', () => {
    const evaluation: GridEvaluation = {
      numQueries: 10,
      numClasses: 2,
      thetas: [20, 10],
      lambdas: [0.7, 0.2],
      correct: [
        [3, 5],
        [5, 5],
      ],
      accuracy: [
        [0.3, 0.5],
        [0.5, 0.5],
      ],
      cacheOnlyCorrect: [0, 0],
      cacheOnlyAccuracy: [0, 0],
      baselineCorrect: 0,
      baselineAccuracy: 0,
    };

    const best = pickBest(evaluation);

    expect(best.theta).toBe(10);
    expect(best.lambda).toBe(0.2);
    expect(best.thetaIndex).toBe(1);
    expect(best.lambdaIndex).toBe(1);
    expect(best.correct).toBe(5);
  });

  it('prefers more correct predictions', () => {
    const best = pickBest(evaluateGrid(handCase));

    expect(best.correct).toBe(2);
    expect(best.lambda).toBe(0.3);
  });
});

describe('predictClasses', () => {
  it('predicts hand-computed classes', () => {
    const firstTheta = handCase.partials.subarray(0, 4);

    expect(Array.from(predictClasses(handCase.modelLogProbs, firstTheta, 0.1, 2))).toEqual([0, 1]);
    expect(Array.from(predictClasses(handCase.modelLogProbs, firstTheta, 0.3, 2))).toEqual([1, 1]);
    expect(Array.from(predictClasses(handCase.modelLogProbs, firstTheta, 0.5, 2))).toEqual([1, 0]);
  });

  it('rejects a lambda below zero', () => {
    expect(() => predictClasses(handCase.modelLogProbs, handCase.partials.subarray(0, 4), -0.1, 2)).toThrow(/lambda is -0.1/);
  });
});
