import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { requireSharedData } from '../support/shared.js';
import { startReliabilityFleet, stopWorker, type FleetWorker, type ReliabilityFleet, type WorkerLogLine } from './support/reliability-fleet.js';
import { comparableRun, finishSmallRun, runSmall, submitSmallRun, type SmallRunResult } from './support/small-run.js';

const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000' };
// Allowed delay of the release of an active job after the deadline, which covers one pass of the
// event loop and a Redis round trip per job. Under a load average of 12 on 2 cores, the release
// came 767 ms after a 500 ms deadline.
const RELEASE_MARGIN_MS = 2_000;

interface StopRecord {
  case: string;
  deadlineMs: number;
  exitCode: number | null;
  /** From SIGTERM to the line that finished or released the active job. */
  jobSettledAfterMs: number;
  exitedAfterMs: number;
}

describe('SIGTERM during a job', () => {
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let reference: SmallRunResult;
  const records: StopRecord[] = [];

  beforeAll(async () => {
    requireSharedData();
    fleet = await startReliabilityFleet({ label: 'sigterm', fleetEnv: FLEET_ENV });
    const [first] = fleet.startWorkers(1);
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);
    reference = await runSmall(fleet, resolver, 'reference');
    await stopWorker(first, 30_000);
  }, 300_000);

  afterAll(async () => {
    process.stderr.write(`sigterm: ${JSON.stringify(records)}\n`);
    await fleet?.stop();
  });

  /**
   * Starts one worker with the given deadline, submits a run, and sends SIGTERM once the job
   * `jobIdPrefix` is active. Then starts a second worker, which must complete the run, and stops it.
   */
  async function stopDuringJob(runId: string, jobIdPrefix: string, deadlineMs: number, delayMs: number) {
    const [worker] = fleet.startWorkers(1, { CACHEFLEET_SHUTDOWN_DEADLINE_MS: String(deadlineMs) });
    const submission = await submitSmallRun(fleet, resolver, runId);
    const started = await waitForOwnLine(worker, (line) => line.msg === 'job started' && line.jobId?.startsWith(jobIdPrefix) === true);
    await sleep(delayMs);

    worker.child.kill('SIGTERM');
    const signalledAt = Date.now();
    const { code } = await worker.exited;
    const exitedAt = Date.now();
    const waitingAfterExit = { extract: await fleet.client.queue(QUEUE_NAMES.extract).getWaitingCount(), aggregate: await fleet.client.queue(QUEUE_NAMES.aggregate).getWaitingCount() };
    // Extract jobs this worker finished before the signal. The rest of the run's two were active or waiting.
    const extractsDone = worker.lines.filter((line) => line.msg === 'job completed' && line.queue === QUEUE_NAMES.extract && line.time < signalledAt).length;

    const [finisher] = fleet.startWorkers(1);
    const result = await finishSmallRun(fleet, submission);
    await stopWorker(finisher, 30_000);
    const stopping = worker.lines.find((line) => line.msg === 'stopping: no new jobs')!;
    const settled = worker.lines.find((line) => line.jobId === started.jobId && (line.msg === 'job completed' || line.msg === 'active job released to the queue at the shutdown deadline'));
    const startedAfterStop = worker.lines.filter((line) => line.msg === 'job started' && line.time >= stopping.time);
    const completedLines = worker.lines.filter((line) => line.jobId === started.jobId && line.msg === 'job completed');
    return { code, signalledAt, exitedAt, waitingAfterExit, extractsDone, result, settled, startedAfterStop, completedLines };
  }

  it('finishes active job within deadline', async () => {
    const deadlineMs = 60_000;
    const outcome = await stopDuringJob('finish', 'extract-finish-cache-', deadlineMs, 200);
    records.push({ case: 'finish', deadlineMs, exitCode: outcome.code, jobSettledAfterMs: outcome.settled!.time - outcome.signalledAt, exitedAfterMs: outcome.exitedAt - outcome.signalledAt });

    expect(outcome.code).toBe(0);
    expect(outcome.settled?.msg).toBe('job completed');
    expect(outcome.settled!.time - outcome.signalledAt).toBeLessThanOrEqual(deadlineMs);
    expect(outcome.startedAfterStop).toEqual([]);
    // The run has two extract jobs: one was active at SIGTERM and finished. The other, unless it
    // had finished before, was waiting and stayed so, because the stopping worker takes no new job.
    expect(outcome.waitingAfterExit.extract).toBe(2 - outcome.extractsDone - 1);
    expect(comparableRun(outcome.result)).toEqual(comparableRun(reference));
  });

  it('releases active job at deadline', async () => {
    const deadlineMs = 500;
    const outcome = await stopDuringJob('release', 'extract-release-cache-', deadlineMs, 0);
    records.push({ case: 'release', deadlineMs, exitCode: outcome.code, jobSettledAfterMs: outcome.settled!.time - outcome.signalledAt, exitedAfterMs: outcome.exitedAt - outcome.signalledAt });

    expect(outcome.code).toBe(1);
    expect(outcome.settled?.msg).toBe('active job released to the queue at the shutdown deadline');
    expect(outcome.settled!.time - outcome.signalledAt).toBeLessThanOrEqual(deadlineMs + RELEASE_MARGIN_MS);
    expect(outcome.startedAfterStop).toEqual([]);
    expect(outcome.waitingAfterExit.extract).toBe(2 - outcome.extractsDone);
    // The released job's processor may still finish before the process exits, but it must not report the job as completed.
    expect(outcome.completedLines).toEqual([]);
    expect(comparableRun(outcome.result)).toEqual(comparableRun(reference));
  });

  it('finishes an active scoring job', async () => {
    const deadlineMs = 60_000;
    const outcome = await stopDuringJob('scoring', 'evaluate-scoring-', deadlineMs, 50);
    records.push({ case: 'scoring', deadlineMs, exitCode: outcome.code, jobSettledAfterMs: outcome.settled!.time - outcome.signalledAt, exitedAfterMs: outcome.exitedAt - outcome.signalledAt });

    expect(outcome.code).toBe(0);
    expect(outcome.settled?.msg).toBe('job completed');
    expect(outcome.startedAfterStop).toEqual([]);
    // Finishing the only evaluate job made the aggregate job ready, and the stopping worker left it.
    expect(outcome.waitingAfterExit.aggregate).toBe(1);
    expect(comparableRun(outcome.result)).toEqual(comparableRun(reference));
  });
});

/** Waits up to two minutes for a log line of this worker. */
function waitForOwnLine(worker: FleetWorker, match: (line: WorkerLogLine) => boolean): Promise<WorkerLogLine> {
  const deadline = Date.now() + 120_000;
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const line = worker.lines.find(match);
      if (line !== undefined) {
        clearInterval(timer);
        resolve(line);
      } else if (worker.child.exitCode !== null || Date.now() > deadline) {
        clearInterval(timer);
        reject(new Error(`Worker ${worker.pid} exited or timed out before the expected log line.`));
      }
    }, 10);
  });
}
