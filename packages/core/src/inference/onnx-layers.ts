import type { LayersModel, layers } from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import { floatAttribute, intAttribute, intsAttribute, OnnxGraphBuilder } from './onnx-graph.js';
import { foldBatchNorm, hwioToOihw, padsFor, readBatchNorm, readBias, readWeight, TFJS_FALLBACK } from './onnx-weights.js';

type Layer = layers.Layer;
type LayerConfig = Record<string, unknown>;

const SUPPORTED_ACTIVATIONS: readonly string[] = ['linear', 'relu', 'softmax'];

/** Value in the ONNX graph. Images are kept NCHW, so only `flat` values share Keras' memory order. */
export interface GraphTensor {
  name: string;
  layout: 'nchw' | 'flat';
  /** Keras shape without the batch dimension: [height, width, channels] or [units]. */
  kerasShape: number[];
}

export function inboundLayers(layer: Layer): Layer[] {
  return layer.inboundNodes[0]?.inboundLayers ?? [];
}

/** Returns the layer's output shape without the batch dimension, and throws when a dimension is unknown. */
export function kerasShapeOf(layer: Layer): number[] {
  const outputShape = layer.outputShape;
  if (Array.isArray(outputShape[0])) {
    throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} has several outputs, but the ONNX export supports one output per layer. ${TFJS_FALLBACK}`, {
      layer: layer.name,
    });
  }

  const dims = (outputShape as (number | null)[]).slice(1);
  if (dims.some((dim) => dim === null)) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Layer ${layer.name} has output shape [${outputShape.join(', ')}] with an unknown dimension after the batch, but the ONNX export needs fixed shapes. Build the model with a fixed input size.`,
      { layer: layer.name, outputShape },
    );
  }
  return dims as number[];
}

/**
 * Emits the ONNX nodes of a tfjs LayersModel layer by layer, in `model.layers` order (which
 * Keras keeps topological), and remembers the graph value each layer produces.
 */
export class LayerConverter {
  readonly builder = new OnnxGraphBuilder();
  inputShape: number[] = [];
  foldedBatchNorms = 0;

  private readonly tensors = new Map<Layer, GraphTensor>();
  private readonly preActivations = new Map<Layer, GraphTensor>();
  private readonly consumerCounts = new Map<Layer, number>();
  /** Each convolution whose BatchNormalization was folded into it, mapped to that layer. */
  private readonly foldedInto = new Map<Layer, Layer>();

  /**
   * @param keyLayers layers whose own output must stay in the graph, so no folding removes it
   * @param inputName name of the graph input
   * @param reservedNames graph input and output names, which no layer output may take
   */
  constructor(
    private readonly model: LayersModel,
    private readonly keyLayers: ReadonlySet<Layer>,
    private readonly foldBatchNorms: boolean,
    private readonly inputName: string,
    reservedNames: readonly string[],
  ) {
    // Reserved first, so that a Keras layer called `logits` or `input` gets a suffixed name instead.
    for (const name of reservedNames) {
      this.builder.reserveName(name);
    }

    for (const layer of model.layers) {
      if (layer.inboundNodes.length > 1) {
        throw new CachefleetError(
          'MODEL_UNSUPPORTED_LAYER',
          `Layer ${layer.name} is called ${layer.inboundNodes.length} times (a shared layer), but the ONNX export supports one call per layer. ${TFJS_FALLBACK}`,
          { layer: layer.name },
        );
      }
      for (const producer of inboundLayers(layer)) {
        this.consumerCounts.set(producer, (this.consumerCounts.get(producer) ?? 0) + 1);
      }
    }
    // The model output counts as a consumer, so that folding never removes it.
    for (const output of model.outputs) {
      this.consumerCounts.set(output.sourceLayer, (this.consumerCounts.get(output.sourceLayer) ?? 0) + 1);
    }
  }

  tensorOf(layer: Layer): GraphTensor {
    const tensor = this.tensors.get(layer);
    if (tensor === undefined) {
      throw new CachefleetError('MODEL_INVALID', `Layer ${layer.name} is read before it is computed, so model.layers is not in topological order.`, {
        layer: layer.name,
      });
    }
    return tensor;
  }

