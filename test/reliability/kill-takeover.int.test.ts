import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { requireSharedData } from '../support/shared.js';
import { pollUntil, startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';
import { comparableRun, finishSmallRun, runSmall, seededRandom, submitSmallRun, summarize, type SmallRunResult, type SmallRunShape } from './support/small-run.js';

// Kill runs in total, half of them in extract jobs and half in evaluate jobs. Raise it with
// CACHEFLEET_TEST_KILL_RUNS for a longer soak. CACHEFLEET_TEST_KILL_SEED replays a schedule.
const KILL_RUNS = Number(process.env.CACHEFLEET_TEST_KILL_RUNS ?? 20);
const SEED = Number(process.env.CACHEFLEET_TEST_KILL_SEED ?? 20261204);

// Short locks, equal for every worker, so that a killed worker's job is found quickly.
const LOCK_DURATION_MS = 2_000;
const STALLED_INTERVAL_MS = 1_000;
// Allowance on top of lockDuration + stalledInterval for timers and event loops that run late
// on a loaded 2-core machine, and for the 20 ms polling of the job's state.
const TAKEOVER_MARGIN_MS = 2_000;
const TAKEOVER_BOUND_MS = LOCK_DURATION_MS + STALLED_INTERVAL_MS + TAKEOVER_MARGIN_MS;
// A kill that lands after the job finished is drawn again, at most this many times per run.
const MAX_MISSES_PER_RUN = 5;
// 200 cache records with mirror images (400 keys, one shard) and 128 queries: one extract job of
// about a second on a loaded 2-core machine, and one evaluate job of a few hundred milliseconds.
const SHAPE: SmallRunShape = { cache: { start: 0, end: 200 }, queries: { start: 200, end: 328 }, shardRecords: 200 };

type Target = 'extract' | 'evaluate';

interface KillRecord {
  runId: string;
  target: Target;
  jobId: string;
  delayMs: number;
  takeoverMs: number;
  stalledCounter: number;
  misses: number;
}

describe('SIGKILL of a worker in the middle of a job', () => {
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let reference: SmallRunResult;
  let warmUp: SmallRunResult;
  const durationsMs: Record<Target, number> = { extract: 0, evaluate: 0 };
  const records: KillRecord[] = [];
  const random = seededRandom(SEED);

  beforeAll(async () => {
    requireSharedData();
    fleet = await startReliabilityFleet({
      label: 'kill',
      fleetEnv: { CACHEFLEET_LOCK_DURATION_MS: String(LOCK_DURATION_MS), CACHEFLEET_STALLED_INTERVAL_MS: String(STALLED_INTERVAL_MS) },
    });
    fleet.startWorkers(2);
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);

    // The first run loads models on both workers. The second is the fault-free reference, and
    // its job durations bound the random kill delays.
    warmUp = await runSmall(fleet, resolver, 'warmup', SHAPE);
    reference = await runSmall(fleet, resolver, 'reference', SHAPE);
    durationsMs.extract = completedDuration(fleet, 'extract-reference-cache');
    durationsMs.evaluate = completedDuration(fleet, 'evaluate-reference-');
  }, 300_000);

  afterAll(async () => {
    if (records.length > 0) {
      const summary = (target: Target) => summarize(records.filter((record) => record.target === target).map((record) => record.takeoverMs));
      process.stderr.write(
        `kill takeover (seed ${SEED}, bound ${TAKEOVER_BOUND_MS} ms, reference job durations ${JSON.stringify(durationsMs)} ms): ` +
          `extract ${JSON.stringify(summary('extract'))}, evaluate ${JSON.stringify(summary('evaluate'))}, ` +
          `all ${JSON.stringify(summarize(records.map((record) => record.takeoverMs)))}, ` +
          `redrawn kills ${records.reduce((sum, record) => sum + record.misses, 0)}\n`,
      );
    }
    await fleet?.stop();
  });

  it('runs fault-free twice identically', () => {
    expect(comparableRun(warmUp)).toEqual(comparableRun(reference));
  });

  /**
   * Runs one small run with one SIGKILL. It waits until the target job starts, waits a random part
   * of its reference duration, kills the worker running it and starts a replacement. The job must
   * be active again on another worker within the bound, and the run must equal the reference.
   */
  async function runWithKill(runIndex: number, target: Target): Promise<KillRecord> {
    for (let misses = 0; misses <= MAX_MISSES_PER_RUN; misses += 1) {
      const runId = `kill${runIndex}-${misses}`;
      const jobPrefix = target === 'extract' ? `extract-${runId}-cache-` : `evaluate-${runId}-`;
      const submission = await submitSmallRun(fleet, resolver, runId, SHAPE);

      const started = await fleet.waitForLine((line) => line.msg === 'job started' && line.jobId?.startsWith(jobPrefix) === true, 120_000);
      const jobId = started.jobId!;
      const delayMs = Math.round(random() * durationsMs[target]);
      await sleep(delayMs);

      const victim = fleet.workerRunning(jobId);
      const queue = fleet.client.queue(target === 'extract' ? QUEUE_NAMES.extract : QUEUE_NAMES.evaluate);
      const before = await Job.fromId(queue, jobId);
      if (victim === undefined || before === undefined || (await before.getState()) !== 'active') {
        // The job finished before the kill: this run has no fault. Draw again with a new run.
        await finishSmallRun(fleet, submission);
        continue;
      }

      victim.child.kill('SIGKILL');
      const killedAt = Date.now();
      // The replacement keeps two workers alive, so that one is free to take the job over.
      fleet.startWorkers(1);

      const activeAgain = await pollUntil(
        async () => {
          const job = await Job.fromId(queue, jobId);
          return job !== undefined && job.processedOn !== undefined && job.processedOn > killedAt ? job : undefined;
        },
        60_000,
        `job ${jobId} to become active again after the kill`,
        20,
      );
      const result = await finishSmallRun(fleet, submission);
      const completedByVictim = victim.lines.some((line) => line.jobId === jobId && line.msg === 'job completed');

      expect(completedByVictim, `worker ${victim.pid} finished ${jobId} before the kill reached it`).toBe(false);
      expect(comparableRun(result)).toEqual(comparableRun(reference));
      const after = await Job.fromId(queue, jobId);
      return { runId, target, jobId, delayMs, takeoverMs: activeAgain.processedOn! - killedAt, stalledCounter: after?.stalledCounter ?? -1, misses };
    }
    throw new Error(`Every one of ${MAX_MISSES_PER_RUN + 1} kills of a ${target} job came after the job had finished; the reference duration (${durationsMs[target]} ms) is too short to aim at.`);
  }

  for (const target of ['extract', 'evaluate'] as const) {
    it(`takes over ${target} jobs within bound`, async () => {
      const runs = target === 'extract' ? Math.ceil(KILL_RUNS / 2) : Math.floor(KILL_RUNS / 2);
      for (let i = 0; i < runs; i += 1) {
        const record = await runWithKill(records.length, target);
        records.push(record);
        process.stderr.write(`kill ${record.runId}: ${record.target} ${record.jobId} after ${record.delayMs} ms, active again after ${record.takeoverMs} ms\n`);

        expect(record.takeoverMs).toBeLessThanOrEqual(TAKEOVER_BOUND_MS);
        expect(record.stalledCounter).toBe(1);
      }
    }, 30 * 60_000);
  }
});

/** Returns the duration of the completed job whose id starts with `jobIdPrefix`, from its worker's log line. */
function completedDuration(fleet: ReliabilityFleet, jobIdPrefix: string): number {
  const line = fleet.allLines().find((entry) => entry.msg === 'job completed' && entry.jobId?.startsWith(jobIdPrefix) === true);
  if (line === undefined || typeof line.durationMs !== 'number') throw new Error(`No completed job ${jobIdPrefix}… in the worker logs.`);
  return line.durationMs;
}
