import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';

import { DEFAULT_LAMBDAS, DEFAULT_THETAS, reportSchema } from '@cachefleet/core';

import type { RunResponse } from '../../apps/coordinator/src/http/runs/api-schemas.js';
import { hasRedisServer, startPrivateRedis, type PrivateRedis } from '../reliability/support/private-redis.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { startCoordinatorFleet, type CliResult, type CoordinatorFleet } from './coordinator-harness.js';

// A small slice of CIFAR-10 with the pretrained ResNet20 of Orhan (2018) and its key layers. The
// cache build is train records [0, 300) with mirror images, in two shards. The evaluation builds
// validation queries from train [300, 400) (with mirrors) and test queries from test [0, 200),
// and tunes θ and λ on the default 33 × 33 grid.
const KEY_LAYERS = '49,57,64';
const BUILD_FLAGS = ['--data', cifar10Dir, '--split', 'train', '--range', '0:300', '--mirrors', '--shard-records', '150', '--model', resnet20Path, '--key-layers', KEY_LAYERS];
// The build that is cancelled: two extract jobs of 2,000 images (8 batches of 256) each. In one
// run here a worker thread took about 1.4 s per job (onnxruntime, load average 9 on 2 cores), so
// a cancellation sent as soon as the first batch is reported reaches both jobs mid-extraction.
const CANCEL_FLAGS = ['--data', cifar10Dir, '--split', 'train', '--range', '1000:5000', '--shard-records', '2000', '--model', resnet20Path, '--key-layers', KEY_LAYERS];

