import onnxProto from 'onnx-proto';
import type { InferenceSession } from 'onnxruntime-node';

import { buildSimilarityModel, SIMILARITY_GRAPH_NAMES } from '../cache/onnx-graph.js';
import { createCpuSession, loadOnnxRuntime, type OrtModule } from '../cache/scoring-engine.js';
import { assertInteger, assertLabels, assertLength, assertMinimumLength, assertThetas } from '../cache/validation.js';
import { CachefleetError } from '../errors.js';

const { onnx } = onnxProto;

/**
 * Keys per onnxruntime call. A block of 8,192 keys of dim 12,288 is 403 MB of keys (read in
 * place from the shard) and 8 MB of similarities for 256 queries.
 */
export const READOUT_KEY_BLOCK_SIZE = 8192;

/** Largest query batch of one `score` call: its similarities are kept for `queryGradient`, 400 KB per query for 100,000 keys. */
export const MAX_READOUT_QUERIES = 1024;

/** Cache keys and labels, in cache order, as consecutive blocks (for example one per shard). */
export interface CacheKeySet {
  blocks: Array<{ keys: Float32Array; labels: Int32Array; count: number }>;
  dim: number;
  numClasses: number;
}

/**
 * Result of `CacheReadout.score` for n queries: log p_cache(c | q) for each θ, and the
 * similarities and normalisers that `queryGradient` reuses, so that the gradient costs one more
 * GEMM instead of two.
 */
export interface CacheScores {
  numQueries: number;
  thetas: readonly number[];
  /** log p_cache, [T][n][C] row-major, computed in float64. */
  logProbabilities: Float64Array;
  /** q·k for each key block, [n, blockCount] each. */
  similarities: Float32Array[];
  /** log Σ_k exp(θ_t q·k) over every key, [T][n]. */
  logNormalisers: Float64Array;
}

/**
 * The cache's read-out p_cache(y | q) ∝ Σ_k [y_k = y] exp(θ q·k) over every key, and its gradient
 * with respect to the query. Similarities come from onnxruntime's GEMM (the scoring engine's
 * similarity graph), block by block. The exponentials and class sums run in float64 in
 * JavaScript.
 *
 * The gradient of the loss with respect to q·k for an upstream h_c = ∂loss/∂p_cache(c) is
 * θ · w_k · (h_{y_k} − Σ_c h_c p_cache(c)), with w_k = exp(θ q·k) / Σ_j exp(θ q·j) ≤ 1, so no
 * term overflows. The query gradient Σ_k (that value) · k is one more GEMM per block.
 */
export class CacheReadout {
  readonly dim: number;
  readonly numClasses: number;
  readonly numKeys: number;
  readonly threads: number;

  private constructor(
    private readonly ort: OrtModule,
    private similaritySession: InferenceSession | undefined,
    private weightedSumSession: InferenceSession | undefined,
    private readonly blocks: Array<{ keys: Float32Array; labels: Int32Array; count: number }>,
    keySet: CacheKeySet,
    threads: number,
  ) {
    this.dim = keySet.dim;
    this.numClasses = keySet.numClasses;
    this.numKeys = blocks.reduce((sum, block) => sum + block.count, 0);
    this.threads = threads;
  }

  /**
   * Validates the keys' shapes and labels, cuts them into blocks of at most READOUT_KEY_BLOCK_SIZE
   * keys (views, not copies) and starts two onnxruntime sessions. Keys must be L2-normalised.
   * Throws EMPTY_CACHE for a cache without keys.
   */
  static async create(keySet: CacheKeySet, threads: number): Promise<CacheReadout> {
    assertInteger('dim', keySet.dim, 1);
    assertInteger('numClasses', keySet.numClasses, 1);
    const blocks: Array<{ keys: Float32Array; labels: Int32Array; count: number }> = [];
    let seen = 0;
    for (const block of keySet.blocks) {
      assertInteger('cache block count', block.count, 0);
      assertMinimumLength('cache keys', block.keys, block.count * keySet.dim, `[count=${block.count}, dim=${keySet.dim}]`);
      assertLabels('cache key labels', block.labels, block.count, keySet.numClasses, seen);
      for (let start = 0; start < block.count; start += READOUT_KEY_BLOCK_SIZE) {
        const end = Math.min(start + READOUT_KEY_BLOCK_SIZE, block.count);
        blocks.push({ keys: block.keys.subarray(start * keySet.dim, end * keySet.dim), labels: block.labels.subarray(start, end), count: end - start });
      }
      seen += block.count;
    }
    if (seen === 0) {
      throw new CachefleetError('EMPTY_CACHE', 'The cache has no keys, so the cache models cannot classify anything. Build the cache from at least one labelled image.', {});
    }

    const ort = await loadOnnxRuntime();
    const similaritySession = await createCpuSession(ort, buildSimilarityModel(), threads);
    const weightedSumSession = await createCpuSession(ort, buildWeightedSumModel(), threads);
    return new CacheReadout(ort, similaritySession, weightedSumSession, blocks, keySet, threads);
  }

