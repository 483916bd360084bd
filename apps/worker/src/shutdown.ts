import { setTimeout as sleep } from 'node:timers/promises';

import type { Job, Worker } from 'bullmq';

import type { Logger } from '@cachefleet/core';

/** A job being processed, with the lock token needed to hand it back to the queue. */
export interface ActiveJob {
  job: Job;
  token: string | undefined;
  queue: string;
  /** Set once shutdown has handed the job back to the queue. Its processor may still finish, and its result is discarded. */
  released?: boolean;
}

export interface ShutdownOptions {
  signal: NodeJS.Signals;
  workers: Worker[];
  active: ReadonlyMap<string, ActiveJob>;
  /** Time given to active jobs to finish, in milliseconds. */
  deadlineMs: number;
  logger: Logger;
  /** Closes producers, resources and finally Redis. */
  closeRest: () => Promise<void>;
}

/**
 * Stops a worker process: no new jobs are taken, and active jobs get `deadlineMs` to finish.
 * Jobs still running then go back to the wait list with their lock released, so another worker
 * takes them at once instead of after the stalled-job check. Redis is closed last.
 * Returns the exit code: 0 when every active job finished, 1 when some were released.
 */
export async function shutdownGracefully(options: ShutdownOptions): Promise<number> {
  const { workers, active, logger } = options;
  logger.info({ signal: options.signal, activeJobs: [...active.keys()], deadlineMs: options.deadlineMs }, 'stopping: no new jobs');

  const closed = Promise.all(workers.map((worker) => worker.close()));
  const finished = await Promise.race([closed.then(() => true), sleep(options.deadlineMs).then(() => false)]);

  if (!finished) {
    for (const [key, entry] of active) {
      const { job, token, queue } = entry;
      try {
        await job.moveToWait(token);
        entry.released = true;
        logger.warn({ jobId: job.id, queue, key }, 'active job released to the queue at the shutdown deadline');
      } catch (error) {
        logger.error({ err: error, jobId: job.id, queue }, 'could not release the active job; another worker takes it after the stalled-job check');
      }
    }
    await Promise.allSettled(workers.map((worker) => worker.close(true)));
  }

  await options.closeRest();
  logger.info({ signal: options.signal, releasedJobs: finished ? 0 : active.size }, 'worker stopped');
  return finished ? 0 : 1;
}
