import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { requireSharedData } from '../support/shared.js';
import { hasRedisServer, startPrivateRedis, type PrivateRedis } from './support/private-redis.js';
import { startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';
import { comparableRun, finishSmallRun, runSmall, submitSmallRun, type SmallRunResult } from './support/small-run.js';

// Redis stays down longer than a job lock (2 s), so every active job's lock has expired when
// Redis is back, and the stalled-job check hands those jobs to a worker again.
const DOWNTIME_MS = 3_000;
const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000' };

interface RestartRecord {
  stage: string;
  downtimeMs: number;
  /** From the restart until the run's report was read. */
  completedAfterRestartMs: number;
  redisErrorLines: number;
  stalledJobs: number;
}

describe.skipIf(!hasRedisServer)('Redis restarted during a run', () => {
  let redis: PrivateRedis;
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let reference: SmallRunResult;
  const records: RestartRecord[] = [];

  beforeAll(async () => {
    requireSharedData();
    // A private redis-server with an append-only file: the shared Redis is never restarted.
    redis = await startPrivateRedis({ appendOnly: true });
    fleet = await startReliabilityFleet({ label: 'redis-restart', redisUrl: redis.url, fleetEnv: FLEET_ENV });
    fleet.startWorkers(2);
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);
    reference = await runSmall(fleet, resolver, 'reference');
  }, 300_000);

  afterAll(async () => {
    process.stderr.write(`redis restart: ${JSON.stringify(records)}\n`);
    await fleet?.stop();
    await redis?.dispose();
  });

  /** Runs one small run and restarts Redis once the first job of `jobIdPrefix` has started. */
  async function runWithRestart(runId: string, jobIdPrefix: string): Promise<{ result: SmallRunResult; record: RestartRecord }> {
    const errorLinesBefore = countLines(fleet, 'Redis connection error');
    const submission = await submitSmallRun(fleet, resolver, runId);
    await fleet.waitForLine((line) => line.msg === 'job started' && line.jobId?.startsWith(jobIdPrefix) === true, 120_000);

    await redis.stop();
    const stoppedAt = Date.now();
    await sleep(DOWNTIME_MS);
    await redis.start();
    const restartedAt = Date.now();

    const result = await finishSmallRun(fleet, submission);
    const stalled = await Promise.all(
      (['extract', 'merge', 'plan-evaluation', 'evaluate', 'aggregate'] as const).map(async (queue) => {
        const jobs = await fleet.client.queue(queue).getJobs(['completed']);
        return jobs.filter((job) => job.id?.includes(runId) === true && job.stalledCounter > 0).length;
      }),
    );
    const record = {
      stage: jobIdPrefix.split('-')[0],
      downtimeMs: restartedAt - stoppedAt,
      completedAfterRestartMs: Date.now() - restartedAt,
      redisErrorLines: countLines(fleet, 'Redis connection error') - errorLinesBefore,
      stalledJobs: stalled.reduce((sum, count) => sum + count, 0),
    };
    records.push(record);
    return { result, record };
  }

  it('completes run restarted during extraction', async () => {
    const { result, record } = await runWithRestart('during-extract', 'extract-during-extract-cache-');

    expect(comparableRun(result)).toEqual(comparableRun(reference));
    expect(record.redisErrorLines).toBeGreaterThan(0);
  });

  it('completes run restarted during scoring', async () => {
    const { result, record } = await runWithRestart('during-evaluate', 'evaluate-during-evaluate-');

    expect(comparableRun(result)).toEqual(comparableRun(reference));
    expect(record.redisErrorLines).toBeGreaterThan(0);
  });

  it('keeps every worker running', () => {
    expect(fleet.liveWorkers()).toHaveLength(2);
  });
});

function countLines(fleet: ReliabilityFleet, msg: string): number {
  return fleet.allLines().filter((line) => line.msg === msg).length;
}
