import { evaluateGrid, pickBest } from '../cache/index.js';
import { pickBestCacheOnly } from '../local/tune-and-test.js';
import type { ObjectStore } from '../storage/index.js';
import { throwIfCancelled, type CancellationCheck } from './cancellation.js';
import { testThetasFor, withThetas, type PlannedEvaluateJob } from './evaluation-plan.js';
import type { EvaluateResult, TuneJobData, TuneResult } from './evaluation-schemas.js';
import { foldRole } from './fold-role.js';

export interface TuneJobResources {
  store: ObjectStore;
  isCancelled?: CancellationCheck;
}

/**
 * Folds the validation partials and tunes θ and λ (and the cache-only θ) as the local run's
 * `tuneAndTest` does, with the same grid evaluation and tie rules; fixed values stay as given.
 * Returns the choice with the report's validation figures, and the test evaluate jobs completed
 * with the θ values the test queries need: θ, then the cache-only θ when it differs.
 */
export async function runTuneJob(data: TuneJobData, results: readonly EvaluateResult[], resources: TuneJobResources): Promise<{ result: TuneResult; testJobs: PlannedEvaluateJob[] }> {
  await throwIfCancelled(resources.isCancelled, `Tune job of evaluation ${data.evaluationId}`);
  const foldStarted = performance.now();
  const validation = await foldRole(resources.store, data.validation, data.thetas, results);

  const tuneStarted = performance.now();
  const grid = evaluateGrid({ modelLogProbs: validation.logProbs, partials: validation.partials, labels: validation.labels, thetas: data.thetas, lambdas: data.lambdas });
  const best = pickBest(grid);
  const bestCacheOnly = pickBestCacheOnly(grid);
  const theta = data.fixed.theta ?? best.theta;
  const lambda = data.fixed.lambda ?? best.lambda;
  const thetaCacheOnly = data.fixed.thetaCacheOnly ?? bestCacheOnly.theta;
  const testThetas = testThetasFor(theta, thetaCacheOnly);
  const testJobs = data.testJobs.map((template) => withThetas(template, testThetas));

  const result: TuneResult = {
    evaluationId: data.evaluationId,
    theta,
    lambda,
    thetaCacheOnly,
    testThetas,
    grid: {
      thetas: [...data.thetas],
      lambdas: [...data.lambdas],
      accuracy: grid.accuracy,
      cacheOnlyAccuracy: grid.cacheOnlyAccuracy,
      baselineAccuracy: grid.baselineAccuracy,
      queries: validation.labels.length,
    },
    validationAccuracy: { baseline: grid.baselineAccuracy, cache: best.accuracy, cacheOnly: bestCacheOnly.accuracy },
    coverage: validation.coverage,
    cacheKeys: data.validation.cacheKeys,
    timingsMs: { fold: Math.round(tuneStarted - foldStarted), tune: Math.round(performance.now() - tuneStarted) },
    testJobs: testJobs.length,
  };
  return { result, testJobs };
}
