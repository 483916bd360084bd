import type { Job } from 'bullmq';

import { ERROR_CODES, QUEUE_NAMES, jobIds, planEvaluationResultSchema, type FleetQueueName, type ObjectStore } from '@cachefleet/core';

import type { FleetClient } from '../../fleet/fleet-client.js';
import { explainFailure } from '../../fleet/wait-for-job.js';
import { StageCounter, readActiveJobs, type ActiveJobIndex } from './job-counts.js';
import type { RunError, RunRecord, RunState, StageStatus } from './run-record.js';

/** State of a run as read from Redis, or from object storage for a run whose jobs are gone. */
export interface RunObservation {
  state: RunState;
  stages: StageStatus[];
  errors: RunError[];
  result: Record<string, unknown> | null;
}

/** The job whose completion finishes the run: a merge job, a plan job, or an aggregate job. */
interface RootJob {
  queue: FleetQueueName;
  jobId: string;
  job: Job | undefined;
}

/**
 * Reads the live state of a run from its jobs. The run's state follows its root job: the
 * merge job of a cache build; the plan job and then the aggregate job of an evaluation. When
 * Redis has no root job, the manifest or report in object storage decides between `completed`
 * and `lost`, and the stages keep the counts last stored in the record.
 */
export async function observeRun(client: FleetClient, store: ObjectStore, record: RunRecord): Promise<RunObservation> {
  const active = new Map<FleetQueueName, ActiveJobIndex>();
  const activeIn = async (queue: FleetQueueName): Promise<ActiveJobIndex> => {
    let index = active.get(queue);
    if (index === undefined) {
      index = await readActiveJobs(client, queue);
      active.set(queue, index);
    }
    return index;
  };

  const stages = await observeStages(client, record, activeIn);
  const root = await findRoot(client, record);
  const cancelRequested = record.cancelRequestedAt !== null;
  const anyActive = stages.some((stage) => stage.jobs.active > 0);

  if (root.job === undefined) {
    const finishedObject = record.kind === 'cache-build' ? record.manifestKeys[0] : record.reportKey;
    const completed = finishedObject !== undefined && finishedObject !== null && (await store.head(finishedObject)) !== undefined;
    const keptStages = stages.some((stage) => stage.jobs.total > 0) ? stages : record.stages;
    if (completed) {
      const result = record.result ?? { [record.kind === 'cache-build' ? 'manifestKey' : 'reportKey']: finishedObject };
      return { state: 'completed', stages: keptStages, errors: [], result };
    }
    if (!cancelRequested) return { state: 'lost', stages: keptStages, errors: record.errors, result: null };
    return { state: anyActive ? 'cancelling' : 'cancelled', stages: keptStages, errors: record.errors, result: null };
  }

  const rootState = await root.job.getState();
  if (rootState === 'completed' || rootState === 'failed') {
    // The job may have finished after it was read in findRoot, when its return value and
    // failure reason were still empty, so it is read again.
    const finished: RootJob = { ...root, job: (await client.getJob(root.queue, root.jobId)) ?? root.job };
    if (rootState === 'completed') {
      return { state: 'completed', stages, errors: [], result: (finished.job!.returnvalue ?? null) as Record<string, unknown> | null };
    }
    if (cancelRequested) return { state: anyActive ? 'cancelling' : 'cancelled', stages, errors: [], result: null };
    return { state: 'failed', stages, errors: [await describeFailure(client, finished)], result: null };
  }
  if (cancelRequested) return { state: 'cancelling', stages, errors: [], result: null };

  const started = stages.some((stage) => stage.jobs.active > 0 || stage.jobs.completed > 0 || stage.jobs.failed > 0);
  return { state: started ? 'running' : 'queued', stages, errors: [], result: null };
}

/** Finds the root job: for an evaluation with a plan, the aggregate job once the plan has completed. */
async function findRoot(client: FleetClient, record: RunRecord): Promise<RootJob> {
  if (record.kind === 'cache-build') {
    const jobId = record.builds[0].mergeJobId;
    return { queue: QUEUE_NAMES.merge, jobId, job: await client.getJob(QUEUE_NAMES.merge, jobId) };
  }

  const aggregateJobId = record.aggregateJobId!;
  if (record.planJobId !== null) {
    const plan = await client.getJob(QUEUE_NAMES.planEvaluation, record.planJobId);
    if (plan !== undefined && (await plan.getState()) !== 'completed') return { queue: QUEUE_NAMES.planEvaluation, jobId: record.planJobId, job: plan };
  }
  return { queue: QUEUE_NAMES.aggregate, jobId: aggregateJobId, job: await client.getJob(QUEUE_NAMES.aggregate, aggregateJobId) };
}

