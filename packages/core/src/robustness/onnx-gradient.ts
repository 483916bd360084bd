import type { LayersModel, layers } from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import { intAttribute, intsAttribute, OPSET_VERSION, type GraphValue, type OnnxGraphBuilder } from '../inference/onnx-graph.js';
import { inboundLayers, kerasShapeOf, LayerConverter, type GraphTensor } from '../inference/onnx-layers.js';
import { hwioToOihw, padsFor, readBatchNorm, readWeight } from '../inference/onnx-weights.js';
import type { KeyLayer } from '../models/key-layers.js';

type Layer = layers.Layer;
type LayerConfig = Record<string, unknown>;

/** Names of the gradient graph's inputs and output. */
export const GRADIENT_VALUE_NAMES = {
  input: 'input',
  /** ∂loss/∂logits [batch, numClasses]: the gradient with respect to the values before the softmax. */
  logitsGrad: 'logits_grad',
  /** ∂loss/∂features [batch, featureSize], in the order of the exported `features`. */
  featuresGrad: 'features_grad',
  /** ∂loss/∂input [batch, height, width, channels], NHWC like the input. */
  inputGrad: 'input_grad',
} as const;

/** Ending of the errors for models whose input gradient the hand-built graph cannot express. */
const TFJS_GRADIENT_FALLBACK = 'Compute input gradients with the TensorFlow.js gradient engine (--gradient-engine tfjs) instead.';

/**
 * ONNX graph of a classifier's input gradient. It runs the forward pass again and then its
 * backward pass, written node by node. The input gradient of a convolution is a ConvTranspose
 * with the same weights. That of an inference-mode BatchNormalization is a per-channel scale,
 * that of ReLU a mask (the sign of its output), that of average pooling a spread of the gradient
 * over each window, and that of Dense a product with the transposed kernel. No weight gradient
 * is computed.
 *
 * Inputs: `input` [batch, H, W, C], `logits_grad` [batch, numClasses] and `features_grad`
 * [batch, featureSize] (the upstream gradients). Output: `input_grad` [batch, H, W, C].
 */
export interface OnnxGradientGraph {
  modelBytes: Uint8Array;
  inputShape: number[];
  numClasses: number;
  featureSize: number;
  keyLayers: KeyLayer[];
  opsetVersion: number;
}

export interface GradientExportOptions {
  /** Indices into `model.layers` whose outputs, flattened in NHWC order and concatenated, form the features. */
  keyLayers: readonly number[];
}

/**
 * Builds the input-gradient graph of a tfjs LayersModel with the layer set of `exportToOnnx`.
 * The logits are found as `exportToOnnx` finds them: the value before the last Dense layer's
 * softmax, the input of a final softmax Activation, or the output of a final linear Dense.
 *
 * Throws MODEL_UNSUPPORTED_LAYER for what `exportToOnnx` rejects and for a softmax anywhere but
 * at the output, and KEY_LAYER_NOT_FOUND for a key layer index outside `model.layers`.
 */
export function exportGradientGraph(model: LayersModel, options: GradientExportOptions): OnnxGradientGraph {
  checkKeyLayers(model, options.keyLayers);
  const names = GRADIENT_VALUE_NAMES;
  // Batch normalisations stay separate nodes, so that the backward pass can read each one's scale.
  const converter = new LayerConverter(model, new Set(options.keyLayers.map((index) => model.layers[index])), false, names.input, Object.values(names));
  const inputLayer = model.inputs[0].sourceLayer;
  const ordered = model.layers.includes(inputLayer) ? [...model.layers] : [inputLayer, ...model.layers];
  for (const layer of ordered) {
    converter.convert(layer);
  }

  const backward = new BackwardPass(converter);
  const keyLayers = options.keyLayers.map((index) => describeKeyLayer(model.layers[index], index));
  const numClasses = injectLogitsGradient(model, backward);
  const featureSize = injectFeatureGradients(model, keyLayers, backward);

  for (const layer of [...ordered].reverse()) {
    backward.propagate(layer);
  }

  const inputShape = converter.inputShape;
  const inputs: GraphValue[] = [
    { name: names.input, shape: inputShape },
    { name: names.logitsGrad, shape: [numClasses] },
    { name: names.featuresGrad, shape: [featureSize] },
  ];
  const modelBytes = converter.builder.encode(`${model.name}_input_gradient`, inputs, [{ name: names.inputGrad, shape: inputShape }]);
  return { modelBytes, inputShape, numClasses, featureSize, keyLayers, opsetVersion: OPSET_VERSION };
}

