import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { describeLoaded } from '../inference/test-fixtures.js';
import { initBackend } from '../models/backend.js';
import { fgsmAttack, iterativeFgsmAttack, strengthGrid, type AttackDomain } from './attacks.js';
import { CacheModelFamily } from './cache-models.js';
import { OnnxNetworkGradient } from './network-gradient.js';
import { familyTarget } from './run-slice.js';

// A two-class linear classifier z = W·x + b on 3×3×2 "images", run through the whole attack
// stack: the onnxruntime backward graph, the model family and the FGSM search. For two classes,
// ∂ log p(y)/∂x = (1 − p(y)) · (W_y − W_other), so the FGSM direction is −sign(W_y − W_other)
// whatever the input, and the margin m(x) = (W_y − W_other)·x + (b_y − b_other) falls linearly:
// m(x − ε · range ⊙ sign(w)) = m(x) − ε · Σ_i range_i |w_i| as long as nothing is clipped.
const SHAPE: [number, number, number] = [3, 3, 2];
const SIZE = 18;

/** Weights with some zeros (which FGSM leaves alone), and ranges of different widths centred on 0. */
const kernel = Float32Array.from({ length: SIZE * 2 }, (_, i) => (i % 7 === 3 ? 0 : Math.sin(i * 1.7) * 0.8));
const bias = Float32Array.of(0.05, -0.05);
const ranges = Float32Array.from({ length: SIZE }, (_, i) => 6 + 0.2 * i);
const lower = ranges.map((range) => -range / 2);
const upper = ranges.map((range) => range / 2);
// Inputs stay within 1 of 0 and the search stops below ε = 0.2, so a step of at most 0.2 × 9.4
// never reaches a bound (at least 3 away) and no value is clipped.
const wideDomain: AttackDomain = { height: 3, width: 3, channels: 2, lower, upper };

let family: CacheModelFamily;
let network: OnnxNetworkGradient;
let model: tfl.LayersModel;

beforeAll(async () => {
  await initBackend('cpu');
  const input = tfl.input({ shape: SHAPE, name: 'image' });
  const flat = tfl.layers.flatten({ name: 'flat' }).apply(input) as tfl.SymbolicTensor;
  const output = tfl.layers.dense({ units: 2, activation: 'softmax', name: 'linear' }).apply(flat) as tfl.SymbolicTensor;
  model = tfl.model({ inputs: input, outputs: output, name: 'linear_classifier' });
  model.layers[2].setWeights([tf.tensor2d(kernel, [SIZE, 2]), tf.tensor1d(bias)]);

  network = await OnnxNetworkGradient.create(describeLoaded(model, SHAPE, 2), [{ index: 1, name: 'flat', shape: [SIZE], size: SIZE }], 1);
  family = new CacheModelFamily(network, undefined, { cache: { theta: 1, lambda: 0.5 }, cacheOnly: { theta: 1 } });
});

afterAll(async () => {
  await network.dispose();
  model.dispose();
});

/** Margin of class `label` over the other class, in float64. */
function margin(x: ArrayLike<number>, label: number): number {
  let value = bias[label] - bias[1 - label];
  for (let i = 0; i < SIZE; i += 1) value += (kernel[i * 2 + label] - kernel[i * 2 + 1 - label]) * x[i];
  return value;
}

/** Σ_i range_i |w_i| for w = W_label − W_other: how fast one unit of ε lowers the margin. */
function marginSlope(label: number, domain: AttackDomain): number {
  let slope = 0;
  for (let i = 0; i < SIZE; i += 1) slope += (domain.upper[i] - domain.lower[i]) * Math.abs(kernel[i * 2 + label] - kernel[i * 2 + 1 - label]);
  return slope;
}

/** Inputs along ±(W_0 − W_1), scaled so that both classes occur and the thresholds spread over the grid. */
function makeInputs(count: number): Float32Array {
  const scales = [-1, -0.6, -0.25, 0.3, 0.7, 1];
  const direction = Float32Array.from({ length: SIZE }, (_, i) => kernel[i * 2] - kernel[i * 2 + 1]);
  const largest = Math.max(...direction.map(Math.abs));
  return Float32Array.from({ length: count * SIZE }, (_, i) => (scales[Math.floor(i / SIZE) % scales.length] * direction[i % SIZE]) / largest);
}

