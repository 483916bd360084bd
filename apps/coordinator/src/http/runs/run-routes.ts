import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';

import { apiErrorSchema } from '../errors.js';
import {
  cacheBuildSubmissionSchema,
  evaluationSubmissionSchema,
  runIdParamsSchema,
  runListQuerySchema,
  runListResponseSchema,
  runResponseSchema,
  submitResponseSchema,
  type RunResponse,
} from './api-schemas.js';
import type { RunRecord } from './run-record.js';
import type { RunService } from './run-service.js';

export const API_PREFIX = '/api/v1';

export function toRunResponse(record: RunRecord): RunResponse {
  const self = `${API_PREFIX}/runs/${record.runId}`;
  const hasReport = record.kind === 'evaluation' && record.state === 'completed';
  return { ...record, links: { self, page: `/runs/${record.runId}`, report: hasReport ? `${self}/report` : null } };
}

const errorResponses = {
  400: apiErrorSchema.describe('Invalid request (INVALID_ARGUMENT, or a code naming the bad dataset, model or key store)'),
  401: apiErrorSchema.describe('No valid token or session (UNAUTHORIZED)'),
  413: apiErrorSchema.describe('Body larger than the limit (REQUEST_TOO_LARGE)'),
  503: apiErrorSchema.describe('Object storage or Redis failed transiently; retry'),
};

/** Registers the run endpoints under /api/v1. */
export function registerRunRoutes(app: FastifyInstance, runs: RunService): void {
  const typed = app.withTypeProvider<ZodTypeProvider>();

  typed.post(
    `${API_PREFIX}/runs/cache-builds`,
    {
      schema: {
        summary: 'Submit a cache build',
        description:
          'Resolves the model, key layers, dataset and preprocessing, then adds one extract job per shard and a merge job that writes the manifest. The run id is the build id. The same request again joins the first run: 200 with joined=true.',
        tags: ['runs'],
        body: cacheBuildSubmissionSchema,
        response: { 200: submitResponseSchema, 202: submitResponseSchema, ...errorResponses, 409: apiErrorSchema.describe('The run is still being cancelled (RUN_STATE_CONFLICT)') },
      },
    },
    async (request, reply) => {
      const outcome = await runs.submitCacheBuild(request.body);
      return reply.code(outcome.joined ? 200 : 202).send({ ...toRunResponse(outcome.record), joined: outcome.joined });
    },
  );

  typed.post(
    `${API_PREFIX}/runs/evaluations`,
    {
      schema: {
        summary: 'Submit an evaluation',
        description:
          'Key stores are manifests ({"manifest": key}) or builds ({"build": {...}}); builds whose manifest is missing run first. The run id is the evaluation id. A build still running from an earlier submission gives 409: submit again when it has completed.',
        tags: ['runs'],
        body: evaluationSubmissionSchema,
        response: { 200: submitResponseSchema, 202: submitResponseSchema, ...errorResponses, 409: apiErrorSchema.describe('A build of the evaluation is still running, or the run is being cancelled (RUN_STATE_CONFLICT)') },
      },
    },
    async (request, reply) => {
      const outcome = await runs.submitEvaluation(request.body);
      return reply.code(outcome.joined ? 200 : 202).send({ ...toRunResponse(outcome.record), joined: outcome.joined });
    },
  );

  typed.get(
    `${API_PREFIX}/runs`,
    {
      schema: {
        summary: 'List runs',
        description: 'Newest first. Live runs show the state of the last refresh (every few seconds).',
        tags: ['runs'],
        querystring: runListQuerySchema,
        response: { 200: runListResponseSchema, 400: errorResponses[400], 401: errorResponses[401] },
      },
    },
    async (request) => ({ runs: (await runs.list(request.query)).map(toRunResponse) }),
  );

  typed.get(
    `${API_PREFIX}/runs/:runId`,
    {
      schema: {
        summary: 'Get a run',
        description: 'State, per-stage job counts and progress, errors, result and the locations of manifests and report. Refreshed from Redis unless the run is final.',
        tags: ['runs'],
        params: runIdParamsSchema,
        response: { 200: runResponseSchema, 401: errorResponses[401], 404: apiErrorSchema.describe('No such run (RUN_NOT_FOUND)') },
      },
    },
    async (request) => toRunResponse(await runs.get(request.params.runId)),
  );

  typed.post(
    `${API_PREFIX}/runs/:runId/cancel`,
    {
      schema: {
        summary: 'Cancel a run',
        description: 'Removes waiting jobs; active jobs stop at their next batch. No manifest or report is written afterwards. The state is cancelling until the last active job has stopped, then cancelled.',
        tags: ['runs'],
        params: runIdParamsSchema,
        response: {
          202: runResponseSchema,
          401: errorResponses[401],
          404: apiErrorSchema.describe('No such run (RUN_NOT_FOUND)'),
          409: apiErrorSchema.describe('The run has already finished (RUN_STATE_CONFLICT)'),
        },
      },
    },
    async (request, reply) => reply.code(202).send(toRunResponse(await runs.cancel(request.params.runId))),
  );

  typed.get(
    `${API_PREFIX}/runs/:runId/report`,
    {
      schema: {
        summary: "Get an evaluation's report",
        description: "The JSON report of a completed evaluation, in the local run's schema plus `fleet` (evaluation id and coverage).",
        tags: ['runs'],
        params: runIdParamsSchema,
        response: {
          200: z.record(z.string(), z.unknown()).describe('Evaluation report'),
          401: errorResponses[401],
          404: apiErrorSchema.describe('No such run (RUN_NOT_FOUND)'),
          409: apiErrorSchema.describe('The run is not a completed evaluation (RUN_STATE_CONFLICT)'),
        },
      },
    },
    async (request) => (await runs.readReport(request.params.runId)) as Record<string, unknown>,
  );
}
