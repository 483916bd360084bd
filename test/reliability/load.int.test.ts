import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES, jobIds, objectKeys, readManifest, type CacheBuildRequest } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { submitCacheBuild, type BuildSubmission } from '../../apps/coordinator/src/fleet/submit.js';
import { waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { hasRedisServer, startPrivateRedis, type PrivateRedis } from './support/private-redis.js';
import { startReliabilityFleet, type FleetWorker, type ReliabilityFleet } from './support/reliability-fleet.js';
import { KEY_LAYERS } from './support/small-run.js';

// Each run builds RECORDS_PER_RUN test records with one record per shard, so it has one small
// extract job per record and a merge job that verifies every shard and writes the manifest.
const RECORDS_PER_RUN = 20;
const BURST_RUNS = 50;
const WARM_UP_JOBS = 100;
const MEASURED_JOBS = 1_000;
// Memory criteria: Redis stays within 50 MB of its level before the burst, and worker RSS within 10 %.
const REDIS_GROWTH_LIMIT_BYTES = 50 * 1024 * 1024;
const RSS_GROWTH_LIMIT = 0.1;
// RSS is compared after a full garbage collection, because between collections it follows the V8
// heap, which gathered about 100 MiB of garbage over several hundred jobs here before V8 collected it.

const MiB = 1024 * 1024;

describe.skipIf(!hasRedisServer)('load', () => {
  let redis: PrivateRedis;
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let nextRecord = 0;
  const ranges = new Map<string, { start: number; end: number }>();
  // Jobs submitted by this file so far. Every one of them must end up completed, once.
  const submitted = { extract: 0, merge: 0 };
  const figures: Record<string, unknown> = {};

  /** Returns the build request of a run over the next RECORDS_PER_RUN test records, so that no two runs share a shard. */
  const request = (runId: string): CacheBuildRequest => {
    const start = nextRecord;
    nextRecord += RECORDS_PER_RUN;
    ranges.set(runId, { start, end: start + RECORDS_PER_RUN });
    return {
      dataDir: cifar10Dir,
      split: 'test',
      recordRange: { start, end: start + RECORDS_PER_RUN },
      shardRecords: 1,
      modelPath: resnet20Path,
      keyLayers: KEY_LAYERS,
      statisticsSplits: ['test'],
      includeMirrors: false,
      storageUrl: fleet.storageUrl,
      buildId: runId,
    };
  };

  /** Submits runs concurrently and waits until every merge job has completed. */
  async function submitRuns(runIds: string[]): Promise<BuildSubmission[]> {
    const submissions = await Promise.all(runIds.map((runId) => submitCacheBuild(fleet.client, resolver, (url) => fleet.open(url), request(runId))));
    submitted.extract += runIds.length * RECORDS_PER_RUN;
    submitted.merge += runIds.length;
    for (const submission of submissions) await waitForJob(fleet.client, QUEUE_NAMES.merge, submission.mergeJobId, { timeoutMs: 600_000, pollMs: 200 });
    return submissions;
  }

  beforeAll(async () => {
    requireSharedData();
    // A private Redis, so that its used_memory counts this fleet only.
    redis = await startPrivateRedis();
    fleet = await startReliabilityFleet({ label: 'load', redisUrl: redis.url });
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), fleet.logger);
  }, 120_000);

  afterAll(async () => {
    process.stderr.write(`load: ${JSON.stringify(figures)}\n`);
    await fleet?.stop();
    await redis?.dispose();
  });

  it('keeps worker memory flat over 1,000 jobs', async () => {
    // One worker with the TensorFlow.js engine runs every job of this phase, so its figures
    // describe 1,100 consecutive jobs. (onnxruntime, the default engine, allocates no tensors.)
    // --expose-gc lets its SIGUSR2 figures come after a full garbage collection.
    const [worker] = fleet.startWorkers(1, { CACHEFLEET_EXTRACTION_ENGINE: 'tfjs', CACHEFLEET_QUEUES: 'extract,merge', NODE_OPTIONS: '--expose-gc' });
    const runsOf = (jobs: number) => Array.from({ length: jobs / RECORDS_PER_RUN }, (_, i) => `${jobs}-${i}`);

    const started = Date.now();
    await submitRuns(runsOf(WARM_UP_JOBS).map((id) => `warm-up-${id}`));
    const afterWarmUp = await memoryFigures(worker);
    await submitRuns(runsOf(MEASURED_JOBS).map((id) => `measured-${id}`));
    const atEnd = await memoryFigures(worker);
    figures.memoryPhaseMs = Date.now() - started;

    const jobs = completedExtractLines(worker);
    const measured = jobs.slice(WARM_UP_JOBS);
    Object.assign(figures, {
      memoryJobs: jobs.length,
      afterGarbageCollection: {
        rssMiB: { afterWarmUp: round(afterWarmUp.rssBytes / MiB), atEnd: round(atEnd.rssBytes / MiB) },
        heapUsedMiB: { afterWarmUp: round(afterWarmUp.heapUsedBytes / MiB), atEnd: round(atEnd.heapUsedBytes / MiB) },
        numTensors: { afterWarmUp: afterWarmUp.numTensors, atEnd: atEnd.numTensors },
      },
      // Per-job figures without a collection: they follow the V8 heap's growth between collections.
      perJobRssMiB: { min: round(Math.min(...measured.map((job) => job.rssBytes)) / MiB), max: round(Math.max(...measured.map((job) => job.rssBytes)) / MiB) },
      perJobNumTensors: { atJob100: jobs[WARM_UP_JOBS - 1].numTensors, max: Math.max(...measured.map((job) => job.numTensors)) },
    });

    expect(measured).toHaveLength(MEASURED_JOBS);
    expect(afterWarmUp.numTensors).toBeGreaterThan(0);
    expect(atEnd.numTensors).toBeLessThanOrEqual(afterWarmUp.numTensors);
    expect(Math.max(...measured.map((job) => job.numTensors))).toBeLessThanOrEqual(jobs[WARM_UP_JOBS - 1].numTensors);
    expect(atEnd.rssBytes).toBeLessThan(afterWarmUp.rssBytes * (1 + RSS_GROWTH_LIMIT));
  }, 900_000);

  /** Sends SIGUSR2 and returns the figures of the worker's `memory figures` line, logged after a full garbage collection. */
  async function memoryFigures(worker: FleetWorker): Promise<JobFigures> {
    const sentAt = Date.now();
    worker.child.kill('SIGUSR2');
    const line = await fleet.waitForLine((entry) => entry.pid === worker.pid && entry.msg === 'memory figures' && entry.time >= sentAt, 30_000);
    expect(line.afterGarbageCollection).toBe(true);
    return { rssBytes: Number(line.rssBytes), heapUsedBytes: Number(line.heapUsedBytes), numTensors: Number(line.numTensors) };
  }

  it('loses and repeats no burst job', async () => {
    fleet.startWorkers(1, { CACHEFLEET_EXTRACTION_ENGINE: 'tfjs', CACHEFLEET_QUEUES: 'extract,merge' });
    const memoryBefore = await redis.infoNumber('memory', 'used_memory');
    const linesBefore = fleet.allLines().length;
    const runIds = Array.from({ length: BURST_RUNS }, (_, i) => `burst-${i}`);

    const started = Date.now();
    const submissions = await submitRuns(runIds);
    figures.burstMs = Date.now() - started;
    const memoryAfter = await redis.infoNumber('memory', 'used_memory');

    // Every job of the burst, by id, with the number of times a worker reported it completed.
    const completions = new Map<string, number>();
    for (const line of fleet.allLines().slice(linesBefore)) {
      if (line.msg === 'job completed' && line.jobId !== undefined) completions.set(line.jobId, (completions.get(line.jobId) ?? 0) + 1);
    }
    const expectedIds = submissions.flatMap((submission) => {
      const { start } = ranges.get(submission.buildId)!;
      const extracts = Array.from({ length: RECORDS_PER_RUN }, (_, r) => jobIds.extract(submission.buildId, { start: start + r, end: start + r + 1 }));
      return [submission.mergeJobId, ...extracts];
    });

    const store = await fleet.open(fleet.storageUrl);
    let shards = 0;
    for (const submission of submissions) {
      const manifest = (await readManifest(store, objectKeys.manifest(submission.buildId))).manifest;
      shards += manifest.shards.length;
    }
    const completedJobs = { extract: await fleet.client.queue(QUEUE_NAMES.extract).getCompletedCount(), merge: await fleet.client.queue(QUEUE_NAMES.merge).getCompletedCount() };
    const failedJobs = { extract: await fleet.client.queue(QUEUE_NAMES.extract).getFailedCount(), merge: await fleet.client.queue(QUEUE_NAMES.merge).getFailedCount() };
    Object.assign(figures, {
      burstJobs: completions.size,
      repeatedCompletions: [...completions.values()].filter((count) => count > 1).length,
      redisUsedMemoryMiB: { before: round(memoryBefore / MiB), after: round(memoryAfter / MiB) },
      completedJobs,
      failedJobs,
    });

    expect(expectedIds).toHaveLength(BURST_RUNS * (RECORDS_PER_RUN + 1));
    expect(expectedIds.filter((id) => completions.get(id) !== 1)).toEqual([]);
    expect(completions.size).toBe(expectedIds.length);
    expect(shards).toBe(BURST_RUNS * RECORDS_PER_RUN);
    expect(failedJobs).toEqual({ extract: 0, merge: 0 });
    expect(completedJobs).toEqual(submitted);
    expect(memoryAfter - memoryBefore).toBeLessThan(REDIS_GROWTH_LIMIT_BYTES);
  }, 900_000);
});

interface JobFigures {
  rssBytes: number;
  heapUsedBytes: number;
  numTensors: number;
}

/** Returns the memory figures of every extract job the worker completed, in completion order. */
function completedExtractLines(worker: FleetWorker): JobFigures[] {
  return worker.lines
    .filter((line) => line.msg === 'job completed' && line.queue === QUEUE_NAMES.extract)
    .map((line) => ({ rssBytes: Number(line.rssBytes), heapUsedBytes: Number(line.heapUsedBytes), numTensors: Number(line.numTensors) }));
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}
