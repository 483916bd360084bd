import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';

import { CachefleetError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { compareEntryKeys, MAX_KEY_BYTES, validateKeyPrefix, validateObjectKey } from './object-key.js';
import { DEFAULT_GET_BYTES_MAX, type GetBytesOptions, type ObjectBody, type ObjectEntry, type ObjectStore, type PutOptions, type PutResult } from './object-store.js';
import { backoffDelayMs, DEFAULT_RETRY_POLICY, isTransientError, summarizeError, type RetryPolicy } from './retry.js';
import { createS3Client } from './s3-client.js';
import { describeEndpoint, type S3ConnectionOptions } from './s3-connection.js';
import { choosePartSize, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, uploadMultipart } from './s3-multipart.js';
import { isS3Error, S3Requests } from './s3-requests.js';
import { readFixedSizeParts } from './fixed-size-parts.js';
import { validateBucketName } from './storage-url.js';
import { assertChunkIsBytes, checkContentLength, ObjectNotFoundError, tooLargeForGetBytes, validateContentLength } from './storage-errors.js';

// 8 MiB parts are above S3's 5 MiB minimum, and 10,000 of them store 78 GiB, far more than a
// 100,000 × 12,288 float32 key store (4.9 GB). With a known contentLength the part size grows.
export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
export const DEFAULT_PART_CONCURRENCY = 4;

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix of this store inside the bucket, such as `runs/2026-12/`. Default: the whole bucket. */
  prefix?: string;
  connection?: S3ConnectionOptions;
  /**
   * Size of one multipart part and the largest body sent as a single PutObject, in bytes.
   * Between 5 MiB and 5 GiB; default DEFAULT_PART_SIZE.
   */
  partSize?: number;
  /** Parts uploaded at the same time; memory use is about (partConcurrency + 1) × partSize. Default 4. */
  partConcurrency?: number;
  /** Retries of transient failures; `budgetMs` is the total time per request. Default DEFAULT_RETRY_POLICY. */
  retry?: Partial<RetryPolicy>;
  logger?: Logger;
}

/**
 * Object store on S3 or an S3-compatible service. Bodies up to `partSize` bytes go in one
 * PutObject. Longer streams go in a multipart upload that sends parts while the stream is still
 * being read, and that is aborted on failure. Reads stream, and after a dropped connection they
 * resume with a range request.
 */
export class S3ObjectStore implements ObjectStore {
  private readonly requests: S3Requests;
  private readonly prefix: string;
  private readonly partSize: number;
  private readonly partConcurrency: number;
  private readonly logger: Logger;
  private readonly url: string;

  constructor(options: S3StoreOptions) {
    validateBucketName(options.bucket);
    this.prefix = normalizePrefix(options.prefix ?? '', options.bucket);
    this.url = `s3://${options.bucket}/${this.prefix}`;
    this.partSize = validatePartSize(options.partSize ?? DEFAULT_PART_SIZE);
    this.partConcurrency = validatePartConcurrency(options.partConcurrency ?? DEFAULT_PART_CONCURRENCY);
    const policy = validateRetryPolicy({ ...DEFAULT_RETRY_POLICY, ...options.retry });

    const connection = options.connection ?? {};
    const endpoint = describeEndpoint(connection);
    this.logger = (options.logger ?? createLogger('storage.s3')).child({ store: this.url });
    this.requests = new S3Requests(createS3Client(connection), options.bucket, endpoint, policy, this.logger);
  }

  describe(): string {
    return this.url;
  }

  async put(key: string, body: ObjectBody, options: PutOptions = {}): Promise<PutResult> {
    validateContentLength(key, options.contentLength);
    const fullKey = this.fullKey(key);
    const partSize = choosePartSize(this.partSize, options.contentLength);
    if (partSize > MAX_PART_SIZE) {
      throw new CachefleetError('INVALID_ARGUMENT', `contentLength ${options.contentLength} for object ${JSON.stringify(key)} exceeds S3's maximum object size of ${MAX_PARTS} parts of ${MAX_PART_SIZE} bytes.`, { key, contentLength: options.contentLength });
    }

    const hash = createHash('sha256');
    let bytes = 0;
    const parts = readFixedSizeParts(body instanceof Uint8Array ? [body] : body, partSize, (chunk) => {
      assertChunkIsBytes(key, chunk);
      bytes += chunk.byteLength;
      if (options.contentLength !== undefined && bytes > options.contentLength) {
        checkContentLength(key, this.url, bytes, options.contentLength);
      }
      hash.update(chunk);
    });

    // Two parts are read before choosing: a stream that ends within one part goes in one PutObject.
    const first = await parts.next();
    const second = first.done === true ? first : await parts.next();
    if (second.done === true) {
      checkContentLength(key, this.url, bytes, options.contentLength);
      const single = first.done === true ? Buffer.alloc(0) : first.value;
      await this.requests.send('PutObject', fullKey, () =>
        this.requests.client.send(new PutObjectCommand({ Bucket: this.requests.bucket, Key: fullKey, Body: single, ContentLength: single.byteLength })),
      );
    } else {
      const checkLengthAtEnd = () => checkContentLength(key, this.url, bytes, options.contentLength);
      try {
        await uploadMultipart({
          requests: this.requests,
          key: fullKey,
          parts: prependParts([first.value as Buffer, second.value], parts, checkLengthAtEnd),
          concurrency: this.partConcurrency,
          logger: this.logger,
        });
      } finally {
        // Closes the caller's stream when the upload failed before reading it to the end.
        await parts.return(undefined);
      }
    }

    return { sha256: hash.digest('hex'), bytes };
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    const fullKey = this.fullKey(key);
    const isPreconditionFailed = (error: unknown) => isS3Error(error, 412, ['PreconditionFailed']);
    let retried = false;

    try {
      await this.requests.send(
        'PutObject',
        fullKey,
        (attempt) => {
          retried = attempt > 1;
          return this.requests.client.send(new PutObjectCommand({ Bucket: this.requests.bucket, Key: fullKey, Body: body, ContentLength: body.byteLength, IfNoneMatch: '*' }));
        },
        { passThrough: isPreconditionFailed },
      );
      return true;
    } catch (error) {
      if (!isPreconditionFailed(error)) {
        throw error;
      }
    }

    // After a retry, the object that blocks this write may come from this call's own earlier
    // attempt whose response was lost. Identical bytes are taken as proof of that.
    if (retried) {
      const existing = await this.getBytes(key, { maxBytes: body.byteLength }).catch(() => undefined);
      return existing !== undefined && Buffer.from(existing).equals(body);
    }
    return false;
  }

