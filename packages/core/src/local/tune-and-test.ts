import { evaluateGrid, pickBest, predictClasses, type GridEvaluation, type ScoringEngine } from '../cache/index.js';
import { foldPartials, scoreShardPartials } from '../cache/shard-partials.js';
import type { DatasetSplit } from '../datasets/index.js';
import type { Logger } from '../log.js';
import type { KeyShard } from '../store/shard-io.js';
import { accuracyByClass, errorRate } from './metrics.js';
import type { ProgressSink, StageTimer } from './progress.js';
import { REPORT_SCHEMA_VERSION, type EvaluationReport } from './report.js';
import type { LoadedSegment, ModelSummary } from './segments.js';
import { engineVersions } from './versions.js';

export interface QuerySet {
  keys: Float32Array;
  logProbs: Float32Array;
  labels: Int32Array;
  count: number;
}

/** Stacks the rows of several shards into one query set (no copy for a single shard). */
export function stackQueries(segments: KeyShard[]): QuerySet {
  if (segments.length === 1) {
    const [only] = segments;
    return { keys: only.keys, logProbs: only.logProbs, labels: only.labels, count: only.header.count };
  }
  const count = segments.reduce((sum, shard) => sum + shard.header.count, 0);
  const { dim, numClasses } = segments[0].header;
  const stacked: QuerySet = { keys: new Float32Array(count * dim), logProbs: new Float32Array(count * numClasses), labels: new Int32Array(count), count };
  let row = 0;
  for (const shard of segments) {
    stacked.keys.set(shard.keys, row * dim);
    stacked.logProbs.set(shard.logProbs, row * numClasses);
    stacked.labels.set(shard.labels, row);
    row += shard.header.count;
  }
  return stacked;
}

/**
 * Scores queries against cache shards: one partial per shard, folded in shard order, exactly as
 * the fleet's aggregate step folds them.
 */
export async function scoreQueries(
  engine: ScoringEngine,
  queries: QuerySet,
  cache: KeyShard[],
  thetas: readonly number[],
  stage: string,
  progress: ProgressSink,
): Promise<Float32Array> {
  const { dim, numClasses } = cache[0].header;
  const totalKeys = cache.reduce((sum, shard) => sum + shard.header.count, 0);
  progress.start(stage, totalKeys, `keys × ${queries.count} queries`);
  const partials = await scoreShardPartials(
    engine,
    cache.map((shard) => ({ keys: shard.keys, labels: shard.labels, count: shard.header.count })),
    { queries: queries.keys, numQueries: queries.count, dim, numClasses, thetas, onProgress: ({ keysScored }) => progress.update(stage, keysScored) },
  );
  progress.finish(stage);
  return foldPartials(partials);
}

export interface TuneAndTestInput {
  engine: ScoringEngine;
  timer: StageTimer;
  progress: ProgressSink;
  logger: Logger;
  segments: { train: LoadedSegment; validation: LoadedSegment; test: LoadedSegment };
  validationCache: KeyShard[];
  testCache: KeyShard[];
  thetas: readonly number[];
  lambdas: readonly number[];
  fixed: { theta?: number; lambda?: number; thetaCacheOnly?: number };
  model: ModelSummary;
  backend: string;
  extractionEngine: string;
  scoringEngine: string;
  preprocessing: { hash: string; description: string };
  dataset: { name: string; dir: string; train: DatasetSplit; test: DatasetSplit };
  limit: number | null;
}

/**
 * Tunes θ and λ on the validation split (unless both are fixed), scores the test split with the
 * chosen values and assembles the report.
 */
