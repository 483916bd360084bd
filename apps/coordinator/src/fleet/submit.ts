import type { Job } from 'bullmq';

import {
  CachefleetError,
  QUEUE_NAMES,
  buildFlowSpec,
  deriveEvaluationId,
  evaluationFlowSpec,
  evaluationRequestSchema,
  invalidRequestError,
  jobIds,
  objectKeys,
  planEvaluation,
  planEvaluationFlowSpec,
  readManifestIfPresent,
  type BuildJobs,
  type CacheBuildRequest,
  type EvaluationRequest,
  type FleetQueueName,
  type KeyStoreSource,
  type ObjectStore,
  type ResolvedEvaluation,
  type ResolvedStore,
} from '@cachefleet/core';

import type { FleetClient } from './fleet-client.js';
import type { BuildResolver, ResolvedBuild } from './resolve-build.js';
import { waitForJob } from './wait-for-job.js';

/** Outcome of a submitted build. */
export interface BuildSubmission {
  buildId: string;
  manifestKey: string;
  /** `complete`: the manifest existed; `running`: a merge job of this build id was already queued; `submitted`: a new flow was added. */
  status: 'complete' | 'running' | 'submitted';
  mergeJobId: string;
  extractJobs: number;
}

/**
 * Looks up an existing job before adding one with the same id. BullMQ's FlowProducer would
 * attach a second set of children to an existing parent id, so a run that is queued or running
 * is joined, not added again. A failed one is removed with its children so it can be re-added.
 */
async function findLiveJob(client: FleetClient, queue: FleetQueueName, jobId: string): Promise<{ job: Job; state: string } | undefined> {
  const job = await client.getJob(queue, jobId);
  if (job === undefined) return undefined;

  const state = await job.getState();
  if (state === 'failed' || state === 'unknown') {
    client.logger.info({ queue, jobId, state, reason: job.failedReason }, 'removing the failed earlier run before adding it again');
    await job.remove({ removeChildren: true });
    return undefined;
  }
  return { job, state };
}

/** Submits a resolved build unless its manifest exists or its merge job is already queued. */
export async function submitResolvedBuild(client: FleetClient, store: ObjectStore, build: ResolvedBuild): Promise<BuildSubmission> {
  const state = await findBuildState(client, store, build);
  if (state.status !== 'submitted') return state;

  await client.addFlow(buildFlowSpec(build.jobs, client.settings));
  client.logger.info({ buildId: build.jobs.buildId, extractJobs: build.jobs.extracts.length, manifestKey: build.manifestKey }, 'cache build submitted');
  return state;
}

export async function submitCacheBuild(client: FleetClient, resolver: BuildResolver, openStore: (url: string) => Promise<ObjectStore>, request: CacheBuildRequest): Promise<BuildSubmission> {
  const build = await resolver.resolve(request);
  return submitResolvedBuild(client, await openStore(request.storageUrl), build);
}

/** Outcome of a submitted evaluation, with the jobs to wait for. */
export interface EvaluationSubmission {
  evaluationId: string;
  evaluation: ResolvedEvaluation;
  /** Set when builds had to run first: wait for it, then for the aggregate job. */
  planJobId: string | undefined;
  aggregateJobId: string;
  reportKey: string;
  builds: BuildSubmission[];
}

export interface SubmitEvaluationOptions {
  /**
   * Whether to wait for a build that an earlier submission is still running (default true). With
   * false, such a build raises RUN_STATE_CONFLICT instead, so that an HTTP request does not wait for it.
   */
  waitForRunningBuilds?: boolean;
}

/**
 * Submits an evaluation. Key stores given as builds are resolved and, unless their manifest
 * exists, built first: their merge jobs become children of a `plan-evaluation` job, which adds
 * the evaluation's flow when they complete. Without pending builds the coordinator plans the
 * evaluation itself and adds the flow (aggregate parent, evaluate children) directly.
 */
