import { z } from 'zod';

import { evaluateGrid, pickBest, predictClasses } from '../cache/index.js';
import { foldPartials } from '../cache/shard-partials.js';
import { CachefleetError } from '../errors.js';
import { accuracyByClass, errorRate } from '../local/metrics.js';
import { REPORT_SCHEMA_VERSION, reportSchema, type EvaluationReport } from '../local/report.js';
import { pickBestCacheOnly } from '../local/tune-and-test.js';
import { engineVersions } from '../local/versions.js';
import { sha256Hex } from '../store/shard-format.js';
import type { ObjectStore } from '../storage/index.js';
import type { AggregateJobData, AggregateResult, EvaluateResult, RolePlanSummary } from './evaluation-schemas.js';
import { decodePartialResult, type PartialResult } from './partial-format.js';

/** Queries of one role with their partials folded over the whole cache, in global shard order. */
export interface FoldedRole {
  labels: Int32Array;
  logProbs: Float32Array;
  /** [T][Q][C] for the role's thetas. */
  partials: Float32Array;
  coverage: RoleCoverage;
}

const roleCoverageSchema = z.object({
  queries: z.number().int(),
  queriesScored: z.number().int(),
  shards: z.number().int(),
  partialObjects: z.number().int(),
  evaluateJobsMs: z.number(),
});
export type RoleCoverage = z.infer<typeof roleCoverageSchema>;

/** The local run's report plus fleet fields: the evaluation id and the coverage of each role. */
export const fleetReportSchema = reportSchema.extend({
  fleet: z.object({
    evaluationId: z.string(),
    coverage: z.record(z.string(), roleCoverageSchema),
  }),
});
export type FleetEvaluationReport = z.infer<typeof fleetReportSchema>;

/**
 * Reads one role's partial-result objects and checks their SHA-256, and that every query slice
 * was scored against every non-empty shard exactly once. Then folds the per-shard partials of
 * each slice from left to right in global shard order with the local run's `foldPartials`, so
 * the folded values are bit-identical to the local run's. `reverse` folds in the opposite order,
 * for tests of the fold's sensitivity to order.
 */
export async function foldRole(store: ObjectStore, summary: RolePlanSummary, results: readonly EvaluateResult[], order: 'shard-order' | 'reverse' = 'shard-order'): Promise<FoldedRole> {
  const { numQueries, thetas } = summary;
  const numThetas = thetas.length;
  const decoded: PartialResult[] = [];
  for (const result of results) decoded.push(await readPartial(store, result));

  let numClasses = 0;
  let labels = new Int32Array(0);
  let logProbs = new Float32Array(0);
  let partials = new Float32Array(0);
  let queriesScored = 0;

  for (const slice of summary.slices) {
    const pieces = decoded.filter((item) => item.header.rowRange.start === slice.start && item.header.rowRange.end === slice.end);
    if (pieces.length === 0) throw incomplete(summary, `query rows [${slice.start}, ${slice.end}) have no partial results`);
    if (numClasses === 0) {
      numClasses = pieces[0].header.numClasses;
      labels = new Int32Array(numQueries);
      logProbs = new Float32Array(numQueries * numClasses);
      partials = new Float32Array(numThetas * numQueries * numClasses);
    }

    const byShard = new Map<number, Float32Array>();
    for (const piece of pieces) {
      if (piece.header.thetas.join(',') !== thetas.join(',')) throw incomplete(summary, `a partial of rows [${slice.start}, ${slice.end}) was scored for other thetas`);
      for (const [index, values] of piece.partials) {
        if (byShard.has(index)) throw incomplete(summary, `shard ${index} was scored twice for rows [${slice.start}, ${slice.end})`);
        byShard.set(index, values);
      }
    }
    const missing = summary.scoredShards.filter((index) => !byShard.has(index));
    if (missing.length > 0) throw incomplete(summary, `rows [${slice.start}, ${slice.end}) lack the partials of shards ${missing.join(', ')}`);

    const indices = [...byShard.keys()].sort((a, b) => a - b);
    if (order === 'reverse') indices.reverse();
    const folded = foldPartials(indices.map((index) => byShard.get(index)!));

    const rows = slice.end - slice.start;
    labels.set(pieces[0].labels, slice.start);
    logProbs.set(pieces[0].logProbs, slice.start * numClasses);
    for (let t = 0; t < numThetas; t += 1) {
      partials.set(folded.subarray(t * rows * numClasses, (t + 1) * rows * numClasses), (t * numQueries + slice.start) * numClasses);
    }
    queriesScored += rows;
  }

  return {
    labels,
    logProbs,
    partials,
    coverage: {
      queries: numQueries,
      queriesScored,
      shards: summary.shardCount,
      partialObjects: results.length,
      evaluateJobsMs: results.reduce((sum, result) => sum + result.durationMs, 0),
    },
  };
}