  /** Returns a Dense layer's value before its activation (x · kernel + bias). */
  preActivationOf(dense: Layer): GraphTensor {
    return this.preActivations.get(dense) ?? this.tensorOf(dense);
  }

  convert(layer: Layer): void {
    const className = layer.getClassName();
    if (className === 'InputLayer') {
      this.tensors.set(layer, this.convertInput(layer));
      return;
    }

    const inputs = inboundLayers(layer).map((producer) => this.tensorOf(producer));
    const config = layer.getConfig();
    this.tensors.set(layer, this.convertOne(className, layer, inputs, config));
  }

  /** Adds a softmax over axis 1 and returns its output. */
  addSoftmax(input: GraphTensor, outputBase: string): GraphTensor {
    const name = this.builder.addNode('Softmax', [input.name], outputBase, { axis: intAttribute(1) });
    return { ...input, name };
  }

  /** Returns the name of a [batch, size] value that contains `tensor` in Keras (NHWC) order. */
  flattenNhwc(tensor: GraphTensor): string {
    return this.flattenTensor(tensor, `${tensor.name}_nhwc_flat`).name;
  }

  private convertOne(className: string, layer: Layer, inputs: GraphTensor[], config: LayerConfig): GraphTensor {
    switch (className) {
      case 'Conv2D':
        return this.convertConv2D(layer, inputs[0], config);
      case 'BatchNormalization':
        return this.convertBatchNormalization(layer, inputs[0]);
      case 'Activation':
        return this.applyActivation(layer, inputs[0], config.activation);
      case 'Add':
        return this.convertAdd(layer, inputs);
      case 'AveragePooling2D':
        return this.convertAveragePooling(layer, inputs[0], config);
      case 'Flatten':
        return this.flattenTensor(inputs[0], layer.name);
      case 'Dense':
        return this.convertDense(layer, inputs[0], config);
      default:
        throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} has the class ${className}, which the ONNX export does not support. ${TFJS_FALLBACK}`, {
          layer: layer.name,
          className,
        });
    }
  }

  /** Keras' Flatten reads NHWC memory order, so an NCHW image is transposed back before flattening. */
  private flattenTensor(tensor: GraphTensor, outputBase: string): GraphTensor {
    if (tensor.layout === 'flat') {
      return tensor;
    }

    const [height, width, channels] = tensor.kerasShape;
    // For a 1×1 image the NCHW and NHWC orders coincide, so the transpose is left out.
    const nhwc = height * width === 1 ? tensor.name : this.builder.addNode('Transpose', [tensor.name], `${tensor.name}_nhwc`, { perm: intsAttribute([0, 2, 3, 1]) });
    const name = this.builder.addNode('Flatten', [nhwc], outputBase, { axis: intAttribute(1) });
    return { name, layout: 'flat', kerasShape: [height * width * channels] };
  }

  private convertInput(layer: Layer): GraphTensor {
    const shape = kerasShapeOf(layer);
    this.inputShape = shape;
    if (shape.length === 1) {
      return { name: this.inputName, layout: 'flat', kerasShape: shape };
    }
    if (shape.length !== 3) {
      throw new CachefleetError(
        'MODEL_UNSUPPORTED_LAYER',
        `Input ${layer.name} has shape [${shape.join(', ')}], but the ONNX export supports only images [height, width, channels] and vectors. ${TFJS_FALLBACK}`,
        { layer: layer.name, shape },
      );
    }

    // Keras takes NHWC input but ONNX Conv reads NCHW, so the input is transposed once here.
    const name = this.builder.addNode('Transpose', [this.inputName], `${this.inputName}_nchw`, { perm: intsAttribute([0, 3, 1, 2]) });
    return { name, layout: 'nchw', kerasShape: shape };
  }

  private convertConv2D(layer: Layer, input: GraphTensor, config: LayerConfig): GraphTensor {
    requireImage(layer, input);
    requireChannelsLast(layer, config);
    const kernelSize = config.kernelSize as number[];
    const strides = config.strides as number[];
    const dilations = config.dilationRate as number[];
    const outputShape = kerasShapeOf(layer);
    const kernel = readWeight(layer, 'kernel');
    const [kernelHeight, kernelWidth, inChannels, outChannels] = kernel.shape;

    let weights = hwioToOihw(kernel.values, kernel.shape);
    let bias = readBias(layer, config, outChannels);
    let outputBase = layer.name;
    const batchNorm = this.findFoldableBatchNorm(layer, config);
    if (batchNorm !== undefined) {
      ({ weights, bias } = foldBatchNorm(readBatchNorm(batchNorm, outChannels), weights, bias));
      this.foldedInto.set(layer, batchNorm);
      this.foldedBatchNorms += 1;
      outputBase = batchNorm.name;
    }

    const weightName = this.builder.addInitializer(`${layer.name}_weight`, [outChannels, inChannels, kernelHeight, kernelWidth], weights);
    const biasName = this.builder.addInitializer(`${layer.name}_bias`, [outChannels], bias);
    const pads = padsFor(config.padding, layer, { inputSize: input.kerasShape, outputSize: outputShape, kernelSize, strides, dilations });
    const name = this.builder.addNode('Conv', [input.name, weightName, biasName], outputBase, {
      kernel_shape: intsAttribute(kernelSize),
      strides: intsAttribute(strides),
      dilations: intsAttribute(dilations),
      pads: intsAttribute(pads),
    });

    return this.applyActivation(layer, { name, layout: 'nchw', kerasShape: outputShape }, config.activation);
  }

  /**
   * Returns the BatchNormalization that directly follows this convolution when folding it into
   * the weights changes no value the graph exposes: the convolution has no activation, no other
   * consumer, and is not a key layer.
   */
  private findFoldableBatchNorm(conv: Layer, config: LayerConfig): Layer | undefined {
    if (!this.foldBatchNorms || config.activation !== 'linear' || this.keyLayers.has(conv) || this.consumerCounts.get(conv) !== 1) {
      return undefined;
    }

    const consumer = this.model.layers.find((layer) => inboundLayers(layer).includes(conv));
    if (consumer?.getClassName() !== 'BatchNormalization') {
      return undefined;
    }
    checkBatchNormAxis(consumer, 4);
    return consumer;
  }

  private convertBatchNormalization(layer: Layer, input: GraphTensor): GraphTensor {
    const [producer] = inboundLayers(layer);
    if (this.foldedInto.get(producer) === layer) {
      return input;
    }

    checkBatchNormAxis(layer, input.layout === 'nchw' ? 4 : 2);
    const channels = input.kerasShape[input.kerasShape.length - 1];
    const parameters = readBatchNorm(layer, channels);
    const inputs = [
      input.name,
      this.builder.addInitializer(`${layer.name}_gamma`, [channels], parameters.gamma),
      this.builder.addInitializer(`${layer.name}_beta`, [channels], parameters.beta),
      this.builder.addInitializer(`${layer.name}_moving_mean`, [channels], parameters.movingMean),
      this.builder.addInitializer(`${layer.name}_moving_variance`, [channels], parameters.movingVariance),
    ];
    // ONNX BatchNormalization normalises axis 1, the channel axis of both NCHW and [batch, units].
    const name = this.builder.addNode('BatchNormalization', inputs, layer.name, { epsilon: floatAttribute(parameters.epsilon) });
    return { name, layout: input.layout, kerasShape: input.kerasShape };
  }

  private convertAdd(layer: Layer, inputs: GraphTensor[]): GraphTensor {
    if (new Set(inputs.map((input) => input.layout)).size !== 1) {
      throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Add layer ${layer.name} mixes image and vector inputs, which the ONNX export cannot convert. ${TFJS_FALLBACK}`, {
        layer: layer.name,
      });
    }

    const opType = inputs.length === 2 ? 'Add' : 'Sum';
    const name = this.builder.addNode(opType, inputs.map((input) => input.name), layer.name);
    return { name, layout: inputs[0].layout, kerasShape: kerasShapeOf(layer) };
  }

  private convertAveragePooling(layer: Layer, input: GraphTensor, config: LayerConfig): GraphTensor {
    requireImage(layer, input);
    requireChannelsLast(layer, config);
    const poolSize = config.poolSize as number[];
    const strides = (config.strides as number[] | null) ?? poolSize;
    const outputShape = kerasShapeOf(layer);
    const [inputHeight, inputWidth] = input.kerasShape;

    // A window over the whole image is a global average, which needs no window attributes.
    if (config.padding === 'valid' && poolSize[0] === inputHeight && poolSize[1] === inputWidth) {
      const name = this.builder.addNode('GlobalAveragePool', [input.name], layer.name);
      return { name, layout: 'nchw', kerasShape: outputShape };
    }

    const pads = padsFor(config.padding, layer, { inputSize: input.kerasShape, outputSize: outputShape, kernelSize: poolSize, strides, dilations: [1, 1] });
    // TensorFlow's `same` average pooling divides by the number of real pixels under the window.
    const name = this.builder.addNode('AveragePool', [input.name], layer.name, {
      kernel_shape: intsAttribute(poolSize),
      strides: intsAttribute(strides),
      pads: intsAttribute(pads),
      count_include_pad: intAttribute(0),
    });
    return { name, layout: 'nchw', kerasShape: outputShape };
  }

  private convertDense(layer: Layer, input: GraphTensor, config: LayerConfig): GraphTensor {
    if (input.layout !== 'flat') {
      throw new CachefleetError(
        'MODEL_UNSUPPORTED_LAYER',
        `Dense layer ${layer.name} takes an image input, but the ONNX export supports Dense only on [batch, units] inputs. ${TFJS_FALLBACK}`,
        { layer: layer.name },
      );
    }

    const units = config.units as number;
    const kernel = readWeight(layer, 'kernel');
    const kernelName = this.builder.addInitializer(`${layer.name}_kernel`, kernel.shape, kernel.values);
    const biasName = this.builder.addInitializer(`${layer.name}_bias`, [units], readBias(layer, config, units));
    // Gemm computes input · kernel + bias with the Keras kernel layout [inputUnits, units] unchanged.
    const name = this.builder.addNode('Gemm', [input.name, kernelName, biasName], `${layer.name}_linear`);

    const preActivation: GraphTensor = { name, layout: 'flat', kerasShape: [units] };
    this.preActivations.set(layer, preActivation);
    return this.applyActivation(layer, preActivation, config.activation);
  }

  private applyActivation(layer: Layer, input: GraphTensor, activation: unknown): GraphTensor {
    if (typeof activation !== 'string' || !SUPPORTED_ACTIVATIONS.includes(activation)) {
      throw new CachefleetError(
        'MODEL_UNSUPPORTED_LAYER',
        `Layer ${layer.name} uses the activation ${String(activation)}, but the ONNX export supports only ${SUPPORTED_ACTIVATIONS.join(', ')}. ${TFJS_FALLBACK}`,
        { layer: layer.name, activation },
      );
    }

    if (activation === 'relu') {
      return { ...input, name: this.builder.addNode('Relu', [input.name], `${layer.name}_relu`) };
    }
    if (activation === 'softmax') {
      // Keras' softmax runs over the last axis, the channels, which is axis 1 of NCHW and of [batch, units].
      return this.addSoftmax(input, `${layer.name}_softmax`);
    }
    return input;
  }
}

