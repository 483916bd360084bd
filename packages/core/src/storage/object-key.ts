import { CachefleetError } from '../errors.js';

// S3 limits a key to 1,024 bytes of UTF-8; the same cap keeps file-store keys portable to S3.
export const MAX_KEY_BYTES = 1024;

// C0 controls and DEL: NUL truncates paths in C APIs, and S3 lists keys as XML 1.0, which cannot
// carry most control characters.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/**
 * Checks that `key` is a relative, `/`-separated object key that stays inside the store root,
 * and returns its segments. Raises INVALID_ARGUMENT naming the key and `root` otherwise.
 *
 * Rejected: empty keys, keys longer than MAX_KEY_BYTES, a leading `/`, empty segments (`a//b`,
 * a trailing `/`), `.` and `..` segments, backslashes (a path separator on Windows) and control
 * characters including NUL.
 */
export function validateObjectKey(key: string, root: string): string[] {
  const reason = findKeyProblem(key);
  if (reason !== undefined) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Object key ${JSON.stringify(key)} is invalid for store ${root}: ${reason}. ` +
        'Use a relative key of "/"-separated names without ".", "..", backslashes or control characters.',
      { key, root, reason },
    );
  }

  return key.split('/');
}

/**
 * Checks a list prefix: the same rules as a key, except that it may be empty and may end with
 * `/`. Returns the prefix unchanged.
 */
export function validateKeyPrefix(prefix: string, root: string): string {
  if (prefix === '') {
    return prefix;
  }

  const withoutTrailingSlash = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  // A lone "/" is checked as it is, so that it fails as an absolute path, not as an empty key.
  validateObjectKey(withoutTrailingSlash === '' ? prefix : withoutTrailingSlash, root);
  return prefix;
}

/** Orders list entries by key, in UTF-16 code unit order like a plain string comparison. */
export function compareEntryKeys(a: { key: string }, b: { key: string }): number {
  if (a.key < b.key) {
    return -1;
  }
  return a.key > b.key ? 1 : 0;
}

function findKeyProblem(key: string): string | undefined {
  if (typeof key !== 'string' || key.length === 0) {
    return 'the key is empty';
  }
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    return `the key is ${Buffer.byteLength(key, 'utf8')} bytes long, above the maximum of ${MAX_KEY_BYTES} bytes`;
  }
  if (key.includes('\u0000')) {
    return 'the key contains a NUL character';
  }
  if (CONTROL_CHARACTER.test(key)) {
    return 'the key contains a control character';
  }
  if (key.includes('\\')) {
    return 'the key contains a backslash';
  }
  if (key.startsWith('/')) {
    return 'the key is an absolute path';
  }

  for (const segment of key.split('/')) {
    if (segment === '') {
      return 'the key has an empty segment';
    }
    if (segment === '.' || segment === '..') {
      return `the key has a "${segment}" segment that escapes or aliases the root`;
    }
  }

  return undefined;
}