  get(key: string): AsyncIterable<Uint8Array> {
    return this.readChunks(key);
  }

  async getBytes(key: string, options: GetBytesOptions = {}): Promise<Uint8Array> {
    const maxBytes = options.maxBytes ?? DEFAULT_GET_BYTES_MAX;
    const chunks: Uint8Array[] = [];
    let bytes = 0;

    for await (const chunk of this.readChunks(key)) {
      bytes += chunk.byteLength;
      if (bytes > maxBytes) {
        throw tooLargeForGetBytes(key, this.url, bytes, maxBytes);
      }
      chunks.push(chunk);
    }

    return Buffer.concat(chunks, bytes);
  }

  async head(key: string): Promise<{ bytes: number } | undefined> {
    const fullKey = this.fullKey(key);
    const isMissing = (error: unknown) => isS3Error(error, 404, ['NotFound', 'NoSuchKey']);

    try {
      // NOTE: HEAD responses have no body, so a missing bucket also reads as a missing object here.
      const output = await this.requests.send('HeadObject', fullKey, () => this.requests.client.send(new HeadObjectCommand({ Bucket: this.requests.bucket, Key: fullKey })), {
        passThrough: isMissing,
      });
      return { bytes: output.ContentLength ?? 0 };
    } catch (error) {
      if (isMissing(error)) {
        return undefined;
      }
      throw error;
    }
  }

  async list(prefix: string): Promise<ObjectEntry[]> {
    validateKeyPrefix(prefix, this.url);
    const fullPrefix = this.prefix + prefix;
    const entries: ObjectEntry[] = [];
    let continuationToken: string | undefined;

    do {
      const token = continuationToken;
      const page = await this.requests.send('ListObjectsV2', fullPrefix, () =>
        this.requests.client.send(new ListObjectsV2Command({ Bucket: this.requests.bucket, Prefix: fullPrefix, ContinuationToken: token })),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined && object.Key.startsWith(this.prefix)) {
          entries.push({ key: object.Key.slice(this.prefix.length), bytes: object.Size ?? 0 });
        }
      }
      continuationToken = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (continuationToken !== undefined);

    return entries.sort(compareEntryKeys);
  }

  async delete(key: string): Promise<void> {
    const fullKey = this.fullKey(key);
    const isMissing = (error: unknown) => isS3Error(error, 404, ['NoSuchKey']);

    try {
      await this.requests.send('DeleteObject', fullKey, () => this.requests.client.send(new DeleteObjectCommand({ Bucket: this.requests.bucket, Key: fullKey })), { passThrough: isMissing });
    } catch (error) {
      if (!isMissing(error)) {
        throw error;
      }
    }
  }

  async close(): Promise<void> {
    this.requests.client.destroy();
  }

