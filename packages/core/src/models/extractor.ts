import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import type { KeyLayer } from './key-layers.js';
import type { LoadedModel } from './load-model.js';

/** Outputs of `FeatureExtractor.run` for `n` images, each array row-major with one row per image. */
export interface ExtractionResult {
  /** n × numClasses pre-softmax scores. */
  logits: Float32Array;
  /** n × numClasses softmax outputs. */
  probabilities: Float32Array;
  /** n × featureSize raw key-layer activations (not normalised), layers concatenated in the given order. */
  features: Float32Array;
}

/**
 * Source of the logits, chosen from the model's last layer.
 * - `dense-kernel`: the last layer is Dense with softmax. Logits = input · kernel + bias, the
 *   same operations Dense runs before its softmax.
 * - `softmax-input`: the last layer is a softmax activation layer, and logits are its input.
 * - `output`: the last layer is a linear Dense, so the output already is the logits.
 * - `log-probabilities`: any other last layer. The output is taken as probabilities and logits =
 *   log(probabilities), which equals the true logits up to a constant per row.
 */
export type LogitsSource = 'dense-kernel' | 'softmax-input' | 'output' | 'log-probabilities';

/** Smallest positive normal float32, the floor under probabilities before `log`, so logits stay finite. */
const MIN_PROBABILITY = 1.1754943508222875e-38;

interface Head {
  source: LogitsSource;
  /** Extra tensor the multi-output model returns for the logits, if any. */
  extraOutput?: tfl.SymbolicTensor;
  /** Kernel and optional bias of the final Dense layer, for `dense-kernel`. */
  dense?: { kernel: tf.Tensor; bias?: tf.Tensor };
}

/**
 * Computes logits, probabilities and raw key features of images with one forward pass per
 * batch. Every tensor a call creates is disposed before it returns.
 *
 * The extractor shares the layers and weights of `loaded.model` and does not own them:
 * `dispose()` leaves the model usable, and the caller disposes the model itself.
 */
export class FeatureExtractor {
  readonly featureSize: number;
  readonly numClasses: number;
  readonly logitsSource: LogitsSource;
  readonly keyLayers: readonly KeyLayer[];

  private readonly inputShape: [number, number, number];
  private readonly imageSize: number;
  private readonly head: Head;
  /** For [model output, each key layer, logits input]: its position among the predict outputs. */
  private readonly outputSlots: number[];
  private multiOutputModel: tfl.LayersModel | undefined;

  constructor(loaded: LoadedModel, keyLayers: KeyLayer[]) {
    checkKeyLayers(loaded, keyLayers);

    const model = loaded.model;
    this.keyLayers = keyLayers.map((keyLayer) => ({ ...keyLayer, shape: [...keyLayer.shape] }));
    this.featureSize = keyLayers.reduce((total, keyLayer) => total + keyLayer.size, 0);
    this.numClasses = loaded.numClasses;
    this.inputShape = loaded.inputShape;
    this.imageSize = loaded.inputShape[0] * loaded.inputShape[1] * loaded.inputShape[2];
    this.head = describeHead(model);
    this.logitsSource = this.head.source;

    const keyOutputs = keyLayers.map((keyLayer) => model.layers[keyLayer.index].output as tfl.SymbolicTensor);
    const extraOutputs = this.head.extraOutput === undefined ? [] : [this.head.extraOutput];
    const { uniqueOutputs, slots } = deduplicateOutputs([model.outputs[0], ...keyOutputs, ...extraOutputs]);
    this.outputSlots = slots;
    this.multiOutputModel = tfl.model({ inputs: model.inputs, outputs: uniqueOutputs });
  }

