import { availableParallelism } from 'node:os';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { CachefleetError } from '../errors.js';
import { buildScoringModel, SCORING_GRAPH_NAMES } from './onnx-graph.js';
import { assertInteger, assertLabels, assertLength, assertThetas } from './validation.js';

/**
 * Largest queries × keys block one scorePartials call accepts. The graph keeps about four
 * [B, N] float32 tensors alive, so this bounds them to about 1 GiB; scoreAgainstCache stays far
 * below it with its default blocks.
 */
export const MAX_BLOCK_PAIRS = 2 ** 26;

export interface ScoringEngineOptions {
  /** Intra-op threads of onnxruntime; default: os.availableParallelism(). */
  threads?: number;
}

/**
 * Computes per-class log-sum-exp partials of a block of queries against a block of keys, for
 * several thetas at once, with one fused onnxruntime graph.
 *
 * Meaning of the result: L[t][q][c] = log(sum over keys k of class c of exp(theta_t * q·k)),
 * [T][Q][C] in a Float32Array. Before exp, each query is shifted by its largest similarity m
 * over the block, so the largest term is exp(0) and no theta overflows. A class is then accurate
 * to float32 rounding (tests bound the relative error by 1e-5) when its largest term lies at most
 * 87.3 nats below exp(theta_t * m), where the float32 normal range ends. A class further below
 * comes out as -Infinity: its n keys add less than n·e^-87.3 of the block's total to p_cache,
 * under the resolution of float32 probabilities. A class without keys in the block is -Infinity.
 */
export interface ScoringEngine {
  /** Intra-op threads the session was created with. */
  readonly threads: number;
  /**
   * Scores queries [numQueries, dim] against keys [numKeys, dim] with labels [numKeys], both
   * row-major with exactly that many values. Thetas are rounded to float32 inside the graph.
   */
  scorePartials(
    queries: Float32Array,
    numQueries: number,
    keys: Float32Array,
    numKeys: number,
    keyLabels: Int32Array,
    dim: number,
    numClasses: number,
    thetas: readonly number[],
  ): Promise<Float32Array>;
  /** Releases the onnxruntime session. Calling it again does nothing. */
  dispose(): Promise<void>;
}

/** The onnxruntime-node module, loaded on first use. */
export type OrtModule = typeof import('onnxruntime-node');

/**
 * Loads onnxruntime-node on first use, so that this module loads without the native library and
 * a missing library fails the scoring with BACKEND_UNAVAILABLE.
 */
export async function loadOnnxRuntime(): Promise<OrtModule> {
  try {
    const module = await import('onnxruntime-node');
    return module.default ?? module;
  } catch (error) {
    throw new CachefleetError(
      'BACKEND_UNAVAILABLE',
      'onnxruntime-node could not be loaded, so the cache cannot be scored. Reinstall it with ONNXRUNTIME_NODE_INSTALL=skip to get the CPU build in its package.',
      {},
      { cause: error },
    );
  }
}

/**
 * Creates a CPU session of `model` (serialised ONNX) with the options of the scoring engine.
 * Throws BACKEND_UNAVAILABLE when onnxruntime rejects the graph or the options.
 */
export async function createCpuSession(ort: OrtModule, model: Uint8Array, threads: number): Promise<InferenceSession> {
  assertInteger('threads', threads, 1);

  try {
    return await ort.InferenceSession.create(model, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // Terms below the float32 normal range become 0 instead of denormals, which makes the
      // underflow rule of the partials exact: -Infinity below e^-87.3 of the top term.
      extra: { 'session.set_denormal_as_zero': '1' },
    });
  } catch (error) {
    throw new CachefleetError(
      'BACKEND_UNAVAILABLE',
      `onnxruntime could not create a CPU session: ${String(error)}. Check that onnxruntime-node 1.31 or later is installed.`,
      { threads },
      { cause: error },
    );
  }
}

/**
 * Creates a scoring engine backed by one onnxruntime-node CPU session of the fused graph built by
 * buildScoringModel. Throws BACKEND_UNAVAILABLE when onnxruntime cannot load or run the graph.
 */
export async function createScoringEngine(options: ScoringEngineOptions = {}): Promise<ScoringEngine> {
  const threads = options.threads ?? availableParallelism();
  assertInteger('threads', threads, 1);

  const ort = await loadOnnxRuntime();
  const session = await createCpuSession(ort, buildScoringModel(), threads);
  return new OnnxScoringEngine(ort, session, threads);
}

