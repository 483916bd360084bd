import type { InferenceSession } from 'onnxruntime-node';

import { createCpuSession, loadOnnxRuntime, type OrtModule } from '../cache/scoring-engine.js';
import { CachefleetError } from '../errors.js';
import { exportToOnnx, ONNX_VALUE_NAMES } from '../inference/onnx-export.js';
import type { ForwardBatch } from '../local/extractor.js';
import type { KeyLayer, LoadedModel } from '../models/index.js';
import { exportGradientGraph, GRADIENT_VALUE_NAMES } from './onnx-gradient.js';

/**
 * A classifier's forward pass and input gradient. `inputGradient` returns ∂loss/∂input for the
 * upstream gradients ∂loss/∂logits and ∂loss/∂features, where the features are the raw
 * (unnormalised) concatenated key-layer activations.
 */
export interface NetworkGradient {
  readonly inputShape: readonly number[];
  readonly numClasses: number;
  readonly featureSize: number;
  /** Engine and thread count, for reports. */
  readonly description: string;
  forward(inputs: Float32Array, n: number): Promise<ForwardBatch>;
  inputGradient(inputs: Float32Array, n: number, logitsGrad: Float32Array, featuresGrad: Float32Array): Promise<Float32Array>;
  dispose(): Promise<void>;
}

/** Default images per onnxruntime call; docs/robustness.md gives the ResNet32 speed at 16 to 128. */
export const DEFAULT_GRADIENT_BATCH_SIZE = 32;

/**
 * The forward pass (the graph of `exportToOnnx`) and the hand-built backward graph of
 * `exportGradientGraph`, each in an onnxruntime CPU session. The backward session runs the forward
 * pass again, so `inputGradient` needs no state from an earlier `forward` call.
 */
export class OnnxNetworkGradient implements NetworkGradient {
  readonly inputShape: readonly number[];
  readonly numClasses: number;
  readonly featureSize: number;
  readonly description: string;
  private readonly imageSize: number;

  private constructor(
    private readonly ort: OrtModule,
    private forwardSession: InferenceSession | undefined,
    private gradientSession: InferenceSession | undefined,
    inputShape: number[],
    numClasses: number,
    featureSize: number,
    threads: number,
    private readonly batchSize: number,
  ) {
    this.inputShape = inputShape;
    this.numClasses = numClasses;
    this.featureSize = featureSize;
    this.imageSize = inputShape.reduce((product, dim) => product * dim, 1);
    this.description = `onnxruntime-cpu×${threads} (hand-built backward graph)`;
  }

  /** Converts the model twice (forward and gradient graphs) and starts both sessions. `batchSize` is the images per onnxruntime call. */
  static async create(loaded: LoadedModel, keyLayers: readonly KeyLayer[], threads: number, batchSize = DEFAULT_GRADIENT_BATCH_SIZE): Promise<OnnxNetworkGradient> {
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new CachefleetError('INVALID_ARGUMENT', `Gradient batch size ${batchSize} is invalid: give a positive whole number of images, such as ${DEFAULT_GRADIENT_BATCH_SIZE}.`, { batchSize });
    }
    const indices = keyLayers.map((layer) => layer.index);
    const classifier = exportToOnnx(loaded.model, { keyLayers: indices });
    const gradient = exportGradientGraph(loaded.model, { keyLayers: indices });

    const ort = await loadOnnxRuntime();
    const forwardSession = await createCpuSession(ort, classifier.modelBytes, threads);
    const gradientSession = await createCpuSession(ort, gradient.modelBytes, threads);
    return new OnnxNetworkGradient(ort, forwardSession, gradientSession, classifier.inputShape, classifier.numClasses, classifier.featureSize, threads, batchSize);
  }

  async forward(inputs: Float32Array, n: number): Promise<ForwardBatch> {
    this.checkInputs(inputs, n);
    const session = this.requireSession(this.forwardSession);
    const result: ForwardBatch = {
      logits: new Float32Array(n * this.numClasses),
      probabilities: new Float32Array(n * this.numClasses),
      features: new Float32Array(n * this.featureSize),
    };

    for (let start = 0; start < n; start += this.batchSize) {
      const count = Math.min(this.batchSize, n - start);
      const feeds = { [ONNX_VALUE_NAMES.input]: this.imageTensor(inputs, start, count) };
      const outputs = await session.run(feeds);
      result.logits.set(outputs[ONNX_VALUE_NAMES.logits].data as Float32Array, start * this.numClasses);
      result.probabilities.set(outputs[ONNX_VALUE_NAMES.probabilities].data as Float32Array, start * this.numClasses);
      result.features.set(outputs[ONNX_VALUE_NAMES.features].data as Float32Array, start * this.featureSize);
    }
    return result;
  }

  async inputGradient(inputs: Float32Array, n: number, logitsGrad: Float32Array, featuresGrad: Float32Array): Promise<Float32Array> {
    this.checkInputs(inputs, n);
    checkLength('logitsGrad', logitsGrad, n * this.numClasses);
    checkLength('featuresGrad', featuresGrad, n * this.featureSize);
    const session = this.requireSession(this.gradientSession);
    const gradient = new Float32Array(n * this.imageSize);
    const names = GRADIENT_VALUE_NAMES;

    for (let start = 0; start < n; start += this.batchSize) {
      const count = Math.min(this.batchSize, n - start);
      const feeds = {
        [names.input]: this.imageTensor(inputs, start, count),
        [names.logitsGrad]: new this.ort.Tensor('float32', logitsGrad.subarray(start * this.numClasses, (start + count) * this.numClasses), [count, this.numClasses]),
        [names.featuresGrad]: new this.ort.Tensor('float32', featuresGrad.subarray(start * this.featureSize, (start + count) * this.featureSize), [count, this.featureSize]),
      };
      const outputs = await session.run(feeds);
      gradient.set(outputs[names.inputGrad].data as Float32Array, start * this.imageSize);
    }
    return gradient;
  }

  /** Releases both sessions. A second call does nothing. */
  async dispose(): Promise<void> {
    const sessions = [this.forwardSession, this.gradientSession];
    this.forwardSession = undefined;
    this.gradientSession = undefined;
    await Promise.all(sessions.map((session) => session?.release()));
  }

  private imageTensor(inputs: Float32Array, start: number, count: number) {
    return new this.ort.Tensor('float32', inputs.subarray(start * this.imageSize, (start + count) * this.imageSize), [count, ...this.inputShape]);
  }

  private checkInputs(inputs: Float32Array, n: number): void {
    if (!Number.isInteger(n) || n < 0) {
      throw new CachefleetError('INVALID_ARGUMENT', `Image count n must be a non-negative integer, got ${n}.`, { n });
    }
    checkLength('inputs', inputs, n * this.imageSize);
  }

  private requireSession(session: InferenceSession | undefined): InferenceSession {
    if (session === undefined) {
      throw new CachefleetError('INVALID_ARGUMENT', 'This OnnxNetworkGradient was disposed. Create a new one to run the model again.', {});
    }
    return session;
  }
}

export function checkLength(name: string, values: ArrayLike<number>, expected: number): void {
  if (values.length !== expected) {
    throw new CachefleetError('INVALID_ARGUMENT', `${name} has ${values.length} values, but ${expected} are expected for this batch. Pass one row per image.`, {
      name,
      length: values.length,
      expected,
    });
  }
}
