import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cifar10Dir, resnet20Path } from '../../../../test/support/shared.js';
import { runLocalEvaluation, type LocalEvaluationOptions } from './protocol.js';
import { reportSchema, type EvaluationReport } from './report.js';

const LIMIT = 120;

describe('local evaluation on a CIFAR-10 slice', () => {
  let storeDir: string;
  let base: LocalEvaluationOptions;
  let first: EvaluationReport;

  beforeAll(async () => {
    storeDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-protocol-'));
    base = {
      dataDir: cifar10Dir,
      modelPath: resnet20Path,
      keyLayers: [49, 57, 64],
      limit: LIMIT,
      thetas: [10, 50, 90],
      lambdas: [0.1, 0.5, 0.9],
      storeDir,
      threads: 2,
      logger: pino({ level: 'silent' }),
    };
    first = await runLocalEvaluation(base);
  });

  afterAll(async () => {
    await rm(storeDir, { recursive: true, force: true });
  });

  it('writes a report matching the schema', () => {
    expect(reportSchema.safeParse(first).success).toBe(true);
  });

  it('predicts every test query', () => {
    expect(first.predictions.cache).toHaveLength(LIMIT);
    expect(first.predictions.baseline).toHaveLength(LIMIT);
    expect(first.predictions.cacheOnly).toHaveLength(LIMIT);
  });

  it('builds the cache with mirror images', () => {
    const composition = first.manifest.cacheComposition;

    expect(composition.validation).toEqual({ keys: 2 * LIMIT, queries: 2 * LIMIT });
    expect(composition.test).toEqual({ keys: 4 * LIMIT, queries: LIMIT });
  });

  it('keeps the whole tuning grid', () => {
    expect(first.grid?.accuracy).toHaveLength(3);
    expect(first.grid?.accuracy[0]).toHaveLength(3);
    expect(first.cache.tuned).toBe(true);
  });

  it('reuses stored keys on a second run', async () => {
    const second = await runLocalEvaluation(base);

    expect(second.manifest.cacheComposition.segments.map((segment) => segment.reused)).toEqual([true, true, true]);
    expect(second.predictions).toEqual(first.predictions);
  });

  it('rebuilds keys when preprocessing changes', async () => {
    const other = await runLocalEvaluation({ ...base, statisticsSplits: ['train'] });

    expect(other.manifest.cacheComposition.segments.map((segment) => segment.reused)).toEqual([false, false, false]);
    expect(other.manifest.preprocessing.hash).not.toBe(first.manifest.preprocessing.hash);
  });

  it('cuts each split into shards', async () => {
    const sharded = await runLocalEvaluation({ ...base, shardRecords: 50 });

    expect(sharded.manifest.cacheComposition.segments.map((segment) => segment.shards)).toEqual([3, 3, 3]);
    expect(sharded.manifest.cacheComposition.test.keys).toBe(4 * LIMIT);
  });

  it('skips tuning with fixed parameters', async () => {
    const fixed = await runLocalEvaluation({ ...base, theta: 50, lambda: 0.5, thetaCacheOnly: 50 });

    expect(fixed.grid).toBeNull();
    expect(fixed.cache.theta).toBe(50);
    expect(fixed.cache.tuned).toBe(false);
  });

  it('rejects theta without lambda', async () => {
    await expect(runLocalEvaluation({ ...base, theta: 50 })).rejects.toThrow(/Only one of θ \(50\) and λ \(undefined\) was given/);
  });

  it('rejects lambda outside the unit interval', async () => {
    await expect(runLocalEvaluation({ ...base, theta: 50, lambda: 1.5 })).rejects.toThrow(/λ is the cache's weight in the mixture and must be between 0 and 1/);
  });

  it('rejects a validation split of everything', async () => {
    await expect(runLocalEvaluation({ ...base, validationSize: 50_000 })).rejects.toThrow(/Validation size 50000 is invalid/);
  });
});