  /**
   * Streams an object. When the connection drops mid-body, the read resumes from the last byte
   * received with a range request pinned to the first response's ETag, so a replaced object is
   * detected instead of spliced. Resuming stops when no byte arrives for the retry budget.
   */
  private async *readChunks(key: string): AsyncGenerator<Uint8Array> {
    const fullKey = this.fullKey(key);
    let response = await this.getObject(key, fullKey);
    const etag = response.ETag;
    const totalBytes = response.ContentLength;
    const policy = this.requests.policy;
    let offset = 0;
    let lastProgressAt = Date.now();
    let failuresWithoutProgress = 0;

    for (;;) {
      try {
        for await (const chunk of (response.Body ?? []) as AsyncIterable<Uint8Array>) {
          offset += chunk.byteLength;
          lastProgressAt = Date.now();
          failuresWithoutProgress = 0;
          yield chunk;
        }
        if (totalBytes === undefined || offset >= totalBytes) {
          return;
        }
        throw Object.assign(new Error(`response body ended after ${offset} of ${totalBytes} bytes`), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      } catch (error) {
        if (!isTransientError(error)) {
          throw error;
        }
        failuresWithoutProgress += 1;
        const stalledMs = Date.now() - lastProgressAt;
        const delayMs = failuresWithoutProgress > 1 ? backoffDelayMs(failuresWithoutProgress - 1, policy) : 0;
        if (stalledMs + delayMs > policy.budgetMs) {
          throw this.requests.unavailable('GetObject', fullKey, error, failuresWithoutProgress, stalledMs, policy);
        }

        this.logger.warn({ key: fullKey, offset, totalBytes, delayMs, err: summarizeError(error) }, 'S3 object read interrupted, resuming');
        await sleep(delayMs);
        response = await this.getObject(key, fullKey, { offset, etag });
      }
    }
  }

  private async getObject(key: string, fullKey: string, resume?: { offset: number; etag: string | undefined }): Promise<GetObjectCommandOutput> {
    const isMissing = (error: unknown) => isS3Error(error, undefined, ['NoSuchKey']);
    const isChanged = (error: unknown) => isS3Error(error, 412, ['PreconditionFailed']);
    let response: GetObjectCommandOutput;

    try {
      response = await this.requests.send(
        'GetObject',
        fullKey,
        () =>
          this.requests.client.send(
            new GetObjectCommand({
              Bucket: this.requests.bucket,
              Key: fullKey,
              ...(resume === undefined ? {} : { Range: `bytes=${resume.offset}-`, IfMatch: resume.etag }),
            }),
          ),
        { passThrough: (error) => isMissing(error) || isChanged(error) },
      );
    } catch (error) {
      if (isMissing(error)) {
        throw new ObjectNotFoundError(key, this.url);
      }
      if (isChanged(error)) {
        throw this.changedWhileReading(key, fullKey);
      }
      throw error;
    }

    // s3rver ignores If-Match, so the ETag is compared here as well.
    if (resume !== undefined && response.ETag !== resume.etag) {
      (response.Body as { destroy?: () => void } | undefined)?.destroy?.();
      throw this.changedWhileReading(key, fullKey);
    }
    return response;
  }

  private changedWhileReading(key: string, fullKey: string): CachefleetError {
    return new CachefleetError(
      'STORAGE_UNAVAILABLE',
      `Object ${JSON.stringify(key)} in store ${this.url} was replaced while being read. Read it again from the start.`,
      { key, fullKey, store: this.url },
    );
  }

  private fullKey(key: string): string {
    validateObjectKey(key, this.url);
    const fullKey = this.prefix + key;
    if (Buffer.byteLength(fullKey, 'utf8') > MAX_KEY_BYTES) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Object key ${JSON.stringify(key)} with store prefix ${JSON.stringify(this.prefix)} is longer than S3's maximum of ${MAX_KEY_BYTES} bytes. Use a shorter key or prefix.`,
        { key, prefix: this.prefix },
      );
    }
    return fullKey;
  }
}

/** Yields `first`, then the rest of `rest`, then runs `atEnd`, which may throw to fail the upload. */
async function* prependParts(first: Buffer[], rest: AsyncIterator<Buffer>, atEnd: () => void): AsyncGenerator<Buffer> {
  try {
    yield* first;
    for (;;) {
      const next = await rest.next();
      if (next.done === true) {
        break;
      }
      yield next.value;
    }
    atEnd();
  } finally {
    await rest.return?.(undefined);
  }
}

function normalizePrefix(prefix: string, bucket: string): string {
  if (prefix === '' || prefix === '/') {
    return '';
  }
  const trimmed = prefix.replace(/^\/+/, '').replace(/\/+$/, '');
  validateObjectKey(trimmed, `s3://${bucket}/`);
  return `${trimmed}/`;
}

function validatePartSize(partSize: number): number {
  if (Number.isSafeInteger(partSize) && partSize >= MIN_PART_SIZE && partSize <= MAX_PART_SIZE) {
    return partSize;
  }
  throw new CachefleetError('INVALID_ARGUMENT', `partSize ${partSize} is invalid: S3 parts must be between ${MIN_PART_SIZE} (5 MiB) and ${MAX_PART_SIZE} (5 GiB) bytes.`, { partSize });
}

function validatePartConcurrency(partConcurrency: number): number {
  if (Number.isSafeInteger(partConcurrency) && partConcurrency >= 1) {
    return partConcurrency;
  }
  throw new CachefleetError('INVALID_ARGUMENT', `partConcurrency ${partConcurrency} is invalid: it must be a whole number of at least 1.`, { partConcurrency });
}

function validateRetryPolicy(policy: RetryPolicy): RetryPolicy {
  for (const [name, value] of Object.entries(policy)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new CachefleetError('INVALID_ARGUMENT', `retry.${name} ${value} is invalid: it must be a non-negative number of milliseconds.`, { name, value });
    }
  }
  return policy;
}
