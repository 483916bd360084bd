import { FlowProducer, Job, type FlowJob, type Queue } from 'bullmq';

import {
  QUEUE_NAMES,
  aggregateJobDataSchema,
  evaluateJobDataSchema,
  evaluateResultSchema,
  evaluationFlowSpec,
  extractJobDataSchema,
  extractResultSchema,
  mergeJobDataSchema,
  planEvaluation,
  planEvaluationJobDataSchema,
  runAggregateJob,
  runEvaluateJob,
  runExtractJob,
  runMergeJob,
  type AggregateResult,
  type EvaluateResult,
  type ExtractResult,
  type FleetQueueName,
  type FleetSettings,
  type Logger,
  type MergeResult,
  type NamedLock,
  type PlanEvaluationResult,
} from '@cachefleet/core';

import type { WorkerResources } from './resources.js';

export interface ProcessorContext {
  resources: WorkerResources;
  lock: NamedLock;
  flowProducer: FlowProducer;
  queues: ReadonlyMap<string, Queue>;
  settings: FleetSettings;
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

/** Returns the children's return values sorted by child key, so every attempt sees the same list. */
async function childResults(job: Job): Promise<unknown[]> {
  const values = await job.getChildrenValues();
  return Object.keys(values)
    .sort()
    .map((key) => values[key]);
}

async function processExtract(context: ProcessorContext, job: Job, logger: Logger): Promise<ExtractResult> {
  const data = extractJobDataSchema.parse(job.data);
  const store = await context.resources.store(data.storageUrl);
  const split = await context.resources.split(data.dataset);
  const model = await context.resources.model(data.model);

  const result = await runExtractJob(data, { store, split, extractor: model.extractor, modelFileSha256: model.fileSha256, onProgress: throttledProgress(job) });
  logger.info({ key: result.key, count: result.count, bytes: result.bytes, engine: result.engine }, 'shard written');
  return result;
}

async function processMerge(context: ProcessorContext, job: Job, logger: Logger): Promise<MergeResult> {
  const data = mergeJobDataSchema.parse(job.data);
  const extracts = (await childResults(job)).map((value) => extractResultSchema.parse(value));
  const store = await context.resources.store(data.storageUrl);

  const result = await runMergeJob(data, extracts, { store, lock: context.lock });
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

  const result = await runEvaluateJob(data, { store, engine, shards: cache, onProgress: throttledProgress(job) });
  logger.info({ key: result.key, role: result.role, rows: result.rowRange, shards: result.shardRange, shardCacheHits: cache.hits - hitsBefore, shardReads: cache.misses - missesBefore, shardCacheBytes: cache.bytes }, 'partials written');
  return result;
}

async function processAggregate(context: ProcessorContext, job: Job, logger: Logger): Promise<AggregateResult> {
  const data = aggregateJobDataSchema.parse(job.data);
  const results = (await childResults(job)).map((value) => evaluateResultSchema.parse(value));
  const store = await context.resources.store(data.storageUrl);

  const { result } = await runAggregateJob(data, results, { store });
  logger.info({ evaluationId: data.evaluationId, reportKey: result.reportKey, testError: result.testError, theta: result.theta, lambda: result.lambda }, 'report written');
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

  const aggregateQueue = context.queues.get(QUEUE_NAMES.aggregate)!;
  const existing = await Job.fromId(aggregateQueue, plan.aggregate.jobId);
  if (existing === undefined) {
    await context.flowProducer.add(evaluationFlowSpec(plan, context.settings) as FlowJob);
    logger.info({ evaluationId: plan.evaluationId, evaluateJobs: plan.evaluates.length }, 'evaluation flow added');
  } else {
    logger.info({ evaluationId: plan.evaluationId, aggregateJobId: plan.aggregate.jobId }, 'evaluation flow already exists');
  }
  return { evaluationId: plan.evaluationId, aggregateJobId: plan.aggregate.jobId, evaluateJobs: plan.evaluates.length };
}

/** Creates the processor of each queue. */
export function createProcessors(context: ProcessorContext): Record<FleetQueueName, JobProcessor> {
  return {
    [QUEUE_NAMES.extract]: (job, logger) => processExtract(context, job, logger),
    [QUEUE_NAMES.merge]: (job, logger) => processMerge(context, job, logger),
    [QUEUE_NAMES.evaluate]: (job, logger) => processEvaluate(context, job, logger),
    [QUEUE_NAMES.aggregate]: (job, logger) => processAggregate(context, job, logger),
    [QUEUE_NAMES.planEvaluation]: (job, logger) => processPlanEvaluation(context, job, logger),
  };
}
