import * as tf from '@tensorflow/tfjs-core';
import type { layers } from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import { inboundLayers, kerasShapeOf } from '../inference/onnx-layers.js';
import { padsFor, readBatchNorm, readBias, readWeight } from '../inference/onnx-weights.js';
import type { ForwardBatch } from '../local/extractor.js';
import { getActiveBackend, type KeyLayer, type LoadedModel } from '../models/index.js';
import { checkLength, type NetworkGradient } from './network-gradient.js';

type Layer = layers.Layer;
type LayerConfig = Record<string, unknown>;

/** Images per tfjs call, because the wasm backend keeps every intermediate of the backward pass in memory at once. */
const BATCH_SIZE = 32;

/** Output of the rebuilt network for one batch: logits and the key layers' outputs, all still tensors. */
interface SymbolicOutputs {
  logits: tf.Tensor2D;
  features: tf.Tensor2D;
}

/**
 * The model rebuilt from plain differentiable tfjs ops (`tf.conv2d`, `tf.batchNorm`, `tf.avgPool`,
 * `tf.matMul`) with its weights as constant tensors, so that `tf.grad` computes the input gradient
 * only. tfjs-layers' own Conv2D calls the fused convolution, whose gradient also computes the
 * filter gradient, and the wasm backend of tfjs 4.22 has no Conv2DBackpropFilter kernel. It does
 * have Conv2DBackpropInput, AvgPoolGrad and Step (the ReLU gradient), which this path needs.
 *
 * For ResNet32 it ran about 27 times slower than `OnnxNetworkGradient` (one thread each, see
 * docs/robustness.md), so it serves as an independent reference for the hand-built backward
 * graph and for models that graph does not support.
 */
export class TfjsNetworkGradient implements NetworkGradient {
  readonly inputShape: readonly number[];
  readonly numClasses: number;
  readonly featureSize: number;
  readonly description: string;
  private readonly imageSize: number;
  private readonly program: RebuiltNetwork;

  constructor(loaded: LoadedModel, keyLayers: readonly KeyLayer[]) {
    this.inputShape = [...loaded.inputShape];
    this.numClasses = loaded.numClasses;
    this.featureSize = keyLayers.reduce((sum, layer) => sum + layer.size, 0);
    this.imageSize = this.inputShape.reduce((product, dim) => product * dim, 1);
    this.program = new RebuiltNetwork(loaded, keyLayers);
    this.description = `tfjs-${getActiveBackend()?.name ?? 'unknown'} (model rebuilt from plain ops)`;
  }

  async forward(inputs: Float32Array, n: number): Promise<ForwardBatch> {
    checkLength('inputs', inputs, n * this.imageSize);
    const result: ForwardBatch = {
      logits: new Float32Array(n * this.numClasses),
      probabilities: new Float32Array(n * this.numClasses),
      features: new Float32Array(n * this.featureSize),
    };

    for (let start = 0; start < n; start += BATCH_SIZE) {
      const count = Math.min(BATCH_SIZE, n - start);
      const [logits, probabilities, features] = tf.tidy(() => {
        const outputs = this.program.apply(this.imageTensor(inputs, start, count));
        return [outputs.logits, tf.softmax(outputs.logits), outputs.features];
      });
      try {
        result.logits.set(await logits.data<'float32'>(), start * this.numClasses);
        result.probabilities.set(await probabilities.data<'float32'>(), start * this.numClasses);
        result.features.set(await features.data<'float32'>(), start * this.featureSize);
      } finally {
        tf.dispose([logits, probabilities, features]);
      }
    }
    return result;
  }

  async inputGradient(inputs: Float32Array, n: number, logitsGrad: Float32Array, featuresGrad: Float32Array): Promise<Float32Array> {
    checkLength('inputs', inputs, n * this.imageSize);
    checkLength('logitsGrad', logitsGrad, n * this.numClasses);
    checkLength('featuresGrad', featuresGrad, n * this.featureSize);
    const gradient = new Float32Array(n * this.imageSize);

    for (let start = 0; start < n; start += BATCH_SIZE) {
      const count = Math.min(BATCH_SIZE, n - start);
      const batchGradient = tf.tidy(() => {
        const upstreamLogits = tf.tensor2d(logitsGrad.subarray(start * this.numClasses, (start + count) * this.numClasses), [count, this.numClasses]);
        const upstreamFeatures = tf.tensor2d(featuresGrad.subarray(start * this.featureSize, (start + count) * this.featureSize), [count, this.featureSize]);
        // The sum of upstream · output has exactly the upstream gradients, so its input gradient is the one asked for.
        const objective = (x: tf.Tensor): tf.Scalar => {
          const outputs = this.program.apply(x as tf.Tensor4D);
          return tf.add(tf.sum(tf.mul(outputs.logits, upstreamLogits)), tf.sum(tf.mul(outputs.features, upstreamFeatures)));
        };
        return tf.grad(objective)(this.imageTensor(inputs, start, count));
      });
      try {
        gradient.set(await batchGradient.data<'float32'>(), start * this.imageSize);
      } finally {
        batchGradient.dispose();
      }
    }
    return gradient;
  }

