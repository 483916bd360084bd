import { describe, expect, it } from 'vitest';

import { isCachefleetError } from '../errors.js';
import { MAX_KEY_BYTES, validateKeyPrefix, validateObjectKey } from './object-key.js';

const ROOT = 'file:///srv/store';

describe('validateObjectKey', () => {
  it.each([
    ['shards/part-0001.bin', ['shards', 'part-0001.bin']],
    ['manifest.json', ['manifest.json']],
    ['a/b/c', ['a', 'b', 'c']],
    ['..hidden/x..y', ['..hidden', 'x..y']],
    ['unicode/ключ', ['unicode', 'ключ']],
  ])('accepts %j', (key, segments) => {
    expect(validateObjectKey(key, ROOT)).toEqual(segments);
  });

  it.each([
    ['', 'empty'],
    ['../outside', '".." segment'],
    ['a/../../outside', '".." segment'],
    ['a/..', '".." segment'],
    ['./a', '"." segment'],
    ['/etc/passwd', 'absolute path'],
    ['a//b', 'empty segment'],
    ['a/', 'empty segment'],
    ['a\\..\\..\\b', 'backslash'],
    ['..\\outside', 'backslash'],
    ['a\u0000b', 'NUL'],
    ['a\nb', 'control character'],
    ['x'.repeat(MAX_KEY_BYTES + 1), 'maximum'],
  ])('rejects %j', (key, reason) => {
    expect(() => validateObjectKey(key, ROOT)).toThrow(reason);
  });

  it('names key and root in errors', () => {
    let caught: unknown;
    try {
      validateObjectKey('../escape', ROOT);
    } catch (error) {
      caught = error;
    }

    expect(isCachefleetError(caught, 'INVALID_ARGUMENT')).toBe(true);
    expect((caught as Error).message).toContain('"../escape"');
    expect((caught as Error).message).toContain(ROOT);
  });
});

describe('validateKeyPrefix', () => {
  it.each(['', 'shards/', 'shards/part-', 'a/b'])('accepts %j', (prefix) => {
    expect(validateKeyPrefix(prefix, ROOT)).toBe(prefix);
  });

  it.each([
    ['/', 'absolute path'],
    ['../', '".." segment'],
    ['a//', 'empty segment'],
  ])('rejects %j', (prefix, reason) => {
    expect(() => validateKeyPrefix(prefix, ROOT)).toThrow(reason);
  });
});
