import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { z } from 'zod';

import { ERROR_CODES, isCachefleetError, type ErrorCode } from '@cachefleet/core';

/** Body of every error response of the API: a stable code from ERROR_CODES and a message that names the value and the fix. */
export const apiErrorSchema = z.object({
  error: z.object({
    code: z.string().describe('Stable error code, one of the codes in packages/core/src/errors.ts'),
    message: z.string().describe('What failed, on which value, and what to do next'),
  }),
});
export type ApiErrorBody = z.infer<typeof apiErrorSchema>;

/** HTTP status of each code that differs from the default: 400 for bad input, 503 for retryable failures. */
const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  UNAUTHORIZED: 401,
  RUN_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  RUN_STATE_CONFLICT: 409,
  REQUEST_TOO_LARGE: 413,
  BACKEND_UNAVAILABLE: 500,
  INTERNAL_ERROR: 500,
};

export function statusOfCode(code: ErrorCode): number {
  return STATUS_BY_CODE[code] ?? (ERROR_CODES[code].retryable ? 503 : 400);
}

export function errorBody(code: ErrorCode, message: string): ApiErrorBody {
  return { error: { code, message } };
}

/** Sends an error response with the status that belongs to `code`. */
export function sendError(reply: FastifyReply, code: ErrorCode, message: string): FastifyReply {
  return reply.code(statusOfCode(code)).type('application/json; charset=utf-8').send(errorBody(code, message));
}

/**
 * Formats the issues of a rejected request as one message, one `part.path: problem` per issue.
 * Zod's messages describe the expected type or range and never repeat the value sent, so a
 * token in a login form does not reach the response or the log.
 */
function describeValidationIssues(error: FastifyError & { validation: Array<{ instancePath: string; message?: string }> }): string {
  const part = error.validationContext ?? 'body';
  const issues = error.validation.map((issue) => {
    const field = issue.instancePath.replace(/^\//, '').replaceAll('/', '.');
    return `${field === '' ? part : `${part}.${field}`}: ${issue.message ?? 'invalid value'}`;
  });
  return `The request is invalid. ${issues.join('; ')}. Correct these fields and send the request again; GET /openapi.json describes every field.`;
}

/**
 * Maps every error a route throws to the API's error body. Validation errors and Fastify's body
 * errors become 400, 413 or 415, and CachefleetErrors keep their code. Any other error is logged
 * with its stack and returned as INTERNAL_ERROR with the request id, without internal details.
 */
export function handleApiError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (hasZodFastifySchemaValidationErrors(error)) {
    request.log.info({ code: 'INVALID_ARGUMENT', url: request.routeOptions.url }, 'request rejected by validation');
    return sendError(reply, 'INVALID_ARGUMENT', describeValidationIssues(error));
  }

  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return sendError(reply, 'REQUEST_TOO_LARGE', `The request body is larger than the server's limit of ${request.routeOptions.bodyLimit} bytes. Send a smaller request, or start the server with a larger --body-limit.`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return reply.code(415).send(errorBody('INVALID_ARGUMENT', `Content-Type ${JSON.stringify(request.headers['content-type'] ?? '')} is not supported. Send the body as application/json.`));
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return sendError(reply, 'INVALID_ARGUMENT', 'The request has Content-Type application/json but an empty body. Send a JSON object.');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return sendError(reply, 'INVALID_ARGUMENT', `The request body is not valid JSON (${error.message}). Send a JSON object.`);
  }
  if (error instanceof SyntaxError && error.statusCode === 400) {
    return sendError(reply, 'INVALID_ARGUMENT', `The request body is not valid JSON (${error.message}). Send a JSON object.`);
  }

  // Other client errors of Fastify and its plugins, such as an unsupported method.
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    return reply.code(error.statusCode).send(errorBody('INVALID_ARGUMENT', `${error.message}. Check the method, path and body against GET /openapi.json.`));
  }

  if (isCachefleetError(error)) {
    const status = statusOfCode(error.code);
    if (status >= 500) request.log.error({ err: error, code: error.code }, 'request failed');
    else request.log.info({ code: error.code, url: request.routeOptions.url }, 'request rejected');
    return sendError(reply, error.code, error.message);
  }

  request.log.error({ err: error }, 'request failed on an unexpected error');
  return sendError(reply, 'INTERNAL_ERROR', `The coordinator failed while handling the request. Its log has the details under request id ${request.id}.`);
}
