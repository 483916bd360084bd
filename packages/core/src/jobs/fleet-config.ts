import { z } from 'zod';

import { CachefleetError } from '../errors.js';

/**
 * Settings every worker of a queue must share, and the retry options of the jobs the coordinator
 * adds. BullMQ's stalled-job check is rate-limited by one queue-wide key set by whichever worker
 * ran it last. So a worker with a longer `stalledInterval` or `lockDuration` than its peers slows
 * the recovery of every job of the queue, and every process reads them from this module.
 */
export interface FleetSettings {
  /** Lock of an active job, in milliseconds; the worker renews it every lockDuration / 2. */
  lockDuration: number;
  /** How often a worker looks for jobs whose lock expired (a crashed worker), in milliseconds. */
  stalledInterval: number;
  /** Times a job may stall (lose its lock) before it fails instead of being retried. */
  maxStalledCount: number;
  /** Attempts of each job, the first included. */
  attempts: number;
  /** First delay of the exponential backoff between attempts, in milliseconds. */
  backoffDelay: number;
  /** Time a worker is given on SIGTERM to finish its active jobs before releasing them, in milliseconds. */
  shutdownDeadline: number;
  /** Finished jobs kept per queue and outcome (completed, failed), besides the one-week age limit. Older ones are removed first. */
  jobRetentionCount: number;
}

export const DEFAULT_FLEET_SETTINGS: Readonly<FleetSettings> = Object.freeze({
  // A shard extraction or a scoring job blocks the event loop for at most a few seconds between
  // awaits (fold loops, preprocessing); 60 s leaves room for a busy machine.
  lockDuration: 60_000,
  stalledInterval: 30_000,
  maxStalledCount: 1,
  attempts: 3,
  backoffDelay: 5_000,
  shutdownDeadline: 30_000,
  // Bounds Redis memory under a steady load, where the week-long age limit alone would keep
  // every job of the week. A finished extract or merge job took about 4 KiB of Redis memory in
  // test/reliability/load.int.test.ts, so 10,000 of them take about 40 MB.
  jobRetentionCount: 10_000,
});

const ENV_NAMES: Record<keyof FleetSettings, string> = {
  lockDuration: 'CACHEFLEET_LOCK_DURATION_MS',
  stalledInterval: 'CACHEFLEET_STALLED_INTERVAL_MS',
  maxStalledCount: 'CACHEFLEET_MAX_STALLED_COUNT',
  attempts: 'CACHEFLEET_JOB_ATTEMPTS',
  backoffDelay: 'CACHEFLEET_BACKOFF_DELAY_MS',
  shutdownDeadline: 'CACHEFLEET_SHUTDOWN_DEADLINE_MS',
  jobRetentionCount: 'CACHEFLEET_JOB_RETENTION_COUNT',
};

const settingsSchema = z.object({
  lockDuration: z.number().int().min(1_000),
  stalledInterval: z.number().int().min(500),
  maxStalledCount: z.number().int().min(0),
  attempts: z.number().int().min(1),
  backoffDelay: z.number().int().min(0),
  shutdownDeadline: z.number().int().min(0),
  jobRetentionCount: z.number().int().min(1),
});

/** Reads the fleet settings from the environment variables in ENV_NAMES; unset ones keep their default. */
export function readFleetSettings(env: NodeJS.ProcessEnv = process.env): FleetSettings {
  const raw: Record<string, number> = { ...DEFAULT_FLEET_SETTINGS };
  for (const [field, name] of Object.entries(ENV_NAMES)) {
    const text = env[name];
    if (text === undefined || text.trim() === '') continue;
    const value = Number(text);
    if (!Number.isFinite(value)) {
      throw new CachefleetError('INVALID_ARGUMENT', `${name}=${JSON.stringify(text)} is not a number. Set it to a whole number or unset it for the default ${raw[field]}.`, { name, value: text });
    }
    raw[field] = value;
  }

  const parsed = settingsSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CachefleetError('INVALID_ARGUMENT', `Fleet settings from the environment are invalid: ${z.prettifyError(parsed.error)}. Variables: ${Object.values(ENV_NAMES).join(', ')}.`, {});
  }
  return parsed.data;
}

/** Names of the environment variables behind each setting, for help texts and docs. */
export const FLEET_SETTINGS_ENV = Object.freeze({ ...ENV_NAMES });

/** BullMQ worker options that must be equal on every worker of a queue. */
export function sharedWorkerOptions(settings: FleetSettings): { lockDuration: number; stalledInterval: number; maxStalledCount: number } {
  return { lockDuration: settings.lockDuration, stalledInterval: settings.stalledInterval, maxStalledCount: settings.maxStalledCount };
}

/**
 * Options of every fleet job, as plain data in BullMQ's JobsOptions shape. Finished jobs are
 * kept for a week so that a re-submitted build or evaluation finds them and their results, and
 * at most `jobRetentionCount` of them per queue, so that Redis memory stays bounded.
 */
export function fleetJobOptions(settings: FleetSettings, jobId: string): FleetJobOptions {
  return {
    jobId,
    attempts: settings.attempts,
    backoff: { type: 'exponential', delay: settings.backoffDelay },
    removeOnComplete: { age: 7 * 24 * 3600, count: settings.jobRetentionCount },
    removeOnFail: { age: 7 * 24 * 3600, count: settings.jobRetentionCount },
  };
}

/**
 * Options of a child job: when it fails for good, its parent (and so the whole run) fails with
 * it, instead of waiting forever, which is BullMQ's default.
 */
export function fleetChildJobOptions(settings: FleetSettings, jobId: string): FleetJobOptions {
  return { ...fleetJobOptions(settings, jobId), failParentOnFailure: true };
}

export interface FleetJobOptions {
  jobId: string;
  attempts: number;
  backoff: { type: 'exponential'; delay: number };
  removeOnComplete: { age: number; count: number };
  removeOnFail: { age: number; count: number };
  failParentOnFailure?: boolean;
}