/**
 * Counts the jobs of each stage. Only builds that this run submitted have extract and merge
 * stages; builds it found complete, or joined while running, belong to other runs.
 */
async function observeStages(client: FleetClient, record: RunRecord, activeIn: (queue: FleetQueueName) => Promise<ActiveJobIndex>): Promise<StageStatus[]> {
  const extract = new StageCounter('extract');
  const merge = new StageCounter('merge');
  const ownBuilds = record.kind === 'cache-build' ? record.builds : record.builds.filter((build) => build.status === 'submitted');

  for (const build of ownBuilds) {
    const mergeJob = await client.getJob(QUEUE_NAMES.merge, build.mergeJobId);
    if (mergeJob !== undefined) {
      await extract.addChildrenOf(mergeJob, QUEUE_NAMES.extract, await activeIn(QUEUE_NAMES.extract), client.prefix);
      await merge.addJob(mergeJob);
    } else if (build.status === 'complete') {
      extract.addCompleted(build.extractJobs);
      merge.addCompleted(1);
    }
  }
  if (record.kind === 'cache-build') return [extract.toStatus(), merge.toStatus()];

  const stages: StageStatus[] = ownBuilds.length > 0 ? [extract.toStatus(), merge.toStatus()] : [];
  const plan = new StageCounter('plan');
  let planResult: unknown;
  if (record.planJobId !== null) {
    const planJob = await client.getJob(QUEUE_NAMES.planEvaluation, record.planJobId);
    await plan.addJob(planJob);
    planResult = planJob?.returnvalue;
    stages.push(plan.toStatus());
  }

  // When θ is tuned, the aggregate job's children are a tune job (whose children are the
  // validation evaluate jobs) and, once tuning is done, the test evaluate jobs.
  const evaluate = new StageCounter('evaluate');
  const tune = new StageCounter('tune');
  const aggregate = new StageCounter('aggregate');
  const aggregateJob = await client.getJob(QUEUE_NAMES.aggregate, record.aggregateJobId!);
  const tuneJob = await client.getJob(QUEUE_NAMES.tune, jobIds.tune(record.runId));
  if (aggregateJob !== undefined) {
    await evaluate.addChildrenOf(aggregateJob, QUEUE_NAMES.evaluate, await activeIn(QUEUE_NAMES.evaluate), client.prefix);
    await aggregate.addJob(aggregateJob);
  }
  if (tuneJob !== undefined) {
    await evaluate.addChildrenOf(tuneJob, QUEUE_NAMES.evaluate, await activeIn(QUEUE_NAMES.evaluate), client.prefix);
    await tune.addJob(tuneJob);
  }

  const evaluateStatus = evaluate.toStatus();
  // Before the aggregate job exists, the plan's result (once complete) gives the number of evaluate jobs.
  const planned = planEvaluationResultSchema.safeParse(planResult);
  if (evaluateStatus.jobs.total === 0 && planned.success) {
    evaluateStatus.jobs = { ...evaluateStatus.jobs, total: planned.data.evaluateJobs, waiting: planned.data.evaluateJobs };
  }
  stages.push(evaluateStatus);
  if (tuneJob !== undefined) stages.push(tune.toStatus());
  stages.push(aggregate.toStatus());
  return stages;
}

/** Names the job that failed first and its error code, following "child … failed" from the root down. */
async function describeFailure(client: FleetClient, root: RootJob): Promise<RunError> {
  const failure = await explainFailure(client, root.queue, root.job!);
  const cause = failure.chain[failure.chain.length - 1];
  const match = /^([A-Z][A-Z_]+): ([\s\S]*)$/.exec(cause.failedReason);
  const code = match !== null && match[1] in ERROR_CODES ? match[1] : 'UNCLASSIFIED';
  return { queue: cause.queue, jobId: cause.jobId, code, message: failure.message, attemptsMade: cause.attemptsMade };
}
