import { describe, expect, it } from 'vitest';

import { DEFAULT_QUERY_BLOCK_SIZE } from '../cache/index.js';
import { groupShards, sliceRows } from './evaluation-plan.js';
import { evaluationRequestSchema } from './evaluation-schemas.js';
import { readFleetSettings } from './fleet-config.js';
import { fleetIdSchema, jobIds, objectKeys } from './names.js';

describe('query slices', () => {
  it('cuts rows into whole slices', () => {
    expect(sliceRows(1000, 512)).toEqual([
      { start: 0, end: 512 },
      { start: 512, end: 1000 },
    ]);
  });

  it('keeps a short set whole', () => {
    expect(sliceRows(100, 512)).toEqual([{ start: 0, end: 100 }]);
  });
});

describe('shard groups', () => {
  const shards = [30, 30, 30, 80, 10, 10].map((bytes, index) => ({ index, bytes }));

  it('groups consecutive shards within the budget', () => {
    expect(groupShards(shards, 60).map((group) => group.map((shard) => shard.index))).toEqual([[0, 1], [2], [3], [4, 5]]);
  });

  it('puts an oversized shard alone', () => {
    expect(groupShards(shards, 20).map((group) => group.length)).toEqual([1, 1, 1, 1, 2]);
  });
});

describe('evaluation request schema', () => {
  const base = { storageUrl: 's3://bucket/fleet', test: { queries: { manifest: 'builds/q/manifest.json' }, cache: [{ manifest: 'builds/c/manifest.json' }] } };

  it('rejects a slice off the query blocks', () => {
    const parsed = evaluationRequestSchema.safeParse({ ...base, querySliceSize: DEFAULT_QUERY_BLOCK_SIZE + 1 });

    expect(parsed.success).toBe(false);
    expect(JSON.stringify(parsed.error?.issues)).toMatch(/multiple of the scoring query block size/);
  });

  it('fills the defaults', () => {
    const parsed = evaluationRequestSchema.parse(base);

    expect([parsed.querySliceSize, parsed.shardGroupBytes, parsed.allowOverlap, parsed.limit]).toEqual([16 * DEFAULT_QUERY_BLOCK_SIZE, 1024 ** 3, false, null]);
  });
});

describe('fleet ids and keys', () => {
  it('rejects ids BullMQ cannot use', () => {
    expect(fleetIdSchema.safeParse('a:b').success).toBe(false);
    expect(fleetIdSchema.safeParse('12345').success).toBe(false);
    expect(fleetIdSchema.safeParse('build-1').success).toBe(true);
  });

  it('derives keys from the range only', () => {
    expect(objectKeys.shard('b1', { start: 0, end: 250 })).toBe('builds/b1/shards/keys-0-250.cfshard');
    expect(jobIds.extract('b1', { start: 0, end: 250 })).toBe('extract-b1-0-250');
  });
});

describe('fleet settings', () => {
  it('reads settings from the environment', () => {
    expect(readFleetSettings({ CACHEFLEET_LOCK_DURATION_MS: '5000', CACHEFLEET_JOB_ATTEMPTS: '2' })).toMatchObject({ lockDuration: 5000, attempts: 2, stalledInterval: 30_000 });
  });

  it('rejects a non-number', () => {
    expect(() => readFleetSettings({ CACHEFLEET_JOB_ATTEMPTS: 'three' })).toThrow(/CACHEFLEET_JOB_ATTEMPTS="three" is not a number/);
  });

  it('rejects a lock below one second', () => {
    expect(() => readFleetSettings({ CACHEFLEET_LOCK_DURATION_MS: '10' })).toThrow(/Fleet settings from the environment are invalid/);
  });
});
