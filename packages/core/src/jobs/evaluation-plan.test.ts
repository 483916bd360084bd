import { describe, expect, it } from 'vitest';

import { DEFAULT_QUERY_BLOCK_SIZE } from '../cache/index.js';
import type { RecordRange } from '../datasets/index.js';
import type { KeyStoreManifest } from '../store/key-store-manifest.js';
import type { ObjectStore } from '../storage/index.js';
import { groupShards, planEvaluation, sliceRows, sliceRowsInto } from './evaluation-plan.js';
import { evaluationRequestSchema, resolvedEvaluationSchema, type ResolvedEvaluation } from './evaluation-schemas.js';
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

  it('balances slices on block boundaries', () => {
    expect(sliceRows(10_000, 8192)).toEqual([
      { start: 0, end: 5120 },
      { start: 5120, end: 10_000 },
    ]);
  });

  it('cuts rows into a slice count', () => {
    expect(sliceRowsInto(10_000, 4).map((slice) => slice.start)).toEqual([0, 2560, 5120, 7680]);
  });

  it('stops at one slice per block', () => {
    expect(sliceRowsInto(600, 4)).toEqual([
      { start: 0, end: 512 },
      { start: 512, end: 600 },
    ]);
  });

  it('gives earlier slices the extra blocks', () => {
    expect(sliceRows(2600, 1024, 256).map((slice) => slice.end - slice.start)).toEqual([1024, 1024, 552]);
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

// Key stores of a small protocol: a train cache of 5 shards of 100 bytes, a validation store of
// 1,100 queries in one shard and a test store of 1,000 queries in two shards.
const DIM = 4;
const SHARD_BYTES = 100;

function manifest(id: string, split: 'train' | 'test', range: RecordRange, shardCounts: number[]): KeyStoreManifest {
  let start = range.start;
  const shards = shardCounts.map((count, i) => {
    const shardRange = { start, end: start + count };
    start += count;
    return { path: `builds/${id}/shards/keys-${i}.cfshard`, sha256: `${i}`.repeat(64), bytes: SHARD_BYTES, count, recordRange: shardRange };
  });
  return {
    kind: 'cachefleet-key-store',
    formatVersion: 1,
    id,
    createdAt: '2026-12-04T00:00:00.000Z',
    identity: {
      modelFingerprint: 'model',
      keyLayers: ['a'],
      preprocessingHash: 'pre',
      dataset: { name: 'cifar10', split, labelMode: 'fine', fingerprint: split },
      recordRange: range,
      includesMirrors: false,
      shardRecords: Math.max(...shardCounts),
    },
    model: { fingerprint: 'model', fileSha256: 'file', format: 'keras-h5', source: '/models/m.h5' },
    keyLayers: [{ index: 1, name: 'a', shape: [DIM] }],
    preprocessing: {
      version: 1,
      layout: 'NHWC',
      arithmetic: 'float32',
      height: 1,
      width: 1,
      channels: 1,
      scale: 255,
      standardization: { kind: 'per-pixel', ddof: 0, source: { dataset: 'cifar10', splits: [{ split: 'train', fingerprint: 'f'.repeat(64), size: 10 }], recordCount: 10 }, mean: [0.5], std: [0.25] },
    },
    dim: DIM,
    numClasses: 10,
    count: shardCounts.reduce((sum, count) => sum + count, 0),
    zeroKeyCount: 0,
    shards,
    extraction: { backend: 'onnx', engine: 'onnx', durationMs: 1 },
  };
}

/** Creates an in-memory object store with the manifests, which is all that planEvaluation reads. */
function manifestStore(manifests: KeyStoreManifest[]): ObjectStore {
  const objects = new Map(manifests.map((item) => [`builds/${item.id}/manifest.json`, Buffer.from(JSON.stringify(item))]));
  return {
    getBytes: async (key: string) => objects.get(key)!,
    describe: () => 'memory://plan-test',
  } as unknown as ObjectStore;
}

function evaluationOf(fields: Partial<ResolvedEvaluation>): ResolvedEvaluation {
  const store = (id: string) => ({ manifest: `builds/${id}/manifest.json`, reused: true });
  return resolvedEvaluationSchema.parse({
    storageUrl: 'file:///tmp/unused',
    evaluationId: 'e1',
    validation: { queries: store('validation'), cache: [store('train')] },
    test: { queries: store('test'), cache: [store('train'), store('validation')] },
    querySliceSize: 1024,
    shardGroupBytes: 2 * SHARD_BYTES,
    ...fields,
  });
}

describe('evaluation plan', () => {
  const store = manifestStore([
    manifest('train', 'train', { start: 0, end: 500 }, [100, 100, 100, 100, 100]),
    manifest('validation', 'train', { start: 500, end: 1600 }, [1100]),
    manifest('test', 'test', { start: 0, end: 1000 }, [500, 500]),
  ]);

  it('scores validation under a tune job', async () => {
    const plan = await planEvaluation(store, evaluationOf({}));

    expect(plan.tune?.jobId).toBe('tune-e1');
    expect(new Set(plan.evaluates.map((job) => job.data.role))).toEqual(new Set(['validation']));
    expect(plan.evaluates.every((job) => job.data.thetas.length === 33)).toBe(true);
    expect(plan.aggregate.data.tuneJobId).toBe('tune-e1');
    expect(plan.aggregate.data.testThetas).toBeUndefined();
  });

  it('leaves test thetas to the tune job', async () => {
    const plan = await planEvaluation(store, evaluationOf({}));

    expect(plan.tune!.data.testJobs.map((job) => 'thetas' in job.data)).not.toContain(true);
    expect(plan.tune!.data.testJobs.map((job) => job.data.role)).not.toContain('validation');
    expect(plan.evaluateJobCount).toBe(plan.evaluates.length + plan.tune!.data.testJobs.length);
  });

  it('cuts the last group finer', async () => {
    const plan = await planEvaluation(store, evaluationOf({}));
    const jobs = plan.evaluates.map((job) => `s${job.data.cache.shards.map((shard) => shard.index).join('.')} q${job.data.queries.rowRange.start}-${job.data.queries.rowRange.end}`);

    // 1,100 queries in slices of at most 1,024 are [0, 1024) and [1024, 1100). The last group
    // (shard 4) gets 3 slices instead of 4, because the queries fill only 3 blocks of 512.
    expect(jobs).toEqual(['s0.1 q0-1024', 's0.1 q1024-1100', 's2.3 q0-1024', 's2.3 q1024-1100', 's4 q0-512', 's4 q512-1024', 's4 q1024-1100']);
  });

  it('adds test jobs directly when fixed', async () => {
    const plan = await planEvaluation(store, evaluationOf({ validation: undefined, theta: 50, lambda: 0.5, thetaCacheOnly: 40 }));

    expect(plan.tune).toBeUndefined();
    expect(plan.aggregate.data.testThetas).toEqual([50, 40]);
    expect(new Set(plan.evaluates.map((job) => job.data.thetas.join(',')))).toEqual(new Set(['50,40']));
    expect(plan.evaluates.map((job) => job.data.role)).not.toContain('validation');
  });

  it('scores one theta when both are equal', async () => {
    const plan = await planEvaluation(store, evaluationOf({ validation: undefined, theta: 50, lambda: 0.5, thetaCacheOnly: 50 }));

    expect(plan.aggregate.data.testThetas).toEqual([50]);
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

    expect([parsed.querySliceSize, parsed.shardGroupBytes, parsed.allowOverlap, parsed.limit]).toEqual([32 * DEFAULT_QUERY_BLOCK_SIZE, 1024 ** 3, false, null]);
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
