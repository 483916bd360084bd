import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { CachefleetError } from '../errors.js';
import { validateObjectKey } from './object-key.js';

/** Location of a store, parsed from a storage URL. */
export type StorageLocation =
  | { kind: 'file'; /** Absolute path of the root folder. */ root: string }
  | { kind: 's3'; bucket: string; /** Key prefix, empty or ending with `/`. */ prefix: string };

// S3 bucket naming rules: 3 to 63 characters of lowercase letters, digits, dots and hyphens,
// starting and ending with a letter or digit, and not shaped like an IPv4 address.
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IPV4_ADDRESS = /^\d+\.\d+\.\d+\.\d+$/;

/**
 * Parses a storage URL: `file:///abs/dir`, a plain absolute or relative folder path (relative
 * to `cwd`), or `s3://bucket/optional/prefix`. Other schemes, and URLs that carry credentials,
 * query strings or fragments, are rejected with INVALID_ARGUMENT.
 */
export function parseStorageUrl(url: string, cwd: string = process.cwd()): StorageLocation {
  if (typeof url !== 'string' || url.trim() === '') {
    throw invalidUrl(String(url), 'it is empty');
  }

  if (url.startsWith('s3://')) {
    return parseS3Url(url);
  }
  if (url.startsWith('file:')) {
    return { kind: 'file', root: parseFileUrl(url) };
  }
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(url)) {
    throw invalidUrl(url.replace(/\/\/[^/@]*@/, '//'), 'its scheme is not supported');
  }

  if (url.includes('\u0000')) {
    throw invalidUrl(url, 'it contains a NUL character');
  }
  return { kind: 'file', root: path.resolve(cwd, url) };
}

/** Raises INVALID_ARGUMENT unless `bucket` follows the S3 bucket naming rules. */
export function validateBucketName(bucket: string): void {
  if (typeof bucket === 'string' && BUCKET_NAME.test(bucket) && !IPV4_ADDRESS.test(bucket) && !bucket.includes('..')) {
    return;
  }

  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `Bucket name ${JSON.stringify(bucket)} is invalid: S3 bucket names have 3 to 63 lowercase letters, digits, dots or hyphens, ` +
      'start and end with a letter or digit, and are not IP addresses.',
    { bucket },
  );
}

function parseS3Url(url: string): StorageLocation {
  // Parsed by hand: the WHATWG URL parser would silently resolve "a/../b" to "b".
  const match = /^s3:\/\/([^/?#]*)([^?#]*)(.*)$/.exec(url);
  if (match === null) {
    throw invalidUrl(url, 'it is not a valid URL');
  }
  const [, authority, rawPath, rest] = match;

  if (authority.includes('@')) {
    // The URL is not echoed, because its user part may hold a secret key.
    const host = authority.slice(authority.lastIndexOf('@') + 1);
    throw invalidUrl(`s3://${host}/…`, 'it contains credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead');
  }
  if (rest !== '') {
    throw invalidUrl(url, 'it has a query string or fragment');
  }
  if (authority.includes(':')) {
    throw invalidUrl(url, 'it has a port; set the service address with S3_ENDPOINT');
  }

  const bucket = authority;
  validateBucketName(bucket);

  let prefix: string;
  try {
    prefix = decodeURIComponent(rawPath).replace(/^\/+/, '').replace(/\/+$/, '');
  } catch {
    throw invalidUrl(url, 'its path has an invalid percent-encoding');
  }
  if (prefix === '') {
    return { kind: 's3', bucket, prefix: '' };
  }
  validateObjectKey(prefix, `s3://${bucket}/`);
  return { kind: 's3', bucket, prefix: `${prefix}/` };
}

function parseFileUrl(url: string): string {
  let root: string;
  try {
    root = fileURLToPath(url);
  } catch (error) {
    throw invalidUrl(url, `it is not a local file URL (${(error as Error).message})`);
  }
  return path.resolve(root);
}

function invalidUrl(url: string, reason: string): CachefleetError {
  return new CachefleetError(
    'INVALID_ARGUMENT',
    `Storage URL ${JSON.stringify(url)} is invalid: ${reason}. Use file:///absolute/folder, a folder path, or s3://bucket/prefix.`,
    { url, reason },
  );
}