/** Adds `logits_grad` at the logits and returns the class count. */
function injectLogitsGradient(model: LayersModel, backward: BackwardPass): number {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new CachefleetError('MODEL_INVALID', `Model ${model.name} has ${model.inputs.length} inputs and ${model.outputs.length} outputs, but the gradient graph needs exactly one of each.`, {
      inputs: model.inputs.length,
      outputs: model.outputs.length,
    });
  }

  const outputLayer = model.outputs[0].sourceLayer;
  const className = outputLayer.getClassName();
  const activation = outputLayer.getConfig().activation;
  const numClasses = kerasShapeOf(outputLayer)[0];
  if (className === 'Dense' && activation === 'softmax') {
    backward.addPreActivationGradient(outputLayer, GRADIENT_VALUE_NAMES.logitsGrad);
  } else if (className === 'Activation' && activation === 'softmax') {
    backward.addOutputGradient(inboundLayers(outputLayer)[0], GRADIENT_VALUE_NAMES.logitsGrad);
    backward.markHead(outputLayer);
  } else if (className === 'Dense' && activation === 'linear') {
    backward.addOutputGradient(outputLayer, GRADIENT_VALUE_NAMES.logitsGrad);
  } else {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Output layer ${outputLayer.name} (${className}, activation ${String(activation)}) is neither a softmax nor a linear Dense layer, so the gradient graph has no logits. ${TFJS_GRADIENT_FALLBACK}`,
      { outputLayer: outputLayer.name, className, activation },
    );
  }
  return numClasses;
}

/** Cuts `features_grad` into one gradient per key layer, in the layer's own layout, and returns the feature size. */
function injectFeatureGradients(model: LayersModel, keyLayers: KeyLayer[], backward: BackwardPass): number {
  const builder = backward.builder;
  let offset = 0;
  for (const keyLayer of keyLayers) {
    const layer = model.layers[keyLayer.index];
    const tensor = backward.converter.tensorOf(layer);
    const starts = constantInts(builder, `${layer.name}_grad_start`, [offset]);
    const ends = constantInts(builder, `${layer.name}_grad_end`, [offset + keyLayer.size]);
    const axes = constantInts(builder, `${layer.name}_grad_axes`, [1]);
    const flat = builder.addNode('Slice', [GRADIENT_VALUE_NAMES.featuresGrad, starts, ends, axes], `${layer.name}_feature_grad`);
    backward.addOutputGradient(layer, unflatten(builder, flat, tensor, `${layer.name}_feature_grad_image`));
    offset += keyLayer.size;
  }
  return offset;
}

/**
 * Emits the backward nodes layer by layer in reverse topological order. Each layer's output
 * gradient is the sum of what its consumers and the injected upstream gradients sent to it.
 * A layer that receives nothing (it does not reach the logits or a key layer) is skipped.
 */
class BackwardPass {
  readonly builder: OnnxGraphBuilder;
  private readonly outputGradients = new Map<Layer, string[]>();
  private readonly preActivationGradients = new Map<Layer, string[]>();
  private readonly heads = new Set<Layer>();

  constructor(readonly converter: LayerConverter) {
    this.builder = converter.builder;
  }

  addOutputGradient(layer: Layer, name: string): void {
    this.outputGradients.set(layer, [...(this.outputGradients.get(layer) ?? []), name]);
  }

  addPreActivationGradient(layer: Layer, name: string): void {
    this.preActivationGradients.set(layer, [...(this.preActivationGradients.get(layer) ?? []), name]);
  }

  /** Marks the final softmax Activation, whose input receives `logits_grad` directly. */
  markHead(layer: Layer): void {
    this.heads.add(layer);
  }

  propagate(layer: Layer): void {
    if (this.heads.has(layer)) {
      return;
    }
    const outputGradient = this.sum(this.outputGradients.get(layer), `${layer.name}_grad`);
    const preActivationGradient = this.sum(this.preActivationGradients.get(layer), `${layer.name}_pre_grad`);
    if (outputGradient === undefined && preActivationGradient === undefined) {
      return;
    }

    const className = layer.getClassName();
    const config = layer.getConfig();
    const output = this.converter.tensorOf(layer);
    switch (className) {
      case 'InputLayer':
        this.finishInput(output, outputGradient!);
        return;
      case 'Conv2D':
        this.backConv2D(layer, config, this.combine(layer, config, outputGradient, preActivationGradient));
        return;
      case 'Dense':
        this.backDense(layer, config, this.combine(layer, config, outputGradient, preActivationGradient));
        return;
      case 'BatchNormalization':
        this.backBatchNormalization(layer, output, outputGradient!);
        return;
      case 'Activation':
        this.send(layer, 0, this.combine(layer, config, outputGradient, undefined));
        return;
      case 'Add':
        for (let i = 0; i < inboundLayers(layer).length; i += 1) {
          this.send(layer, i, outputGradient!);
        }
        return;
      case 'AveragePooling2D':
        this.backAveragePooling(layer, config, outputGradient!);
        return;
      case 'Flatten':
        this.send(layer, 0, unflatten(this.builder, outputGradient!, this.inputTensor(layer), `${layer.name}_grad_image`));
        return;
      default:
        throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} has the class ${className}, which the gradient graph does not support. ${TFJS_GRADIENT_FALLBACK}`, {
          layer: layer.name,
          className,
        });
    }
  }

  /** Turns the gradient at a layer's output into the gradient before its activation, and adds any gradient injected there. */
  private combine(layer: Layer, config: LayerConfig, outputGradient: string | undefined, preActivationGradient: string | undefined): string {
    const activation = config.activation;
    let gradient: string | undefined;
    if (outputGradient !== undefined) {
      if (activation === 'relu') {
        // ReLU passes the gradient where its output is positive; Sign of a non-negative output is that 0/1 mask.
        const mask = this.builder.addNode('Sign', [this.converter.tensorOf(layer).name], `${layer.name}_relu_mask`);
        gradient = this.builder.addNode('Mul', [outputGradient, mask], `${layer.name}_relu_grad`);
      } else if (activation === 'linear' || activation === undefined) {
        gradient = outputGradient;
      } else {
        throw new CachefleetError(
          'MODEL_UNSUPPORTED_LAYER',
          `Layer ${layer.name} applies ${String(activation)} inside the network, but the gradient graph supports softmax only as the output. ${TFJS_GRADIENT_FALLBACK}`,
          { layer: layer.name, activation },
        );
      }
    }
    if (preActivationGradient === undefined) {
      return gradient!;
    }
    return gradient === undefined ? preActivationGradient : this.builder.addNode('Add', [gradient, preActivationGradient], `${layer.name}_pre_grad_total`);
  }

  private finishInput(output: GraphTensor, gradient: string): void {
    if (output.layout === 'nchw') {
      this.builder.addNodeWithOutput('Transpose', [gradient], GRADIENT_VALUE_NAMES.inputGrad, { perm: intsAttribute([0, 2, 3, 1]) });
    } else {
      this.builder.addNodeWithOutput('Identity', [gradient], GRADIENT_VALUE_NAMES.inputGrad);
    }
  }

  /** Sends the input gradient of a convolution: the transposed convolution of the output gradient with the same weights. */
  private backConv2D(layer: Layer, config: LayerConfig, gradient: string): void {
    const input = this.inputTensor(layer);
    const kernelSize = config.kernelSize as number[];
    const strides = config.strides as number[];
    const dilations = config.dilationRate as number[];
    const outputShape = kerasShapeOf(layer);
    const kernel = readWeight(layer, 'kernel');
    const [kernelHeight, kernelWidth, inChannels, outChannels] = kernel.shape;
    // ConvTranspose reads its weight as [input channels of the transpose, output channels, kH, kW],
    // which is the forward convolution's OIHW layout unchanged.
    const weight = this.builder.addInitializer(`${layer.name}_grad_weight`, [outChannels, inChannels, kernelHeight, kernelWidth], hwioToOihw(kernel.values, kernel.shape));
    const pads = padsFor(config.padding, layer, { inputSize: input.kerasShape, outputSize: outputShape, kernelSize, strides, dilations });
    const name = this.builder.addNode('ConvTranspose', [gradient, weight], `${layer.name}_input_grad`, {
      kernel_shape: intsAttribute(kernelSize),
      strides: intsAttribute(strides),
      dilations: intsAttribute(dilations),
      pads: intsAttribute(pads),
      output_padding: intsAttribute(outputPadding(input.kerasShape, outputShape, kernelSize, strides, dilations, pads)),
    });
    this.send(layer, 0, name);
  }

  private backDense(layer: Layer, config: LayerConfig, gradient: string): void {
    const units = config.units as number;
    const kernel = readWeight(layer, 'kernel');
    const [inputUnits] = kernel.shape;
    // Gemm with transB multiplies by the kernel's transpose [units, inputUnits] without a copy of the weights.
    const kernelName = this.builder.addInitializer(`${layer.name}_grad_kernel`, [inputUnits, units], kernel.values);
    const name = this.builder.addNode('Gemm', [gradient, kernelName], `${layer.name}_input_grad`, { transB: intAttribute(1) });
    this.send(layer, 0, name);
  }

  /** In inference mode a BatchNormalization is y = x · gamma / sqrt(variance + epsilon) + shift, so its input gradient is a per-channel scale. */
  private backBatchNormalization(layer: Layer, output: GraphTensor, gradient: string): void {
    const channels = output.kerasShape[output.kerasShape.length - 1];
    const parameters = readBatchNorm(layer, channels);
    const scale = new Float32Array(channels);
    for (let c = 0; c < channels; c += 1) {
      scale[c] = parameters.gamma[c] / Math.sqrt(parameters.movingVariance[c] + parameters.epsilon);
    }
    // NCHW needs [C, 1, 1] to broadcast over height and width; [batch, units] needs [C].
    const dims = output.layout === 'nchw' ? [channels, 1, 1] : [channels];
    const scaleName = this.builder.addInitializer(`${layer.name}_grad_scale`, dims, scale);
    this.send(layer, 0, this.builder.addNode('Mul', [gradient, scaleName], `${layer.name}_input_grad`));
  }

  /**
   * Spreads each output gradient evenly over its window: a grouped ConvTranspose with a kernel
   * of ones, after dividing by the number of real pixels under the window (TensorFlow's `same`
   * average pooling leaves padding out of the divisor).
   */
  private backAveragePooling(layer: Layer, config: LayerConfig, gradient: string): void {
    const input = this.inputTensor(layer);
    const [inputHeight, inputWidth, channels] = input.kerasShape;
    const poolSize = config.poolSize as number[];
    const strides = (config.strides as number[] | null) ?? poolSize;
    const outputShape = kerasShapeOf(layer);

    if (config.padding === 'valid' && poolSize[0] === inputHeight && poolSize[1] === inputWidth) {
      const shape = constantInts(this.builder, `${layer.name}_grad_shape`, [1, 1, inputHeight, inputWidth]);
      const spread = this.builder.addNode('Expand', [gradient, shape], `${layer.name}_grad_spread`);
      const factor = this.builder.addInitializer(`${layer.name}_grad_factor`, [1], Float32Array.of(1 / (inputHeight * inputWidth)));
      this.send(layer, 0, this.builder.addNode('Mul', [spread, factor], `${layer.name}_input_grad`));
      return;
    }

    const pads = padsFor(config.padding, layer, { inputSize: input.kerasShape, outputSize: outputShape, kernelSize: poolSize, strides, dilations: [1, 1] });
    const counts = windowCounts(input.kerasShape, outputShape, poolSize, strides, pads);
    const inverse = this.builder.addInitializer(`${layer.name}_grad_inverse_count`, [1, 1, outputShape[0], outputShape[1]], counts.map((count) => 1 / count));
    const scaled = this.builder.addNode('Mul', [gradient, inverse], `${layer.name}_grad_scaled`);
    const ones = this.builder.addInitializer(`${layer.name}_grad_ones`, [channels, 1, poolSize[0], poolSize[1]], new Float32Array(channels * poolSize[0] * poolSize[1]).fill(1));
    const name = this.builder.addNode('ConvTranspose', [scaled, ones], `${layer.name}_input_grad`, {
      group: intAttribute(channels),
      kernel_shape: intsAttribute(poolSize),
      strides: intsAttribute(strides),
      pads: intsAttribute(pads),
      output_padding: intsAttribute(outputPadding(input.kerasShape, outputShape, poolSize, strides, [1, 1], pads)),
    });
    this.send(layer, 0, name);
  }

  private inputTensor(layer: Layer): GraphTensor {
    return this.converter.tensorOf(inboundLayers(layer)[0]);
  }

  private send(layer: Layer, inputIndex: number, gradient: string): void {
    this.addOutputGradient(inboundLayers(layer)[inputIndex], gradient);
  }

  private sum(gradients: string[] | undefined, outputBase: string): string | undefined {
    if (gradients === undefined || gradients.length === 0) {
      return undefined;
    }
    if (gradients.length === 1) {
      return gradients[0];
    }
    return this.builder.addNode(gradients.length === 2 ? 'Add' : 'Sum', gradients, outputBase);
  }
}

