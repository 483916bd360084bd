import type { LayersModel, layers } from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import type { KeyLayer } from '../models/key-layers.js';
import { intAttribute, OPSET_VERSION, type GraphValue } from './onnx-graph.js';
import { inboundLayers, kerasShapeOf, LayerConverter, type GraphTensor } from './onnx-layers.js';
import { TFJS_FALLBACK } from './onnx-weights.js';

type Layer = layers.Layer;

/** Keras layer classes that `exportToOnnx` converts. Any other class makes it throw. */
export const ONNX_EXPORT_LAYER_CLASSES: readonly string[] = [
  'InputLayer',
  'Conv2D',
  'BatchNormalization',
  'Activation',
  'Add',
  'AveragePooling2D',
  'Flatten',
  'Dense',
];

/** Names of the graph's input and outputs, fixed so that callers can feed and fetch by name. */
export const ONNX_VALUE_NAMES = {
  input: 'input',
  probabilities: 'probabilities',
  logits: 'logits',
  features: 'features',
} as const;

/**
 * Source of the exported logits, named as in the tfjs FeatureExtractor:
 * - `dense-kernel`: the last layer is Dense with softmax, and logits are its value before the softmax.
 * - `softmax-input`: the last layer is a softmax Activation, and logits are its input.
 * - `output`: the last layer is a linear Dense, so logits are its output and the graph adds the softmax.
 */
export type OnnxLogitsSource = 'dense-kernel' | 'softmax-input' | 'output';

export interface OnnxExportOptions {
  /** Indices into `model.layers` whose outputs, flattened in NHWC order and concatenated, form the key. */
  keyLayers: readonly number[];
  /**
   * Folds each BatchNormalization into the Conv2D before it when that convolution has no
   * activation, no other consumer and is not a key layer. Default true.
   */
  foldBatchNorm?: boolean;
}

/**
 * ONNX form of a Keras classifier. The graph takes `input` [batch, height, width, channels]
 * in NHWC order, like the Keras model. It returns `probabilities` and `logits`, each
 * [batch, numClasses], and `features` [batch, featureSize]. The features are the key layers'
 * activations, each flattened in NHWC order like a Keras Flatten and concatenated in
 * `keyLayers` order.
 */
export interface OnnxClassifier {
  /** Serialised ModelProto (IR 8, opset 13) for `InferenceSession.create`. */
  modelBytes: Uint8Array;
  /** Input shape without the batch dimension: [height, width, channels], or [units] for vectors. */
  inputShape: number[];
  numClasses: number;
  featureSize: number;
  keyLayers: KeyLayer[];
  logitsSource: OnnxLogitsSource;
  /** Number of BatchNormalization layers folded into the convolution before them. */
  foldedBatchNorms: number;
  opsetVersion: number;
}

/**
 * Converts a tfjs LayersModel into an ONNX classifier graph (see OnnxClassifier). Images are
 * transposed once from NHWC to NCHW for the convolutions, and each key layer is transposed back
 * to NHWC before it is flattened. The model's weights are copied, and the model is not changed.
 *
 * Throws MODEL_UNSUPPORTED_LAYER for layer classes outside ONNX_EXPORT_LAYER_CLASSES and for
 * settings the export cannot express. Those are activations other than linear, relu and
 * softmax, padding other than same and valid, channels-first data and shared layers.
 * Throws MODEL_INVALID for a model without one input and one softmax or linear output,
 * INVALID_ARGUMENT for an empty key layer list, and KEY_LAYER_NOT_FOUND for a key layer index
 * outside `model.layers`.
 */
