import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { objectKeys } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { FleetRunFailedError } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { requireSharedData } from '../support/shared.js';
import { startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';
import { buildIdsOf, finishSmallRun, submitSmallRun } from './support/small-run.js';

// Two attempts with a short lock: a merge that cannot take its manifest lock fails after about
// 2 × 2 s, and a job whose worker dies twice fails at its third start (maxStalledCount 1).
const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000', CACHEFLEET_JOB_ATTEMPTS: '2', CACHEFLEET_MAX_STALLED_COUNT: '1' };
// Maximum time a failing run may take here to report its failure. Without a failure policy it would wait forever.
const FAILURE_REPORTED_WITHIN_MS = 60_000;

describe('a child that keeps failing', () => {
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  const figures: Record<string, number | string> = {};

  beforeAll(async () => {
    requireSharedData();
    fleet = await startReliabilityFleet({ label: 'failing-child', fleetEnv: FLEET_ENV });
    fleet.startWorkers(2);
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);
  }, 120_000);

  afterAll(async () => {
    process.stderr.write(`failing child: ${JSON.stringify(figures)}\n`);
    await fleet?.stop();
  });

  it('fails run after merge attempts', async () => {
    // Another process holds the cache build's manifest lock, so every attempt of its merge times out.
    const lockKey = `${fleet.prefix}:cachefleet-lock:manifest-${buildIdsOf('stuck').cache}`;
    await fleet.client.redis.set(lockKey, 'held-by-test', 'PX', 120_000);
    try {
      const started = Date.now();
      const submission = await submitSmallRun(fleet, resolver, 'stuck');
      const failure = await finishSmallRun(fleet, submission, FAILURE_REPORTED_WITHIN_MS).catch((error: unknown) => error);
      figures.mergeFailureReportedMs = Date.now() - started;
      figures.mergeFailure = String(failure);

      expect(failure).toBeInstanceOf(FleetRunFailedError);
      expect((failure as Error).message).toMatch(/^Job plan-stuck \(plan-evaluation\) failed because job merge-stuck-cache \(merge\) failed after 2 attempts: Lock .*manifest-stuck-cache stayed held by another process for 2000 ms/);
      expect(await (await fleet.open(fleet.storageUrl)).head(objectKeys.report('stuck'))).toBeUndefined();
    } finally {
      await fleet.client.redis.del(lockKey);
    }
  });

  it('fails run of crashing job', async () => {
    const started = Date.now();
    const submission = await submitSmallRun(fleet, resolver, 'crashing');

    // The evaluate job "crashes" its worker twice: maxStalledCount 1 allows one stall, not two.
    for (let crash = 1; crash <= 2; crash += 1) {
      const line = await fleet.waitForLine((entry) => entry.msg === 'job started' && entry.jobId?.startsWith('evaluate-crashing-') === true && fleet.workerRunning(entry.jobId) !== undefined, 120_000);
      fleet.workerRunning(line.jobId!)!.child.kill('SIGKILL');
      fleet.startWorkers(1);
      await fleet.waitForLine((entry) => entry.msg === 'worker started' && entry.time > line.time, 60_000);
    }
    const failure = await finishSmallRun(fleet, submission, FAILURE_REPORTED_WITHIN_MS).catch((error: unknown) => error);
    figures.crashFailureReportedMs = Date.now() - started;
    figures.crashFailure = String(failure);

    expect(failure).toBeInstanceOf(FleetRunFailedError);
    expect((failure as Error).message).toMatch(/^Job aggregate-crashing \(aggregate\) failed because job evaluate-crashing-\S+ \(evaluate\) failed after \d+ attempts?: job stalled more than allowable limit/);
    expect((failure as Error).message).toContain("Its worker died or stopped renewing the job's lock 2 times.");
    expect(await (await fleet.open(fleet.storageUrl)).head(objectKeys.report('crashing'))).toBeUndefined();
  });
});