export async function submitEvaluation(
  client: FleetClient,
  resolver: BuildResolver,
  openStore: (url: string) => Promise<ObjectStore>,
  request: EvaluationRequest,
  options: SubmitEvaluationOptions = {},
): Promise<EvaluationSubmission> {
  const parsed = evaluationRequestSchema.safeParse(request);
  if (!parsed.success) throw invalidRequestError('Evaluation request', parsed.error, request);
  const evaluationRequest = parsed.data;
  const store = await openStore(evaluationRequest.storageUrl);

  const pending: BuildJobs[] = [];
  const submissions: BuildSubmission[] = [];
  const resolvedStores = new Map<string, ResolvedStore>();
  const resolveSource = async (source: KeyStoreSource): Promise<ResolvedStore> => {
    if ('manifest' in source) return { manifest: source.manifest, role: source.role, reused: true };

    const build = await resolver.resolve({ ...source.build, storageUrl: evaluationRequest.storageUrl });
    const known = resolvedStores.get(build.manifestKey);
    if (known !== undefined) return known;

    const submission = await findBuildState(client, store, build);
    submissions.push(submission);
    if (submission.status === 'submitted') pending.push(build.jobs);
    if (submission.status === 'running' && options.waitForRunningBuilds === false) {
      throw new CachefleetError(
        'RUN_STATE_CONFLICT',
        `Build ${submission.buildId} of this evaluation is still running from an earlier submission (merge job ${submission.mergeJobId}). Submit the evaluation again when that build has completed, or name its manifest ${submission.manifestKey} instead of the build.`,
        { buildId: submission.buildId, mergeJobId: submission.mergeJobId },
      );
    }
    if (submission.status === 'running') await waitForJob(client, QUEUE_NAMES.merge, submission.mergeJobId);

    const resolved = { manifest: build.manifestKey, role: source.role ?? build.split.split, reused: submission.status === 'complete' };
    resolvedStores.set(build.manifestKey, resolved);
    return resolved;
  };

  // Sources are resolved one at a time, so a build named twice is resolved and submitted once.
  const resolvePart = async (part: NonNullable<typeof evaluationRequest.validation>) => {
    const cache: ResolvedStore[] = [];
    for (const source of part.cache) cache.push(await resolveSource(source));
    return { queries: await resolveSource(part.queries), cache };
  };
  const validation = evaluationRequest.validation === undefined ? undefined : await resolvePart(evaluationRequest.validation);
  const test = await resolvePart(evaluationRequest.test);

  const { evaluationId: requestedId, test: _test, validation: _validation, ...common } = evaluationRequest;
  const withoutId = { ...common, test, validation };
  const evaluationId = requestedId ?? deriveEvaluationId(withoutId);
  const evaluation: ResolvedEvaluation = { ...withoutId, evaluationId };
  const aggregateJobId = jobIds.aggregate(evaluationId);
  const result = { evaluationId, evaluation, aggregateJobId, reportKey: objectKeys.report(evaluationId), builds: submissions };

  if ((await findLiveJob(client, QUEUE_NAMES.aggregate, aggregateJobId)) !== undefined) {
    client.logger.info({ evaluationId }, 'evaluation already queued or complete; joining it');
    return { ...result, planJobId: undefined };
  }

  // A plan job of an earlier submission adds the evaluation flow itself. Adding it here as well
  // could attach a second set of evaluate jobs to the aggregate job. A completed plan whose
  // aggregate job is gone (removed after a week) is planned again.
  const planJobId = jobIds.planEvaluation(evaluationId);
  const livePlan = await findLiveJob(client, QUEUE_NAMES.planEvaluation, planJobId);
  if (livePlan !== undefined && livePlan.state !== 'completed') {
    client.logger.info({ evaluationId }, 'evaluation plan already queued; joining it');
    return { ...result, planJobId };
  }
  if (livePlan !== undefined) await livePlan.job.remove({ removeChildren: true });

  if (pending.length > 0) {
    await client.addFlow(planEvaluationFlowSpec({ evaluation }, pending, client.settings));
    client.logger.info({ evaluationId, builds: pending.map((build) => build.buildId) }, 'builds and evaluation plan submitted');
    return { ...result, planJobId };
  }

  const plan = await planEvaluation(store, evaluation);
  await client.addFlow(evaluationFlowSpec(plan, client.settings));
  client.logger.info({ evaluationId, evaluateJobs: plan.evaluateJobCount }, 'evaluation submitted');
  return { ...result, planJobId: undefined };
}

/**
 * Decides how a build is obtained: an existing manifest (`complete`), a merge job already queued
 * (`running`), or a new flow (`submitted`, not yet added). An evaluation waits for a running
 * build, because a queued job cannot become a child of a new flow.
 */
async function findBuildState(client: FleetClient, store: ObjectStore, build: ResolvedBuild): Promise<BuildSubmission> {
  const mergeJobId = jobIds.merge(build.jobs.buildId);
  const base = { buildId: build.jobs.buildId, manifestKey: build.manifestKey, mergeJobId, extractJobs: build.jobs.extracts.length };
  if ((await readManifestIfPresent(store, build.manifestKey)) !== undefined) return { ...base, status: 'complete' };

  const live = await findLiveJob(client, QUEUE_NAMES.merge, mergeJobId);
  if (live !== undefined && live.state !== 'completed') return { ...base, status: 'running' };
  if (live !== undefined) await live.job.remove({ removeChildren: true });
  return { ...base, status: 'submitted' };
}

/** Waits for an evaluation's plan (if any) and aggregate jobs; returns the aggregate's result. */
export async function waitForEvaluation(client: FleetClient, submission: EvaluationSubmission, onProgress?: (job: Job) => void): Promise<unknown> {
  if (submission.planJobId !== undefined) await waitForJob(client, QUEUE_NAMES.planEvaluation, submission.planJobId, { onProgress });
  return waitForJob(client, QUEUE_NAMES.aggregate, submission.aggregateJobId, { onProgress });
}
