import { FlowProducer, Job, type FlowJob, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';

import {
  QUEUE_NAMES,
  aggregateJobDataSchema,
  cancellationKey,
  evaluateJobDataSchema,
  evaluateResultSchema,
  evaluationFlowSpec,
  extractJobDataSchema,
  fleetChildJobOptions,
  extractResultSchema,
  mergeJobDataSchema,
  planEvaluation,
  planEvaluationJobDataSchema,
  runAggregateJob,
  runEvaluateJob,
  runExtractJob,
  runMergeJob,
  runTuneJob,
  throwIfCancelled,
  tuneJobDataSchema,
  tuneResultSchema,
  type CancellationCheck,
  type AggregateResult,
  type EvaluateResult,
  type ExtractResult,
  type FleetQueueName,
  type FleetSettings,
  type Logger,
  type MergeResult,
  type NamedLock,
  type PlanEvaluationResult,
  type TuneResult,
} from '@cachefleet/core';

import type { WorkerResources } from './resources.js';
import { createRobustnessProcessors } from './robustness-processors.js';

export interface ProcessorContext {
  resources: WorkerResources;
  lock: NamedLock;
  flowProducer: FlowProducer;
  queues: ReadonlyMap<string, Queue>;
  settings: FleetSettings;
  /** Redis and the BullMQ prefix, for the cancellation marks that jobs check between batches. */
  redis: Redis;
  prefix: string;
}

export type JobProcessor = (job: Job, logger: Logger) => Promise<unknown>;

/** Reports progress to BullMQ at most every 2 s, because each update is a Redis round trip. */
function throttledProgress(job: Job): (done: number, total: number) => void {
  let last = 0;
  return (done, total) => {
    const now = Date.now();
    if (now - last < 2_000 && done < total) return;
    last = now;
    void job.updateProgress({ done, total }).catch(() => undefined);
  };
}

/** Creates the check that job functions call between batches: whether run `id` has a cancellation mark. */
function cancellationCheck(context: ProcessorContext, id: string): CancellationCheck {
  const key = cancellationKey(context.prefix, id);
  return async () => (await context.redis.exists(key)) === 1;
}

/** Returns the children's return values sorted by child key, so every attempt sees the same list. */
async function childResults(job: Job): Promise<unknown[]> {
  return (await childResultsWithQueues(job)).map((child) => child.value);
}

/** Returns the children's return values with their queues, sorted by child key (`<prefix>:<queue>:<job id>`). */
async function childResultsWithQueues(job: Job): Promise<Array<{ queue: string; value: unknown }>> {
  const values = await job.getChildrenValues();
  return Object.keys(values)
    .sort()
    .map((key) => ({ queue: key.split(':').at(-2) ?? '', value: values[key] }));
}

async function processExtract(context: ProcessorContext, job: Job, logger: Logger): Promise<ExtractResult> {
  const data = extractJobDataSchema.parse(job.data);
  const store = await context.resources.store(data.storageUrl);
  const split = await context.resources.split(data.dataset);
  const model = await context.resources.model(data.model);

  const result = await runExtractJob(data, { store, split, extractor: model.extractor, modelFileSha256: model.fileSha256, onProgress: throttledProgress(job), isCancelled: cancellationCheck(context, data.buildId) });
  logger.info({ key: result.key, count: result.count, bytes: result.bytes, engine: result.engine }, 'shard written');
  return result;
}

async function processMerge(context: ProcessorContext, job: Job, logger: Logger): Promise<MergeResult> {
  const data = mergeJobDataSchema.parse(job.data);
  const extracts = (await childResults(job)).map((value) => extractResultSchema.parse(value));
  const store = await context.resources.store(data.storageUrl);

  const result = await runMergeJob(data, extracts, { store, lock: context.lock, isCancelled: cancellationCheck(context, data.buildId) });
  logger.info({ buildId: data.buildId, manifestKey: result.manifestKey, shards: result.shards, keys: result.count, written: result.written }, result.written ? 'manifest written' : 'manifest already existed');
  return result;
}

async function processEvaluate(context: ProcessorContext, job: Job, logger: Logger): Promise<EvaluateResult> {
  const data = evaluateJobDataSchema.parse(job.data);
  const store = await context.resources.store(data.storageUrl);
  const engine = await context.resources.scoringEngine();
  const cache = context.resources.shardCache;
  const hitsBefore = cache.hits;
  const missesBefore = cache.misses;

  const result = await runEvaluateJob(data, { store, engine, shards: cache, onProgress: throttledProgress(job), isCancelled: cancellationCheck(context, data.evaluationId) });
  logger.info({ key: result.key, role: result.role, rows: result.rowRange, shards: result.shardRange, stagesMs: result.stagesMs, shardCacheHits: cache.hits - hitsBefore, shardReads: cache.misses - missesBefore, shardCacheBytes: cache.bytes }, 'partials written');
  return result;
}

async function processAggregate(context: ProcessorContext, job: Job, logger: Logger): Promise<AggregateResult> {
  const data = aggregateJobDataSchema.parse(job.data);
  const children = await childResultsWithQueues(job);
  const evaluates = children.filter((child) => child.queue === QUEUE_NAMES.evaluate).map((child) => evaluateResultSchema.parse(child.value));
  const tune = children.find((child) => child.queue === QUEUE_NAMES.tune);
  const store = await context.resources.store(data.storageUrl);

  const { result } = await runAggregateJob(data, { evaluates, tune: tune === undefined ? undefined : tuneResultSchema.parse(tune.value) }, { store, isCancelled: cancellationCheck(context, data.evaluationId) });
  logger.info({ evaluationId: data.evaluationId, reportKey: result.reportKey, testError: result.testError, theta: result.theta, lambda: result.lambda }, 'report written');
  return result;
}

/**
 * Tunes θ and λ on the validation partials, then adds the test evaluate jobs, scored with the
 * chosen θ values only, as children of the aggregate job. The aggregate job waits for them,
 * because they are added while this job, also its child, is still active. A retried attempt adds
 * jobs with the same ids, which BullMQ ignores as duplicates.
 */
async function processTune(context: ProcessorContext, job: Job, logger: Logger): Promise<TuneResult> {
  const data = tuneJobDataSchema.parse(job.data);
  const results = (await childResults(job)).map((value) => evaluateResultSchema.parse(value));
  const store = await context.resources.store(data.storageUrl);
  const isCancelled = cancellationCheck(context, data.evaluationId);

  const { result, testJobs } = await runTuneJob(data, results, { store, isCancelled });
  // Checked again right before adding jobs, as the plan job does before adding its flow.
  await throwIfCancelled(isCancelled, `Tune job of evaluation ${data.evaluationId}`);
  const parent = { id: data.aggregateJobId, queue: context.queues.get(QUEUE_NAMES.aggregate)!.qualifiedName };
  await context.queues.get(QUEUE_NAMES.evaluate)!.addBulk(
    testJobs.map((test) => ({ name: QUEUE_NAMES.evaluate, data: test.data, opts: { ...fleetChildJobOptions(context.settings, test.jobId), parent } })),
  );
  logger.info({ evaluationId: data.evaluationId, theta: result.theta, lambda: result.lambda, thetaCacheOnly: result.thetaCacheOnly, testThetas: result.testThetas, testJobs: testJobs.length }, 'tuned; test evaluate jobs added');
  return result;
}

/**
 * Plans an evaluation once its builds are complete and adds its flow. The aggregate job id is
 * checked first: BullMQ would attach a second set of children to an existing parent id.
 */
async function processPlanEvaluation(context: ProcessorContext, job: Job, logger: Logger): Promise<PlanEvaluationResult> {
  const data = planEvaluationJobDataSchema.parse(job.data);
  const store = await context.resources.store(data.evaluation.storageUrl);
  const plan = await planEvaluation(store, data.evaluation);

  // Checked before the flow is added, so a cancelled evaluation gets no evaluate jobs. Evaluate
  // jobs added in the moment between this check and a cancellation still stop at their first check.
  await throwIfCancelled(cancellationCheck(context, data.evaluation.evaluationId), `Plan job of evaluation ${data.evaluation.evaluationId}`);
  const aggregateQueue = context.queues.get(QUEUE_NAMES.aggregate)!;
  const existing = await Job.fromId(aggregateQueue, plan.aggregate.jobId);
  if (existing === undefined) {
    await context.flowProducer.add(evaluationFlowSpec(plan, context.settings) as FlowJob);
    logger.info({ evaluationId: plan.evaluationId, evaluateJobs: plan.evaluateJobCount }, 'evaluation flow added');
  } else {
    logger.info({ evaluationId: plan.evaluationId, aggregateJobId: plan.aggregate.jobId }, 'evaluation flow already exists');
  }
  return { evaluationId: plan.evaluationId, aggregateJobId: plan.aggregate.jobId, evaluateJobs: plan.evaluateJobCount };
}

/** Creates the processor of each queue. */
export function createProcessors(context: ProcessorContext): Record<FleetQueueName, JobProcessor> {
  const robustness = createRobustnessProcessors(context);
  return {
    [QUEUE_NAMES.extract]: (job, logger) => processExtract(context, job, logger),
    [QUEUE_NAMES.merge]: (job, logger) => processMerge(context, job, logger),
    [QUEUE_NAMES.evaluate]: (job, logger) => processEvaluate(context, job, logger),
    [QUEUE_NAMES.aggregate]: (job, logger) => processAggregate(context, job, logger),
    [QUEUE_NAMES.tune]: (job, logger) => processTune(context, job, logger),
    [QUEUE_NAMES.planEvaluation]: (job, logger) => processPlanEvaluation(context, job, logger),
    [QUEUE_NAMES.robustness]: robustness.robustness,
    [QUEUE_NAMES.robustnessAggregate]: robustness.robustnessAggregate,
  };
}
