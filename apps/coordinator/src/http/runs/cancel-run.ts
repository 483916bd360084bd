import type { Job } from 'bullmq';

import { CANCELLATION_TTL_SECONDS, QUEUE_NAMES, cancellationKey, type Logger } from '@cachefleet/core';

import type { FleetClient } from '../../fleet/fleet-client.js';
import type { RunRecord } from './run-record.js';

/**
 * Ids whose jobs stop when the run is cancelled: the run's own id and, for an evaluation, the
 * builds this run submitted. Builds it found complete or joined belong to other runs.
 */
export function cancelledIds(record: RunRecord): string[] {
  if (record.kind === 'cache-build') return [record.runId];
  return [record.runId, ...record.builds.filter((build) => build.status === 'submitted').map((build) => build.buildId)];
}

/** Sets the cancellation marks that job functions check between batches. */
export async function markCancelled(client: FleetClient, record: RunRecord): Promise<void> {
  const pipeline = client.redis.pipeline();
  for (const id of cancelledIds(record)) pipeline.set(cancellationKey(client.prefix, id), new Date().toISOString(), 'EX', CANCELLATION_TTL_SECONDS);
  await pipeline.exec();
}

/**
 * Removes the jobs that the run still has queued. A root job with no active job below it is
 * removed whole. Otherwise every unprocessed job below it is removed, while BullMQ skips the
 * jobs that a worker holds. Those stop at their next cancellation check, and their failure then
 * fails the parents. Returns whether the root jobs are gone. The monitor calls it again on every
 * pass until they are, because a parent whose last child stopped becomes removable only then.
 */
export async function removeQueuedJobs(client: FleetClient, record: RunRecord, logger: Logger): Promise<boolean> {
  const roots: Array<Job | undefined> = [];
  if (record.kind === 'cache-build') {
    roots.push(await client.getJob(QUEUE_NAMES.merge, record.builds[0].mergeJobId));
  } else {
    if (record.planJobId !== null) roots.push(await client.getJob(QUEUE_NAMES.planEvaluation, record.planJobId));
    roots.push(await client.getJob(QUEUE_NAMES.aggregate, record.aggregateJobId!));
  }

  let allGone = true;
  for (const root of roots) {
    if (root === undefined) continue;
    const state = await root.getState();
    if (state === 'completed' || state === 'failed') continue;

    try {
      await root.remove({ removeChildren: true });
      logger.info({ runId: record.runId, jobId: root.id, queue: root.queueName }, 'cancelled run: queued jobs removed');
    } catch (error) {
      // BullMQ refuses to remove a job tree while one of its jobs is locked by a worker.
      logger.info({ runId: record.runId, jobId: root.id, queue: root.queueName, reason: error instanceof Error ? error.message : String(error) }, 'cancelled run: active jobs stop at their next check');
      await removeUnprocessedDescendants(client, root);
      allGone = false;
    }
  }
  return allGone;
}

/** Removes the unprocessed children of `job` and of its unprocessed children that are parents themselves (a plan's merge jobs). */
async function removeUnprocessedDescendants(client: FleetClient, job: Job): Promise<void> {
  const dependencies = await job.getDependencies();
  await job.removeUnprocessedChildren();
  for (const key of dependencies.unprocessed ?? []) {
    const child = await jobOfKey(client, key);
    if (child !== undefined) await removeUnprocessedDescendants(client, child);
  }
}

async function jobOfKey(client: FleetClient, key: string): Promise<Job | undefined> {
  const rest = key.startsWith(`${client.prefix}:`) ? key.slice(client.prefix.length + 1) : key;
  const separator = rest.indexOf(':');
  const queue = rest.slice(0, separator);
  if (separator === -1 || !(Object.values(QUEUE_NAMES) as string[]).includes(queue)) return undefined;
  return client.getJob(queue as (typeof QUEUE_NAMES)[keyof typeof QUEUE_NAMES], rest.slice(separator + 1));
}
