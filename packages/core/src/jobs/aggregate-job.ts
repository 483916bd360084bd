import { z } from 'zod';

import { predictClasses } from '../cache/index.js';
import { CachefleetError } from '../errors.js';
import { accuracyByClass, errorRate } from '../local/metrics.js';
import { REPORT_SCHEMA_VERSION, reportSchema } from '../local/report.js';
import { engineVersions } from '../local/versions.js';
import type { ObjectStore } from '../storage/index.js';
import { throwIfCancelled, type CancellationCheck } from './cancellation.js';
import { roleCoverageSchema, type AggregateJobData, type AggregateResult, type EvaluateResult, type TuneResult } from './evaluation-schemas.js';
import { foldRole, type FoldedRole } from './fold-role.js';

/** The local run's report plus fleet fields: the evaluation id and the coverage of each role. */
export const fleetReportSchema = reportSchema.extend({
  fleet: z.object({
    evaluationId: z.string(),
    coverage: z.record(z.string(), roleCoverageSchema),
  }),
});
export type FleetEvaluationReport = z.infer<typeof fleetReportSchema>;

/** Return values of an aggregate job's children: its test evaluate jobs and, when θ was tuned, its tune job. */
export interface AggregateChildResults {
  evaluates: readonly EvaluateResult[];
  tune: TuneResult | undefined;
}

/**
 * Aggregates an evaluation: folds the test partials, predicts the test queries with the θ and λ
 * of the tune child (or the fixed ones) and writes the report (the local run's schema plus the
 * fleet's coverage) to `data.reportKey`.
 */
export async function runAggregateJob(
  data: AggregateJobData,
  children: AggregateChildResults,
  resources: { store: ObjectStore; isCancelled?: CancellationCheck },
): Promise<{ report: FleetEvaluationReport; result: AggregateResult }> {
  const jobName = `Aggregate job of evaluation ${data.evaluationId}`;
  await throwIfCancelled(resources.isCancelled, jobName);
  const timingsMs: Record<string, number> = {};
  const time = async <T>(stage: string, work: () => Promise<T> | T): Promise<T> => {
    const started = performance.now();
    try {
      return await work();
    } finally {
      timingsMs[stage] = Math.round(performance.now() - started);
    }
  };

  const tune = children.tune;
  if (data.tuneJobId !== undefined && tune === undefined) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `The aggregate job of evaluation ${data.evaluationId} found no result of its tune job ${data.tuneJobId}. Run the evaluation again.`, { evaluationId: data.evaluationId });
  }
  if (tune !== undefined) {
    timingsMs['score validation'] = tune.coverage.evaluateJobsMs;
    timingsMs['fold validation'] = tune.timingsMs.fold;
    timingsMs.tune = tune.timingsMs.tune;
  }

  const testThetas = tune?.testThetas ?? data.testThetas!;
  const test = await time('fold test', () => foldRole(resources.store, data.test, testThetas, children.evaluates));
  timingsMs['score test'] = test.coverage.evaluateJobsMs;

  const report = await time('predict', () => assembleReport(data, test, testThetas, tune));
  report.manifest.timingsMs = timingsMs;
  await throwIfCancelled(resources.isCancelled, jobName);
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

/** Predicts the test queries with the chosen θ and λ and builds the report in the local run's schema. */
function assembleReport(data: AggregateJobData, test: FoldedRole, testThetas: readonly number[], tune: TuneResult | undefined): FleetEvaluationReport {
  const { fixed, context } = data;
  const numClasses = context.model.numClasses;
  const chosen = { theta: tune?.theta ?? fixed.theta!, lambda: tune?.lambda ?? fixed.lambda!, thetaCacheOnly: tune?.thetaCacheOnly ?? fixed.thetaCacheOnly! };
  const validation = tune?.validationAccuracy ?? { baseline: null, cache: null, cacheOnly: null };
  const grid = tune?.grid ?? null;

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

  return {
    schemaVersion: REPORT_SCHEMA_VERSION,
    createdAt: new Date().toISOString(),
    baseline: { testError: errorRate(predictions.baseline, labels), validationAccuracy: validation.baseline },
    cache: { testError: errorRate(predictions.cache, labels), theta: chosen.theta, lambda: chosen.lambda, tuned: fixed.theta === undefined, validationAccuracy: validation.cache },
    cacheOnly: { testError: errorRate(predictions.cacheOnly, labels), theta: chosen.thetaCacheOnly, tuned: fixed.thetaCacheOnly === undefined, validationAccuracy: validation.cacheOnly },
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
        validation: tune === undefined ? null : { keys: tune.cacheKeys, queries: tune.grid.queries },
        test: { keys: data.test.cacheKeys, queries: labels.length },
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
      coverage: tune === undefined ? { test: test.coverage } : { validation: tune.coverage, test: test.coverage },
    },
  };
}