class OnnxScoringEngine implements ScoringEngine {
  readonly threads: number;
  private readonly ort: OrtModule;
  private session: InferenceSession | undefined;

  constructor(ort: OrtModule, session: InferenceSession, threads: number) {
    this.ort = ort;
    this.session = session;
    this.threads = threads;
  }

  async scorePartials(
    queries: Float32Array,
    numQueries: number,
    keys: Float32Array,
    numKeys: number,
    keyLabels: Int32Array,
    dim: number,
    numClasses: number,
    thetas: readonly number[],
  ): Promise<Float32Array> {
    const session = this.requireSession();
    assertBlockArguments(queries, numQueries, keys, numKeys, keyLabels, dim, numClasses, thetas);

    const names = SCORING_GRAPH_NAMES;
    const feeds: Record<string, Tensor> = {
      [names.queries]: new this.ort.Tensor('float32', queries, [numQueries, dim]),
      [names.keys]: new this.ort.Tensor('float32', keys, [numKeys, dim]),
      [names.keyOneHot]: new this.ort.Tensor('float32', oneHotLabels(keyLabels, numKeys, numClasses), [numKeys, numClasses]),
      [names.thetas]: new this.ort.Tensor('float32', Float32Array.from(thetas), [thetas.length]),
    };

    const results = await session.run(feeds);
    const partials = results[names.partials].data as Float32Array;

    assertValidPartials(partials, numQueries, numClasses);
    return partials;
  }

  async dispose(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    await session?.release();
  }

  private requireSession(): InferenceSession {
    if (this.session === undefined) {
      throw new CachefleetError('BACKEND_UNAVAILABLE', 'The scoring engine was disposed. Create a new one with createScoringEngine.');
    }
    return this.session;
  }
}

function assertBlockArguments(
  queries: Float32Array,
  numQueries: number,
  keys: Float32Array,
  numKeys: number,
  keyLabels: Int32Array,
  dim: number,
  numClasses: number,
  thetas: readonly number[],
): void {
  assertInteger('numQueries', numQueries, 1);
  assertInteger('numKeys', numKeys, 1);
  assertInteger('dim', dim, 1);
  assertInteger('numClasses', numClasses, 1);
  assertThetas(thetas);
  assertLength('queries', queries, numQueries * dim, `[numQueries=${numQueries}, dim=${dim}]`);
  assertLength('keys', keys, numKeys * dim, `[numKeys=${numKeys}, dim=${dim}]`);
  assertLength('keyLabels', keyLabels, numKeys, `[numKeys=${numKeys}]`);
  assertLabels('keyLabels', keyLabels, numKeys, numClasses);

  if (numQueries * numKeys > MAX_BLOCK_PAIRS) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `A block of ${numQueries} queries × ${numKeys} keys exceeds the ${MAX_BLOCK_PAIRS} pairs one scoring call may hold in memory. Split it into smaller blocks, as scoreAgainstCache does.`,
      { numQueries, numKeys, maxBlockPairs: MAX_BLOCK_PAIRS },
    );
  }
}

/** Returns the [N, C] matrix whose row k is 1 at column keyLabels[k] and 0 elsewhere. */
function oneHotLabels(keyLabels: Int32Array, numKeys: number, numClasses: number): Float32Array {
  const oneHot = new Float32Array(numKeys * numClasses);
  for (let k = 0; k < numKeys; k += 1) {
    oneHot[k * numClasses + keyLabels[k]] = 1;
  }
  return oneHot;
}

/**
 * Throws NON_FINITE_ACTIVATION when a partial is NaN or +Infinity. With thetas validated, only
 * queries or keys with NaN, infinite or huge unnormalised values produce them.
 */
function assertValidPartials(partials: Float32Array, numQueries: number, numClasses: number): void {
  const index = partials.findIndex((value) => Number.isNaN(value) || value === Number.POSITIVE_INFINITY);
  if (index === -1) {
    return;
  }

  const query = Math.floor(index / numClasses) % numQueries;
  throw new CachefleetError(
    'NON_FINITE_ACTIVATION',
    `Scoring query ${query} of the block gave ${partials[index]}, so the queries or keys contain NaN, infinite or unnormalised values. Normalise features with normalizeKeys, which rejects non-finite rows.`,
    { query, thetaIndex: Math.floor(index / (numClasses * numQueries)), value: partials[index] },
  );
}