  /** Scores n L2-normalised queries [n, dim] against every key for each θ. */
  async score(queries: Float32Array, numQueries: number, thetas: readonly number[]): Promise<CacheScores> {
    assertInteger('numQueries', numQueries, 1);
    assertThetas(thetas);
    assertLength('queries', queries, numQueries * this.dim, `[numQueries=${numQueries}, dim=${this.dim}]`);
    if (numQueries > MAX_READOUT_QUERIES) {
      throw new CachefleetError('INVALID_ARGUMENT', `${numQueries} queries exceed the ${MAX_READOUT_QUERIES} one read-out call keeps similarities for. Score them in batches.`, { numQueries });
    }

    const session = this.requireSession(this.similaritySession);
    const names = SIMILARITY_GRAPH_NAMES;
    const queryTensor = new this.ort.Tensor('float32', queries, [numQueries, this.dim]);
    const similarities: Float32Array[] = [];
    for (const block of this.blocks) {
      const outputs = await session.run({ [names.queries]: queryTensor, [names.keys]: new this.ort.Tensor('float32', block.keys, [block.count, this.dim]) });
      similarities.push(outputs[names.similarities].data as Float32Array);
    }

    return this.classProbabilities(similarities, numQueries, thetas);
  }

  /**
   * Returns ∂loss/∂q [n, dim] for θ = `scores.thetas[thetaIndex]`, given the upstream
   * `upstream` [n][C] = ∂loss/∂p_cache(c | q). The gradient is with respect to the normalised
   * query, so the caller applies the normalisation's Jacobian.
   */
  async queryGradient(scores: CacheScores, thetaIndex: number, upstream: Float64Array): Promise<Float32Array> {
    const { numQueries } = scores;
    const C = this.numClasses;
    assertLength('upstream', upstream, numQueries * C, `[numQueries=${numQueries}, numClasses=${C}]`);
    const theta = scores.thetas[thetaIndex];
    if (theta === undefined) {
      throw new CachefleetError('INVALID_ARGUMENT', `thetaIndex ${thetaIndex} is outside the ${scores.thetas.length} thetas these scores were computed for.`, { thetaIndex });
    }

    // Per query and class: h_c − Σ_j h_j p_j, the factor that every key of class c shares.
    const centred = new Float64Array(numQueries * C);
    for (let q = 0; q < numQueries; q += 1) {
      let mean = 0;
      for (let c = 0; c < C; c += 1) {
        mean += upstream[q * C + c] * Math.exp(scores.logProbabilities[(thetaIndex * numQueries + q) * C + c]);
      }
      for (let c = 0; c < C; c += 1) {
        centred[q * C + c] = upstream[q * C + c] - mean;
      }
    }

    const session = this.requireSession(this.weightedSumSession);
    const gradient = new Float32Array(numQueries * this.dim);
    for (let b = 0; b < this.blocks.length; b += 1) {
      const block = this.blocks[b];
      const similarities = scores.similarities[b];
      const coefficients = new Float32Array(numQueries * block.count);
      for (let q = 0; q < numQueries; q += 1) {
        const normaliser = scores.logNormalisers[thetaIndex * numQueries + q];
        for (let k = 0; k < block.count; k += 1) {
          const weight = Math.exp(theta * similarities[q * block.count + k] - normaliser);
          coefficients[q * block.count + k] = theta * weight * centred[q * C + block.labels[k]];
        }
      }

      const outputs = await session.run({
        [WEIGHTED_SUM_NAMES.coefficients]: new this.ort.Tensor('float32', coefficients, [numQueries, block.count]),
        [WEIGHTED_SUM_NAMES.keys]: new this.ort.Tensor('float32', block.keys, [block.count, this.dim]),
      });
      const partial = outputs[WEIGHTED_SUM_NAMES.sum].data as Float32Array;
      for (let i = 0; i < gradient.length; i += 1) {
        gradient[i] += partial[i];
      }
    }
    return gradient;
  }

