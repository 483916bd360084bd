import { z } from 'zod';

import { cacheBuildRequestSchema, evaluationRequestSchema } from '@cachefleet/core';

import { RUN_KINDS, RUN_STATES, runRecordSchema } from './run-record.js';

const storageUrlField = z
  .string()
  .min(1)
  .optional()
  .describe("Object storage of the run. Default, and the only value accepted: the server's --storage URL");

/**
 * Body of POST /api/v1/runs/cache-builds: the fleet's cache build request. Paths name files on
 * the coordinator and on every worker, so give them as absolute paths.
 */
export const cacheBuildSubmissionSchema = cacheBuildRequestSchema.extend({ storageUrl: storageUrlField });
export type CacheBuildSubmission = z.input<typeof cacheBuildSubmissionSchema>;

/** Body of POST /api/v1/runs/evaluations: the fleet's evaluation request. */
export const evaluationSubmissionSchema = evaluationRequestSchema.extend({ storageUrl: storageUrlField });
export type EvaluationSubmission = z.input<typeof evaluationSubmissionSchema>;

export const runIdParamsSchema = z.object({
  runId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'expected a run id: 1 to 128 letters, digits, ".", "_" or "-"'),
});

export const runListQuerySchema = z.object({
  state: z.enum(RUN_STATES).optional(),
  kind: z.enum(RUN_KINDS).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100).describe('Most runs returned, newest first'),
});

export const runLinksSchema = z.object({
  self: z.string(),
  page: z.string().describe('Run page for browsers'),
  report: z.string().nullable().describe('Report of a completed evaluation'),
});

/** A run as the API returns it: the stored record, refreshed from Redis while the run is live, with links. */
export const runResponseSchema = runRecordSchema.extend({ links: runLinksSchema });
export type RunResponse = z.infer<typeof runResponseSchema>;

export const runListResponseSchema = z.object({ runs: z.array(runResponseSchema) });

export const submitResponseSchema = runResponseSchema.extend({
  joined: z.boolean().describe('True when the same run was already queued, running or complete; nothing new was added'),
});
