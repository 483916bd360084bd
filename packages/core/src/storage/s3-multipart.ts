import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';

import { CachefleetError } from '../errors.js';
import type { Logger } from '../log.js';
import { summarizeError, type RetryPolicy } from './retry.js';
import { isS3Error, type S3Requests } from './s3-requests.js';

// S3 accepts at most 10,000 parts per upload, each 5 MiB to 5 GiB except the last.
export const MAX_PARTS = 10_000;
export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;

// AbortMultipartUpload runs after a failure, often while the service is down. It gets a short
// budget of its own, so cleanup does not double the time before the caller learns of the failure.
const ABORT_BUDGET_MS = 10_000;

export interface MultipartUploadRequest {
  requests: S3Requests;
  /** Full object key, store prefix included. */
  key: string;
  /** Parts in order, every one `partSize` bytes except the last. */
  parts: AsyncIterator<Buffer>;
  /** Number of parts sent at the same time. */
  concurrency: number;
  logger: Logger;
}

/**
 * Uploads `parts` as one multipart upload and returns the number of bytes sent.
 *
 * At most `concurrency` parts are in flight and the next part is pulled only when a slot is
 * free, so memory stays near (concurrency + 1) × part size however long the stream is.
 *
 * When the source or a request fails, the upload waits for the parts in flight and then sends
 * AbortMultipartUpload, so the service frees the stored parts. A failed abort is logged, and the
 * original error is raised either way.
 */
export async function uploadMultipart(request: MultipartUploadRequest): Promise<number> {
  const { requests, key, logger } = request;
  const { client, bucket } = requests;

  const created = await requests.send('CreateMultipartUpload', key, () => client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key })));
  const uploadId = created.UploadId;
  if (uploadId === undefined) {
    throw new CachefleetError('STORAGE_UNAVAILABLE', `S3 CreateMultipartUpload of ${JSON.stringify(key)} in bucket ${bucket} at ${requests.endpoint} returned no upload id. Retry the write.`, { key, bucket });
  }
  logger.debug({ bucket, key, uploadId }, 'multipart upload started');

  try {
    const { completedParts, bytes } = await uploadParts(request, uploadId);
    await completeUpload(requests, key, uploadId, completedParts, bytes);
    logger.debug({ bucket, key, uploadId, parts: completedParts.length, bytes }, 'multipart upload completed');
    return bytes;
  } catch (error) {
    await abortUpload(requests, key, uploadId, logger);
    throw error;
  }
}

async function uploadParts(request: MultipartUploadRequest, uploadId: string): Promise<{ completedParts: CompletedPart[]; bytes: number }> {
  const { requests, key, parts, concurrency } = request;
  const { client, bucket } = requests;
  const completedParts: CompletedPart[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  let bytes = 0;

  try {
    for (let partNumber = 1; failure === undefined; partNumber += 1) {
      const next = await parts.next();
      if (next.done === true) {
        break;
      }
      if (partNumber > MAX_PARTS) {
        throw new CachefleetError(
          'INVALID_ARGUMENT',
          `Object ${JSON.stringify(key)} needs more than ${MAX_PARTS} parts of ${next.value.byteLength} bytes, the S3 limit. ` +
            'Pass contentLength so the part size can grow, or raise partSize.',
          { key, maxParts: MAX_PARTS },
        );
      }

      const body = next.value;
      bytes += body.byteLength;
      const upload = requests
        .send('UploadPart', key, () => client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.byteLength })), {
          logFields: { uploadId, partNumber },
        })
        .then((output) => {
          if (output.ETag === undefined) {
            throw new CachefleetError('STORAGE_UNAVAILABLE', `S3 UploadPart ${partNumber} of ${JSON.stringify(key)} in bucket ${bucket} returned no ETag. Retry the write.`, { key, bucket, partNumber });
          }
          completedParts.push({ PartNumber: partNumber, ETag: output.ETag });
        })
        .catch((error: unknown) => {
          failure ??= { error };
        });
      const tracked = upload.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);

      if (inFlight.size >= concurrency) {
        await Promise.race(inFlight);
      }
    }
  } finally {
    // Parts still in flight must settle before a completion or an abort: an abort that races a
    // part upload can leave that part stored.
    await Promise.all(inFlight);
    await parts.return?.().catch(() => undefined);
  }

  if (failure !== undefined) {
    throw failure.error;
  }

  completedParts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
  return { completedParts, bytes };
}

async function completeUpload(requests: S3Requests, key: string, uploadId: string, completedParts: CompletedPart[], bytes: number): Promise<void> {
  const { client, bucket } = requests;
  let retried = false;

  try {
    await requests.send(
      'CompleteMultipartUpload',
      key,
      (attempt) => {
        retried = attempt > 1;
        return client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: completedParts } }));
      },
      { passThrough: (error) => isS3Error(error, 404, ['NoSuchUpload']) },
    );
  } catch (error) {
    // An earlier attempt may have completed the upload before its response was lost; the retry
    // then meets NoSuchUpload. An object of the right length under the key settles it.
    if (!retried || !isS3Error(error, 404, ['NoSuchUpload'])) {
      throw error;
    }
    const head = await requests.send('HeadObject', key, () => client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })));
    if (head.ContentLength !== bytes) {
      throw requests.rejected('CompleteMultipartUpload', key, error);
    }
  }
}

async function abortUpload(requests: S3Requests, key: string, uploadId: string, logger: Logger): Promise<void> {
  const { client, bucket } = requests;
  const policy: RetryPolicy = { ...requests.policy, budgetMs: Math.min(requests.policy.budgetMs, ABORT_BUDGET_MS) };

  try {
    await requests.send('AbortMultipartUpload', key, () => client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })), { policy });
    logger.info({ bucket, key, uploadId }, 'multipart upload aborted');
  } catch (abortError) {
    // NOTE: the stored parts stay billed until a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them.
    logger.error({ bucket, key, uploadId, endpoint: requests.endpoint, err: summarizeError(abortError) }, 'abort of failed multipart upload failed; its parts stay stored');
  }
}

/**
 * Chooses the part size: `configured`, raised when needed so that `contentLength` bytes fit in
 * MAX_PARTS parts, rounded up to a whole MiB.
 */
export function choosePartSize(configured: number, contentLength: number | undefined): number {
  if (contentLength === undefined || contentLength <= configured * MAX_PARTS) {
    return configured;
  }
  const mebibyte = 1024 * 1024;
  return Math.ceil(contentLength / MAX_PARTS / mebibyte) * mebibyte;
}
