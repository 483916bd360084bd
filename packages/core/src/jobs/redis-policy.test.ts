import { describe, expect, it } from 'vitest';

import { assertNoEviction, parseMaxmemoryPolicy, redactRedisUrl } from './redis-policy.js';

// The shape of `INFO memory` from Redis 7.0: a section header, then CRLF-separated fields.
const INFO_MEMORY = ['# Memory', 'used_memory:1039312', 'used_memory_human:1014.95K', 'maxmemory:0', 'maxmemory_human:0B', 'maxmemory_policy:allkeys-lru', 'allocator_frag_ratio:1.22', ''].join('\r\n');

describe('maxmemory policy parser', () => {
  it('reads the policy field', () => {
    expect(parseMaxmemoryPolicy(INFO_MEMORY)).toBe('allkeys-lru');
  });

  it('reads LF-only text', () => {
    expect(parseMaxmemoryPolicy('# Memory\nmaxmemory_policy:noeviction\n')).toBe('noeviction');
  });

  it('returns undefined without the field', () => {
    expect(parseMaxmemoryPolicy('# Memory\r\nused_memory:1\r\n')).toBeUndefined();
  });

  it('ignores a field that only ends alike', () => {
    expect(parseMaxmemoryPolicy('other_maxmemory_policy:volatile-lru\r\n')).toBeUndefined();
  });
});

describe('eviction policy check', () => {
  it('accepts noeviction', () => {
    expect(() => assertNoEviction('noeviction', 'redis://127.0.0.1:6379')).not.toThrow();
  });

  it('rejects an evicting policy', () => {
    expect(() => assertNoEviction('volatile-lru', 'redis://127.0.0.1:6379')).toThrow(/has maxmemory-policy volatile-lru, but the fleet needs noeviction.*--maxmemory-policy noeviction/);
  });

  it('rejects a missing policy', () => {
    expect(() => assertNoEviction(undefined, 'redis://127.0.0.1:6379')).toThrow(/does not report maxmemory_policy/);
  });
});

describe('Redis URL redaction', () => {
  it('hides the password', () => {
    expect(redactRedisUrl('redis://user:secret@127.0.0.1:6379/0')).toBe('redis://user:***@127.0.0.1:6379/0');
  });
});
