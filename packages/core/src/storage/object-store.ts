/**
 * Body of an object to write: one buffer, or a stream of chunks (for example a Node `Readable`
 * of Buffers, or an async generator). Streams are read once, front to back.
 */
export type ObjectBody = Uint8Array | AsyncIterable<Uint8Array>;

export interface PutOptions {
  /**
   * Expected body length in bytes. When given, a body of another length fails the write with
   * INVALID_ARGUMENT and nothing becomes visible. The S3 store also uses it to choose the part
   * size, so that objects larger than 10,000 default parts still fit.
   */
  contentLength?: number;
}

/** Outcome of a completed write: SHA-256 (lowercase hex) and length of the bytes stored. */
export interface PutResult {
  sha256: string;
  bytes: number;
}

/** One object returned by `list`. */
export interface ObjectEntry {
  key: string;
  bytes: number;
}

// Default cap of getBytes, in bytes: it is meant for manifests and partial results, not shards.
export const DEFAULT_GET_BYTES_MAX = 256 * 1024 * 1024;

export interface GetBytesOptions {
  /** Largest object `getBytes` reads into memory, in bytes. Default DEFAULT_GET_BYTES_MAX. */
  maxBytes?: number;
}

/**
 * Key-value object storage used for key shards, partial results and manifests.
 *
 * Keys are relative, `/`-separated names below the store root (a folder, or a bucket prefix).
 * A key that is empty, absolute, or contains `.` or `..` segments, empty segments, backslashes
 * or control characters is rejected with INVALID_ARGUMENT before any I/O.
 *
 * Writes are all-or-nothing: readers see either the previous object or the complete new one,
 * never part of a write. Reading a missing key raises `ObjectNotFoundError`.
 */
export interface ObjectStore {
  /**
   * Writes `body` under `key`, replacing any object there, and returns the SHA-256 and length
   * computed while the bytes streamed through. Memory stays bounded for any body length.
   */
  put(key: string, body: ObjectBody, options?: PutOptions): Promise<PutResult>;

  /**
   * Streams the object in chunks. Nothing is requested until iteration starts, so a missing key
   * raises `ObjectNotFoundError` from the first `next()`, not from this call.
   */
  get(key: string): AsyncIterable<Uint8Array>;

  /** Reads a small object (a manifest, a partial result) into one buffer. */
  getBytes(key: string, options?: GetBytesOptions): Promise<Uint8Array>;

  /** Returns the length of the object, or `undefined` when there is no object under `key`. */
  head(key: string): Promise<{ bytes: number } | undefined>;

  /**
   * Lists the objects whose keys start with `prefix` (a plain string prefix, not only a folder),
   * sorted by key. An empty prefix lists the whole store.
   */
  list(prefix: string): Promise<ObjectEntry[]>;

  /** Deletes the object. Deleting a missing key succeeds. */
  delete(key: string): Promise<void>;

  /**
   * Writes a small object only if no object exists under `key`; returns whether this call
   * created it. Best effort: the file store is atomic (hard link), and S3 and MinIO honour
   * `If-None-Match: *`, but s3rver 3.7 ignores that header and overwrites, returning `true`.
   * Callers that need mutual exclusion on every backend must also hold a lock.
   */
  putIfAbsent(key: string, body: Uint8Array): Promise<boolean>;

  /** Location of the store as a URL without credentials, for logs and messages. */
  describe(): string;

  /** Releases sockets and file handles. The store cannot be used afterwards. */
  close(): Promise<void>;
}
