import type { S3Client } from '@aws-sdk/client-s3';

import { CachefleetError } from '../errors.js';
import type { Logger } from '../log.js';
import { retryTransient, summarizeError, type RetryPolicy } from './retry.js';

export interface S3RequestOptions {
  /** Retry policy for this request; the store's policy when absent. */
  policy?: RetryPolicy;
  /**
   * Non-transient errors the caller handles itself (a 404 from HeadObject, a 412 from a
   * conditional write). They are rethrown unchanged instead of wrapped.
   */
  passThrough?: (error: unknown) => boolean;
  /** Extra fields for retry logs, such as `{ partNumber: 3 }`. */
  logFields?: Record<string, unknown>;
}

/**
 * Sends S3 commands with retries of transient failures and turns the remaining failures into
 * CachefleetErrors that name the operation, bucket, key and endpoint, and never credentials.
 */
export class S3Requests {
  constructor(
    readonly client: S3Client,
    readonly bucket: string,
    /** Endpoint URL without credentials, for messages. */
    readonly endpoint: string,
    readonly policy: RetryPolicy,
    private readonly logger: Logger,
  ) {}

  /**
   * Runs `request` (one attempt, for example `() => client.send(command)`) under the retry
   * policy. `operation` is the S3 operation name and `key` the full object key, for messages.
   */
  async send<T>(operation: string, key: string, request: (attempt: number) => Promise<T>, options: S3RequestOptions = {}): Promise<T> {
    const policy = options.policy ?? this.policy;

    try {
      return await retryTransient(request, policy, {
        onRetry: ({ error, attempt, elapsedMs, delayMs }) => {
          this.logger.warn(
            { operation, bucket: this.bucket, key, ...options.logFields, endpoint: this.endpoint, attempt, elapsedMs, delayMs, err: summarizeError(error) },
            'S3 request failed, retrying',
          );
        },
        onExhausted: ({ error, attempts, elapsedMs }) => this.unavailable(operation, key, error, attempts, elapsedMs, policy),
      });
    } catch (error) {
      // Only service responses are wrapped; a bug in the caller keeps its own error.
      if (error instanceof CachefleetError || options.passThrough?.(error) === true || httpStatusOf(error) === undefined) {
        throw error;
      }
      throw this.rejected(operation, key, error);
    }
  }

  /** Builds the STORAGE_UNAVAILABLE error for a transient failure that outlasted the budget. */
  unavailable(operation: string, key: string, error: unknown, attempts: number, elapsedMs: number, policy: RetryPolicy): CachefleetError {
    const cause = summarizeError(error);
    return new CachefleetError(
      'STORAGE_UNAVAILABLE',
      `S3 ${operation} of ${JSON.stringify(key)} in bucket ${this.bucket} at ${this.endpoint} failed after ${attempts} attempts ` +
        `in ${(elapsedMs / 1000).toFixed(1)} s: ${cause.message}. Check that the endpoint is reachable, ` +
        `or raise the retry budget (now ${policy.budgetMs} ms).`,
      { operation, bucket: this.bucket, key, endpoint: this.endpoint, attempts, elapsedMs, budgetMs: policy.budgetMs, cause },
      { cause: error },
    );
  }

  /**
   * Builds the error for a request the service rejected for good (403, 404 for a bucket,
   * 400): INVALID_ARGUMENT, because the bucket, key or credentials in the options are wrong.
   */
  rejected(operation: string, key: string, error: unknown): CachefleetError {
    const cause = summarizeError(error);
    const status = cause.status === undefined ? '' : ` with HTTP ${cause.status}`;
    return new CachefleetError(
      'INVALID_ARGUMENT',
      `S3 ${operation} of ${JSON.stringify(key)} in bucket ${this.bucket} at ${this.endpoint} was rejected${status} ` +
        `(${cause.name ?? 'error'}: ${cause.message}). Check the bucket name, the key and the credentials.`,
      { operation, bucket: this.bucket, key, endpoint: this.endpoint, cause },
      { cause: error },
    );
  }
}

/**
 * Tells whether an SDK error has HTTP status `status` or one of the error names given. Pass
 * `undefined` as status to match by name only, for example to tell NoSuchKey from NoSuchBucket.
 */
export function isS3Error(error: unknown, status: number | undefined, names: string[] = []): boolean {
  const name = typeof error === 'object' && error !== null ? (error as { name?: unknown }).name : undefined;
  return (status !== undefined && httpStatusOf(error) === status) || (typeof name === 'string' && names.includes(name));
}

/** HTTP status of an SDK error that came from a service response, or undefined for network and local errors. */
export function httpStatusOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) {
    return undefined;
  }
  const status = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}