async function readPartial(store: ObjectStore, result: EvaluateResult): Promise<PartialResult> {
  const bytes = await store.getBytes(result.key);
  const sha256 = sha256Hex(bytes);
  if (sha256 !== result.sha256) {
    throw new CachefleetError('CHECKSUM_MISMATCH', `Partial result ${result.key} has SHA-256 ${sha256}, but its evaluate job wrote ${result.sha256}; the object was changed or damaged. Run the evaluation again.`, { key: result.key });
  }
  return decodePartialResult(bytes, `${store.describe()} ${result.key}`);
}

function incomplete(summary: RolePlanSummary, reason: string): CachefleetError {
  return new CachefleetError('KEY_STORE_CORRUPT', `The ${summary.role} partial results are incomplete: ${reason}. Run the evaluation again.`, { role: summary.role });
}

/**
 * Aggregates an evaluation: folds the partials of each role, and tunes θ and λ on validation
 * with the core's tie rule unless they are fixed. Then predicts the test queries and writes the
 * report (the local run's schema plus the fleet's coverage) to `data.reportKey`.
 */
export async function runAggregateJob(data: AggregateJobData, results: readonly EvaluateResult[], resources: { store: ObjectStore }): Promise<{ report: FleetEvaluationReport; result: AggregateResult }> {
  const timingsMs: Record<string, number> = {};
  const time = async <T>(stage: string, work: () => Promise<T> | T): Promise<T> => {
    const started = performance.now();
    try {
      return await work();
    } finally {
      timingsMs[stage] = Math.round(performance.now() - started);
    }
  };

  const folded = new Map<string, FoldedRole>();
  for (const summary of data.roles) {
    const roleResults = results.filter((result) => result.role === summary.role);
    folded.set(summary.role, await time(`fold ${summary.role}`, () => foldRole(resources.store, summary, roleResults)));
    timingsMs[`score ${summary.role}`] = folded.get(summary.role)!.coverage.evaluateJobsMs;
  }

  const report = await time('tune and predict', () => assembleReport(data, folded));
  report.manifest.timingsMs = timingsMs;
  const bytes = Buffer.from(JSON.stringify(report, null, 2), 'utf8');
  const written = await resources.store.put(data.reportKey, bytes, { contentLength: bytes.length });

  return {
    report,
    result: {
      evaluationId: data.evaluationId,
      reportKey: data.reportKey,
      reportSha256: written.sha256,
      testError: { baseline: report.baseline.testError, cache: report.cache.testError, cacheOnly: report.cacheOnly.testError },
      theta: report.cache.theta,
      lambda: report.cache.lambda,
      thetaCacheOnly: report.cacheOnly.theta,
    },
  };
}