  /**
   * Runs the model on `n` preprocessed images given as one n × H × W × C (NHWC) float32 array,
   * `batchSize` images per forward pass. Throws NON_FINITE_ACTIVATION naming the row (0-based
   * within this call) whose key features contain NaN or an infinity.
   */
  run(inputs: Float32Array, n: number, batchSize = 128): ExtractionResult {
    const multiOutputModel = this.requireModel();
    this.checkRunArguments(inputs, n, batchSize);

    const result: ExtractionResult = {
      logits: new Float32Array(n * this.numClasses),
      probabilities: new Float32Array(n * this.numClasses),
      features: new Float32Array(n * this.featureSize),
    };
    for (let start = 0; start < n; start += batchSize) {
      const count = Math.min(batchSize, n - start);
      this.runBatch(multiOutputModel, inputs, start, count, result);
      this.checkFinite(result.features, start, count);
    }
    return result;
  }

  /** Releases the multi-output model, so later `run` calls throw. Leaves `loaded.model` intact. */
  dispose(): void {
    // The multi-output model reuses the layers of `loaded.model`: `LayersModel.dispose()` would
    // dispose their weights too, so the reference is only dropped.
    this.multiOutputModel = undefined;
  }

  private runBatch(multiOutputModel: tfl.LayersModel, inputs: Float32Array, start: number, count: number, result: ExtractionResult): void {
    const [height, width, channels] = this.inputShape;
    const batch = inputs.subarray(start * this.imageSize, (start + count) * this.imageSize);

    // tidy disposes the input tensor, the unused predict outputs and the head's intermediates.
    const tensors = tf.tidy(() => {
      const x = tf.tensor4d(batch, [count, height, width, channels]);
      const predicted = toTensorList(multiOutputModel.predict(x, { batchSize: count }));
      const outputs = this.outputSlots.map((slot) => predicted[slot]);
      const keyTensors = outputs.slice(1, 1 + this.keyLayers.length);
      const { logits, probabilities } = this.computeHead(outputs[0], outputs[1 + this.keyLayers.length]);
      return [logits, probabilities, ...keyTensors];
    });

    try {
      const [logits, probabilities, ...keyTensors] = tensors;
      result.logits.set(logits.dataSync(), start * this.numClasses);
      result.probabilities.set(probabilities.dataSync(), start * this.numClasses);
      this.copyFeatures(keyTensors, start, count, result.features);
    } finally {
      tf.dispose(tensors);
    }
  }

  private computeHead(output: tf.Tensor, extra: tf.Tensor | undefined): { logits: tf.Tensor; probabilities: tf.Tensor } {
    switch (this.head.source) {
      case 'dense-kernel': {
        const { kernel, bias } = this.head.dense as { kernel: tf.Tensor; bias?: tf.Tensor };
        const product = tf.matMul(extra as tf.Tensor, kernel);
        return { logits: bias === undefined ? product : tf.add(product, bias), probabilities: output };
      }
      case 'softmax-input':
        return { logits: extra as tf.Tensor, probabilities: output };
      case 'output':
        return { logits: output, probabilities: tf.softmax(output) };
      case 'log-probabilities':
        return { logits: tf.log(tf.maximum(output, MIN_PROBABILITY)), probabilities: output };
    }
  }

  /** Writes each key layer's activations, flattened NHWC, into its slice of each feature row. */
  private copyFeatures(keyTensors: tf.Tensor[], start: number, count: number, features: Float32Array): void {
    let offset = 0;
    keyTensors.forEach((tensor, k) => {
      const size = this.keyLayers[k].size;
      const values = tensor.dataSync() as Float32Array;
      for (let row = 0; row < count; row++) {
        features.set(values.subarray(row * size, (row + 1) * size), (start + row) * this.featureSize + offset);
      }
      offset += size;
    });
  }

  private checkFinite(features: Float32Array, start: number, count: number): void {
    for (let row = start; row < start + count; row++) {
      const rowStart = row * this.featureSize;
      for (let column = 0; column < this.featureSize; column++) {
        const value = features[rowStart + column];
        if (Number.isFinite(value)) continue;

        const { keyLayer, element } = this.locateColumn(column);
        throw new CachefleetError(
          'NON_FINITE_ACTIVATION',
          `Key layer ${keyLayer.name} (index ${keyLayer.index}) produced ${value} for row ${row} of this call (value ${element} of its ${keyLayer.size}). ` +
            'Check that input row for NaN or infinite pixels and that it was preprocessed like the training data.',
          { row, layer: keyLayer.name, layerIndex: keyLayer.index, element, value: String(value) },
        );
      }
    }
  }

