import { S3Client } from '@aws-sdk/client-s3';

import { CachefleetError } from '../errors.js';
import { DEFAULT_REGION, validateEndpoint, type S3ConnectionOptions } from './s3-connection.js';

const DEFAULT_CONNECTION_TIMEOUT_MS = 5_000;
const DEFAULT_SOCKET_TIMEOUT_MS = 30_000;

/**
 * Creates an S3 client that leaves retries to the caller (one attempt per `send`) and neither
 * adds nor checks flexible checksums unless an operation requires them: s3rver 3.7 stores
 * checksum-framed bodies verbatim, and the store computes its own SHA-256.
 */
export function createS3Client(connection: S3ConnectionOptions): S3Client {
  const endpoint = connection.endpoint === undefined ? undefined : validateEndpoint(connection.endpoint);
  if (endpoint !== undefined && connection.credentials === undefined) {
    // The default provider chain could query an instance metadata service on behalf of a
    // custom endpoint, which is never what a MinIO or test setup wants.
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `S3 endpoint ${endpoint} has no credentials. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass credentials.`,
      { endpoint },
    );
  }

  return new S3Client({
    region: connection.region ?? DEFAULT_REGION,
    ...(endpoint === undefined ? {} : { endpoint }),
    forcePathStyle: connection.forcePathStyle ?? endpoint !== undefined,
    ...(connection.credentials === undefined ? {} : { credentials: connection.credentials }),
    maxAttempts: 1,
    // 'legacy' applies no environment-dependent defaults; 'auto' would query instance metadata.
    defaultsMode: 'legacy',
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: connection.connectionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUT_MS,
      socketTimeout: connection.socketTimeoutMs ?? DEFAULT_SOCKET_TIMEOUT_MS,
    },
  });
}
