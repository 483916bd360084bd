import { setTimeout as sleep } from 'node:timers/promises';

import type { Job } from 'bullmq';

import { FLEET_QUEUE_NAMES, type FleetQueueName } from '@cachefleet/core';

import type { FleetClient } from './fleet-client.js';

/** A fleet run that failed; the message carries the reason of the job that failed first. */
export class FleetRunFailedError extends Error {
  constructor(
    message: string,
    /** Jobs from the awaited one down to the one whose own error failed the run. */
    readonly chain: Array<{ queue: string; jobId: string; failedReason: string; attemptsMade: number; /** Times the job lost its lock while active, such as when its worker died. */ stalls: number }>,
  ) {
    super(message);
    this.name = 'FleetRunFailedError';
  }
}

export interface WaitOptions {
  /** Give up after this many milliseconds. Default: no limit. */
  timeoutMs?: number;
  /** Delay between state checks, in milliseconds. Default 500. */
  pollMs?: number;
  onProgress?: (job: Job) => void;
}

/**
 * Waits until a job completes and returns its return value. A failed job raises
 * FleetRunFailedError with the reason found by following "child <key> failed" (how BullMQ fails
 * a parent under failParentOnFailure) down to the job that failed on its own.
 */
export async function waitForJob(client: FleetClient, queue: FleetQueueName, jobId: string, options: WaitOptions = {}): Promise<unknown> {
  const started = Date.now();
  for (;;) {
    const job = await client.getJob(queue, jobId);
    if (job === undefined) throw new FleetRunFailedError(`Job ${jobId} of queue ${queue} does not exist (it was removed, or never added).`, []);

    const state = await job.getState();
    if (state === 'completed' || state === 'failed') {
      // The job may have finished after it was read above, when its return value and failure
      // reason were still empty, so it is read again.
      const finished = (await client.getJob(queue, jobId)) ?? job;
      if (state === 'completed') return finished.returnvalue;
      throw await explainFailure(client, queue, finished);
    }
    options.onProgress?.(job);

    if (options.timeoutMs !== undefined && Date.now() - started > options.timeoutMs) {
      throw new FleetRunFailedError(`Job ${jobId} of queue ${queue} was still ${state} after ${options.timeoutMs} ms. Check that workers serve every queue, then wait again.`, []);
    }
    await sleep(options.pollMs ?? 500);
  }
}

// NOTE: the reason BullMQ 6.7 gives a parent failed by failParentOnFailure; another BullMQ
// version may word it differently, and the chain then stops at the parent.
const CHILD_FAILED = /^child (.+) failed$/;
// NOTE: BullMQ 6.7's reason for a job that lost its lock more than maxStalledCount times.
const STALLED_TOO_OFTEN = 'job stalled more than allowable limit';

/** Explains BullMQ's reason for a job whose worker kept dying; BullMQ does not count such stalls as attempts. */
function stalledHint(stalls: number): string {
  return (
    `. Its worker died or stopped renewing the job's lock ${stalls} times. ` +
    "Look for crashes and out-of-memory kills in the workers' logs. CACHEFLEET_MAX_STALLED_COUNT sets how many such stalls a job survives"
  );
}

/** Follows the failure from a parent to the child that caused it. */
export async function explainFailure(client: FleetClient, queue: string, job: Job): Promise<FleetRunFailedError> {
  const chain: FleetRunFailedError['chain'] = [];
  let current: { queue: string; job: Job } | undefined = { queue, job };

  while (current !== undefined && chain.length < 10) {
    const reason = current.job.failedReason ?? 'no reason recorded';
    chain.push({ queue: current.queue, jobId: current.job.id ?? '?', failedReason: reason, attemptsMade: current.job.attemptsMade, stalls: current.job.stalledCounter });
    const match = CHILD_FAILED.exec(reason);
    current = match === null ? undefined : await findJobByKey(client, match[1]);
  }

  const root = chain[0];
  const cause = chain[chain.length - 1];
  const attempts = cause.attemptsMade === 1 ? '1 attempt' : `${cause.attemptsMade} attempts`;
  const reason = cause.failedReason === STALLED_TOO_OFTEN ? `${cause.failedReason}${stalledHint(cause.stalls)}` : cause.failedReason;
  const message =
    chain.length === 1
      ? `Job ${root.jobId} (${root.queue}) failed after ${attempts}: ${reason}`
      : `Job ${root.jobId} (${root.queue}) failed because job ${cause.jobId} (${cause.queue}) failed after ${attempts}: ${reason}`;
  return new FleetRunFailedError(message, chain);
}

/** Finds a job from its Redis key, `<prefix>:<queue>:<id>`. */
async function findJobByKey(client: FleetClient, key: string): Promise<{ queue: string; job: Job } | undefined> {
  const rest = key.startsWith(`${client.prefix}:`) ? key.slice(client.prefix.length + 1) : key;
  const separator = rest.indexOf(':');
  if (separator === -1) return undefined;

  const queue = rest.slice(0, separator);
  if (!FLEET_QUEUE_NAMES.includes(queue as FleetQueueName)) return undefined;
  const job = await client.getJob(queue as FleetQueueName, rest.slice(separator + 1));
  return job === undefined ? undefined : { queue, job };
}