describe('FGSM on a linear classifier', () => {
  const count = 6;
  const inputs = makeInputs(count);
  const epsilons = strengthGrid(0.5, 50);

  it('finds the closed-form smallest epsilon', async () => {
    const labels = (await family.evaluate(inputs, count, ['baseline'])).predictions.baseline!;
    const outcomes = await fgsmAttack(familyTarget(family, 'baseline'), inputs, labels, wideDomain, epsilons);

    for (let image = 0; image < count; image += 1) {
      const x = inputs.subarray(image * SIZE, (image + 1) * SIZE);
      // The prediction changes once the margin is negative: the first grid ε above m / slope.
      const threshold = margin(x, labels[image]) / marginSlope(labels[image], wideDomain);
      const expected = epsilons.findIndex((epsilon) => epsilon > threshold);
      expect(outcomes[image].gridIndex, `image ${image}: threshold ε ${threshold}`).toBe(expected);
    }
  });

  it('moves each input by epsilon times its range', async () => {
    const labels = (await family.evaluate(inputs, count, ['baseline'])).predictions.baseline!;
    const outcomes = await fgsmAttack(familyTarget(family, 'baseline'), inputs, labels, wideDomain, epsilons);

    for (let image = 0; image < count; image += 1) {
      const { adversarial, strength } = outcomes[image];
      const label = labels[image];
      for (let i = 0; i < SIZE; i += 1) {
        const w = kernel[i * 2 + label] - kernel[i * 2 + 1 - label];
        const expected = inputs[image * SIZE + i] - strength! * (upper[i] - lower[i]) * Math.sign(w);
        expect(adversarial![i]).toBeCloseTo(expected, 4);
      }
    }
  });

  it('reports the closed-form perturbation size', async () => {
    const labels = (await family.evaluate(inputs, count, ['baseline'])).predictions.baseline!;
    const outcomes = await fgsmAttack(familyTarget(family, 'baseline'), inputs, labels, wideDomain, epsilons);

    for (let image = 0; image < count; image += 1) {
      const label = labels[image];
      let moved = 0;
      let norm = 0;
      for (let i = 0; i < SIZE; i += 1) {
        const w = kernel[i * 2 + label] - kernel[i * 2 + 1 - label];
        moved += w === 0 ? 0 : ((outcomes[image].strength! * (upper[i] - lower[i])) ** 2);
        norm += inputs[image * SIZE + i] ** 2;
      }
      expect(outcomes[image].perturbation!).toBeCloseTo(Math.sqrt(moved) / Math.sqrt(norm), 5);
    }
  });

  it('clips into the valid range', async () => {
    // Ranges of width 2 around each input: the steps leave it at once, so every changed value sits on a bound.
    const narrow: AttackDomain = { ...wideDomain, lower: inputs.slice(0, SIZE).map((value) => value - 1), upper: inputs.slice(0, SIZE).map((value) => value + 1) };
    const labels = (await family.evaluate(inputs.subarray(0, SIZE), 1, ['baseline'])).predictions.baseline!;
    const [outcome] = await fgsmAttack(familyTarget(family, 'baseline'), inputs.subarray(0, SIZE), labels, narrow, strengthGrid(1, 4));

    expect(outcome.found).toBe(true);
    for (let i = 0; i < SIZE; i += 1) {
      const w = kernel[i * 2 + labels[0]] - kernel[i * 2 + 1 - labels[0]];
      let expected = inputs[i];
      if (w > 0) expected = narrow.lower[i];
      if (w < 0) expected = narrow.upper[i];
      expect(outcome.adversarial![i]).toBeCloseTo(expected, 5);
    }
  });

  it('iterative FGSM stops at the closed-form step', async () => {
    const labels = (await family.evaluate(inputs, count, ['baseline'])).predictions.baseline!;
    const steps = 10;
    const grid = strengthGrid(1, 50);
    const outcomes = await iterativeFgsmAttack(familyTarget(family, 'baseline'), inputs, labels, wideDomain, grid, steps);

    for (let image = 0; image < count; image += 1) {
      const x = inputs.subarray(image * SIZE, (image + 1) * SIZE);
      const label = labels[image];
      const initialMargin = margin(x, label);
      const slope = marginSlope(label, wideDomain);
      // Every step has the same direction, so 10 steps of ε/10 reach m − ε·slope: the first grid ε
      // past the threshold wins, and its run stops at the first step k with m − k·(ε/10)·slope < 0.
      const expected = grid.findIndex((epsilon) => epsilon > initialMargin / slope);
      const stepsTaken = Math.floor(initialMargin / ((grid[expected] / steps) * slope)) + 1;
      expect(outcomes[image].gridIndex, `image ${image}`).toBe(expected);

      const moved = (grid[expected] / steps) * stepsTaken;
      for (let i = 0; i < SIZE; i += 1) {
        const w = kernel[i * 2 + label] - kernel[i * 2 + 1 - label];
        expect(outcomes[image].adversarial![i]).toBeCloseTo(x[i] - moved * ranges[i] * Math.sign(w), 4);
      }
    }
  });

  it('covers both classes and spread thresholds', async () => {
    // Guards the test data: a set where every image flips at the first ε would check little.
    const labels = (await family.evaluate(inputs, count, ['baseline'])).predictions.baseline!;
    const thresholds = Array.from({ length: count }, (_, image) => margin(inputs.subarray(image * SIZE, (image + 1) * SIZE), labels[image]) / marginSlope(labels[image], wideDomain));

    expect(new Set(labels).size).toBe(2);
    expect(Math.min(...thresholds)).toBeGreaterThan(0.01);
    expect(Math.max(...thresholds)).toBeLessThan(0.2);
    expect(new Set(thresholds.map((threshold) => Math.ceil(threshold / 0.01))).size).toBeGreaterThanOrEqual(4);
  });
});