  async dispose(): Promise<void> {
    this.program.dispose();
  }

  private imageTensor(inputs: Float32Array, start: number, count: number): tf.Tensor4D {
    const [height, width, channels] = this.inputShape;
    return tf.tensor4d(inputs.subarray(start * this.imageSize, (start + count) * this.imageSize), [count, height, width, channels]);
  }
}

/** A LayersModel's layer graph evaluated with plain tfjs ops and constant weights. */
class RebuiltNetwork {
  private readonly weights = new Map<Layer, tf.Tensor[]>();
  private readonly ordered: Layer[];
  private readonly logitsLayer: Layer;
  private readonly logitsBeforeActivation: boolean;

  constructor(
    private readonly loaded: LoadedModel,
    private readonly keyLayers: readonly KeyLayer[],
  ) {
    const model = loaded.model;
    const inputLayer = model.inputs[0].sourceLayer;
    this.ordered = model.layers.includes(inputLayer) ? [...model.layers] : [inputLayer, ...model.layers];
    const outputLayer = model.outputs[0].sourceLayer;
    const className = outputLayer.getClassName();
    const activation = outputLayer.getConfig().activation;
    if (className === 'Dense' && activation === 'softmax') {
      this.logitsLayer = outputLayer;
      this.logitsBeforeActivation = true;
    } else if (className === 'Activation' && activation === 'softmax') {
      this.logitsLayer = inboundLayers(outputLayer)[0];
      this.logitsBeforeActivation = false;
    } else if (className === 'Dense' && activation === 'linear') {
      this.logitsLayer = outputLayer;
      this.logitsBeforeActivation = false;
    } else {
      throw new CachefleetError('MODEL_INVALID', `Output layer ${outputLayer.name} (${className}, activation ${String(activation)}) is neither a softmax nor a linear Dense layer, so the model has no logits to differentiate.`, {
        outputLayer: outputLayer.name,
      });
    }
    for (const layer of this.ordered) {
      checkDifferentiable(layer);
      this.weights.set(layer, this.readWeights(layer));
    }
  }

  apply(input: tf.Tensor4D): SymbolicOutputs {
    const values = new Map<Layer, tf.Tensor>();
    let logits: tf.Tensor | undefined;
    for (const layer of this.ordered) {
      const inputs = layer.getClassName() === 'InputLayer' ? [input] : inboundLayers(layer).map((producer) => values.get(producer)!);
      const { output, preActivation } = this.applyLayer(layer, inputs);
      values.set(layer, output);
      if (layer === this.logitsLayer) {
        logits = this.logitsBeforeActivation ? preActivation : output;
      }
      if (layer === this.loaded.model.outputs[0].sourceLayer) {
        break;
      }
    }

    const batch = input.shape[0];
    const features = this.keyLayers.map((keyLayer) => tf.reshape(values.get(this.loaded.model.layers[keyLayer.index])!, [batch, keyLayer.size]));
    return { logits: logits as tf.Tensor2D, features: tf.concat(features, 1) as tf.Tensor2D };
  }

  dispose(): void {
    for (const tensors of this.weights.values()) {
      tf.dispose(tensors);
    }
    this.weights.clear();
  }

  private readWeights(layer: Layer): tf.Tensor[] {
    const config = layer.getConfig();
    switch (layer.getClassName()) {
      case 'Conv2D': {
        const kernel = readWeight(layer, 'kernel');
        return [tf.tensor(kernel.values, kernel.shape), tf.tensor1d(readBias(layer, config, kernel.shape[3]))];
      }
      case 'Dense': {
        const kernel = readWeight(layer, 'kernel');
        return [tf.tensor(kernel.values, kernel.shape), tf.tensor1d(readBias(layer, config, kernel.shape[1]))];
      }
      case 'BatchNormalization': {
        const channels = (layer.outputShape as number[])[(layer.outputShape as number[]).length - 1];
        const parameters = readBatchNorm(layer, channels);
        return [tf.tensor1d(parameters.movingMean), tf.tensor1d(parameters.movingVariance), tf.tensor1d(parameters.beta), tf.tensor1d(parameters.gamma)];
      }
      default:
        return [];
    }
  }

