import * as tfl from '@tensorflow/tfjs-layers';

import { describeLoaded, setDeterministicWeights, type SyntheticHead } from '../inference/test-fixtures.js';
import type { LoadedModel } from '../models/load-model.js';

export const GRADIENT_FIXTURE_SHAPE: [number, number, number] = [9, 10, 3];
export const GRADIENT_FIXTURE_CLASSES = 5;

/**
 * Builds a small classifier for comparing the backward graph with tfjs autodiff. It has strided
 * `same` padding on an odd image size, a convolution without bias, a three-input Add,
 * BatchNormalization after Add and after Dense, overlapping average pooling and a Flatten over a
 * 2×2 image. It leaves out dilated convolutions, which tfjs 4.22 cannot differentiate, and padded
 * average pooling, whose tfjs AvgPoolGrad divides by the whole window, padding included.
 * Key layers: a ReLU, a BatchNormalization after Add and the Flatten.
 */
export function buildGradientFixture(head: SyntheticHead): { loaded: LoadedModel; keyLayers: number[] } {
  const input = tfl.input({ shape: GRADIENT_FIXTURE_SHAPE, name: 'image' });
  const conv = tfl.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', useBias: false, name: 'conv_stride' }).apply(input);
  const norm = tfl.layers.batchNormalization({ name: 'bn_conv' }).apply(conv);
  const relu = tfl.layers.activation({ activation: 'relu', name: 'relu_key' }).apply(norm) as tfl.SymbolicTensor;
  const branch = tfl.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', name: 'conv_relu' }).apply(relu);
  const pointwise = tfl.layers.conv2d({ filters: 4, kernelSize: 1, padding: 'valid', name: 'conv_pointwise' }).apply(relu);
  const sum = tfl.layers.add({ name: 'add_three' }).apply([relu, branch, pointwise] as tfl.SymbolicTensor[]);
  const sumNorm = tfl.layers.batchNormalization({ name: 'bn_after_add' }).apply(sum);
  const poolOverlapping = tfl.layers.averagePooling2d({ poolSize: 2, strides: 1, padding: 'valid', name: 'pool_overlapping' }).apply(sumNorm);
  const poolValid = tfl.layers.averagePooling2d({ poolSize: 2, strides: 2, padding: 'valid', name: 'pool_valid' }).apply(poolOverlapping);
  const flat = tfl.layers.flatten({ name: 'flatten_2x2' }).apply(poolValid);
  const hidden = tfl.layers.dense({ units: 8, activation: 'relu', name: 'dense_hidden' }).apply(flat);
  const hiddenNorm = tfl.layers.batchNormalization({ name: 'bn_dense' }).apply(hidden) as tfl.SymbolicTensor;

  let output: tfl.SymbolicTensor;
  if (head === 'dense-softmax') {
    output = tfl.layers.dense({ units: GRADIENT_FIXTURE_CLASSES, activation: 'softmax', name: 'logits' }).apply(hiddenNorm) as tfl.SymbolicTensor;
  } else {
    output = tfl.layers.dense({ units: GRADIENT_FIXTURE_CLASSES, name: 'logits' }).apply(hiddenNorm) as tfl.SymbolicTensor;
    if (head === 'activation-softmax') output = tfl.layers.activation({ activation: 'softmax', name: 'probabilities' }).apply(output) as tfl.SymbolicTensor;
  }

  const model = tfl.model({ inputs: input, outputs: output, name: `gradient_fixture_${head}` });
  setDeterministicWeights(model);
  const indexOf = (name: string): number => model.layers.findIndex((layer) => layer.name === name);
  return { loaded: describeLoaded(model, GRADIENT_FIXTURE_SHAPE, GRADIENT_FIXTURE_CLASSES), keyLayers: [indexOf('relu_key'), indexOf('bn_after_add'), indexOf('flatten_2x2')] };
}
