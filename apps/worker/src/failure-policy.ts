import { Job, UnrecoverableError, type Queue } from 'bullmq';
import { z } from 'zod';

import { isCachefleetError, type Logger } from '@cachefleet/core';

/**
 * Maps an error thrown by a job to what BullMQ should do with it. Bad input (a CachefleetError
 * that is not retryable, or job data that fails its schema) becomes an UnrecoverableError, so
 * the job fails at once instead of meeting the same input again on every attempt. Anything
 * else, such as transient storage errors, is left to the job's attempts and backoff.
 */
export function toProcessorError(error: unknown): unknown {
  if (error instanceof z.ZodError) {
    return new UnrecoverableError(`INVALID_ARGUMENT: job data is invalid: ${z.prettifyError(error)}`);
  }
  if (isCachefleetError(error) && !error.retryable) {
    return new UnrecoverableError(`${error.code}: ${error.message}`);
  }
  return error;
}

/** Parses the queue name out of a parent's queue key, `<prefix>:<queue>`. */
export function queueNameOfKey(queueKey: string): string {
  return queueKey.slice(queueKey.lastIndexOf(':') + 1);
}

/**
 * Applies the fleet's failure policy once a job has failed for good (no attempts left, or
 * unrecoverable). Its unprocessed children and its unprocessed siblings are removed, so that no
 * worker spends time on a run that has already failed. Active siblings finish, and their
 * results are discarded with the failed parent. The parent itself is
 * failed by BullMQ (`failParentOnFailure`), with the reason "child <key> failed".
 */
export async function applyFailurePolicy(job: Job, queues: ReadonlyMap<string, Queue>, logger: Logger): Promise<void> {
  const state = await job.getState();
  if (state !== 'failed') return;

  await job.removeUnprocessedChildren();
  if (job.parent?.id === undefined) return;

  const parentQueue = queues.get(queueNameOfKey(job.parent.queueKey));
  if (parentQueue === undefined) {
    logger.warn({ jobId: job.id, parentQueueKey: job.parent.queueKey }, 'parent queue is not a fleet queue; siblings were not removed');
    return;
  }
  const parent = await Job.fromId(parentQueue, job.parent.id);
  if (parent === undefined) return;

  await parent.removeUnprocessedChildren();
  logger.warn({ jobId: job.id, parentId: parent.id, parentQueue: parentQueue.name, reason: job.failedReason }, 'job failed for good; removed the waiting siblings and the parent fails');
}