  private locateColumn(column: number): { keyLayer: KeyLayer; element: number } {
    let offset = 0;
    for (const keyLayer of this.keyLayers) {
      if (column < offset + keyLayer.size) return { keyLayer, element: column - offset };
      offset += keyLayer.size;
    }
    throw new RangeError(`Feature column ${column} is beyond featureSize ${this.featureSize}.`);
  }

  private checkRunArguments(inputs: Float32Array, n: number, batchSize: number): void {
    if (!Number.isInteger(n) || n < 0) {
      throw new CachefleetError('INVALID_ARGUMENT', `Image count n must be a non-negative integer, got ${n}.`, { n });
    }
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new CachefleetError('INVALID_ARGUMENT', `batchSize must be a positive integer, got ${batchSize}. 128 suits the wasm backend.`, { batchSize });
    }
    if (inputs.length !== n * this.imageSize) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Input holds ${inputs.length} floats, but ${n} images of shape [${this.inputShape.join(', ')}] need ${n * this.imageSize}. ` +
          'Pass n images in NHWC order, already preprocessed.',
        { length: inputs.length, n, inputShape: this.inputShape },
      );
    }
  }

  private requireModel(): tfl.LayersModel {
    if (this.multiOutputModel === undefined) {
      throw new CachefleetError('INVALID_ARGUMENT', 'This FeatureExtractor was disposed. Create a new one to run the model again.', {});
    }
    return this.multiOutputModel;
  }
}

/** Chooses the logits source from the layer that produces the model's output. */
function describeHead(model: tfl.LayersModel): Head {
  const output = model.outputs[0];
  const layer = output.sourceLayer;
  const className = layer.getClassName();
  const activation = layer.getConfig().activation;
  const [layerInput] = output.inputs;

  if (className === 'Dense' && activation === 'softmax' && layerInput?.shape.length === 2) {
    const [kernel, bias] = layer.getWeights();
    return { source: 'dense-kernel', extraOutput: layerInput, dense: { kernel, bias } };
  }
  if ((className === 'Activation' && activation === 'softmax') || className === 'Softmax') {
    return { source: 'softmax-input', extraOutput: layerInput };
  }
  if (className === 'Dense' && (activation === 'linear' || activation === undefined)) {
    return { source: 'output' };
  }
  return { source: 'log-probabilities' };
}

function checkKeyLayers(loaded: LoadedModel, keyLayers: KeyLayer[]): void {
  if (keyLayers.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'FeatureExtractor needs at least one key layer. Resolve them with resolveKeyLayers().', {});
  }

  for (const keyLayer of keyLayers) {
    const layer = loaded.model.layers[keyLayer.index];
    if (layer?.name !== keyLayer.name) {
      throw new CachefleetError(
        'KEY_LAYER_NOT_FOUND',
        `Key layer ${keyLayer.name} (index ${keyLayer.index}) is not a layer of model ${loaded.sourcePath}. ` +
          'Resolve the key layers with resolveKeyLayers() against this model.',
        { name: keyLayer.name, index: keyLayer.index, path: loaded.sourcePath },
      );
    }
  }
}

/**
 * Lists each symbolic tensor once, because tfjs predict fails when one tensor is listed twice
 * (a key layer can be the output layer or the input of the final Dense layer).
 */
function deduplicateOutputs(outputs: tfl.SymbolicTensor[]): { uniqueOutputs: tfl.SymbolicTensor[]; slots: number[] } {
  const uniqueOutputs: tfl.SymbolicTensor[] = [];
  const slots = outputs.map((output) => {
    const existing = uniqueOutputs.findIndex((candidate) => candidate.id === output.id);
    if (existing >= 0) return existing;
    uniqueOutputs.push(output);
    return uniqueOutputs.length - 1;
  });
  return { uniqueOutputs, slots };
}

function toTensorList(predicted: tf.Tensor | tf.Tensor[]): tf.Tensor[] {
  return Array.isArray(predicted) ? predicted : [predicted];
}
