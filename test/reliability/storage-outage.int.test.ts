import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { requireSharedData } from '../support/shared.js';
import { pollUntil, startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';
import { buildIdsOf, comparableRun, finishSmallRun, runSmall, submitSmallRun, type SmallRunResult } from './support/small-run.js';

// The outage the fleet must ride out: shorter than the S3 store's 60 s retry budget per request.
const OUTAGE_MS = 30_000;
const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000' };

describe('object storage unreachable for 30 seconds during writes', () => {
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let reference: SmallRunResult;
  let result: SmallRunResult;
  const figures: Record<string, unknown> = {};

  beforeAll(async () => {
    requireSharedData();
    // Workers reach s3rver only through the proxy, while the coordinator and the test connect directly.
    fleet = await startReliabilityFleet({ label: 'outage', fleetEnv: FLEET_ENV, proxyWorkerStorage: true });
    fleet.startWorkers(2);
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);
    reference = await runSmall(fleet, resolver, 'reference');

    const proxy = fleet.proxy!;
    const retriesBefore = fleet.allLines().length;
    const submission = await submitSmallRun(fleet, resolver, 'outage');

    // The cut comes as soon as the first request that writes the cache shard reaches the proxy.
    const shardPath = `/fleet/builds/${buildIdsOf('outage').cache}/shards/`;
    await pollUntil(async () => proxy.requests.find((request) => request.method !== 'GET' && request.method !== 'HEAD' && request.target.includes(shardPath)), 120_000, 'the first write of the cache shard', 2);
    await proxy.cut();
    const cutAt = Date.now();
    await sleep(OUTAGE_MS);
    await proxy.restore();
    const restoredAt = Date.now();

    result = await finishSmallRun(fleet, submission);
    const retries = fleet.allLines().slice(retriesBefore).filter((line) => line.msg === 'S3 request failed, retrying');
    const extractJobs = await fleet.client.queue(QUEUE_NAMES.extract).getJobs(['completed']);
    Object.assign(figures, {
      outageMs: restoredAt - cutAt,
      completedAfterRestoreMs: Date.now() - restoredAt,
      retryLines: retries.length,
      retriedOperations: [...new Set(retries.map((line) => line.operation as string))].sort(),
      maxRetryElapsedMs: Math.max(0, ...retries.map((line) => Number(line.elapsedMs))),
      extractAttempts: extractJobs.filter((job) => job.id?.includes('-outage-') === true).map((job) => job.attemptsMade),
      writeRequestsRetried: retries.filter((line) => ['PutObject', 'CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload'].includes(line.operation as string)).length,
    });
  }, 400_000);

  afterAll(async () => {
    process.stderr.write(`storage outage: ${JSON.stringify(figures)}\n`);
    await fleet?.stop();
  });

  it('retries writes during outage', () => {
    expect(figures.writeRequestsRetried).toBeGreaterThan(0);
    expect(figures.maxRetryElapsedMs).toBeGreaterThanOrEqual(OUTAGE_MS - 5_000);
  });

  it('completes without job retries', () => {
    // The storage layer's own retries cover the outage, so no job needed a second attempt.
    expect((figures.extractAttempts as number[]).every((attempts) => attempts === 1)).toBe(true);
  });

  it('completes identical to fault-free run', () => {
    expect(comparableRun(result)).toEqual(comparableRun(reference));
  });
});
