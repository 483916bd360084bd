import { availableParallelism } from 'node:os';

import ort from 'onnxruntime-node';

import { CachefleetError } from '../errors.js';
import { createLogger } from '../log.js';
import type { ExtractionResult } from '../models/extractor.js';
import type { KeyLayer } from '../models/key-layers.js';
import type { LoadedModel } from '../models/load-model.js';
import { exportToOnnx, ONNX_VALUE_NAMES, type OnnxClassifier, type OnnxLogitsSource } from './onnx-export.js';

export interface OnnxExtractorOptions {
  /**
   * Threads of the session's intra-op pool, the calling thread included. Default: the number
   * of CPUs Node may use (`os.availableParallelism()`). The pool waits for all its threads at
   * every node, so it slows down far more than single-thread sessions when other processes
   * take its cores. Where cores are shared, run one single-thread extractor per worker thread
   * (see `fromClassifier`).
   */
  intraOpNumThreads?: number;
  /**
   * Default `all`. Only `layout` and `all` turn on the NCHWc convolution layout, with which
   * ResNet32 ran about 1.5 to 1.9 times as fast as with `extended` (onnxruntime-node 1.31.1, x86-64).
   */
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'layout' | 'all';
  /** Default `sequential`. A ResNet is one chain of nodes, so `parallel` has nothing to run side by side. */
  executionMode?: 'sequential' | 'parallel';
  /** Passed to `exportToOnnx` (default true). */
  foldBatchNorm?: boolean;
}

const log = createLogger('cachefleet.inference.onnx');

/**
 * Computes logits, probabilities and raw key features like the tfjs FeatureExtractor, but runs
 * the forward pass in onnxruntime-node on the CPU. The model is converted once with
 * `exportToOnnx`. The tfjs model is not needed afterwards, and the caller still owns it.
 *
 * onnxruntime-node runs `session.run` synchronously on the calling thread, which is also one
 * of the intra-op threads. Each batch therefore blocks the event loop for its whole forward
 * pass: about 50 ms for 128 ResNet32 images with 2 threads of a 2-core AMD EPYC (Zen 5) VM.
 * `run` gives the event loop a turn between batches.
 */
export class OnnxFeatureExtractor {
  readonly featureSize: number;
  readonly numClasses: number;
  readonly logitsSource: OnnxLogitsSource;
  readonly keyLayers: readonly KeyLayer[];
  readonly intraOpNumThreads: number;
  /** Engine and thread count, for reports: for example `onnxruntime-cpu×2`. */
  readonly description: string;

  private readonly inputShape: number[];
  private readonly imageSize: number;
  private session: ort.InferenceSession | undefined;

  private constructor(classifier: OnnxClassifier, session: ort.InferenceSession, intraOpNumThreads: number) {
    this.featureSize = classifier.featureSize;
    this.numClasses = classifier.numClasses;
    this.logitsSource = classifier.logitsSource;
    this.keyLayers = classifier.keyLayers.map((keyLayer) => ({ ...keyLayer, shape: [...keyLayer.shape] }));
    this.intraOpNumThreads = intraOpNumThreads;
    this.description = `onnxruntime-cpu×${intraOpNumThreads}`;
    this.inputShape = [...classifier.inputShape];
    this.imageSize = classifier.inputShape.reduce((product, dim) => product * dim, 1);
    this.session = session;
  }

  /**
   * Converts `loaded.model` to ONNX and starts a session on it. `keyLayers` come from
   * `resolveKeyLayers` against the same model. Throws KEY_LAYER_NOT_FOUND for a key layer of
   * another model, the errors of `exportToOnnx` for a model it cannot convert, and
   * BACKEND_UNAVAILABLE when onnxruntime rejects the graph or the options.
   */
  static async create(loaded: LoadedModel, keyLayers: readonly KeyLayer[], options: OnnxExtractorOptions = {}): Promise<OnnxFeatureExtractor> {
    for (const keyLayer of keyLayers) {
      if (loaded.model.layers[keyLayer.index]?.name !== keyLayer.name) {
        throw new CachefleetError(
          'KEY_LAYER_NOT_FOUND',
          `Key layer ${keyLayer.name} (index ${keyLayer.index}) is not a layer of model ${loaded.sourcePath}. Resolve the key layers with resolveKeyLayers() against this model.`,
          { name: keyLayer.name, index: keyLayer.index, path: loaded.sourcePath },
        );
      }
    }

    const startedAt = performance.now();
    const classifier = exportToOnnx(loaded.model, { keyLayers: keyLayers.map((keyLayer) => keyLayer.index), foldBatchNorm: options.foldBatchNorm });
    log.debug(
      { path: loaded.sourcePath, bytes: classifier.modelBytes.length, foldedBatchNorms: classifier.foldedBatchNorms, durationMs: Math.round(performance.now() - startedAt) },
      'model converted to ONNX',
    );
    return OnnxFeatureExtractor.fromClassifier(classifier, options);
  }

