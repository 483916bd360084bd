import type { layers } from '@tensorflow/tfjs-layers';
import { describe, expect, it } from 'vitest';

import { foldBatchNorm, hwioToOihw, padsFor } from './onnx-weights.js';

/** padsFor reads only the layer's name, for its error message. */
const layer = { name: 'conv_test' } as unknown as layers.Layer;

describe('padsFor', () => {
  it('same stride 2 pads bottom right', () => {
    const pads = padsFor('same', layer, { inputSize: [32, 32], outputSize: [16, 16], kernelSize: [3, 3], strides: [2, 2], dilations: [1, 1] });

    expect(pads).toEqual([0, 0, 1, 1]);
  });

  it('same dilated kernel pads evenly', () => {
    const pads = padsFor('same', layer, { inputSize: [5, 7], outputSize: [5, 7], kernelSize: [3, 3], strides: [1, 1], dilations: [2, 2] });

    expect(pads).toEqual([2, 2, 2, 2]);
  });

  it('valid padding is zero', () => {
    const pads = padsFor('valid', layer, { inputSize: [9, 9], outputSize: [4, 4], kernelSize: [3, 3], strides: [2, 2], dilations: [1, 1] });

    expect(pads).toEqual([0, 0, 0, 0]);
  });

  it('rejects causal padding', () => {
    const computing = (): unknown => padsFor('causal', layer, { inputSize: [4, 4], outputSize: [4, 4], kernelSize: [3, 3], strides: [1, 1], dilations: [1, 1] });

    expect(computing).toThrow(expect.objectContaining({ code: 'MODEL_UNSUPPORTED_LAYER' }));
  });
});

describe('hwioToOihw', () => {
  it('moves each kernel value', () => {
    // Kernel [height 1, width 2, in 2, out 3] whose value encodes its HWIO position as h w i o digits.
    const shape = [1, 2, 2, 3];
    const hwio = new Float32Array(12);
    for (let w = 0; w < 2; w += 1) {
      for (let i = 0; i < 2; i += 1) {
        for (let o = 0; o < 3; o += 1) {
          hwio[(w * 2 + i) * 3 + o] = w * 100 + i * 10 + o;
        }
      }
    }

    const oihw = hwioToOihw(hwio, shape);

    // OIHW index of (o 2, i 1, h 0, w 1) is ((2 * 2 + 1) * 1 + 0) * 2 + 1 = 11.
    expect(oihw[11]).toBe(112);
    // OIHW index of (o 1, i 0, h 0, w 0) is ((1 * 2 + 0) * 1 + 0) * 2 + 0 = 4.
    expect(oihw[4]).toBe(1);
  });
});

describe('foldBatchNorm', () => {
  it('matches normalising the convolution output', () => {
    const batchNorm = {
      gamma: Float32Array.of(2, 0.5),
      beta: Float32Array.of(1, -1),
      movingMean: Float32Array.of(0.25, 3),
      movingVariance: Float32Array.of(4, 0.09),
      epsilon: 0.001,
    };
    // Two filters of two weights each, with a per-filter bias.
    const weights = Float32Array.of(1, -2, 0.5, 4);
    const bias = Float32Array.of(0.5, -1);
    const input = [3, -1];

    const folded = foldBatchNorm(batchNorm, weights, bias);

    for (let o = 0; o < 2; o += 1) {
      const convolution = weights[o * 2] * input[0] + weights[o * 2 + 1] * input[1] + bias[o];
      const normalised = ((convolution - batchNorm.movingMean[o]) * batchNorm.gamma[o]) / Math.sqrt(batchNorm.movingVariance[o] + batchNorm.epsilon) + batchNorm.beta[o];
      const foldedOutput = folded.weights[o * 2] * input[0] + folded.weights[o * 2 + 1] * input[1] + folded.bias[o];
      expect(foldedOutput).toBeCloseTo(normalised, 5);
    }
  });
});
