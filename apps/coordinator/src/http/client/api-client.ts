import { z } from 'zod';

import { CachefleetError, ERROR_CODES, type ErrorCode } from '@cachefleet/core';

import { apiErrorSchema } from '../errors.js';
import { runListResponseSchema, runResponseSchema, submitResponseSchema, type CacheBuildSubmission, type EvaluationSubmission, type RunResponse } from '../runs/api-schemas.js';
import type { RunKind, RunState } from '../runs/run-record.js';
import { isLoopbackHost } from '../server-config.js';

export interface ApiClientOptions {
  /** Base URL of the coordinator, such as `http://127.0.0.1:8470`. */
  baseUrl: string;
  /** API token, sent as a bearer token and never in a URL. */
  token: string | undefined;
  /** Time limit of one request in milliseconds. Default 120,000: a submission resolves the model and dataset first. */
  timeoutMs?: number;
}

export type SubmitResponse = z.infer<typeof submitResponseSchema>;

/**
 * Client of the coordinator's run API, used by the command line. Every failure becomes a
 * CachefleetError: the server's code and message, or API_UNAVAILABLE when the server cannot be
 * reached. Messages never contain the token.
 */
export class ApiClient {
  readonly baseUrl: URL;

  constructor(private readonly options: ApiClientOptions) {
    this.baseUrl = parseApiUrl(options.baseUrl);
  }

  /** Whether the token would travel unencrypted to another machine (http:// to a non-loopback host). */
  get sendsTokenInClear(): boolean {
    return this.options.token !== undefined && this.baseUrl.protocol === 'http:' && !isLoopbackHost(this.baseUrl.hostname);
  }

  submitCacheBuild(request: CacheBuildSubmission): Promise<SubmitResponse> {
    return this.request('POST', '/api/v1/runs/cache-builds', submitResponseSchema, request);
  }

  submitEvaluation(request: EvaluationSubmission): Promise<SubmitResponse> {
    return this.request('POST', '/api/v1/runs/evaluations', submitResponseSchema, request);
  }

  getRun(runId: string): Promise<RunResponse> {
    return this.request('GET', `/api/v1/runs/${encodeURIComponent(runId)}`, runResponseSchema);
  }

  async listRuns(filter: { state?: RunState; kind?: RunKind; limit?: number } = {}): Promise<RunResponse[]> {
    const query = new URLSearchParams();
    if (filter.state !== undefined) query.set('state', filter.state);
    if (filter.kind !== undefined) query.set('kind', filter.kind);
    if (filter.limit !== undefined) query.set('limit', String(filter.limit));
    const suffix = query.size === 0 ? '' : `?${query.toString()}`;
    return (await this.request('GET', `/api/v1/runs${suffix}`, runListResponseSchema)).runs;
  }

  cancelRun(runId: string): Promise<RunResponse> {
    return this.request('POST', `/api/v1/runs/${encodeURIComponent(runId)}/cancel`, runResponseSchema);
  }

  getReport(runId: string): Promise<Record<string, unknown>> {
    return this.request('GET', `/api/v1/runs/${encodeURIComponent(runId)}/report`, z.record(z.string(), z.unknown()));
  }

  private async request<T>(method: 'GET' | 'POST', path: string, schema: z.ZodType<T>, body?: unknown): Promise<T> {
    const url = new URL(path, this.baseUrl);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.options.token !== undefined) headers.authorization = `Bearer ${this.options.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';

    let response: Response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(this.options.timeoutMs ?? 120_000), redirect: 'error' });
    } catch (error) {
      // fetch wraps the socket error (ECONNREFUSED and the like) as the cause of a TypeError.
      let reason = String(error);
      if (error instanceof Error) reason = error.cause instanceof Error ? error.cause.message : error.message;
      throw new CachefleetError('API_UNAVAILABLE', `Cannot reach the coordinator API at ${this.baseUrl.origin} (${method} ${url.pathname}): ${reason}. Start it with \`cachefleet serve\`, or pass --api URL (env CACHEFLEET_API_URL).`, { url: url.origin }, { cause: error });
    }

    const text = await response.text();
    if (!response.ok) throw errorOfResponse(response.status, text, method, url);

    const parsed = schema.safeParse(text === '' ? undefined : JSON.parse(text));
    if (!parsed.success) {
      throw new CachefleetError('API_UNAVAILABLE', `The coordinator at ${this.baseUrl.origin} responded to ${method} ${url.pathname} with an unexpected body: ${z.prettifyError(parsed.error)}. Use a coordinator of the same cachefleet version as this command.`, {});
    }
    return parsed.data;
  }
}

/** Parses the --api URL: http or https, without credentials in it. */
export function parseApiUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CachefleetError('INVALID_ARGUMENT', `--api ${JSON.stringify(value)} is not a URL. Give the coordinator's base URL, such as http://127.0.0.1:8470.`, { api: value });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CachefleetError('INVALID_ARGUMENT', `--api ${url.origin} uses ${url.protocol}; use http:// or https://.`, { api: url.origin });
  }
  if (url.username !== '' || url.password !== '') {
    throw new CachefleetError('INVALID_ARGUMENT', '--api contains credentials. Remove them from the URL and set CACHEFLEET_API_TOKEN instead.', {});
  }
  return url;
}

function errorOfResponse(status: number, text: string, method: string, url: URL): CachefleetError {
  let body: z.infer<typeof apiErrorSchema> | undefined;
  try {
    const parsed = apiErrorSchema.safeParse(JSON.parse(text));
    body = parsed.success ? parsed.data : undefined;
  } catch {
    body = undefined;
  }

  if (body === undefined) {
    return new CachefleetError(status >= 500 ? 'API_UNAVAILABLE' : 'INVALID_ARGUMENT', `The coordinator responded to ${method} ${url.pathname} with HTTP ${status} and no error body. Check that --api points at a cachefleet coordinator.`, { status });
  }
  const code: ErrorCode = body.error.code in ERROR_CODES ? (body.error.code as ErrorCode) : status >= 500 ? 'API_UNAVAILABLE' : 'INVALID_ARGUMENT';
  const hint = code === 'UNAUTHORIZED' ? ' Set CACHEFLEET_API_TOKEN to the token of the coordinator.' : '';
  return new CachefleetError(code, `${body.error.message}${hint}`, { status });
}
