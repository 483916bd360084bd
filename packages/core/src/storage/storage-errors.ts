import { CachefleetError } from '../errors.js';

/** Raised when a read names a key with no object (code OBJECT_NOT_FOUND, not retryable). */
export class ObjectNotFoundError extends CachefleetError {
  constructor(key: string, store: string) {
    super(
      'OBJECT_NOT_FOUND',
      `Object ${JSON.stringify(key)} was not found in store ${store}. Check the key, or write the object before reading it.`,
      { key, store, notFound: true },
    );
    this.name = 'ObjectNotFoundError';
  }
}

export function isObjectNotFound(error: unknown): error is ObjectNotFoundError {
  return error instanceof ObjectNotFoundError;
}

/** Raises INVALID_ARGUMENT when a body's length differs from the `contentLength` the caller gave. */
export function checkContentLength(key: string, store: string, actualBytes: number, expectedBytes: number | undefined): void {
  if (expectedBytes === undefined || actualBytes === expectedBytes) {
    return;
  }

  const comparison = actualBytes > expectedBytes ? 'at least' : 'only';
  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `Body for object ${JSON.stringify(key)} in store ${store} has ${comparison} ${actualBytes} bytes, ` +
      `but contentLength is ${expectedBytes}. Pass the exact body length, or omit contentLength.`,
    { key, store, actualBytes, expectedBytes },
  );
}

/** Raises INVALID_ARGUMENT when `contentLength` is not a non-negative safe integer. */
export function validateContentLength(key: string, contentLength: number | undefined): void {
  if (contentLength === undefined || (Number.isSafeInteger(contentLength) && contentLength >= 0)) {
    return;
  }

  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `contentLength ${contentLength} for object ${JSON.stringify(key)} is invalid: it must be a non-negative integer number of bytes.`,
    { key, contentLength },
  );
}

/** Raises INVALID_ARGUMENT for a body chunk that is not bytes, such as a string from a text-mode stream. */
export function assertChunkIsBytes(key: string, chunk: unknown): asserts chunk is Uint8Array {
  if (chunk instanceof Uint8Array) {
    return;
  }

  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `Body for object ${JSON.stringify(key)} yielded a ${typeof chunk} chunk; bodies must yield Uint8Array chunks. ` +
      'Open file streams without an encoding.',
    { key, chunkType: typeof chunk },
  );
}

/** Builds the INVALID_ARGUMENT error that `getBytes` raises for an object above its `maxBytes` limit. */
export function tooLargeForGetBytes(key: string, store: string, bytes: number, maxBytes: number): CachefleetError {
  return new CachefleetError(
    'INVALID_ARGUMENT',
    `Object ${JSON.stringify(key)} in store ${store} is ${bytes} bytes, above the getBytes limit of ${maxBytes} bytes. ` +
      'Stream it with get(), or raise maxBytes.',
    { key, store, bytes, maxBytes },
  );
}
