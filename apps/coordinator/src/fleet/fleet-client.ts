import { FlowProducer, Job, Queue, type FlowJob } from 'bullmq';
import { Redis } from 'ioredis';

import { FLEET_QUEUE_NAMES, cancellationKey, checkRedisEvictionPolicy, limitRepeatedErrors, readFleetSettings, redactRedisUrl, runIdsOfFlow, type FleetQueueName, type FleetSettings, type FlowNodeSpec, type Logger } from '@cachefleet/core';

export interface FleetClientOptions {
  /** Default `redis://127.0.0.1:6379`. */
  redisUrl?: string;
  /** BullMQ key prefix shared with the workers. Default `cachefleet`. */
  prefix?: string;
  /** Default: read from the environment, as the workers read them. */
  settings?: FleetSettings;
  logger: Logger;
}

/**
 * The coordinator's handle on the fleet: one Redis connection (checked for `noeviction`), a
 * Queue per job type and a FlowProducer, all under one key prefix.
 */
export class FleetClient {
  private constructor(
    readonly redis: Redis,
    readonly prefix: string,
    readonly settings: FleetSettings,
    readonly redisUrl: string,
    private readonly queues: Map<FleetQueueName, Queue>,
    private readonly flowProducer: FlowProducer,
    readonly logger: Logger,
  ) {}

  static async connect(options: FleetClientOptions): Promise<FleetClient> {
    const url = options.redisUrl ?? 'redis://127.0.0.1:6379';
    const prefix = options.prefix ?? 'cachefleet';
    // While Redis is down, every connection reports each reconnection attempt, so repeats are counted.
    const limitRepeats = limitRepeatedErrors();
    const logConnectionError = (source: string) => (error: Error) =>
      limitRepeats(`${source}|${error.message}`, (suppressedRepeats) => options.logger.error({ err: error, redis: redactRedisUrl(url), source, suppressedRepeats }, 'Redis connection error'));
    const redis = new Redis(url, { maxRetriesPerRequest: null });
    redis.on('error', logConnectionError('connection'));

    try {
      await checkRedisEvictionPolicy(redis, redactRedisUrl(url));
    } catch (error) {
      redis.disconnect();
      throw error;
    }

    const connection = { connection: redis, prefix };
    // Without an error listener BullMQ prints each error of a Queue or FlowProducer with console.error.
    const queues = new Map(FLEET_QUEUE_NAMES.map((name) => [name, new Queue(name, connection).on('error', logConnectionError(`queue ${name}`))] as const));
    const flowProducer = new FlowProducer(connection).on('error', logConnectionError('flow producer'));
    return new FleetClient(redis, prefix, options.settings ?? readFleetSettings(), redactRedisUrl(url), queues, flowProducer, options.logger);
  }

  queue(name: FleetQueueName): Queue {
    return this.queues.get(name)!;
  }

  async getJob(queue: FleetQueueName, jobId: string): Promise<Job | undefined> {
    return Job.fromId(this.queue(queue), jobId);
  }

  /**
   * Adds a flow. Build and evaluation ids are deterministic, so an earlier, cancelled run of the
   * same id may have left a cancellation mark. It is deleted first, or the new jobs would stop at once.
   */
  async addFlow(spec: FlowNodeSpec): Promise<void> {
    const keys = runIdsOfFlow(spec).map((id) => cancellationKey(this.prefix, id));
    if (keys.length > 0) await this.redis.del(...keys);
    await this.flowProducer.add(spec as FlowJob);
  }

  /** Closes the producer and queues, then Redis; each step runs even if an earlier one fails. */
  async close(): Promise<void> {
    await Promise.allSettled([this.flowProducer.close(), ...[...this.queues.values()].map((queue) => queue.close())]);
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