function requireImage(layer: Layer, input: GraphTensor): void {
  if (input.layout !== 'nchw') {
    throw new CachefleetError('MODEL_UNSUPPORTED_LAYER', `Layer ${layer.name} (${layer.getClassName()}) takes a vector input, but the ONNX export supports it only on images. ${TFJS_FALLBACK}`, {
      layer: layer.name,
    });
  }
}

function requireChannelsLast(layer: Layer, config: LayerConfig): void {
  if (config.dataFormat !== undefined && config.dataFormat !== 'channelsLast') {
    throw new CachefleetError(
      'MODEL_UNSUPPORTED_LAYER',
      `Layer ${layer.name} uses data format ${String(config.dataFormat)}, but the ONNX export supports only channelsLast (NHWC), the Keras default. ${TFJS_FALLBACK}`,
      { layer: layer.name, dataFormat: config.dataFormat },
    );
  }
}

function checkBatchNormAxis(layer: Layer, rank: number): void {
  const axis = layer.getConfig().axis;
  if (axis !== -1 && axis !== rank - 1) {
    throw new CachefleetError(
      'MODEL_UNSUPPORTED_LAYER',
      `BatchNormalization ${layer.name} normalises axis ${String(axis)}, but the ONNX export supports only the channel axis (-1 or ${rank - 1}). ${TFJS_FALLBACK}`,
      { layer: layer.name, axis },
    );
  }
}
