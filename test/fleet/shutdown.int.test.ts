import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES, jobIds, type CacheBuildRequest } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { submitCacheBuild } from '../../apps/coordinator/src/fleet/submit.js';
import { waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { startFleetHarness, type FleetHarness } from './fleet-harness.js';

// TensorFlow.js extracts several times slower than onnxruntime, so one 1,500-record shard keeps
// its worker busy for seconds (on a 2-core x86-64 machine), long enough to stop it in the middle.
const SLOW_WORKER = { CACHEFLEET_EXTRACTION_ENGINE: 'tfjs', CACHEFLEET_QUEUES: 'extract' };

async function waitUntilActive(harness: FleetHarness, jobId: string): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt += 1) {
    const job = await harness.client.getJob(QUEUE_NAMES.extract, jobId);
    if (job !== undefined && (await job.getState()) === 'active') return;
    await sleep(50);
  }
  throw new Error(`Job ${jobId} never became active.`);
}

describe('worker shutdown', () => {
  let harness: FleetHarness;
  let resolver: BuildResolver;

  const request = (buildId: string): CacheBuildRequest => ({
    dataDir: cifar10Dir,
    split: 'test',
    recordRange: { start: 0, end: 1500 },
    shardRecords: 1500,
    modelPath: resnet20Path,
    keyLayers: [49, 57, 64],
    includeMirrors: false,
    storageUrl: harness.storageUrl,
    buildId,
  });

  beforeAll(async () => {
    requireSharedData();
    harness = await startFleetHarness('shutdown');
    resolver = new BuildResolver((url) => harness.open(url), `${harness.tmpDir}/coordinator-store`, harness.logger);
  });

  afterAll(async () => {
    await harness?.stop();
  });

  it('finishes the active job before exiting', async () => {
    const workers = harness.startWorkers(1, { ...SLOW_WORKER, CACHEFLEET_SHUTDOWN_DEADLINE_MS: '120000' });
    await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), request('finish'));
    const jobId = jobIds.extract('finish', { start: 0, end: 1500 });
    await waitUntilActive(harness, jobId);

    const [child] = workers.processes;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    const job = await harness.client.getJob(QUEUE_NAMES.extract, jobId);

    expect(code).toBe(0);
    expect(await job!.getState()).toBe('completed');
  });

  it('releases the active job at the deadline', async () => {
    const workers = harness.startWorkers(1, { ...SLOW_WORKER, CACHEFLEET_SHUTDOWN_DEADLINE_MS: '200' });
    await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), request('release'));
    const jobId = jobIds.extract('release', { start: 0, end: 1500 });
    await waitUntilActive(harness, jobId);

    const [child] = workers.processes;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    const released = await harness.client.getJob(QUEUE_NAMES.extract, jobId);
    const stateAfterExit = await released!.getState();

    // A new worker takes the released job at once, without waiting for the stalled-job check.
    harness.startWorkers(1, SLOW_WORKER);
    await waitForJob(harness.client, QUEUE_NAMES.extract, jobId, { timeoutMs: 120_000 });

    expect(code).toBe(1);
    expect(stateAfterExit).toBe('waiting');
    expect(await harness.workerLog()).toMatch(/"msg":"active job released to the queue at the shutdown deadline"/);
  });
});