export async function tuneAndTest(input: TuneAndTestInput): Promise<EvaluationReport> {
  const { engine, timer, progress, logger, segments, fixed, thetas, lambdas } = input;
  const numClasses = input.model.numClasses;
  const needsCacheTuning = fixed.theta === undefined;
  const needsCacheOnlyTuning = fixed.thetaCacheOnly === undefined;

  let grid: EvaluationReport['grid'] = null;
  let theta = fixed.theta;
  let lambda = fixed.lambda;
  let thetaCacheOnly = fixed.thetaCacheOnly;
  let validation = { baseline: null as number | null, cache: null as number | null, cacheOnly: null as number | null };

  if (needsCacheTuning || needsCacheOnlyTuning) {
    const queries = stackQueries(segments.validation.shards);
    const partials = await timer.time('score validation', () => scoreQueries(engine, queries, input.validationCache, thetas, 'score validation', progress));
    const result = evaluateGrid({ modelLogProbs: queries.logProbs, partials, labels: queries.labels, thetas, lambdas });
    const best = pickBest(result);
    const bestCacheOnly = pickBestCacheOnly(result);

    grid = {
      thetas: [...thetas],
      lambdas: [...lambdas],
      accuracy: result.accuracy,
      cacheOnlyAccuracy: result.cacheOnlyAccuracy,
      baselineAccuracy: result.baselineAccuracy,
      queries: queries.count,
    };
    if (needsCacheTuning) {
      theta = best.theta;
      lambda = best.lambda;
    }
    if (needsCacheOnlyTuning) thetaCacheOnly = bestCacheOnly.theta;
    validation = { baseline: result.baselineAccuracy, cache: best.accuracy, cacheOnly: bestCacheOnly.accuracy };
    logger.info({ theta, lambda, thetaCacheOnly, validationAccuracy: best.accuracy, cacheOnlyValidationAccuracy: bestCacheOnly.accuracy }, 'tuned on the validation split');
  }

  const chosen = { theta: theta!, lambda: lambda!, thetaCacheOnly: thetaCacheOnly! };
  const testThetas = chosen.theta === chosen.thetaCacheOnly ? [chosen.theta] : [chosen.theta, chosen.thetaCacheOnly];
  const testQueries = stackQueries(segments.test.shards);
  const testPartials = await timer.time('score test', () => scoreQueries(engine, testQueries, input.testCache, testThetas, 'score test', progress));

  const perTheta = testQueries.count * numClasses;
  const partialsFor = (value: number): Float32Array => {
    const t = testThetas.indexOf(value);
    return testPartials.subarray(t * perTheta, (t + 1) * perTheta);
  };
  const labels = testQueries.labels;
  const predictions = {
    baseline: predictClasses(testQueries.logProbs, partialsFor(chosen.theta), 0, numClasses),
    cache: predictClasses(testQueries.logProbs, partialsFor(chosen.theta), chosen.lambda, numClasses),
    cacheOnly: predictClasses(testQueries.logProbs, partialsFor(chosen.thetaCacheOnly), 1, numClasses),
  };

  const segmentList = [segments.train, segments.validation, segments.test];
  return {
    schemaVersion: REPORT_SCHEMA_VERSION,
    createdAt: new Date().toISOString(),
    baseline: { testError: errorRate(predictions.baseline, labels), validationAccuracy: validation.baseline },
    cache: { testError: errorRate(predictions.cache, labels), theta: chosen.theta, lambda: chosen.lambda, tuned: needsCacheTuning, validationAccuracy: validation.cache },
    cacheOnly: { testError: errorRate(predictions.cacheOnly, labels), theta: chosen.thetaCacheOnly, tuned: needsCacheOnlyTuning, validationAccuracy: validation.cacheOnly },
    grid,
    perClassAccuracy: {
      classNames: input.dataset.test.classNames,
      baseline: accuracyByClass(predictions.baseline, labels, numClasses),
      cache: accuracyByClass(predictions.cache, labels, numClasses),
      cacheOnly: accuracyByClass(predictions.cacheOnly, labels, numClasses),
    },
    manifest: {
      model: { source: input.model.source, format: input.model.format, fingerprint: input.model.fingerprint, fileSha256: input.model.fileSha256, numClasses },
      keyLayers: input.model.keyLayers,
      keyDim: input.model.dim,
      preprocessing: input.preprocessing,
      dataset: { name: input.dataset.name, dir: input.dataset.dir, trainFingerprint: input.dataset.train.fingerprint, testFingerprint: input.dataset.test.fingerprint },
      limit: input.limit,
      cacheComposition: {
        validation: grid === null ? null : { keys: countKeys(input.validationCache), queries: grid.queries },
        test: { keys: countKeys(input.testCache), queries: testQueries.count },
        segments: segmentList.map((segment) => ({
          role: segment.role,
          storeId: segment.manifest.id,
          dataset: segment.manifest.identity.dataset.name,
          split: segment.manifest.identity.dataset.split,
          recordRange: segment.manifest.identity.recordRange,
          includesMirrors: segment.manifest.identity.includesMirrors,
          shards: segment.shards.length,
          keys: segment.manifest.count,
          zeroKeys: segment.manifest.zeroKeyCount,
          reused: segment.reused,
        })),
      },
      backend: input.backend,
      extractionEngine: input.extractionEngine,
      scoringEngine: input.scoringEngine,
      versions: engineVersions(),
      timingsMs: input.timer.timingsMs,
    },
    predictions: {
      labels: Array.from(labels),
      baseline: Array.from(predictions.baseline),
      cache: Array.from(predictions.cache),
      cacheOnly: Array.from(predictions.cacheOnly),
    },
  };
}

/** Picks the θ whose cache-only model (λ = 1) is correct most often; ties go to the lowest θ. */
export function pickBestCacheOnly(evaluation: GridEvaluation): { theta: number; accuracy: number } {
  let best = 0;
  for (let t = 1; t < evaluation.thetas.length; t += 1) {
    const better = evaluation.cacheOnlyCorrect[t] > evaluation.cacheOnlyCorrect[best];
    const tiedLower = evaluation.cacheOnlyCorrect[t] === evaluation.cacheOnlyCorrect[best] && evaluation.thetas[t] < evaluation.thetas[best];
    if (better || tiedLower) best = t;
  }
  return { theta: evaluation.thetas[best], accuracy: evaluation.cacheOnlyAccuracy[best] };
}

function countKeys(shards: KeyShard[]): number {
  return shards.reduce((sum, shard) => sum + shard.header.count, 0);
}
