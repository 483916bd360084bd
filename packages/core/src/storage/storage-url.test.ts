import { describe, expect, it } from 'vitest';

import { parseStorageUrl, validateBucketName } from './storage-url.js';

describe('parseStorageUrl', () => {
  it.each([
    ['file:///srv/cache', { kind: 'file', root: '/srv/cache' }],
    ['file:///srv/cache/', { kind: 'file', root: '/srv/cache' }],
    ['/srv/cache', { kind: 'file', root: '/srv/cache' }],
    ['cache/run-1', { kind: 'file', root: '/work/run/cache/run-1' }],
    ['./cache', { kind: 'file', root: '/work/run/cache' }],
    ['s3://shards', { kind: 's3', bucket: 'shards', prefix: '' }],
    ['s3://shards/', { kind: 's3', bucket: 'shards', prefix: '' }],
    ['s3://shards/runs/2026-12', { kind: 's3', bucket: 'shards', prefix: 'runs/2026-12/' }],
    ['s3://shards/runs/2026-12/', { kind: 's3', bucket: 'shards', prefix: 'runs/2026-12/' }],
    ['s3://my.bucket-1/a%20b', { kind: 's3', bucket: 'my.bucket-1', prefix: 'a b/' }],
  ])('parses %j', (url, expected) => {
    expect(parseStorageUrl(url, '/work/run')).toEqual(expected);
  });

  it.each([
    ['', 'empty'],
    ['http://example.invalid/bucket', 'scheme is not supported'],
    ['gs://bucket/prefix', 'scheme is not supported'],
    ['s3://Upper_Case/x', 'Bucket name'],
    ['s3://ab/x', 'Bucket name'],
    ['s3://192.168.1.1/x', 'Bucket name'],
    ['s3://bucket/a/../b', '".." segment'],
    ['s3://bucket/x?versionId=1', 'query string'],
    ['s3://bucket:9000/x', 'port'],
    ['file://remote-host/srv', 'not a local file URL'],
  ])('rejects %j', (url, reason) => {
    expect(() => parseStorageUrl(url, '/work/run')).toThrow(reason);
  });

  it('hides credentials in errors', () => {
    const parse = () => parseStorageUrl('s3://AKIAEXAMPLE:very-secret@bucket/prefix');

    expect(parse).toThrow('contains credentials');
    expect(parse).not.toThrow('very-secret');
  });

  it('hides credentials of other schemes', () => {
    const parse = () => parseStorageUrl('https://user:very-secret@example.invalid/x');

    expect(parse).toThrow('scheme is not supported');
    expect(parse).not.toThrow('very-secret');
  });
});

describe('validateBucketName', () => {
  it.each(['abc', 'cachefleet-test-01', 'a.b.c', 'x'.repeat(63)])('accepts %j', (bucket) => {
    expect(() => validateBucketName(bucket)).not.toThrow();
  });

  it.each(['ab', 'x'.repeat(64), '-abc', 'abc-', 'a..b', 'ABC', 'a_b', '10.0.0.1'])('rejects %j', (bucket) => {
    expect(() => validateBucketName(bucket)).toThrow('is invalid');
  });
});
