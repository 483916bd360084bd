import { z } from 'zod';

import { fleetIdSchema } from '@cachefleet/core';

/**
 * States of a run. `lost` means that Redis no longer has the run's jobs although the run never
 * finished (a Redis restart without persistence): submit it again. `completed`, `failed` and
 * `cancelled` are final.
 */
export const RUN_STATES = ['queued', 'running', 'completed', 'failed', 'cancelling', 'cancelled', 'lost'] as const;
export type RunState = (typeof RUN_STATES)[number];
export const FINAL_RUN_STATES: readonly RunState[] = ['completed', 'failed', 'cancelled'];

export const RUN_KINDS = ['cache-build', 'evaluation'] as const;
export type RunKind = (typeof RUN_KINDS)[number];

export const STAGE_NAMES = ['extract', 'merge', 'plan', 'evaluate', 'tune', 'aggregate'] as const;
export type StageName = (typeof STAGE_NAMES)[number];

export const jobCountsSchema = z.object({
  total: z.number().int().nonnegative().describe('Jobs of the stage known so far; removed jobs (a cancelled or failed run) are not counted'),
  waiting: z.number().int().nonnegative().describe('Waiting, delayed for a retry, or waiting for their children'),
  active: z.number().int().nonnegative(),
  completed: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
});
export type JobCounts = z.infer<typeof jobCountsSchema>;

export const stageSchema = z.object({
  name: z.enum(STAGE_NAMES),
  jobs: jobCountsSchema,
  progress: z.number().min(0).max(1).describe('Completed jobs plus the reported progress of active jobs, as a fraction of the total'),
});
export type StageStatus = z.infer<typeof stageSchema>;

export const runErrorSchema = z.object({
  queue: z.string(),
  jobId: z.string(),
  code: z.string().describe('Error code of the job that failed first, or UNCLASSIFIED'),
  message: z.string(),
  attemptsMade: z.number().int().nonnegative(),
});
export type RunError = z.infer<typeof runErrorSchema>;

export const buildSubmissionSchema = z.object({
  buildId: z.string(),
  manifestKey: z.string(),
  status: z.enum(['complete', 'running', 'submitted']).describe('complete: the manifest existed; running: joined a queued build; submitted: this run added it'),
  mergeJobId: z.string(),
  extractJobs: z.number().int().nonnegative(),
});

/**
 * A run as stored in object storage at `runs/<runId>.json`. Live job state stays in Redis. The
 * record keeps what is needed to find the jobs again, and the last state, stages, errors and
 * result seen, so that a finished run survives the loss of Redis.
 */
export const runRecordSchema = z.object({
  schemaVersion: z.literal(1),
  runId: fleetIdSchema.describe('The build id of a cache build, the evaluation id of an evaluation'),
  kind: z.enum(RUN_KINDS),
  state: z.enum(RUN_STATES),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().nullable(),
  cancelRequestedAt: z.string().nullable(),
  /** How often the run was submitted; a resubmission of a failed or cancelled run starts it again. */
  submissions: z.number().int().positive(),
  storageUrl: z.string(),
  /** The request as validated, with defaults applied. */
  request: z.record(z.string(), z.unknown()),
  builds: z.array(buildSubmissionSchema),
  planJobId: z.string().nullable(),
  aggregateJobId: z.string().nullable(),
  manifestKeys: z.array(z.string()).describe('Manifests of the key stores the run builds or reads'),
  reportKey: z.string().nullable(),
  stages: z.array(stageSchema),
  errors: z.array(runErrorSchema),
  result: z.record(z.string(), z.unknown()).nullable().describe('Return value of the merge job (cache build) or the aggregate job (evaluation)'),
});
export type RunRecord = z.infer<typeof runRecordSchema>;

export function isFinalState(state: RunState): boolean {
  return FINAL_RUN_STATES.includes(state);
}