/** Adds a 1-D int64 constant (a Constant node with `value_ints`) and returns its name. */
function constantInts(builder: OnnxGraphBuilder, base: string, values: readonly number[]): string {
  return builder.addNode('Constant', [], base, { value_ints: intsAttribute(values) });
}

/** Reshapes a [batch, size] gradient into the layout of `like`: NCHW for images, unchanged for vectors. */
function unflatten(builder: OnnxGraphBuilder, flat: string, like: GraphTensor, outputBase: string): string {
  if (like.layout === 'flat') {
    return flat;
  }
  const [height, width, channels] = like.kerasShape;
  const shape = constantInts(builder, `${outputBase}_shape`, [-1, height, width, channels]);
  const nhwc = builder.addNode('Reshape', [flat, shape], `${outputBase}_nhwc`);
  return builder.addNode('Transpose', [nhwc], outputBase, { perm: intsAttribute([0, 3, 1, 2]) });
}

/**
 * Returns the ConvTranspose `output_padding` that restores the forward input size. A strided
 * window maps several input sizes to one output size, and this picks the one the forward had.
 */
function outputPadding(inputSize: readonly number[], outputSize: readonly number[], kernelSize: readonly number[], strides: readonly number[], dilations: readonly number[], pads: readonly number[]): number[] {
  const padding: number[] = [];
  for (let axis = 0; axis < 2; axis += 1) {
    const effectiveKernel = (kernelSize[axis] - 1) * dilations[axis] + 1;
    const restored = strides[axis] * (outputSize[axis] - 1) + effectiveKernel - pads[axis] - pads[axis + 2];
    padding.push(inputSize[axis] - restored);
  }
  return padding;
}

