import { CachefleetError } from '../errors.js';
import type { CacheReadout, CacheScores } from './cache-readout.js';
import type { NetworkGradient } from './network-gradient.js';

/** The three classifiers the robustness evaluation compares. */
export const MODEL_NAMES = ['baseline', 'cache', 'cacheOnly'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

/**
 * θ and λ of the cache models: p = (1 − λ) p_model + λ p_cache. The baseline is λ = 0 and the
 * cache-only model λ = 1.
 */
export interface CacheModelParameters {
  cache: { theta: number; lambda: number };
  cacheOnly: { theta: number };
}

/** Queries per read-out call: enough to keep the GEMM compute-bound, small enough for its similarities (100 MB per 256 queries at 100,000 keys). */
const READOUT_BATCH = 256;

/** Probabilities and predicted classes of n images under each requested model. */
export interface ModelOutputs {
  numImages: number;
  /** p(c | x), [n][C] row-major in float64, for each model evaluated. */
  probabilities: Partial<Record<ModelName, Float64Array>>;
  predictions: Partial<Record<ModelName, Int32Array>>;
}

/** Result of `logProbabilityGradient` for n images. */
export interface ModelGradient {
  /** Outputs of the differentiated model at the inputs, computed on the way. */
  outputs: ModelOutputs;
  /** log p(label | x) per image. */
  logProbabilities: Float64Array;
  /** ∂ log p(label | x) / ∂x, [n, H, W, C] like the inputs. */
  gradient: Float32Array;
}

/**
 * The baseline network, the cache model and the cache-only model over one network and one cache.
 * The network runs once per image for all three, and the cache's similarities once for both θs.
 */
export class CacheModelFamily {
  readonly numClasses: number;
  readonly imageSize: number;
  private readonly thetas: number[];

  constructor(
    readonly network: NetworkGradient,
    readonly readout: CacheReadout | undefined,
    readonly parameters: CacheModelParameters,
  ) {
    this.numClasses = network.numClasses;
    this.imageSize = network.inputShape.reduce((product, dim) => product * dim, 1);
    if (readout !== undefined && (readout.dim !== network.featureSize || readout.numClasses !== network.numClasses)) {
      throw new CachefleetError(
        'KEY_STORE_MISMATCH',
        `The cache has keys of dim ${readout.dim} for ${readout.numClasses} classes, but the network gives features of dim ${network.featureSize} for ${network.numClasses} classes. Use a key store built with the same model and key layers.`,
        { cacheDim: readout.dim, featureSize: network.featureSize },
      );
    }
    this.thetas = parameters.cache.theta === parameters.cacheOnly.theta ? [parameters.cache.theta] : [parameters.cache.theta, parameters.cacheOnly.theta];
  }

  /** λ and the index into the scored θs of a model; the baseline has no θ. */
  private mixture(model: ModelName): { lambda: number; thetaIndex: number } {
    if (model === 'baseline') return { lambda: 0, thetaIndex: -1 };
    if (model === 'cache') return { lambda: this.parameters.cache.lambda, thetaIndex: 0 };
    return { lambda: 1, thetaIndex: this.thetas.length - 1 };
  }

  /** Classifies n preprocessed images with each model in `models`. */
  async evaluate(inputs: Float32Array, numImages: number, models: readonly ModelName[] = MODEL_NAMES): Promise<ModelOutputs> {
    const outputs: ModelOutputs = { numImages, probabilities: {}, predictions: {} };
    for (const model of models) {
      outputs.probabilities[model] = new Float64Array(numImages * this.numClasses);
    }

    for (let start = 0; start < numImages; start += READOUT_BATCH) {
      const count = Math.min(READOUT_BATCH, numImages - start);
      const batch = await this.runBatch(inputs.subarray(start * this.imageSize, (start + count) * this.imageSize), count, models);
      for (const model of models) {
        outputs.probabilities[model]!.set(batch.probabilities.get(model)!, start * this.numClasses);
      }
    }

    for (const model of models) {
      outputs.predictions[model] = argmaxRows(outputs.probabilities[model]!, numImages, this.numClasses);
    }
    return outputs;
  }

  /**
   * Computes log p(label | x) of `model` and its gradient with respect to the input, for n
   * images with one label each. For the mixture p = (1 − λ) p_model + λ p_cache:
   * ∂ log p(y) / ∂logits_j = (1 − λ) p_model(y) / p(y) · ([j = y] − p_model(j)), and
   * ∂ log p(y) / ∂p_cache(c) = λ [c = y] / p(y), which the read-out turns into a query gradient.
   */
  async logProbabilityGradient(inputs: Float32Array, numImages: number, model: ModelName, labels: Int32Array): Promise<ModelGradient> {
    if (labels.length !== numImages) {
      throw new CachefleetError('INVALID_ARGUMENT', `${labels.length} labels were given for ${numImages} images. Pass one label per image.`, { labels: labels.length, numImages });
    }
    const outputs: ModelOutputs = { numImages, probabilities: { [model]: new Float64Array(numImages * this.numClasses) }, predictions: {} };
    const logProbabilities = new Float64Array(numImages);
    const gradient = new Float32Array(numImages * this.imageSize);

    for (let start = 0; start < numImages; start += READOUT_BATCH) {
      const count = Math.min(READOUT_BATCH, numImages - start);
      const images = inputs.subarray(start * this.imageSize, (start + count) * this.imageSize);
      const batch = await this.runBatch(images, count, [model]);
      const probabilities = batch.probabilities.get(model)!;
      outputs.probabilities[model]!.set(probabilities, start * this.numClasses);

      const upstream = await this.upstreamGradients(model, batch, labels.subarray(start, start + count), count);
      for (let i = 0; i < count; i += 1) {
        logProbabilities[start + i] = Math.log(probabilities[i * this.numClasses + labels[start + i]]);
      }
      gradient.set(await this.network.inputGradient(images, count, upstream.logits, upstream.features), start * this.imageSize);
    }

    outputs.predictions[model] = argmaxRows(outputs.probabilities[model]!, numImages, this.numClasses);
    return { outputs, logProbabilities, gradient };
  }

  private async runBatch(images: Float32Array, count: number, models: readonly ModelName[]): Promise<BatchState> {
    const forward = await this.network.forward(images, count);
    const modelProbabilities = softmaxRows(forward.logits, count, this.numClasses);
    const state: BatchState = { count, logits: forward.logits, features: forward.features, modelProbabilities, probabilities: new Map() };

    const needsCache = models.some((model) => model !== 'baseline');
    if (needsCache) {
      if (this.readout === undefined) {
        throw new CachefleetError('EMPTY_CACHE', `Models ${models.join(', ')} need the cache, but this CacheModelFamily was created without one. Pass a CacheReadout.`, {});
      }
      const { queries, norms } = normaliseRows(forward.features, count, this.network.featureSize);
      state.queries = queries;
      state.norms = norms;
      state.scores = await this.readout.score(queries, count, this.thetas);
    }

    for (const model of models) {
      state.probabilities.set(model, this.mix(model, state));
    }
    return state;
  }

  private mix(model: ModelName, state: BatchState): Float64Array {
    const { lambda, thetaIndex } = this.mixture(model);
    if (lambda === 0) return state.modelProbabilities;

    const C = this.numClasses;
    const n = state.count;
    const logCache = state.scores!.logProbabilities;
    const mixed = new Float64Array(n * C);
    for (let i = 0; i < n * C; i += 1) {
      mixed[i] = (1 - lambda) * state.modelProbabilities[i] + lambda * Math.exp(logCache[thetaIndex * n * C + i]);
    }
    return mixed;
  }

  /** Upstream gradients of log p(label) at the logits and at the raw features, for the network's backward pass. */
  private async upstreamGradients(model: ModelName, state: BatchState, labels: Int32Array, count: number): Promise<{ logits: Float32Array; features: Float32Array }> {
    const C = this.numClasses;
    const F = this.network.featureSize;
    const { lambda, thetaIndex } = this.mixture(model);
    const probabilities = state.probabilities.get(model)!;
    const logits = new Float32Array(count * C);
    const features = new Float32Array(count * F);

    if (lambda < 1) {
      for (let i = 0; i < count; i += 1) {
        const y = labels[i];
        const factor = ((1 - lambda) * state.modelProbabilities[i * C + y]) / probabilities[i * C + y];
        for (let j = 0; j < C; j += 1) {
          logits[i * C + j] = factor * ((j === y ? 1 : 0) - state.modelProbabilities[i * C + j]);
        }
      }
    }

    if (lambda > 0) {
      const upstream = new Float64Array(count * C);
      for (let i = 0; i < count; i += 1) {
        upstream[i * C + labels[i]] = lambda / probabilities[i * C + labels[i]];
      }
      const queryGradient = await this.readout!.queryGradient(state.scores as CacheScores, thetaIndex, upstream);
      // q = f / ‖f‖, so ∂/∂f = (g − q (q·g)) / ‖f‖.
      for (let i = 0; i < count; i += 1) {
        let projection = 0;
        for (let k = 0; k < F; k += 1) projection += state.queries![i * F + k] * queryGradient[i * F + k];
        for (let k = 0; k < F; k += 1) {
          features[i * F + k] = (queryGradient[i * F + k] - state.queries![i * F + k] * projection) / state.norms![i];
        }
      }
    }
    return { logits, features };
  }
}

interface BatchState {
  count: number;
  logits: Float32Array;
  features: Float32Array;
  /** Softmax of the logits in float64, [count][C]. */
  modelProbabilities: Float64Array;
  queries?: Float32Array;
  norms?: Float64Array;
  scores?: CacheScores;
  probabilities: Map<ModelName, Float64Array>;
}

/** Softmax of each row in float64. */
export function softmaxRows(logits: Float32Array, rows: number, columns: number): Float64Array {
  const result = new Float64Array(rows * columns);
  for (let row = 0; row < rows; row += 1) {
    let maximum = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < columns; c += 1) maximum = Math.max(maximum, logits[row * columns + c]);
    let total = 0;
    for (let c = 0; c < columns; c += 1) {
      const value = Math.exp(logits[row * columns + c] - maximum);
      result[row * columns + c] = value;
      total += value;
    }
    for (let c = 0; c < columns; c += 1) result[row * columns + c] /= total;
  }
  return result;
}