  private applyLayer(layer: Layer, inputs: tf.Tensor[]): { output: tf.Tensor; preActivation?: tf.Tensor } {
    const config = layer.getConfig();
    const weights = this.weights.get(layer)!;
    switch (layer.getClassName()) {
      case 'InputLayer':
        return { output: inputs[0] };
      case 'Conv2D': {
        const convolved = tf.conv2d(inputs[0] as tf.Tensor4D, weights[0] as tf.Tensor4D, config.strides as [number, number], config.padding as 'same' | 'valid', 'NHWC', config.dilationRate as [number, number]);
        const preActivation = tf.add(convolved, weights[1]);
        return { output: activate(layer, preActivation, config), preActivation };
      }
      case 'Dense': {
        const preActivation = tf.add(tf.matMul(inputs[0] as tf.Tensor2D, weights[0] as tf.Tensor2D), weights[1]);
        return { output: activate(layer, preActivation, config), preActivation };
      }
      case 'BatchNormalization': {
        const epsilon = (config.epsilon as number) ?? 1e-3;
        return { output: tf.batchNorm(inputs[0], weights[0], weights[1], weights[2], weights[3], epsilon) };
      }
      case 'Activation':
        return { output: activate(layer, inputs[0], config), preActivation: inputs[0] };
      case 'Add':
        return { output: tf.addN(inputs) };
      case 'AveragePooling2D': {
        const poolSize = config.poolSize as [number, number];
        const strides = (config.strides as [number, number] | null) ?? poolSize;
        return { output: tf.avgPool(inputs[0] as tf.Tensor4D, poolSize, strides, config.padding as 'same' | 'valid') };
      }
      case 'Flatten':
        return { output: tf.reshape(inputs[0], [inputs[0].shape[0], -1]) };
      default:
        throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} has the class ${layer.getClassName()}, which the rebuilt tfjs network does not support.`, {
          layer: layer.name,
        });
    }
  }
}

function activate(layer: Layer, value: tf.Tensor, config: LayerConfig): tf.Tensor {
  switch (config.activation) {
    case 'relu':
      return tf.relu(value);
    case 'softmax':
      return tf.softmax(value);
    case 'linear':
    case undefined:
      return value;
    default:
      throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} uses the activation ${String(config.activation)}, which the rebuilt tfjs network does not support.`, {
        layer: layer.name,
        activation: config.activation,
      });
  }
}

/**
 * Rejects the two layer settings whose tfjs 4.22 gradient is missing or wrong. Conv2D_grad
 * asserts a dilation of 1. The cpu and wasm AvgPoolGrad kernels divide every window by its full
 * size, but the forward pass of padded average pooling divides by the pixels inside the image.
 */
function checkDifferentiable(layer: Layer): void {
  const config = layer.getConfig();
  if (layer.getClassName() === 'Conv2D') {
    const dilations = config.dilationRate as number[];
    if (dilations.some((rate) => rate !== 1)) {
      throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} is a dilated convolution (rate ${dilations.join('×')}), whose gradient tfjs 4.22 does not implement. Use the onnx gradient engine.`, {
        layer: layer.name,
        dilations,
      });
    }
  }
  if (layer.getClassName() === 'AveragePooling2D' && config.padding === 'same') {
    const poolSize = config.poolSize as number[];
    const strides = (config.strides as number[] | null) ?? poolSize;
    const inputShape = kerasShapeOf(inboundLayers(layer)[0]).slice(0, 2);
    const outputShape = kerasShapeOf(layer).slice(0, 2);
    const pads = padsFor('same', layer, { inputSize: inputShape, outputSize: outputShape, kernelSize: poolSize, strides, dilations: [1, 1] });
    if (pads.some((pad) => pad > 0)) {
      throw new CachefleetError(
        'MODEL_UNSUPPORTED_LAYER',
        `Layer ${layer.name} is an average pooling with padding, whose tfjs 4.22 gradient divides border windows by the full window size instead of the pixels inside the image. Use the onnx gradient engine.`,
        { layer: layer.name },
      );
    }
  }
}