/** Number of real (unpadded) pixels under each output window, row-major [outputHeight, outputWidth]. */
function windowCounts(inputSize: readonly number[], outputSize: readonly number[], poolSize: readonly number[], strides: readonly number[], pads: readonly number[]): Float32Array {
  const counts = new Float32Array(outputSize[0] * outputSize[1]);
  for (let row = 0; row < outputSize[0]; row += 1) {
    const top = row * strides[0] - pads[0];
    const rows = Math.min(top + poolSize[0], inputSize[0]) - Math.max(top, 0);
    for (let column = 0; column < outputSize[1]; column += 1) {
      const left = column * strides[1] - pads[1];
      const columns = Math.min(left + poolSize[1], inputSize[1]) - Math.max(left, 0);
      counts[row * outputSize[1] + column] = rows * columns;
    }
  }
  return counts;
}

function checkKeyLayers(model: LayersModel, keyLayers: readonly number[]): void {
  const lastIndex = model.layers.length - 1;
  for (const index of keyLayers) {
    if (!Number.isInteger(index) || index < 0 || index > lastIndex) {
      throw new CachefleetError('KEY_LAYER_NOT_FOUND', `Key layer index ${index} does not exist in model ${model.name}: valid indices are 0 to ${lastIndex}.`, {
        value: index,
        validRange: [0, lastIndex],
      });
    }
  }
}

function describeKeyLayer(layer: Layer, index: number): KeyLayer {
  const shape = kerasShapeOf(layer);
  return { index, name: layer.name, shape, size: shape.reduce((product, dim) => product * dim, 1) };
}