/** Makes the decisions of the local run's tuneAndTest from folded partials and builds its report. */
function assembleReport(data: AggregateJobData, folded: Map<string, FoldedRole>): FleetEvaluationReport {
  const { fixed, thetas, lambdas, context } = data;
  const numClasses = context.model.numClasses;
  const needsCacheTuning = fixed.theta === undefined;
  const needsCacheOnlyTuning = fixed.thetaCacheOnly === undefined;

  let grid: EvaluationReport['grid'] = null;
  let theta = fixed.theta;
  let lambda = fixed.lambda;
  let thetaCacheOnly = fixed.thetaCacheOnly;
  let validation = { baseline: null as number | null, cache: null as number | null, cacheOnly: null as number | null };

  if (needsCacheTuning || needsCacheOnlyTuning) {
    const queries = folded.get('validation');
    if (queries === undefined) throw new CachefleetError('INVALID_ARGUMENT', 'The evaluation tunes parameters but has no validation partials. Plan it with a validation part.', {});
    const result = evaluateGrid({ modelLogProbs: queries.logProbs, partials: queries.partials, labels: queries.labels, thetas, lambdas });
    const best = pickBest(result);
    const bestCacheOnly = pickBestCacheOnly(result);

    grid = { thetas: [...thetas], lambdas: [...lambdas], accuracy: result.accuracy, cacheOnlyAccuracy: result.cacheOnlyAccuracy, baselineAccuracy: result.baselineAccuracy, queries: queries.labels.length };
    if (needsCacheTuning) {
      theta = best.theta;
      lambda = best.lambda;
    }
    if (needsCacheOnlyTuning) thetaCacheOnly = bestCacheOnly.theta;
    validation = { baseline: result.baselineAccuracy, cache: best.accuracy, cacheOnly: bestCacheOnly.accuracy };
  }

  const chosen = { theta: theta!, lambda: lambda!, thetaCacheOnly: thetaCacheOnly! };
  const test = folded.get('test')!;
  const testThetas = data.roles.find((role) => role.role === 'test')!.thetas;
  const perTheta = test.labels.length * numClasses;
  const partialsFor = (value: number): Float32Array => {
    const t = testThetas.indexOf(value);
    if (t === -1) throw new CachefleetError('INVALID_ARGUMENT', `θ ${value} was not scored on the test queries (scored: ${testThetas.join(', ')}). Plan the evaluation again.`, { theta: value });
    return test.partials.subarray(t * perTheta, (t + 1) * perTheta);
  };

  const labels = test.labels;
  const predictions = {
    baseline: predictClasses(test.logProbs, partialsFor(chosen.theta), 0, numClasses),
    cache: predictClasses(test.logProbs, partialsFor(chosen.theta), chosen.lambda, numClasses),
    cacheOnly: predictClasses(test.logProbs, partialsFor(chosen.thetaCacheOnly), 1, numClasses),
  };
  const roleKeys = (role: string): number | undefined => data.roles.find((summary) => summary.role === role)?.cacheKeys;

  return {
    schemaVersion: REPORT_SCHEMA_VERSION,
    createdAt: new Date().toISOString(),
    baseline: { testError: errorRate(predictions.baseline, labels), validationAccuracy: validation.baseline },
    cache: { testError: errorRate(predictions.cache, labels), theta: chosen.theta, lambda: chosen.lambda, tuned: needsCacheTuning, validationAccuracy: validation.cache },
    cacheOnly: { testError: errorRate(predictions.cacheOnly, labels), theta: chosen.thetaCacheOnly, tuned: needsCacheOnlyTuning, validationAccuracy: validation.cacheOnly },
    grid,
    perClassAccuracy: {
      classNames: context.dataset.classNames,
      baseline: accuracyByClass(predictions.baseline, labels, numClasses),
      cache: accuracyByClass(predictions.cache, labels, numClasses),
      cacheOnly: accuracyByClass(predictions.cacheOnly, labels, numClasses),
    },
    manifest: {
      model: context.model,
      keyLayers: context.keyLayers,
      keyDim: context.keyDim,
      preprocessing: context.preprocessing,
      dataset: { name: context.dataset.name, dir: context.dataset.dir, trainFingerprint: context.dataset.trainFingerprint, testFingerprint: context.dataset.testFingerprint },
      limit: context.limit,
      cacheComposition: {
        validation: grid === null ? null : { keys: roleKeys('validation')!, queries: grid.queries },
        test: { keys: roleKeys('test')!, queries: labels.length },
        segments: context.segments,
      },
      backend: context.backend,
      extractionEngine: context.extractionEngine,
      scoringEngine: 'onnxruntime-node in fleet evaluate jobs',
      versions: engineVersions(),
      timingsMs: {},
    },
    predictions: {
      labels: Array.from(labels),
      baseline: Array.from(predictions.baseline),
      cache: Array.from(predictions.cache),
      cacheOnly: Array.from(predictions.cacheOnly),
    },
    fleet: {
      evaluationId: data.evaluationId,
      coverage: Object.fromEntries([...folded].map(([role, item]) => [role, item.coverage])),
    },
  };
}
