import { Job, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import { ERROR_CODES, FLEET_QUEUE_NAMES, QUEUE_NAMES, evaluateResultSchema, extractResultSchema, type FleetQueueName, type Logger } from '@cachefleet/core';

import type { FleetClient } from '../../fleet/fleet-client.js';

// BullMQ job states reported by getJobCounts, each one label value of cachefleet_queue_jobs.
const JOB_STATES = ['waiting', 'active', 'completed', 'failed', 'delayed', 'waiting-children', 'prioritized'] as const;

// Job durations range from a merge of a few seconds to extractions of an hour on CPU.
const DURATION_BUCKETS_SECONDS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/** Extracts the error code that a failed job's reason starts with (`CODE: message`), as the workers write it. */
export function errorCodeOfReason(reason: string | undefined): string {
  if (reason === undefined) return 'UNCLASSIFIED';
  if (/^child .+ failed$/.test(reason)) return 'CHILD_FAILED';
  const match = /^([A-Z][A-Z_]+): /.exec(reason);
  return match !== null && match[1] in ERROR_CODES ? match[1] : 'UNCLASSIFIED';
}

/**
 * Prometheus metrics of the fleet, as seen from the coordinator. Queue sizes and Redis memory
 * are read when Prometheus scrapes. Durations, throughputs and errors come from BullMQ's event
 * stream of each queue, so they count only jobs finished while this coordinator runs.
 */
export class FleetMetrics {
  readonly registry = new Registry();
  private readonly events: Array<{ queueEvents: QueueEvents; connection: Redis }> = [];
  private readonly jobDuration: Histogram<'queue'>;
  private readonly failures: Counter<'queue' | 'code'>;
  private readonly extractedImages: Counter;
  private readonly extractSeconds: Counter;
  private readonly extractRate: Gauge;
  private readonly scoredQueries: Counter;
  private readonly scoreSeconds: Counter;
  private readonly scoreRate: Gauge;

  constructor(
    private readonly client: FleetClient,
    private readonly logger: Logger,
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'cachefleet_coordinator_' });

    new Gauge({
      name: 'cachefleet_queue_jobs',
      help: 'Jobs in each queue by BullMQ state, read from Redis at scrape time.',
      labelNames: ['queue', 'state'],
      registers,
      collect: async function (this: Gauge<'queue' | 'state'>) {
        for (const queue of FLEET_QUEUE_NAMES) {
          const counts = await client.queue(queue).getJobCounts(...JOB_STATES);
          for (const state of JOB_STATES) this.set({ queue, state }, counts[state] ?? 0);
        }
      },
    });
    const redisMemory = (field: string) =>
      async function (this: Gauge) {
        this.set(await readRedisMemoryField(client.redis, field));
      };
    new Gauge({ name: 'cachefleet_redis_used_memory_bytes', help: 'Redis used_memory from INFO memory, at scrape time.', registers, collect: redisMemory('used_memory') });
    new Gauge({ name: 'cachefleet_redis_maxmemory_bytes', help: 'Redis maxmemory from INFO memory (0: no limit), at scrape time.', registers, collect: redisMemory('maxmemory') });

    this.jobDuration = new Histogram({ name: 'cachefleet_job_duration_seconds', help: 'Processing time of completed jobs (finishedOn - processedOn) by queue.', labelNames: ['queue'], buckets: DURATION_BUCKETS_SECONDS, registers });
    this.failures = new Counter({
      name: 'cachefleet_job_failures_total',
      help: 'Jobs failed for good by queue and error code; CHILD_FAILED counts parents failed by a child, UNCLASSIFIED errors without a code.',
      labelNames: ['queue', 'code'],
      registers,
    });
    this.extractedImages = new Counter({ name: 'cachefleet_extract_images_total', help: 'Images (originals and mirror images) run through the model by completed extract jobs.', registers });
    this.extractSeconds = new Counter({ name: 'cachefleet_extract_seconds_total', help: 'Time of completed extract jobs as they report it (durationMs), in seconds.', registers });
    this.extractRate = new Gauge({ name: 'cachefleet_extract_images_per_second', help: 'Images per second of the last completed extract job.', registers });
    this.scoredQueries = new Counter({ name: 'cachefleet_score_queries_total', help: 'Queries scored by completed evaluate jobs, once per shard group.', registers });
    this.scoreSeconds = new Counter({ name: 'cachefleet_score_seconds_total', help: 'Time of completed evaluate jobs as they report it (durationMs), in seconds.', registers });
    this.scoreRate = new Gauge({ name: 'cachefleet_score_queries_per_second', help: 'Queries per second of the last completed evaluate job against its shard group.', registers });
  }

  /** Starts listening to the event stream of every queue, with one Redis connection each (QueueEvents blocks on it). */
  start(): void {
    for (const queue of FLEET_QUEUE_NAMES) {
      const connection = this.client.redis.duplicate();
      const queueEvents = new QueueEvents(queue, { connection, prefix: this.client.prefix });
      queueEvents.on('completed', ({ jobId }) => {
        this.recordCompleted(queue, jobId).catch((error: unknown) => this.logger.warn({ err: error, queue, jobId }, 'metrics: completed job could not be read'));
      });
      queueEvents.on('failed', ({ failedReason }) => this.failures.inc({ queue, code: errorCodeOfReason(failedReason) }));
      queueEvents.on('error', (error) => this.logger.warn({ err: error, queue }, 'metrics: queue event stream error'));
      this.events.push({ queueEvents, connection });
    }
  }

  async metricsText(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.events.map(({ queueEvents }) => queueEvents.close()));
    await Promise.allSettled(this.events.map(({ connection }) => connection.quit().catch(() => connection.disconnect())));
    this.events.length = 0;
  }

  private async recordCompleted(queue: FleetQueueName, jobId: string): Promise<void> {
    const job = await Job.fromId(this.client.queue(queue), jobId);
    if (job === undefined) return;
    if (job.processedOn !== undefined && job.finishedOn !== undefined) this.jobDuration.observe({ queue }, (job.finishedOn - job.processedOn) / 1000);

    if (queue === QUEUE_NAMES.extract) {
      const result = extractResultSchema.safeParse(job.returnvalue);
      if (!result.success || result.data.durationMs <= 0) return;
      const images = result.data.count + result.data.zeroKeyCount;
      this.extractedImages.inc(images);
      this.extractSeconds.inc(result.data.durationMs / 1000);
      this.extractRate.set(images / (result.data.durationMs / 1000));
    } else if (queue === QUEUE_NAMES.evaluate) {
      const result = evaluateResultSchema.safeParse(job.returnvalue);
      if (!result.success || result.data.durationMs <= 0) return;
      const queries = result.data.rowRange.end - result.data.rowRange.start;
      this.scoredQueries.inc(queries);
      this.scoreSeconds.inc(result.data.durationMs / 1000);
      this.scoreRate.set(queries / (result.data.durationMs / 1000));
    }
  }
}

/** Reads one numeric field of `INFO memory`. */
export async function readRedisMemoryField(redis: Redis, field: string): Promise<number> {
  const info = await redis.info('memory');
  const match = new RegExp(`^${field}:(\\d+)`, 'm').exec(info);
  return match === null ? 0 : Number(match[1]);
}
