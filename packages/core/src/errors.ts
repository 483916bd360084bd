/**
 * The one registry of error codes of cachefleet. Every error that reaches a user carries a
 * stable code from here, names the offending value and says how to fix it.
 *
 * `retryable` separates transient I/O (worth another attempt) from bad input, which fails a job
 * at once because a retry would meet the same input.
 */
export const ERROR_CODES = {
  INVALID_ARGUMENT: { retryable: false, summary: 'A request, flag or option has an invalid value.' },
  DATASET_INVALID: { retryable: false, summary: 'A dataset file is malformed (size, label or layout).' },
  DATASET_NOT_FOUND: { retryable: false, summary: 'A dataset file or folder does not exist.' },
  DOWNLOAD_FAILED: { retryable: true, summary: 'Downloading a dataset archive failed.' },
  CHECKSUM_MISMATCH: { retryable: false, summary: 'A file or object does not have the expected SHA-256.' },
  MODEL_INVALID: { retryable: false, summary: 'A model file cannot be read or built.' },
  MODEL_UNSUPPORTED_LAYER: { retryable: false, summary: 'A model contains layer classes cachefleet cannot run.' },
  KEY_LAYER_NOT_FOUND: { retryable: false, summary: 'A requested key layer does not exist in the model.' },
  CLASS_COUNT_MISMATCH: { retryable: false, summary: 'Model, dataset or cache disagree on the number of classes.' },
  NON_FINITE_ACTIVATION: { retryable: false, summary: 'A key-layer activation is NaN or infinite.' },
  EMPTY_CACHE: { retryable: false, summary: 'A cache has no usable keys.' },
  KEY_STORE_MISMATCH: { retryable: false, summary: 'A key store was built with another model, layers or preprocessing.' },
  KEY_STORE_CORRUPT: { retryable: false, summary: 'A key store or shard file is truncated or malformed.' },
  CACHE_OVERLAP: { retryable: false, summary: 'An evaluation item is also in the cache.' },
  BACKEND_UNAVAILABLE: { retryable: false, summary: 'No TensorFlow.js backend or scoring engine could start.' },
  OBJECT_NOT_FOUND: { retryable: false, summary: 'An object or file named by a request or manifest does not exist.' },
  STORAGE_UNAVAILABLE: { retryable: true, summary: 'Object storage or the file system failed transiently.' },
  RUN_CANCELLED: { retryable: false, summary: 'A job stopped because its run was cancelled.' },
  RUN_NOT_FOUND: { retryable: false, summary: 'No run with the given id exists.' },
  RUN_STATE_CONFLICT: { retryable: false, summary: "A request does not fit the run's current state, such as the report of an unfinished run." },
  UNAUTHORIZED: { retryable: false, summary: 'A request to the coordinator API has no valid token or session.' },
  REQUEST_TOO_LARGE: { retryable: false, summary: 'A request body is larger than the coordinator API accepts.' },
  API_UNAVAILABLE: { retryable: true, summary: 'The coordinator API could not be reached or answered with a server error.' },
  ROUTE_NOT_FOUND: { retryable: false, summary: 'No coordinator API endpoint matches the method and path of a request.' },
  INTERNAL_ERROR: { retryable: false, summary: 'The coordinator failed on an unexpected error; its log has the details.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class CachefleetError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CachefleetError';
    this.code = code;
    this.retryable = ERROR_CODES[code].retryable;
    this.details = details;
  }
}

export function isCachefleetError(error: unknown, code?: ErrorCode): error is CachefleetError {
  return error instanceof CachefleetError && (code === undefined || error.code === code);
}