/** Index of each row's largest value; ties go to the lowest index, as numpy's argmax. */
export function argmaxRows(values: ArrayLike<number>, rows: number, columns: number): Int32Array {
  const result = new Int32Array(rows);
  for (let row = 0; row < rows; row += 1) {
    let best = 0;
    for (let c = 1; c < columns; c += 1) {
      if (values[row * columns + c] > values[row * columns + best]) best = c;
    }
    result[row] = best;
  }
  return result;
}

/**
 * Returns L2-normalised copies of the rows and their norms (float64 sums). Throws
 * NON_FINITE_ACTIVATION for an all-zero or non-finite row, which has no direction to compare.
 */
export function normaliseRows(features: Float32Array, rows: number, dim: number): { queries: Float32Array; norms: Float64Array } {
  const queries = new Float32Array(rows * dim);
  const norms = new Float64Array(rows);
  for (let row = 0; row < rows; row += 1) {
    let sumOfSquares = 0;
    for (let k = 0; k < dim; k += 1) sumOfSquares += features[row * dim + k] ** 2;
    const norm = Math.sqrt(sumOfSquares);
    if (!(norm > 0 && Number.isFinite(norm))) {
      throw new CachefleetError('NON_FINITE_ACTIVATION', `Image ${row} of the batch has key features with norm ${norm}, so its query cannot be normalised. Check the image for NaN values and the model's preprocessing.`, {
        row,
        norm,
      });
    }
    norms[row] = norm;
    for (let k = 0; k < dim; k += 1) queries[row * dim + k] = features[row * dim + k] / norm;
  }
  return { queries, norms };
}