  /** Releases both sessions. A second call does nothing. The keys stay with their owner. */
  async dispose(): Promise<void> {
    const sessions = [this.similaritySession, this.weightedSumSession];
    this.similaritySession = undefined;
    this.weightedSumSession = undefined;
    await Promise.all(sessions.map((session) => session?.release()));
  }

  /** Turns the similarities into log p_cache per θ, shifting each query by its largest similarity so no exponential overflows. */
  private classProbabilities(similarities: Float32Array[], numQueries: number, thetas: readonly number[]): CacheScores {
    const C = this.numClasses;
    const T = thetas.length;
    const logProbabilities = new Float64Array(T * numQueries * C);
    const logNormalisers = new Float64Array(T * numQueries);
    const classSums = new Float64Array(C);

    for (let q = 0; q < numQueries; q += 1) {
      let maximum = Number.NEGATIVE_INFINITY;
      for (let b = 0; b < this.blocks.length; b += 1) {
        const count = this.blocks[b].count;
        const row = similarities[b].subarray(q * count, (q + 1) * count);
        for (let k = 0; k < count; k += 1) {
          if (row[k] > maximum) maximum = row[k];
        }
      }
      if (!Number.isFinite(maximum)) {
        throw new CachefleetError('NON_FINITE_ACTIVATION', `Query ${q} has the largest similarity ${maximum} with the cache, so it or the keys contain NaN or infinite values. Check the model's input and the key store.`, { query: q });
      }

      for (let t = 0; t < T; t += 1) {
        const theta = thetas[t];
        classSums.fill(0);
        for (let b = 0; b < this.blocks.length; b += 1) {
          const { count, labels } = this.blocks[b];
          const row = similarities[b].subarray(q * count, (q + 1) * count);
          for (let k = 0; k < count; k += 1) {
            classSums[labels[k]] += Math.exp(theta * (row[k] - maximum));
          }
        }

        let total = 0;
        for (let c = 0; c < C; c += 1) total += classSums[c];
        const logTotal = Math.log(total);
        for (let c = 0; c < C; c += 1) {
          logProbabilities[(t * numQueries + q) * C + c] = Math.log(classSums[c]) - logTotal;
        }
        logNormalisers[t * numQueries + q] = logTotal + theta * maximum;
      }
    }
    return { numQueries, thetas: [...thetas], logProbabilities, similarities, logNormalisers };
  }

  private requireSession(session: InferenceSession | undefined): InferenceSession {
    if (session === undefined) {
      throw new CachefleetError('INVALID_ARGUMENT', 'This CacheReadout was disposed. Create a new one to score queries.', {});
    }
    return session;
  }
}

const WEIGHTED_SUM_NAMES = { coefficients: 'coefficients', keys: 'keys', sum: 'weighted_sum' } as const;

/** Builds coefficients [B, N] · keys [N, D] → [B, D] as serialised ONNX (opset 13, every dimension dynamic). */
function buildWeightedSumModel(): Uint8Array {
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const value = (name: string, dims: string[]) => ({
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } },
  });
  const graph = onnx.GraphProto.create({
    name: 'cachefleet_weighted_key_sum',
    node: [{ opType: 'MatMul', input: [WEIGHTED_SUM_NAMES.coefficients, WEIGHTED_SUM_NAMES.keys], output: [WEIGHTED_SUM_NAMES.sum], name: 'weighted_key_sum' }],
    input: [value(WEIGHTED_SUM_NAMES.coefficients, ['B', 'N']), value(WEIGHTED_SUM_NAMES.keys, ['N', 'D'])],
    output: [value(WEIGHTED_SUM_NAMES.sum, ['B', 'D'])],
  });
  const model = onnx.ModelProto.create({ irVersion: 7, producerName: 'cachefleet', opsetImport: [{ domain: '', version: 13 }], graph });
  return onnx.ModelProto.encode(model).finish();
}
