import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import type { LoadedModel } from '../models/load-model.js';

/**
 * Small tfjs models for the tests of this folder, covering what ResNet32 does not. They have an
 * odd image size with strided `same` padding, valid padding, dilation, a convolution without
 * bias, a three-input Add, and BatchNormalization after Add and after Dense. They also have
 * average pooling with padding and a Flatten over a 2×2 image, whose NHWC order differs from NCHW.
 */

export const SYNTHETIC_INPUT_SHAPE: [number, number, number] = [9, 10, 3];
export const SYNTHETIC_NUM_CLASSES = 5;

/** Output head of the synthetic model, the layers that turn its last features into probabilities. */
export type SyntheticHead = 'dense-softmax' | 'activation-softmax' | 'dense-linear';

export interface SyntheticModel {
  loaded: LoadedModel;
  /** Key layer indices: a ReLU, a convolution followed by BatchNormalization, a BatchNormalization after Add, a Flatten. */
  keyLayers: number[];
  /** BatchNormalization layers that may be folded: only the one after the first convolution. */
  foldableBatchNorms: number;
}

/** Builds the synthetic classifier with deterministic weights. Call `initBackend` first. */
export function buildSyntheticModel(head: SyntheticHead): SyntheticModel {
  const input = tfl.input({ shape: SYNTHETIC_INPUT_SHAPE, name: 'image' });
  const conv1 = tfl.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', useBias: false, name: 'conv_stride' }).apply(input);
  const norm1 = tfl.layers.batchNormalization({ name: 'bn_foldable' }).apply(conv1);
  const relu1 = tfl.layers.activation({ activation: 'relu', name: 'relu_key' }).apply(norm1) as tfl.SymbolicTensor;

  const dilated = tfl.layers.conv2d({ filters: 4, kernelSize: 3, dilationRate: 2, padding: 'same', activation: 'relu', name: 'conv_dilated' }).apply(relu1);
  // Named after a graph output to check that the export keeps its own output names apart.
  const keyConv = tfl.layers.conv2d({ filters: 4, kernelSize: 1, padding: 'same', name: 'features' }).apply(relu1);
  const keyConvNorm = tfl.layers.batchNormalization({ name: 'bn_after_key_conv' }).apply(keyConv);
  const sum = tfl.layers.add({ name: 'add_three' }).apply([relu1, dilated, keyConvNorm] as tfl.SymbolicTensor[]);
  const sumNorm = tfl.layers.batchNormalization({ name: 'bn_after_add' }).apply(sum);

  const poolSame = tfl.layers.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same', name: 'pool_same' }).apply(sumNorm);
  const poolValid = tfl.layers.averagePooling2d({ poolSize: 2, strides: 1, padding: 'valid', name: 'pool_valid' }).apply(poolSame);
  const flat = tfl.layers.flatten({ name: 'flatten_2x2' }).apply(poolValid);
  const hidden = tfl.layers.dense({ units: 8, activation: 'relu', name: 'dense_hidden' }).apply(flat);
  const hiddenNorm = tfl.layers.batchNormalization({ name: 'bn_dense' }).apply(hidden) as tfl.SymbolicTensor;
  const output = applyHead(head, hiddenNorm);

  const model = tfl.model({ inputs: input, outputs: output, name: `synthetic_${head}` });
  setDeterministicWeights(model);

  const indexOf = (name: string): number => model.layers.findIndex((layer) => layer.name === name);
  return {
    loaded: describeLoaded(model, SYNTHETIC_INPUT_SHAPE, SYNTHETIC_NUM_CLASSES),
    keyLayers: [indexOf('relu_key'), indexOf('features'), indexOf('bn_after_add'), indexOf('flatten_2x2')],
    foldableBatchNorms: 1,
  };
}

function applyHead(head: SyntheticHead, features: tfl.SymbolicTensor): tfl.SymbolicTensor {
  if (head === 'dense-softmax') {
    return tfl.layers.dense({ units: SYNTHETIC_NUM_CLASSES, activation: 'softmax', name: 'logits' }).apply(features) as tfl.SymbolicTensor;
  }

  const linear = tfl.layers.dense({ units: SYNTHETIC_NUM_CLASSES, name: 'logits' }).apply(features) as tfl.SymbolicTensor;
  if (head === 'dense-linear') {
    return linear;
  }
  return tfl.layers.activation({ activation: 'softmax', name: 'probabilities' }).apply(linear) as tfl.SymbolicTensor;
}

/** Wraps an in-memory model in the shape `loadModel` returns, for the extractors' constructors. */
export function describeLoaded(model: tfl.LayersModel, inputShape: [number, number, number], numClasses: number): LoadedModel {
  return { model, format: 'tfjs-layers', sourcePath: `memory:${model.name}`, fileSha256: '', fingerprint: '', numClasses, inputShape };
}

/**
 * Replaces every weight by values from a fixed linear congruential sequence in [-0.5, 0.5).
 * Moving variances get [0.5, 1.5) instead, so that no BatchNormalization divides by about zero.
 */
export function setDeterministicWeights(model: tfl.LayersModel): void {
  const next = createSequence(12345);
  for (const layer of model.layers) {
    const replacements = layer.weights.map((weight) => {
      // Weight shapes are fully known once the model is built.
      const shape = weight.shape as number[];
      const size = shape.reduce((product, dim) => product * dim, 1);
      const offset = weight.originalName.endsWith('moving_variance') ? 1 : 0;
      const values = Float32Array.from({ length: size }, () => next() + offset);
      return tf.tensor(values, shape);
    });
    if (replacements.length > 0) {
      layer.setWeights(replacements);
      tf.dispose(replacements);
    }
  }
}

/** Returns `count` deterministic images of `shape` (NHWC) with values in [-2, 2). */
export function makeInputs(count: number, shape: readonly number[], seed = 777): Float32Array {
  const next = createSequence(seed);
  const size = count * shape.reduce((product, dim) => product * dim, 1);
  return Float32Array.from({ length: size }, () => next() * 4);
}

/** Linear congruential generator (Numerical Recipes constants) returning values in [-0.5, 0.5). */
function createSequence(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
}

/** Largest per-row relative L2 error ‖a − b‖ / ‖b‖ and largest absolute difference over all rows. */
export function compareRows(actual: Float32Array, expected: Float32Array, rows: number): { maxRelative: number; maxAbsolute: number } {
  const width = expected.length / rows;
  let maxRelative = 0;
  let maxAbsolute = 0;
  for (let row = 0; row < rows; row += 1) {
    let differenceSquared = 0;
    let expectedSquared = 0;
    for (let i = row * width; i < (row + 1) * width; i += 1) {
      const difference = actual[i] - expected[i];
      differenceSquared += difference * difference;
      expectedSquared += expected[i] * expected[i];
      maxAbsolute = Math.max(maxAbsolute, Math.abs(difference));
    }
    // An all-zero expected row (possible after ReLU) is compared by its absolute error instead.
    const relative = expectedSquared === 0 ? Math.sqrt(differenceSquared) : Math.sqrt(differenceSquared / expectedSquared);
    maxRelative = Math.max(maxRelative, relative);
  }
  return { maxRelative, maxAbsolute };
}
