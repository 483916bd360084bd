import {
  QUEUE_NAMES,
  aggregateResultSchema,
  readManifest,
  type EvaluationRequest,
  type FleetEvaluationReport,
  type KeyStoreManifest,
  type RecordRange,
} from '@cachefleet/core';

import type { BuildResolver } from '../../../apps/coordinator/src/fleet/resolve-build.js';
import { submitEvaluation, type EvaluationSubmission } from '../../../apps/coordinator/src/fleet/submit.js';
import { waitForJob } from '../../../apps/coordinator/src/fleet/wait-for-job.js';
import { cifar10Dir, resnet20Path } from '../../support/shared.js';
import type { ReliabilityFleet } from './reliability-fleet.js';

export const KEY_LAYERS = [49, 57, 64];

/**
 * Shape of a small run of the whole protocol on the CIFAR-10 test split with ResNet20. A run is a
 * cache build with mirror images, a query build without, and an evaluation with fixed θ, λ and
 * cache-only θ, so it needs no validation part. Statistics come from the test split only, which
 * the coordinator computes in about a second.
 */
export interface SmallRunShape {
  cache: RecordRange;
  queries: RecordRange;
  /** Records per shard of both builds, one extract job each. */
  shardRecords: number;
  /** Maximum shard bytes per evaluate job (default 1 GiB: one evaluate job per query slice). */
  shardGroupBytes?: number;
}

export const DEFAULT_SHAPE: SmallRunShape = { cache: { start: 0, end: 400 }, queries: { start: 400, end: 656 }, shardRecords: 400 };

/** Returns the build ids of a run: `<run>-cache` and `<run>-queries`. */
export function buildIdsOf(runId: string): { cache: string; queries: string } {
  return { cache: `${runId}-cache`, queries: `${runId}-queries` };
}

/** Builds the run's request. `ids` replaces the build ids, for a run over the builds of another run. */
export function smallRunRequest(storageUrl: string, runId: string, shape: SmallRunShape = DEFAULT_SHAPE, ids = buildIdsOf(runId)): EvaluationRequest {
  const build = (range: RecordRange, includeMirrors: boolean, buildId: string) => ({
    dataDir: cifar10Dir,
    dataset: 'cifar10' as const,
    split: 'test' as const,
    recordRange: range,
    shardRecords: shape.shardRecords,
    modelPath: resnet20Path,
    keyLayers: KEY_LAYERS,
    statisticsSplits: ['test' as const],
    includeMirrors,
    buildId,
  });

  return {
    storageUrl,
    evaluationId: runId,
    test: {
      queries: { build: build(shape.queries, false, ids.queries), role: 'test' },
      cache: [{ build: build(shape.cache, true, ids.cache), role: 'train' }],
    },
    theta: 50,
    lambda: 0.5,
    thetaCacheOnly: 50,
    shardGroupBytes: shape.shardGroupBytes,
  };
}

export interface SmallRunResult {
  submission: EvaluationSubmission;
  report: FleetEvaluationReport;
  manifests: { cache: KeyStoreManifest; queries: KeyStoreManifest };
}

/** Submits a small run and returns without waiting. */
export function submitSmallRun(fleet: ReliabilityFleet, resolver: BuildResolver, runId: string, shape?: SmallRunShape): Promise<EvaluationSubmission> {
  return submitEvaluation(fleet.client, resolver, (url) => fleet.open(url), smallRunRequest(fleet.storageUrl, runId, shape));
}

/** Waits for a submitted small run and reads its report and both manifests. */
export async function finishSmallRun(fleet: ReliabilityFleet, submission: EvaluationSubmission, timeoutMs = 180_000): Promise<SmallRunResult> {
  if (submission.planJobId !== undefined) await waitForJob(fleet.client, QUEUE_NAMES.planEvaluation, submission.planJobId, { timeoutMs, pollMs: 100 });
  const result = aggregateResultSchema.parse(await waitForJob(fleet.client, QUEUE_NAMES.aggregate, submission.aggregateJobId, { timeoutMs, pollMs: 100 }));

  const store = await fleet.open(fleet.storageUrl);
  const report = JSON.parse(Buffer.from(await store.getBytes(result.reportKey)).toString('utf8')) as FleetEvaluationReport;
  const storeIdOf = (role: string): string => {
    const segment = report.manifest.cacheComposition.segments.find((candidate) => candidate.role === role);
    if (segment === undefined) throw new Error(`Report ${result.reportKey} has no ${role} segment.`);
    return segment.storeId;
  };
  const cache = (await readManifest(store, `builds/${storeIdOf('train')}/manifest.json`)).manifest;
  const queries = (await readManifest(store, `builds/${storeIdOf('test')}/manifest.json`)).manifest;
  return { submission, report, manifests: { cache, queries } };
}

export async function runSmall(fleet: ReliabilityFleet, resolver: BuildResolver, runId: string, shape?: SmallRunShape): Promise<SmallRunResult> {
  return finishSmallRun(fleet, await submitSmallRun(fleet, resolver, runId, shape));
}

/**
 * Returns the part of a manifest that must be equal between runs of the same request: identity, model,
 * preprocessing, counts and every shard's SHA-256, size and records. Left out: the build id and
 * the shard object keys derived from it, the creation time and the extraction time.
 */
export function comparableManifest(manifest: KeyStoreManifest): unknown {
  return {
    identity: manifest.identity,
    model: manifest.model,
    keyLayers: manifest.keyLayers,
    preprocessing: manifest.preprocessing,
    dim: manifest.dim,
    numClasses: manifest.numClasses,
    count: manifest.count,
    zeroKeyCount: manifest.zeroKeyCount,
    engine: manifest.extraction.engine,
    shards: manifest.shards.map((shard) => ({ sha256: shard.sha256, bytes: shard.bytes, count: shard.count, recordRange: shard.recordRange })),
  };
}

/**
 * Reduces a run to what must be identical between runs: comparable manifests, predictions,
 * chosen parameters and test errors. Timings, ids and host-dependent fields are left out.
 */
export function comparableRun(result: SmallRunResult): unknown {
  const { report } = result;
  return {
    cacheManifest: comparableManifest(result.manifests.cache),
    queryManifest: comparableManifest(result.manifests.queries),
    predictions: report.predictions,
    baseline: report.baseline.testError,
    cache: { theta: report.cache.theta, lambda: report.cache.lambda, testError: report.cache.testError },
    cacheOnly: { theta: report.cacheOnly.theta, testError: report.cacheOnly.testError },
    coverage: report.fleet.coverage.test.queriesScored,
  };
}

/** Returns a generator of deterministic pseudo-random numbers in [0, 1) (mulberry32), so a failing kill schedule can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns the count, minimum, median and maximum of a list of numbers. */
export function summarize(values: readonly number[]): { count: number; min: number; median: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { count: sorted.length, min: sorted[0], median, max: sorted[sorted.length - 1] };
}