export function exportToOnnx(model: LayersModel, options: OnnxExportOptions): OnnxClassifier {
  checkSupportedLayers(model);
  checkKeyLayers(model, options.keyLayers);
  const head = describeHead(model);

  const keyLayerSet = new Set(options.keyLayers.map((index) => model.layers[index]));
  const converter = new LayerConverter(model, keyLayerSet, options.foldBatchNorm ?? true, ONNX_VALUE_NAMES.input, Object.values(ONNX_VALUE_NAMES));
  // A Sequential model leaves its InputLayer out of `model.layers`, so it is converted first.
  const inputLayer = model.inputs[0].sourceLayer;
  if (!model.layers.includes(inputLayer)) {
    converter.convert(inputLayer);
  }
  for (const layer of model.layers) {
    converter.convert(layer);
  }

  const { logits, probabilities } = head.connect(converter);
  const builder = converter.builder;
  builder.addNodeWithOutput('Identity', [logits.name], ONNX_VALUE_NAMES.logits);
  builder.addNodeWithOutput('Identity', [probabilities.name], ONNX_VALUE_NAMES.probabilities);

  const keyLayers = options.keyLayers.map((index) => describeKeyLayer(model.layers[index], index));
  const flattenedKeys = keyLayers.map((keyLayer) => converter.flattenNhwc(converter.tensorOf(model.layers[keyLayer.index])));
  builder.addNodeWithOutput('Concat', flattenedKeys, ONNX_VALUE_NAMES.features, { axis: intAttribute(1) });

  const numClasses = logits.kerasShape[0];
  const featureSize = keyLayers.reduce((sum, keyLayer) => sum + keyLayer.size, 0);
  const input: GraphValue = { name: ONNX_VALUE_NAMES.input, shape: converter.inputShape };
  const outputs: GraphValue[] = [
    { name: ONNX_VALUE_NAMES.probabilities, shape: [numClasses] },
    { name: ONNX_VALUE_NAMES.logits, shape: [numClasses] },
    { name: ONNX_VALUE_NAMES.features, shape: [featureSize] },
  ];
  const modelBytes = builder.encode(model.name, [input], outputs);

  return {
    modelBytes,
    inputShape: converter.inputShape,
    numClasses,
    featureSize,
    keyLayers,
    logitsSource: head.source,
    foldedBatchNorms: converter.foldedBatchNorms,
    opsetVersion: OPSET_VERSION,
  };
}

function checkSupportedLayers(model: LayersModel): void {
  const unsupported = new Map<string, string[]>();
  for (const layer of model.layers) {
    const className = layer.getClassName();
    if (!ONNX_EXPORT_LAYER_CLASSES.includes(className)) {
      unsupported.set(className, [...(unsupported.get(className) ?? []), layer.name]);
    }
  }

  if (unsupported.size > 0) {
    const listed = [...unsupported].map(([className, names]) => `${className} (${names.join(', ')})`).join('; ');
    throw new CachefleetError(
      'MODEL_UNSUPPORTED_LAYER',
      `Model ${model.name} contains layer classes the ONNX export does not support: ${listed}. ` +
        `Supported classes: ${ONNX_EXPORT_LAYER_CLASSES.join(', ')}. ${TFJS_FALLBACK}`,
      { unsupported: [...unsupported].map(([className, layerNames]) => ({ className, layerNames })) },
    );
  }
}

function checkKeyLayers(model: LayersModel, keyLayers: readonly number[]): void {
  if (keyLayers.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'The key layer list is empty. Give at least one index into model.layers, such as 82, 92, 103 for ResNet32.', {
      keyLayers,
    });
  }

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

interface Head {
  source: OnnxLogitsSource;
  /** Returns the graph values of the logits and the probabilities once every layer is converted. */
  connect(converter: LayerConverter): { logits: GraphTensor; probabilities: GraphTensor };
}

/** Finds the logits from the output layer, with the same rules as the tfjs FeatureExtractor. */
function describeHead(model: LayersModel): Head {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Model ${model.name} has ${model.inputs.length} inputs and ${model.outputs.length} outputs, but the ONNX export needs exactly one of each. ${TFJS_FALLBACK}`,
      { inputs: model.inputs.length, outputs: model.outputs.length },
    );
  }

  // `model.outputLayers` is empty for a Sequential model, so the layer is read from the output tensor.
  const outputLayer = model.outputs[0].sourceLayer;
  const className = outputLayer.getClassName();
  const activation = outputLayer.getConfig().activation;
  if (className === 'Dense' && activation === 'softmax') {
    return {
      source: 'dense-kernel',
      connect: (converter) => ({ logits: converter.preActivationOf(outputLayer), probabilities: converter.tensorOf(outputLayer) }),
    };
  }
  if (className === 'Activation' && activation === 'softmax') {
    const [producer] = inboundLayers(outputLayer);
    return {
      source: 'softmax-input',
      connect: (converter) => ({ logits: converter.tensorOf(producer), probabilities: converter.tensorOf(outputLayer) }),
    };
  }
  if (className === 'Dense' && activation === 'linear') {
    return {
      source: 'output',
      connect: (converter) => {
        const logits = converter.tensorOf(outputLayer);
        return { logits, probabilities: converter.addSoftmax(logits, `${outputLayer.name}_softmax`) };
      },
    };
  }

  throw new CachefleetError(
    'MODEL_INVALID',
    `Output layer ${outputLayer.name} (${className}, activation ${String(activation)}) is neither a softmax nor a linear Dense layer, so the ONNX graph has no logits to return. ` +
      'Run this model with the TensorFlow.js FeatureExtractor, which uses log-probabilities as logits.',
    { outputLayer: outputLayer.name, className, activation },
  );
}

function describeKeyLayer(layer: Layer, index: number): KeyLayer {
  const shape = kerasShapeOf(layer);
  return { index, name: layer.name, shape, size: shape.reduce((product, dim) => product * dim, 1) };
}
