import { describe, expect, it } from 'vitest';
import { cacheLogProbabilities, createEmptyPartials, logAddExp, mergePartialsInto, referencePartials } from './partials.js';

// Query (1, 0); keys (1, 0) of class 0, (0, 1) and (0.6, 0.8) of class 1, so q·k = 1, 0, 0.6.
const query = new Float32Array([1, 0]);
const keys = new Float32Array([1, 0, 0, 1, 0.6, 0.8]);
const labels = new Int32Array([0, 1, 1]);

describe('referencePartials', () => {
  it('matches hand-computed log sums', () => {
    const partials = referencePartials(query, 1, keys, 3, labels, 2, 2, [1, 2]);

    // theta 1: log(e^1) = 1 and log(e^0 + e^0.6) = log(2.8221188) = 1.0374880.
    // theta 2: log(e^2) = 2 and log(e^0 + e^1.2) = log(4.3201169) = 1.4632825. Tolerance 1e-6.
    expect(partials[0]).toBeCloseTo(1, 6);
    expect(partials[1]).toBeCloseTo(1.037488, 6);
    expect(partials[2]).toBeCloseTo(2, 6);
    expect(partials[3]).toBeCloseTo(1.4632825, 6);
  });

  it('marks classes without keys', () => {
    const partials = referencePartials(query, 1, keys, 3, labels, 2, 3, [1]);

    expect(partials[2]).toBe(Number.NEGATIVE_INFINITY);
  });
});

describe('cacheLogProbabilities', () => {
  it('matches hand-computed probabilities', () => {
    const partials = Float32Array.from(referencePartials(query, 1, keys, 3, labels, 2, 2, [1, 2]));

    const logProbabilities = cacheLogProbabilities(partials, 2, 1, 2);

    // p0 = e / (e + 1 + e^0.6) = 0.4906291 at theta 1 and e^2 / (e^2 + 1 + e^1.2) = 0.6310485
    // at theta 2. Tolerance 1e-6 for float32 partials.
    expect(Math.exp(logProbabilities[0])).toBeCloseTo(0.4906291, 6);
    expect(Math.exp(logProbabilities[1])).toBeCloseTo(0.5093709, 6);
    expect(Math.exp(logProbabilities[2])).toBeCloseTo(0.6310485, 6);
    expect(Math.exp(logProbabilities[3])).toBeCloseTo(0.3689515, 6);
  });

  it('rejects all-empty partials', () => {
    const partials = createEmptyPartials(1, 2, 3);

    expect(() => cacheLogProbabilities(partials, 1, 2, 3)).toThrow(expect.objectContaining({ code: 'EMPTY_CACHE' }));
  });
});

describe('logAddExp', () => {
  it('treats -Infinity as identity', () => {
    expect(logAddExp(Number.NEGATIVE_INFINITY, 3.25)).toBe(3.25);
    expect(logAddExp(-1.5, Number.NEGATIVE_INFINITY)).toBe(-1.5);
    expect(logAddExp(Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY)).toBe(Number.NEGATIVE_INFINITY);
  });

  it('adds large values without overflow', () => {
    // log(e^1000 + e^1000) = 1000 + log 2; tolerance 1e-9.
    expect(logAddExp(1000, 1000)).toBeCloseTo(1000 + Math.LN2, 9);
  });
});

describe('mergePartialsInto', () => {
  it('merging split blocks equals whole', () => {
    const whole = referencePartials(query, 1, keys, 3, labels, 2, 2, [1, 2]);
    const merged = Float32Array.from(referencePartials(query, 1, keys.subarray(0, 4), 2, labels.subarray(0, 2), 2, 2, [1, 2]));
    const second = Float32Array.from(referencePartials(query, 1, keys.subarray(4), 1, labels.subarray(2), 2, 2, [1, 2]));

    mergePartialsInto(merged, second);

    // Float32 rounding of the two block partials and of the merge: relative 1e-6.
    for (let index = 0; index < whole.length; index += 1) {
      expect(Math.abs(merged[index] - whole[index])).toBeLessThanOrEqual(1e-6 * Math.abs(whole[index]));
    }
  });

  it('rejects different lengths', () => {
    expect(() => mergePartialsInto(new Float32Array(4), new Float32Array(3))).toThrow(/source has 3 values/);
  });
});
