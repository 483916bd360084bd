import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  DEFAULT_QUERY_BLOCK_SIZE,
  QUEUE_NAMES,
  aggregateJobDataSchema,
  evaluateJobDataSchema,
  evaluateResultSchema,
  foldRole,
  readManifest,
  reportSchema,
  runLocalEvaluation,
  tuneJobDataSchema,
  tuneResultSchema,
  type EvaluationReport,
  type FleetEvaluationReport,
} from '@cachefleet/core';

import { runFleetPaper } from '../../apps/coordinator/src/fleet/paper.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { startFleetHarness, type FleetHarness } from './fleet-harness.js';

// A CIFAR-10 slice of the protocol of Orhan (2018) as the local run implements it. Train
// [0, 2500) and validation [45000, 47500), both with mirror images, are the test cache (10,000
// keys of 5,000 records), and the validation queries are scored against the train part. Test [0, 2500) are the test queries. 625-record shards
// give 4 shards per build, so the test cache has 8 shards in 4 groups, and each role's queries
// are cut into slices of two query blocks.
const LIMIT = 2500;
const SHARD_RECORDS = 625;
const KEY_LAYERS = [49, 57, 64];

describe('fleet paper protocol on a CIFAR-10 slice', () => {
  let harness: FleetHarness;
  let storeDir: string;
  let local: EvaluationReport;
  let fleet: FleetEvaluationReport;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    requireSharedData();
    harness = await startFleetHarness('paper');
    storeDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-paper-local-'));
    harness.startWorkers(2);

    let started = performance.now();
    fleet = await runFleetPaper(
      harness.client,
      (url) => harness.open(url),
      {
        dataDir: cifar10Dir,
        modelPath: resnet20Path,
        keyLayers: KEY_LAYERS,
        storageUrl: harness.storageUrl,
        storeDir: path.join(harness.tmpDir, 'coordinator-store'),
        limit: LIMIT,
        shardRecords: SHARD_RECORDS,
        querySliceSize: 2 * DEFAULT_QUERY_BLOCK_SIZE,
        // Two 625-record shards with mirrors (about 61.5 MB each) per evaluate job.
        shardGroupBytes: 125 * 1024 * 1024,
        workers: 0,
      },
      harness.logger,
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}\nworker log tail:\n${(await harness.workerLog()).slice(-4000)}`);
    });
    timings.fleetMs = Math.round(performance.now() - started);

    started = performance.now();
    local = await runLocalEvaluation({ dataDir: cifar10Dir, modelPath: resnet20Path, keyLayers: KEY_LAYERS, limit: LIMIT, shardRecords: SHARD_RECORDS, storeDir, threads: 2, logger: harness.logger });
    timings.localMs = Math.round(performance.now() - started);
  }, 600_000);

  afterAll(async () => {
    process.stderr.write(`fleet paper slice: ${JSON.stringify(timings)}\n`);
    await harness?.stop();
    if (storeDir !== undefined) await rm(storeDir, { recursive: true, force: true });
  });

  it('writes a report in the local schema', () => {
    expect(reportSchema.safeParse(fleet).success).toBe(true);
  });

  it('predicts exactly as the local run', () => {
    expect(fleet.predictions).toEqual(local.predictions);
  });

  it('chooses the local theta and lambda', () => {
    expect({ theta: fleet.cache.theta, lambda: fleet.cache.lambda, thetaCacheOnly: fleet.cacheOnly.theta }).toEqual({ theta: local.cache.theta, lambda: local.cache.lambda, thetaCacheOnly: local.cacheOnly.theta });
  });

  it('reproduces the validation grid', () => {
    expect(fleet.grid).toEqual(local.grid);
  });

  it('reports the local test errors', () => {
    expect([fleet.baseline.testError, fleet.cache.testError, fleet.cacheOnly.testError]).toEqual([local.baseline.testError, local.cache.testError, local.cacheOnly.testError]);
  });

  it('covers every query', () => {
    expect(fleet.fleet.coverage.test.queriesScored).toBe(LIMIT);
    expect(fleet.fleet.coverage.validation.queriesScored).toBe(2 * LIMIT);
  });

  it('writes shards byte-identical to local', async () => {
    const store = await harness.open(harness.storageUrl);
    for (const segment of local.manifest.cacheComposition.segments) {
      const localManifest = JSON.parse(await readFile(path.join(storeDir, segment.storeId, 'manifest.json'), 'utf8')) as { shards: Array<{ sha256: string }> };
      const fleetManifest = await readManifest(store, `builds/${segment.storeId}/manifest.json`);

      expect(fleetManifest.manifest.shards.map((shard) => shard.sha256)).toEqual(localManifest.shards.map((shard) => shard.sha256));
    }
  });

  it('reads each shard once per worker', async () => {
    // Every evaluate job logs the shard objects it read from storage (cache misses of its worker).
    const reads = new Map<number, number>();
    for (const line of (await harness.workerLog()).split('\n')) {
      if (!line.includes('"msg":"partials written"')) continue;
      const entry = JSON.parse(line) as { pid: number; shardReads: number };
      reads.set(entry.pid, (reads.get(entry.pid) ?? 0) + entry.shardReads);
    }
    const distinctShards = local.manifest.cacheComposition.segments.reduce((sum, segment) => sum + segment.shards, 0);

    expect(reads.size).toBeGreaterThan(0);
    for (const count of reads.values()) expect(count).toBeLessThanOrEqual(distinctShards);
  });

  it('scores test with the chosen thetas', async () => {
    const aggregate = await harness.client.getJob(QUEUE_NAMES.aggregate, `aggregate-${fleet.fleet.evaluationId}`);
    const results = Object.entries(await aggregate!.getChildrenValues()).filter(([key]) => key.includes(`:${QUEUE_NAMES.evaluate}:`));
    const scored = new Set<string>();
    for (const [key] of results) {
      const job = await harness.client.getJob(QUEUE_NAMES.evaluate, key.slice(key.lastIndexOf(':') + 1));
      scored.add(evaluateJobDataSchema.parse(job!.data).thetas.join(','));
    }

    expect([...scored]).toEqual([unique([local.cache.theta, local.cacheOnly.theta]).join(',')]);
  });

  it('folds reordered partials within 1e-5', async () => {
    const store = await harness.open(harness.storageUrl);
    const aggregate = await harness.client.getJob(QUEUE_NAMES.aggregate, `aggregate-${fleet.fleet.evaluationId}`);
    const tune = await harness.client.getJob(QUEUE_NAMES.tune, `tune-${fleet.fleet.evaluationId}`);
    const aggregateData = aggregateJobDataSchema.parse(aggregate!.data);
    const tuneData = tuneJobDataSchema.parse(tune!.data);
    const tuneResult = tuneResultSchema.parse(tune!.returnvalue);
    const evaluateResults = async (parent: NonNullable<typeof aggregate>) =>
      Object.entries(await parent.getChildrenValues())
        .filter(([key]) => key.includes(`:${QUEUE_NAMES.evaluate}:`))
        .map(([, value]) => evaluateResultSchema.parse(value));
    const roles = [
      { summary: tuneData.validation, thetas: tuneData.thetas, results: await evaluateResults(tune!) },
      { summary: aggregateData.test, thetas: tuneResult.testThetas, results: await evaluateResults(aggregate!) },
    ];

    for (const { summary, thetas, results } of roles) {
      const inOrder = await foldRole(store, summary, thetas, results);
      const reversed = await foldRole(store, summary, thetas, results, 'reverse');
      let maxAbsolute = 0;
      let maxRelative = 0;
      for (let i = 0; i < inOrder.partials.length; i += 1) {
        const a = inOrder.partials[i];
        const b = reversed.partials[i];
        if (a === b) continue;
        maxAbsolute = Math.max(maxAbsolute, Math.abs(a - b));
        maxRelative = Math.max(maxRelative, Math.abs(a - b) / Math.max(1, Math.abs(a)));
      }
      process.stderr.write(`reordered fold (${summary.role}): max absolute difference ${maxAbsolute}, max relative ${maxRelative}\n`);

      expect(maxRelative).toBeLessThanOrEqual(1e-5);
    }
  });
});

function unique(values: number[]): number[] {
  return values.filter((value, index) => values.indexOf(value) === index);
}
