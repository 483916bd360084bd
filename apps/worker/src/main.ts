#!/usr/bin/env node
import { FlowProducer, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';

import { FLEET_QUEUE_NAMES, QUEUE_NAMES, checkRedisEvictionPolicy, createLogger, isCachefleetError, limitRepeatedErrors, redactRedisUrl, sharedWorkerOptions, type FleetQueueName, type Logger } from '@cachefleet/core';

import { readWorkerConfig, type WorkerConfig } from './config.js';
import { applyFailurePolicy, toProcessorError } from './failure-policy.js';
import { createProcessors } from './processors.js';
import { RedisNamedLock } from './redis-lock.js';
import { WorkerResources } from './resources.js';
import { shutdownGracefully, type ActiveJob } from './shutdown.js';

// Jobs one process runs at once per queue. Extraction and scoring already use every core
// through their own threads; merges and plans are I/O-bound and short.
const CONCURRENCY: Record<FleetQueueName, number> = {
  [QUEUE_NAMES.extract]: 1,
  [QUEUE_NAMES.evaluate]: 1,
  [QUEUE_NAMES.merge]: 2,
  [QUEUE_NAMES.aggregate]: 1,
  [QUEUE_NAMES.tune]: 1,
  [QUEUE_NAMES.planEvaluation]: 1,
  // A slice holds the whole cache's similarities and uses every scoring thread.
  [QUEUE_NAMES.robustness]: 1,
  [QUEUE_NAMES.robustnessAggregate]: 1,
};

async function main(): Promise<void> {
  const logger = createLogger('cachefleet-worker');
  const config = readWorkerConfig();
  const redisUrl = redactRedisUrl(config.redisUrl);

  // While Redis is down, every connection reports each reconnection attempt, so repeats are counted.
  const limitRepeats = limitRepeatedErrors();
  const logConnectionError = (source: string) => (error: Error) =>
    limitRepeats(`${source}|${error.message}`, (suppressedRepeats) => logger.error({ err: error, redis: redisUrl, source, suppressedRepeats }, 'Redis connection error'));

  // BullMQ's workers block on Redis; a per-request retry limit would make them throw instead.
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null });
  redis.on('error', logConnectionError('connection'));
  const policy = await checkRedisEvictionPolicy(redis, redisUrl);

  const connection = { connection: redis, prefix: config.queuePrefix };
  // Without an error listener BullMQ prints each error of a Queue or FlowProducer with console.error.
  const queues = new Map(FLEET_QUEUE_NAMES.map((name) => [name as string, new Queue(name, connection).on('error', logConnectionError(`queue ${name}`))]));
  const flowProducer = new FlowProducer(connection);
  flowProducer.on('error', logConnectionError('flow producer'));
  const resources = new WorkerResources(config, logger);
  const lock = new RedisNamedLock(redis, config.queuePrefix, { ttlMs: config.settings.lockDuration, waitMs: config.settings.lockDuration });
  const processors = createProcessors({ resources, lock, flowProducer, queues, settings: config.settings, redis, prefix: config.queuePrefix });
  const active = new Map<string, ActiveJob>();

  const workers = config.queues.map((name) => {
    const worker = new Worker(
      name,
      async (job: Job, token?: string) => {
        const jobLogger = logger.child({ jobId: job.id, queue: name, attempt: job.attemptsMade + 1 });
        const started = performance.now();
        const activeKey = `${name}/${job.id}`;
        const entry: ActiveJob = { job, token, queue: name };
        active.set(activeKey, entry);
        jobLogger.info('job started');

        try {
          const result = await processors[name](job, jobLogger);
          const durationMs = Math.round(performance.now() - started);
          // BullMQ rejects the result of a released job, because its lock is gone.
          if (entry.released === true) jobLogger.warn({ durationMs }, 'released job finished after the shutdown deadline; its result is discarded');
          else jobLogger.info({ durationMs, ...resources.memoryFigures() }, 'job completed');
          return result;
        } catch (error) {
          const mapped = toProcessorError(error);
          const retryable = !(mapped instanceof UnrecoverableError);
          jobLogger.error({ err: error, code: isCachefleetError(error) ? error.code : undefined, retryable, durationMs: Math.round(performance.now() - started) }, 'job failed');
          throw mapped;
        } finally {
          active.delete(activeKey);
        }
      },
      { ...connection, concurrency: CONCURRENCY[name], ...sharedWorkerOptions(config.settings) },
    );

    worker.on('failed', (job) => {
      if (job === undefined) return;
      applyFailurePolicy(job, queues, logger).catch((error: unknown) => logger.error({ err: error, jobId: job.id, queue: name }, 'failure policy could not remove waiting jobs'));
    });
    worker.on('error', (error) => limitRepeats(`worker ${name}|${error.message}`, (suppressedRepeats) => logger.error({ err: error, queue: name, suppressedRepeats }, 'worker error')));
    return worker;
  });

  logger.info({ redis: redisUrl, maxmemoryPolicy: policy, prefix: config.queuePrefix, queues: config.queues, ...describeConfig(config) }, 'worker started');

  let stopping: Promise<void> | undefined;
  const stop = (signal: NodeJS.Signals): void => {
    stopping ??= shutdownGracefully({ signal, workers, active, deadlineMs: config.settings.shutdownDeadline, logger, closeRest: () => closeRest(logger, flowProducer, queues, resources, redis) }).then(
      (code) => process.exit(code),
      (error: unknown) => {
        logger.fatal({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // A diagnostic for leak hunts: with NODE_OPTIONS=--expose-gc a full garbage collection runs
  // first, so the figures show what the process keeps rather than where the last collection left it.
  process.on('SIGUSR2', () => {
    const collectGarbage = (globalThis as { gc?: () => void }).gc;
    collectGarbage?.();
    logger.info({ ...resources.memoryFigures(), afterGarbageCollection: collectGarbage !== undefined, activeJobs: active.size }, 'memory figures');
  });
}

function describeConfig(config: WorkerConfig): Record<string, unknown> {
  return {
    extractThreads: config.extractThreads,
    extractionEngine: config.extractionEngine,
    backend: config.backend,
    scoringThreads: config.scoringThreads,
    shardCacheBytes: config.shardCacheBytes,
    ...sharedWorkerOptions(config.settings),
    attempts: config.settings.attempts,
    shutdownDeadlineMs: config.settings.shutdownDeadline,
  };
}

/** Closes everything but the workers, Redis last; every step runs even if an earlier one fails. */
async function closeRest(logger: Logger, flowProducer: FlowProducer, queues: Map<string, Queue>, resources: WorkerResources, redis: Redis): Promise<void> {
  const results = await Promise.allSettled([flowProducer.close(), ...[...queues.values()].map((queue) => queue.close()), resources.close()]);
  for (const result of results) {
    if (result.status === 'rejected') logger.warn({ err: result.reason }, 'close step failed');
  }
  await redis.quit().catch((error: unknown) => logger.warn({ err: error }, 'Redis did not close cleanly'));
}

main().catch((error: unknown) => {
  const logger = createLogger('cachefleet-worker');
  logger.fatal({ err: error, code: isCachefleetError(error) ? error.code : undefined }, 'worker could not start');
  process.exit(1);
});
