import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES, jobIds, objectKeys, readManifest, verifyShardObject, type CacheBuildRequest, type ObjectStore } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { submitCacheBuild, submitEvaluation } from '../../apps/coordinator/src/fleet/submit.js';
import { FleetRunFailedError, waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';
import { KEY_LAYERS, buildIdsOf, comparableManifest, comparableRun, finishSmallRun, runSmall, smallRunRequest, type SmallRunResult } from './support/small-run.js';

const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000' };
const RANGE = { start: 1000, end: 1200 };
const SHARD_RECORDS = 100;

describe('corrupted or truncated shards', () => {
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let store: ObjectStore;
  let referenceRun: SmallRunResult;

  const buildRequest = (buildId: string): CacheBuildRequest => ({
    dataDir: cifar10Dir,
    split: 'test',
    recordRange: RANGE,
    shardRecords: SHARD_RECORDS,
    modelPath: resnet20Path,
    keyLayers: KEY_LAYERS,
    statisticsSplits: ['test'],
    includeMirrors: false,
    storageUrl: fleet.storageUrl,
    buildId,
  });

  beforeAll(async () => {
    requireSharedData();
    fleet = await startReliabilityFleet({ label: 'corrupt', fleetEnv: FLEET_ENV });
    // Without a shard cache every evaluate job reads its shards from storage, so damage done
    // after an earlier read is seen. A cached shard is the undamaged copy with the same SHA-256.
    fleet.startWorkers(2, { CACHEFLEET_SHARD_CACHE_BYTES: '1' });
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);
    store = await fleet.open(fleet.storageUrl);
    referenceRun = await runSmall(fleet, resolver, 'reference');
  }, 300_000);

  afterAll(async () => {
    await fleet?.stop();
  });

  /**
   * Submits a build with its merge queue paused, waits for every shard, damages one, and lets
   * the merge run. Returns the failure of the merge job.
   */
  async function buildWithDamagedShard(buildId: string, damage: (bytes: Uint8Array) => Uint8Array): Promise<{ failure: unknown; shardKey: string }> {
    const merges = fleet.client.queue(QUEUE_NAMES.merge);
    await merges.pause();
    try {
      const submission = await submitCacheBuild(fleet.client, resolver, (url) => fleet.open(url), buildRequest(buildId));
      for (let start = RANGE.start; start < RANGE.end; start += SHARD_RECORDS) {
        const jobId = jobIds.extract(buildId, { start, end: start + SHARD_RECORDS });
        await waitForJob(fleet.client, QUEUE_NAMES.extract, jobId, { timeoutMs: 120_000, pollMs: 100 });
      }
      const shardKey = objectKeys.shard(buildId, { start: RANGE.start, end: RANGE.start + SHARD_RECORDS });
      const damaged = damage(await store.getBytes(shardKey));
      await store.put(shardKey, damaged, { contentLength: damaged.length });

      await merges.resume();
      const failure = await waitForJob(fleet.client, QUEUE_NAMES.merge, submission.mergeJobId, { timeoutMs: 120_000, pollMs: 100 }).catch((error: unknown) => error);
      return { failure, shardKey };
    } finally {
      await merges.resume();
    }
  }

  it('fails merge of flipped shard', async () => {
    const { failure, shardKey } = await buildWithDamagedShard('flipped', flipMiddleByte);

    expect(failure).toBeInstanceOf(FleetRunFailedError);
    expect((failure as Error).message).toContain('failed after 1 attempt: CHECKSUM_MISMATCH: Shard');
    expect((failure as Error).message).toContain(shardKey);
    expect(await store.head(objectKeys.manifest('flipped'))).toBeUndefined();
  });

  it('fails merge of truncated shard', async () => {
    const { failure, shardKey } = await buildWithDamagedShard('truncated', (bytes) => bytes.subarray(0, Math.floor(bytes.length / 2)));

    expect(failure).toBeInstanceOf(FleetRunFailedError);
    expect((failure as Error).message).toMatch(/failed after 1 attempt: KEY_STORE_CORRUPT: Shard .* is \d+ bytes, but its extract job wrote \d+/);
    expect((failure as Error).message).toContain(shardKey);
    expect(await store.head(objectKeys.manifest('truncated'))).toBeUndefined();
  });

  it('rebuilds damaged shard on resubmission', async () => {
    const clean = await submitCacheBuild(fleet.client, resolver, (url) => fleet.open(url), buildRequest('clean'));
    await waitForJob(fleet.client, QUEUE_NAMES.merge, clean.mergeJobId, { timeoutMs: 120_000 });

    // The failed merge and its children are removed, and the build runs again from its extracts.
    const again = await submitCacheBuild(fleet.client, resolver, (url) => fleet.open(url), buildRequest('flipped'));
    await waitForJob(fleet.client, QUEUE_NAMES.merge, again.mergeJobId, { timeoutMs: 120_000 });
    const rebuilt = await readManifest(store, objectKeys.manifest('flipped'));
    const reference = await readManifest(store, objectKeys.manifest('clean'));

    expect(again.status).toBe('submitted');
    expect(comparableManifest(rebuilt.manifest)).toEqual(comparableManifest(reference.manifest));
  });

  it('fails evaluation of damaged shard', async () => {
    const ids = buildIdsOf('reference');
    const shardKey = referenceRun.manifests.cache.shards[0].path;
    const original = await store.getBytes(shardKey);
    await store.put(shardKey, flipMiddleByte(original), { contentLength: original.length });

    const request = {
      storageUrl: fleet.storageUrl,
      evaluationId: 'after-damage',
      test: { queries: { manifest: objectKeys.manifest(ids.queries), role: 'test' }, cache: [{ manifest: objectKeys.manifest(ids.cache), role: 'train' }] },
      theta: 50,
      lambda: 0.5,
      thetaCacheOnly: 50,
    };
    const submission = await submitEvaluation(fleet.client, resolver, (url) => fleet.open(url), request);
    const failure = await waitForJob(fleet.client, QUEUE_NAMES.aggregate, submission.aggregateJobId, { timeoutMs: 120_000, pollMs: 100 }).catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(FleetRunFailedError);
    expect((failure as Error).message).toContain('(evaluate) failed after 1 attempt: CHECKSUM_MISMATCH: Shard');
    expect((failure as Error).message).toContain(shardKey);
    expect((failure as Error).message).toContain(`delete ${objectKeys.manifest(ids.cache)}`);
    expect(await store.head(submission.reportKey)).toBeUndefined();
  });

  it('rebuilds store after manifest deletion', async () => {
    // The advice of the failure above: delete the manifest and submit the build again.
    const ids = buildIdsOf('reference');
    await store.delete(objectKeys.manifest(ids.cache));
    const submission = await submitEvaluation(fleet.client, resolver, (url) => fleet.open(url), smallRunRequest(fleet.storageUrl, 'after-rebuild', undefined, ids));
    const rebuilt = await finishSmallRun(fleet, submission);

    expect(submission.builds.map((build) => build.status).sort()).toEqual(['complete', 'submitted']);
    expect(comparableRun(rebuilt)).toEqual(comparableRun(referenceRun));
    for (const shard of rebuilt.manifests.cache.shards) {
      await expect(verifyShardObject(store, { key: shard.path, sha256: shard.sha256, bytes: shard.bytes })).resolves.toBeDefined();
    }
  });
});

function flipMiddleByte(bytes: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(bytes);
  const middle = Math.floor(copy.length / 2);
  copy[middle] = copy[middle] ^ 0xff;
  return copy;
}