  /** Starts a session on an already converted classifier, for example one sent to a worker thread. */
  static async fromClassifier(classifier: OnnxClassifier, options: OnnxExtractorOptions = {}): Promise<OnnxFeatureExtractor> {
    const intraOpNumThreads = options.intraOpNumThreads ?? availableParallelism();
    if (!Number.isInteger(intraOpNumThreads) || intraOpNumThreads < 1) {
      throw new CachefleetError('INVALID_ARGUMENT', `intraOpNumThreads must be a positive integer, got ${intraOpNumThreads}.`, { intraOpNumThreads });
    }

    const sessionOptions: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads,
      // One chain of nodes needs no inter-op pool.
      interOpNumThreads: 1,
      graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
      executionMode: options.executionMode ?? 'sequential',
    };

    const startedAt = performance.now();
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(classifier.modelBytes, sessionOptions);
    } catch (error) {
      throw new CachefleetError(
        'BACKEND_UNAVAILABLE',
        `onnxruntime-node could not start a session on the exported model: ${error instanceof Error ? error.message : String(error)}. Use the TensorFlow.js FeatureExtractor instead.`,
        { sessionOptions },
        { cause: error },
      );
    }

    log.info({ ...sessionOptions, featureSize: classifier.featureSize, durationMs: Math.round(performance.now() - startedAt) }, 'onnxruntime session ready');
    return new OnnxFeatureExtractor(classifier, session, intraOpNumThreads);
  }

  /**
   * Runs the model on `n` preprocessed images given as one n × H × W × C (NHWC) float32 array,
   * `batchSize` images per forward pass. Throws NON_FINITE_ACTIVATION naming the row (0-based
   * within this call) whose key features contain NaN or an infinity.
   */
  async run(inputs: Float32Array, n: number, batchSize = 128): Promise<ExtractionResult> {
    this.checkRunArguments(inputs, n, batchSize);

    const result: ExtractionResult = {
      logits: new Float32Array(n * this.numClasses),
      probabilities: new Float32Array(n * this.numClasses),
      features: new Float32Array(n * this.featureSize),
    };
    for (let start = 0; start < n; start += batchSize) {
      const count = Math.min(batchSize, n - start);
      await this.runBatch(inputs, start, count, result);
      this.checkFinite(result.features, start, count);
    }
    return result;
  }

  /** Releases the native session. A second call does nothing, and later `run` calls throw. */
  async dispose(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    await session?.release();
  }

  private async runBatch(inputs: Float32Array, start: number, count: number, result: ExtractionResult): Promise<void> {
    const session = this.requireSession();
    // A subarray shares the caller's memory, so the batch is not copied on the JavaScript side.
    const batch = inputs.subarray(start * this.imageSize, (start + count) * this.imageSize);
    const feeds = { [ONNX_VALUE_NAMES.input]: new ort.Tensor('float32', batch, [count, ...this.inputShape]) };

    const outputs = await session.run(feeds);

    result.logits.set(outputs[ONNX_VALUE_NAMES.logits].data as Float32Array, start * this.numClasses);
    result.probabilities.set(outputs[ONNX_VALUE_NAMES.probabilities].data as Float32Array, start * this.numClasses);
    result.features.set(outputs[ONNX_VALUE_NAMES.features].data as Float32Array, start * this.featureSize);
  }

  private checkFinite(features: Float32Array, start: number, count: number): void {
    const end = (start + count) * this.featureSize;
    for (let offset = start * this.featureSize; offset < end; offset += 1) {
      const value = features[offset];
      if (Number.isFinite(value)) {
        continue;
      }

      const row = Math.floor(offset / this.featureSize);
      const { keyLayer, element } = this.locateColumn(offset - row * this.featureSize);
      throw new CachefleetError(
        'NON_FINITE_ACTIVATION',
        `Key layer ${keyLayer.name} (index ${keyLayer.index}) produced ${value} for row ${row} of this call (value ${element} of its ${keyLayer.size}). ` +
          'Check that input row for NaN or infinite pixels and that it was preprocessed like the training data.',
        { row, layer: keyLayer.name, layerIndex: keyLayer.index, element, value: String(value) },
      );
    }
  }

  private locateColumn(column: number): { keyLayer: KeyLayer; element: number } {
    let offset = 0;
    for (const keyLayer of this.keyLayers) {
      if (column < offset + keyLayer.size) {
        return { keyLayer, element: column - offset };
      }
      offset += keyLayer.size;
    }
    throw new RangeError(`Feature column ${column} is beyond featureSize ${this.featureSize}.`);
  }

  private checkRunArguments(inputs: Float32Array, n: number, batchSize: number): void {
    this.requireSession();
    if (!Number.isInteger(n) || n < 0) {
      throw new CachefleetError('INVALID_ARGUMENT', `Image count n must be a non-negative integer, got ${n}.`, { n });
    }
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new CachefleetError('INVALID_ARGUMENT', `batchSize must be a positive integer, got ${batchSize}. Batches of 32 to 128 images run fastest with onnxruntime.`, { batchSize });
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

  private requireSession(): ort.InferenceSession {
    if (this.session === undefined) {
      throw new CachefleetError('INVALID_ARGUMENT', 'This OnnxFeatureExtractor was disposed. Create a new one to run the model again.', {});
    }
    return this.session;
  }
}