function parseJson<T>(result: CliResult): T {
  if (result.code !== 0) throw new Error(`cachefleet exited with ${result.code}:\n${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

describe.skipIf(!hasRedisServer)('cachefleet CLI against the coordinator', () => {
  let redis: PrivateRedis;
  let fleet: CoordinatorFleet;
  let buildRunId: string;
  let evaluationRunId: string;
  let reportBeforeRestart: unknown;
  const figures: Record<string, number | string> = {};

  beforeAll(async () => {
    requireSharedData();
    // A private Redis without persistence, so that the test can restart it empty; the shared
    // Redis is never restarted.
    redis = await startPrivateRedis();
    fleet = await startCoordinatorFleet({ label: 'cli-e2e', redisUrl: redis.url });
    await fleet.startCoordinator();
    fleet.startWorkers(2);
  }, 120_000);

  afterAll(async () => {
    process.stderr.write(`cli e2e figures: ${JSON.stringify(figures)}\n`);
    await fleet?.stop();
    await redis?.dispose();
  });

  /** Polls the API until `accept` returns true for the run, or fails after `timeoutMs`. */
  async function waitForRun(runId: string, accept: (run: RunResponse) => boolean, timeoutMs: number): Promise<RunResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const response = await fetch(`${fleet.coordinator.url}/api/v1/runs/${runId}`, { headers: { authorization: `Bearer ${fleet.token}` } });
      const run = (await response.json()) as RunResponse;
      if (accept(run)) return run;
      if (Date.now() > deadline) throw new Error(`Run ${runId} did not reach the expected state within ${timeoutMs} ms; last: ${JSON.stringify(run.stages)} ${run.state}\n${(await fleet.log()).slice(-3000)}`);
      await sleep(200);
    }
  }

  it('submits a cache build', async () => {
    const result = await fleet.cli(['submit', 'cache-build', ...BUILD_FLAGS, '--json']);
    const run = parseJson<RunResponse & { joined: boolean }>(result);
    buildRunId = run.runId;
    figures.submitBuildMs = result.durationMs;

    expect(run.kind).toBe('cache-build');
    expect(run.joined).toBe(false);
    expect(run.builds[0].extractJobs).toBe(2);
  });

  it('follows the build to completion', async () => {
    const result = await fleet.cli(['status', buildRunId, '--watch', '--interval', '500']);
    figures.buildWatchMs = result.durationMs;

    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`run ${buildRunId} (cache-build): completed`);
    expect(result.stderr).toMatch(/extract 2\/2 done/);
    expect(result.stdout).toContain(`manifest: builds/${buildRunId}/manifest.json`);
  }, 300_000);

  it('submits an evaluation from a YAML spec', async () => {
    const specDir = path.join(fleet.tmpDir, 'specs');
    const build = (split: 'train' | 'test', start: number, end: number, includeMirrors: boolean) => ({
      // Relative paths are resolved against the spec file's folder.
      dataDir: path.relative(specDir, cifar10Dir),
      modelPath: path.relative(specDir, resnet20Path),
      split,
      recordRange: { start, end },
      shardRecords: end - start,
      keyLayers: [49, 57, 64],
      includeMirrors,
    });
    const validationBuild = { build: build('train', 300, 400, true), role: 'validation' };
    const trainCache = { manifest: `builds/${buildRunId}/manifest.json`, role: 'train' };
    const spec = {
      validation: { queries: validationBuild, cache: [trainCache] },
      test: { queries: { build: build('test', 0, 200, false), role: 'test' }, cache: [trainCache, validationBuild] },
    };
    await mkdir(specDir, { recursive: true });
    await writeFile(path.join(specDir, 'evaluation.yaml'), YAML.stringify(spec));

    const result = await fleet.cli(['submit', 'evaluate', '--spec', path.join(specDir, 'evaluation.yaml'), '--json']);
    const run = parseJson<RunResponse>(result);
    evaluationRunId = run.runId;
    figures.submitEvaluationMs = result.durationMs;

    expect(run.kind).toBe('evaluation');
    expect(run.builds.map((item) => item.status).sort()).toEqual(['submitted', 'submitted']);
  });

  it('follows the evaluation to completion', async () => {
    const result = await fleet.cli(['status', evaluationRunId, '--watch', '--interval', '500']);
    figures.evaluationWatchMs = result.durationMs;

    expect(result.code, `${result.stderr}\n${(await fleet.log()).slice(-3000)}`).toBe(0);
    expect(result.stdout).toContain(`run ${evaluationRunId} (evaluation): completed`);
    expect(result.stderr).toMatch(/aggregate 1\/1 done/);
  }, 300_000);

  it('fetches the report', async () => {
    const report = parseJson<Record<string, unknown>>(await fleet.cli(['report', evaluationRunId, '--json']));
    const parsed = reportSchema.pick({ baseline: true, cache: true, cacheOnly: true, grid: true, predictions: true }).parse(report);
    reportBeforeRestart = report;
    figures.testErrors = JSON.stringify({ baseline: parsed.baseline.testError, cache: parsed.cache.testError, cacheOnly: parsed.cacheOnly.testError, theta: parsed.cache.theta, lambda: parsed.cache.lambda });

    expect(parsed.predictions.cache).toHaveLength(200);
    expect(parsed.grid?.accuracy).toHaveLength(DEFAULT_THETAS.length);
    expect(parsed.grid?.accuracy[0]).toHaveLength(DEFAULT_LAMBDAS.length);
    expect(DEFAULT_THETAS).toContain(parsed.cache.theta);
    expect(parsed.baseline.testError).toBeGreaterThanOrEqual(0);
    expect(parsed.baseline.testError).toBeLessThanOrEqual(1);
  });

  it('joins a completed evaluation', async () => {
    const reportPath = path.join(fleet.tmpDir, 'joined-report.json');

    const result = await fleet.cli(['submit', 'evaluate', '--spec', path.join(fleet.tmpDir, 'specs', 'evaluation.yaml'), '--wait', '--report', reportPath, '--json']);
    const run = parseJson<RunResponse>(result);

    expect(run.runId).toBe(evaluationRunId);
    expect(run.state).toBe('completed');
    expect(run.submissions).toBe(1);
    expect(JSON.parse(await readFile(reportPath, 'utf8'))).toEqual(reportBeforeRestart);
  });

  it('prints the report as a table', async () => {
    const result = await fleet.cli(['report', evaluationRunId]);

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/baseline \(λ = 0\)/);
    expect(result.stdout).toMatch(/test queries: 200/);
  });

  it('lists both runs', async () => {
    const runs = parseJson<RunResponse[]>(await fleet.cli(['runs', '--json']));

    expect(runs.map((run) => [run.runId, run.state]).sort()).toEqual([
      [buildRunId, 'completed'],
      [evaluationRunId, 'completed'],
    ].sort());
  });

  it('cancels a running build', async () => {
    const submitted = parseJson<RunResponse>(await fleet.cli(['submit', 'cache-build', ...CANCEL_FLAGS, '--json']));
    const running = await waitForRun(submitted.runId, (run) => run.stages[0].jobs.active === 2 && run.stages[0].progress > 0, 120_000);

    // Sent with fetch rather than `cachefleet cancel`, whose process start (1–3 s) could let a job finish first.
    const cancelledAt = performance.now();
    const cancel = await fetch(`${fleet.coordinator.url}/api/v1/runs/${submitted.runId}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${fleet.token}` } });
    const watch = await fleet.cli(['status', submitted.runId, '--watch', '--interval', '200', '--json']);
    figures.cancelToCancelledMs = Math.round(performance.now() - cancelledAt);
    figures.progressAtCancel = running.stages[0].progress.toFixed(3);
    const final = JSON.parse(watch.stdout) as RunResponse;
    const objects = await (await fleet.open()).list(`builds/${submitted.runId}/`);
    const stopped = (await fleet.log()).match(/"err":\{"type":"CachefleetError","message":"Extract job of build \w+ stopped because its run was cancelled/g) ?? [];

    expect(cancel.status).toBe(202);
    expect(watch.code).toBe(1);
    expect(final.state).toBe('cancelled');
    expect(stopped).toHaveLength(2);
    expect(objects).toEqual([]);
    // A worker that died would leave its job to the stalled-job check, a minute or more later.
    expect(fleet.workers!.processes.map((child) => child.exitCode ?? child.signalCode)).toEqual([null, null]);
    expect(figures.cancelToCancelledMs).toBeLessThan(30_000);
  }, 300_000);

  it('starts a cancelled build again', async () => {
    const resubmitted = parseJson<RunResponse & { joined: boolean }>(await fleet.cli(['submit', 'cache-build', ...CANCEL_FLAGS, '--json']));
    const cancel = await fleet.cli(['cancel', resubmitted.runId, '--json']);
    const watch = await fleet.cli(['status', resubmitted.runId, '--watch', '--interval', '200', '--json']);

    expect(resubmitted.joined).toBe(false);
    expect(resubmitted.submissions).toBe(2);
    expect(['queued', 'running']).toContain(resubmitted.state);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect((JSON.parse(watch.stdout) as RunResponse).state).toBe('cancelled');
  }, 300_000);

  it('exports job metrics', async () => {
    const response = await fetch(`${fleet.coordinator.url}/metrics`, { headers: { authorization: `Bearer ${fleet.token}` } });
    const text = await response.text();
    const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? Number.NaN);
    figures.extractImagesPerSecondLastJob = value(/^cachefleet_extract_images_per_second (\S+)$/m).toFixed(0);
    figures.scoreQueriesPerSecondLastJob = value(/^cachefleet_score_queries_per_second (\S+)$/m).toFixed(0);

    expect(response.status).toBe(200);
    // The cache build has two shards, the validation and test builds one each.
    expect(value(/^cachefleet_job_duration_seconds_count\{queue="extract"\} (\d+)$/m)).toBeGreaterThanOrEqual(4);
    expect(value(/^cachefleet_extract_images_total (\d+)$/m)).toBeGreaterThanOrEqual(600 + 200 + 200);
    expect(value(/^cachefleet_score_queries_total (\d+)$/m)).toBeGreaterThanOrEqual(200 + 200);
    expect(value(/^cachefleet_job_failures_total\{queue="extract",code="RUN_CANCELLED"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
  });

  it('rejects cancelling a finished run', async () => {
    const result = await fleet.cli(['cancel', buildRunId]);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error RUN_STATE_CONFLICT: Run \S+ is already completed/);
  });

  it('names the invalid field of a spec', async () => {
    const specPath = path.join(fleet.tmpDir, 'bad-build.yaml');
    await writeFile(specPath, YAML.stringify({ dataDir: cifar10Dir, split: 'train', shardRecords: 'many', modelPath: resnet20Path, keyLayers: [49], includeMirrors: false }));

    const result = await fleet.cli(['submit', 'cache-build', '--spec', specPath]);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error INVALID_ARGUMENT: --spec \S+bad-build\.yaml is not a valid request/);
    expect(result.stderr).toMatch(/shardRecords/);
  });

  it('rejects a missing token', async () => {
    const result = await fleet.cli(['runs'], { CACHEFLEET_API_TOKEN: '' });

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error UNAUTHORIZED/);
  });

  it('names an unknown run', async () => {
    const result = await fleet.cli(['status', 'no-such-run']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/error RUN_NOT_FOUND: Run no-such-run does not exist/);
  });

  it('keeps runs across a Redis restart', async () => {
    await fleet.coordinator.stop();
    // Without persistence the restarted Redis is empty: every job and queue is gone.
    await redis.stop();
    await redis.start();
    await fleet.startCoordinator();

    const status = parseJson<RunResponse>(await fleet.cli(['status', buildRunId, '--json']));
    const runs = parseJson<RunResponse[]>(await fleet.cli(['runs', '--json']));
    const report = parseJson<unknown>(await fleet.cli(['report', evaluationRunId, '--json']));

    expect(status.state).toBe('completed');
    expect(status.stages.find((stage) => stage.name === 'extract')?.jobs.completed).toBe(2);
    expect(runs.map((run) => run.state).sort()).toEqual(['cancelled', 'completed', 'completed']);
    expect(report).toEqual(reportBeforeRestart);
  }, 120_000);
});
