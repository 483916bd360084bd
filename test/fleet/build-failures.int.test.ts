import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES, buildFlowSpec, jobIds, mergeJobDataSchema, objectKeys, readManifest, runMergeJob, extractResultSchema, type CacheBuildRequest } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { submitCacheBuild } from '../../apps/coordinator/src/fleet/submit.js';
import { FleetRunFailedError, waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { RedisNamedLock } from '../../apps/worker/src/redis-lock.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { startFleetHarness, type FleetHarness } from './fleet-harness.js';

// Jobs lock for 5 s and get 2 attempts, so a held manifest lock exhausts a merge's attempts in
// about 10 s. Every other job here finishes well within its lock.
const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '5000', CACHEFLEET_STALLED_INTERVAL_MS: '5000', CACHEFLEET_JOB_ATTEMPTS: '2' };

describe('fleet cache builds', () => {
  let harness: FleetHarness;
  let resolver: BuildResolver;

  const buildRequest = (buildId: string, start: number, end: number): CacheBuildRequest => ({
    dataDir: cifar10Dir,
    split: 'test',
    recordRange: { start, end },
    shardRecords: 100,
    modelPath: resnet20Path,
    keyLayers: [49, 57, 64],
    includeMirrors: false,
    storageUrl: harness.storageUrl,
    buildId,
  });

  beforeAll(async () => {
    requireSharedData();
    harness = await startFleetHarness('builds', FLEET_ENV);
    harness.startWorkers(2);
    resolver = new BuildResolver((url) => harness.open(url), `${harness.tmpDir}/coordinator-store`, harness.logger);
  });

  afterAll(async () => {
    await harness?.stop();
  });

  it('joins a build re-added while running', async () => {
    const request = buildRequest('readd', 0, 600);
    const first = await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), request);
    const second = await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), request);
    await waitForJob(harness.client, QUEUE_NAMES.merge, first.mergeJobId, { timeoutMs: 120_000 });
    const third = await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), request);

    const store = await harness.open(harness.storageUrl);
    const objects = (await store.list('builds/readd/')).map((entry) => entry.key);
    const merge = await harness.client.getJob(QUEUE_NAMES.merge, first.mergeJobId);

    expect([first.status, second.status, third.status]).toEqual(['submitted', 'running', 'complete']);
    expect(objects.filter((key) => key.endsWith('.cfshard'))).toHaveLength(6);
    expect(objects.filter((key) => key.endsWith('manifest.json'))).toEqual(['builds/readd/manifest.json']);
    expect(await merge!.getDependenciesCount()).toMatchObject({ processed: 6, unprocessed: 0 });
  });

  it('writes one manifest under concurrent merges', async () => {
    const merge = await harness.client.getJob(QUEUE_NAMES.merge, jobIds.merge('readd'));
    const data = mergeJobDataSchema.parse(merge!.data);
    const extracts = Object.values(await merge!.getChildrenValues()).map((value) => extractResultSchema.parse(value));
    const store = await harness.open(harness.storageUrl);
    await store.delete(data.manifestKey);
    const lock = new RedisNamedLock(harness.client.redis, harness.prefix, { ttlMs: 10_000, waitMs: 10_000 });

    const results = await Promise.all([runMergeJob(data, extracts, { store, lock }), runMergeJob(data, extracts, { store, lock }), runMergeJob(data, extracts, { store, lock })]);
    const manifest = await readManifest(store, data.manifestKey);

    expect(results.map((result) => result.written).sort()).toEqual([false, false, true]);
    expect(new Set(results.map((result) => result.manifestSha256))).toEqual(new Set([manifest.sha256]));
    expect(manifest.manifest.shards).toHaveLength(6);
  });

  it('fails a run when a child fails', async () => {
    const build = await resolver.resolve(buildRequest('bad-child', 1000, 1800));
    // A dataset fingerprint no worker has: bad input, which must fail at once without retries.
    build.jobs.extracts[0].data.dataset.fingerprint = 'f'.repeat(64);
    await harness.client.addFlow(buildFlowSpec(build.jobs, harness.client.settings));

    const failure = await waitForJob(harness.client, QUEUE_NAMES.merge, jobIds.merge('bad-child'), { timeoutMs: 120_000 }).catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(FleetRunFailedError);
    expect((failure as FleetRunFailedError).message).toMatch(/failed because job extract-bad-child-1000-1100 \(extract\) failed after 1 attempt: KEY_STORE_MISMATCH: Dataset cifar10 test/);
  });

  it('removes waiting siblings of a failed child', async () => {
    const states: string[] = [];
    // The failure policy runs in the worker's 'failed' handler, shortly after the parent fails.
    for (let attempt = 0; attempt < 50; attempt += 1) {
      states.length = 0;
      for (let start = 1100; start < 1800; start += 100) {
        const job = await harness.client.getJob(QUEUE_NAMES.extract, jobIds.extract('bad-child', { start, end: start + 100 }));
        states.push(job === undefined ? 'removed' : await job.getState());
      }
      if (!states.some((state) => state === 'waiting' || state === 'active')) break;
      await sleep(100);
    }
    const store = await harness.open(harness.storageUrl);
    process.stderr.write(`siblings of the failed child: ${states.join(', ')}\n`);

    expect(states.filter((state) => state === 'removed').length).toBeGreaterThan(0);
    expect(states.filter((state) => state !== 'removed' && state !== 'completed')).toEqual([]);
    expect(await store.head(objectKeys.manifest('bad-child'))).toBeUndefined();
  });

  it('fails after the last attempt', async () => {
    // Another process holds the build's manifest lock, so every merge attempt times out on it.
    const lockKey = `${harness.prefix}:cachefleet-lock:manifest-stuck-lock`;
    await harness.client.redis.set(lockKey, 'held-by-test', 'PX', 120_000);
    try {
      const submission = await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), buildRequest('stuck-lock', 2000, 2200));
      const failure = await waitForJob(harness.client, QUEUE_NAMES.merge, submission.mergeJobId, { timeoutMs: 120_000 }).catch((error: unknown) => error);

      expect(failure).toBeInstanceOf(FleetRunFailedError);
      expect((failure as FleetRunFailedError).message).toMatch(/^Job merge-stuck-lock \(merge\) failed after 2 attempts: Lock .*manifest-stuck-lock stayed held by another process for 5000 ms/);
    } finally {
      await harness.client.redis.del(lockKey);
    }
  });
});
