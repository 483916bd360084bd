import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Exponential backoff with jitter, bounded by a total time budget. The budget counts from the
 * first attempt; once the next wait would end past it, the last error is final.
 */
export interface RetryPolicy {
  /** Total time allowed for one operation, attempts and waits together, in milliseconds. */
  budgetMs: number;
  /** Upper bound of the first wait, in milliseconds; each later bound doubles. */
  initialDelayMs: number;
  /** Cap on any single wait, in milliseconds, so a recovered service is noticed soon. */
  maxDelayMs: number;
}

// 60 s rides out a 30-second outage even when the attempt in flight at its start first waits
// out the S3 client's 30-second socket idle timeout.
export const DEFAULT_RETRY_POLICY: RetryPolicy = { budgetMs: 60_000, initialDelayMs: 200, maxDelayMs: 4_000 };

// Node socket and DNS error codes that mean "the service did not answer this time".
const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

// Error names the AWS SDK v3 and S3-compatible servers use for throttling and server trouble.
const TRANSIENT_ERROR_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'InternalError',
  'ServiceUnavailable',
  'ConditionalRequestConflict',
]);

/**
 * Tells whether an error is worth another attempt: connection refused or reset, timeouts,
 * HTTP 408, 429 and 5xx, throttling, and an HTTP 409 ConditionalRequestConflict from a
 * concurrent conditional write. Client errors (other 4xx) and programming errors are not.
 */
export function isTransientError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) {
    return false;
  }

  const candidate = error as { code?: unknown; name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number }; cause?: unknown };
  if (typeof candidate.code === 'string' && TRANSIENT_NETWORK_CODES.has(candidate.code)) {
    return true;
  }
  if (typeof candidate.name === 'string' && TRANSIENT_ERROR_NAMES.has(candidate.name)) {
    return true;
  }

  const status = candidate.$metadata?.httpStatusCode;
  if (typeof status === 'number' && (status === 408 || status === 429 || status >= 500)) {
    return true;
  }

  // Node's http client reports a connection closed mid-response as "aborted" or "socket hang up".
  if (typeof candidate.message === 'string' && /^(aborted|socket hang up)$/.test(candidate.message)) {
    return true;
  }

  return candidate.cause !== undefined && candidate.cause !== error && isTransientError(candidate.cause);
}

export interface RetryAttemptFailure {
  error: unknown;
  /** 1 for the first attempt. */
  attempt: number;
  elapsedMs: number;
  /** Wait before the next attempt, in milliseconds. */
  delayMs: number;
}

export interface RetryExhaustion {
  error: unknown;
  attempts: number;
  elapsedMs: number;
}

export interface RetryHooks {
  /** Called before each wait, to log the retry. */
  onRetry?: (failure: RetryAttemptFailure) => void;
  /** Builds the error raised when the budget is spent; the last error is raised when absent. */
  onExhausted?: (exhaustion: RetryExhaustion) => Error;
  /** Classifier for errors worth another attempt; `isTransientError` when absent. */
  isRetryable?: (error: unknown) => boolean;
}

/**
 * Runs `operation` until it succeeds, fails with a non-transient error, or the policy's budget
 * is spent. `operation` receives the attempt number, starting at 1.
 */
export async function retryTransient<T>(operation: (attempt: number) => Promise<T>, policy: RetryPolicy, hooks: RetryHooks = {}): Promise<T> {
  const isRetryable = hooks.isRetryable ?? isTransientError;
  const startedAt = Date.now();

  for (let attempt = 1; ; attempt += 1) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (!isRetryable(error)) {
        throw error;
      }

      const elapsedMs = Date.now() - startedAt;
      const delayMs = backoffDelayMs(attempt, policy);
      if (elapsedMs + delayMs > policy.budgetMs) {
        throw hooks.onExhausted?.({ error, attempts: attempt, elapsedMs }) ?? error;
      }

      hooks.onRetry?.({ error, attempt, elapsedMs, delayMs });
      await sleep(delayMs);
    }
  }
}

/**
 * Wait before attempt `attempt + 1`: "equal jitter", half of the exponential bound plus a
 * random part of the other half, so concurrent clients spread out but never retry at once.
 */
export function backoffDelayMs(attempt: number, policy: RetryPolicy): number {
  const bound = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(bound / 2 + Math.random() * (bound / 2));
}

/**
 * Reduces an error to fields safe to log or embed in a message: name, code, HTTP status and
 * message. SDK errors also carry the raw response, which stays out of logs.
 */
export function summarizeError(error: unknown): { name?: string; code?: string; status?: number; message: string } {
  if (typeof error !== 'object' || error === null) {
    return { message: String(error) };
  }

  const candidate = error as { name?: unknown; code?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number } };
  return {
    name: typeof candidate.name === 'string' ? candidate.name : undefined,
    code: typeof candidate.code === 'string' ? candidate.code : undefined,
    status: candidate.$metadata?.httpStatusCode,
    message: typeof candidate.message === 'string' && candidate.message !== '' ? candidate.message : String(candidate.name ?? 'unknown error'),
  };
}
