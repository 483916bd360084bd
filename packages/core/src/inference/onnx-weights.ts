import type { layers } from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';

type Layer = layers.Layer;

/** Ending of every MODEL_UNSUPPORTED_LAYER message: the fix for a model the export cannot convert. */
export const TFJS_FALLBACK = 'Run this model with the TensorFlow.js FeatureExtractor instead.';

export interface NamedWeight {
  values: Float32Array;
  shape: number[];
}

/** Reads a weight by its Keras name (`kernel`, `bias`, `gamma`, …) as a float32 copy. */
export function readWeight(layer: Layer, weightName: string): NamedWeight {
  const variable = layer.weights.find((weight) => weight.originalName.endsWith(`/${weightName}`) || weight.originalName === weightName);
  if (variable === undefined) {
    const names = layer.weights.map((weight) => weight.originalName).join(', ');
    throw new CachefleetError('MODEL_INVALID', `Weight ${weightName} of layer ${layer.name} not found (the layer has: ${names || 'no weights'}). Load the model with all its weights.`, {
      layer: layer.name,
      weightName,
    });
  }

  // read() returns the variable's own tensor, which the model still owns, so it is copied and not disposed.
  const tensor = variable.read();
  return { values: Float32Array.from(tensor.dataSync()), shape: [...tensor.shape] };
}

/** Reads the bias of a layer with `useBias`, and returns zeros for a layer without one. */
export function readBias(layer: Layer, config: Record<string, unknown>, units: number): Float32Array {
  return config.useBias === false ? new Float32Array(units) : readWeight(layer, 'bias').values;
}

export interface BatchNormParameters {
  gamma: Float32Array;
  beta: Float32Array;
  movingMean: Float32Array;
  movingVariance: Float32Array;
  epsilon: number;
}

/** Reads a BatchNormalization's parameters. As in Keras, `scale: false` means gamma 1 and `center: false` means beta 0. */
export function readBatchNorm(layer: Layer, channels: number): BatchNormParameters {
  const config = layer.getConfig();
  return {
    gamma: config.scale === false ? new Float32Array(channels).fill(1) : readWeight(layer, 'gamma').values,
    beta: config.center === false ? new Float32Array(channels) : readWeight(layer, 'beta').values,
    movingMean: readWeight(layer, 'moving_mean').values,
    movingVariance: readWeight(layer, 'moving_variance').values,
    epsilon: config.epsilon as number,
  };
}

/** Reorders a Keras kernel [height, width, in, out] (HWIO) into the ONNX Conv layout [out, in, height, width]. */
export function hwioToOihw(kernel: Float32Array, shape: readonly number[]): Float32Array {
  const [height, width, inChannels, outChannels] = shape;
  const oihw = new Float32Array(kernel.length);
  for (let h = 0; h < height; h += 1) {
    for (let w = 0; w < width; w += 1) {
      for (let i = 0; i < inChannels; i += 1) {
        for (let o = 0; o < outChannels; o += 1) {
          oihw[((o * inChannels + i) * height + h) * width + w] = kernel[((h * width + w) * inChannels + i) * outChannels + o];
        }
      }
    }
  }
  return oihw;
}

/**
 * Folds an inference-mode BatchNormalization into the OIHW weights and bias of the convolution
 * before it: y = (conv(x) + b − mean) · gamma / sqrt(variance + epsilon) + beta. The factor is
 * computed in float64 and the products rounded once to float32.
 */
export function foldBatchNorm(batchNorm: BatchNormParameters, weights: Float32Array, bias: Float32Array): { weights: Float32Array; bias: Float32Array } {
  const outChannels = bias.length;
  const perFilter = weights.length / outChannels;
  const foldedWeights = new Float32Array(weights.length);
  const foldedBias = new Float32Array(outChannels);

  for (let o = 0; o < outChannels; o += 1) {
    const factor = batchNorm.gamma[o] / Math.sqrt(batchNorm.movingVariance[o] + batchNorm.epsilon);
    for (let k = 0; k < perFilter; k += 1) {
      foldedWeights[o * perFilter + k] = weights[o * perFilter + k] * factor;
    }
    foldedBias[o] = (bias[o] - batchNorm.movingMean[o]) * factor + batchNorm.beta[o];
  }
  return { weights: foldedWeights, bias: foldedBias };
}

/** Spatial geometry of a convolution or pooling window, each array [height, width]. */
export interface WindowGeometry {
  inputSize: readonly number[];
  outputSize: readonly number[];
  kernelSize: readonly number[];
  strides: readonly number[];
  dilations: readonly number[];
}

/**
 * Returns the explicit ONNX `pads` [top, left, bottom, right] for Keras padding `same` or
 * `valid`. Like TensorFlow, `same` puts the odd pixel of padding at the bottom and right.
 */
export function padsFor(padding: unknown, layer: Layer, window: WindowGeometry): number[] {
  if (padding === 'valid') {
    return [0, 0, 0, 0];
  }
  if (padding !== 'same') {
    throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} uses padding ${String(padding)}, but the ONNX export supports only same and valid. ${TFJS_FALLBACK}`, {
      layer: layer.name,
      padding,
    });
  }

  const before: number[] = [];
  const after: number[] = [];
  for (let axis = 0; axis < 2; axis += 1) {
    const effectiveKernel = (window.kernelSize[axis] - 1) * window.dilations[axis] + 1;
    const total = Math.max((window.outputSize[axis] - 1) * window.strides[axis] + effectiveKernel - window.inputSize[axis], 0);
    before.push(Math.floor(total / 2));
    after.push(total - Math.floor(total / 2));
  }
  return [...before, ...after];
}
