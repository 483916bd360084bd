import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  QUEUE_NAMES,
  aggregateRobustness,
  loadRobustnessModels,
  pickSubset,
  readSliceImages,
  robustnessAggregateResultSchema,
  robustnessJobIds,
  robustnessReportSchema,
  runSlice,
  openDatasetSplit,
  type RobustnessReport,
  type SliceResult,
} from '@cachefleet/core';

import { addRunOnce, planFleetRobustness, type PlannedRobustnessRun } from '../../apps/coordinator/src/cli/robustness-fleet.js';
import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { submitCacheBuild } from '../../apps/coordinator/src/fleet/submit.js';
import { waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { REDIS_URL, startFleetHarness, type FleetHarness } from '../fleet/fleet-harness.js';
import { cifar10Dir, requireSharedData, resnet32Path } from '../support/shared.js';

// A robustness run through the fleet: a cache build of training records [0, 40) with their
// mirror images (80 keys, two extract jobs), then a robustness run of 4 test images in two
// slices on one worker. The same slices computed in this process give the reference.
const SETTINGS = { seed: 11, images: 4, singlePixelImages: 2, whiteBoxImages: 2, sweepImages: 2, sliceSize: 2, fgsm: { count: 6 }, iterativeFgsm: { count: 6 }, blur: { count: 6 }, singlePixel: { maxPixels: 20 } };
const PARAMETERS = { theta: 85.5556, lambda: 0.5111, thetaCacheOnly: 72.2222 };
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../apps/coordinator/dist/cli.js');

describe('robustness run on the fleet', () => {
  let harness: FleetHarness;
  let manifestKey: string;
  let run: PlannedRobustnessRun;
  let fleet: RobustnessReport;
  let local: RobustnessReport;

  beforeAll(async () => {
    requireSharedData();
    harness = await startFleetHarness('robustness');
    harness.startWorkers(1);
    const store = await harness.open(harness.storageUrl);

    const resolver = new BuildResolver((url) => harness.open(url), path.join(harness.tmpDir, 'coordinator-store'), harness.logger);
    const build = await submitCacheBuild(harness.client, resolver, (url) => harness.open(url), {
      dataDir: cifar10Dir,
      split: 'train',
      recordRange: { start: 0, end: 40 },
      shardRecords: 20,
      modelPath: resnet32Path,
      keyLayers: [82, 92, 103],
      includeMirrors: true,
      storageUrl: harness.storageUrl,
    });
    await waitForJob(harness.client, QUEUE_NAMES.merge, build.mergeJobId, { timeoutMs: 240_000 });
    manifestKey = build.manifestKey;

    const flags = { data: cifar10Dir, model: resnet32Path, keyLayers: [82, 92, 103], storage: harness.storageUrl, cache: [build.manifestKey], redis: '', prefix: harness.prefix, wait: true };
    run = await planFleetRobustness(store, flags, SETTINGS, PARAMETERS);
    await addRunOnce(harness.client, run, harness.logger);
    const result = robustnessAggregateResultSchema.parse(
      await waitForJob(harness.client, QUEUE_NAMES.robustnessAggregate, robustnessJobIds.aggregate(run.runId), { timeoutMs: 300_000 }).catch(async (error: unknown) => {
        throw new Error(`${String(error)}\nworker log tail:\n${(await harness.workerLog()).slice(-4000)}`);
      }),
    );
    fleet = robustnessReportSchema.parse(JSON.parse(Buffer.from(await store.getBytes(result.reportKey)).toString('utf8')));

    const models = await loadRobustnessModels(store, run.slices[0], { threads: 1, logger: harness.logger });
    try {
      const test = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'test' });
      const subset = pickSubset(test.size, SETTINGS.images, SETTINGS.seed);
      const slices: SliceResult[] = [];
      for (const slice of run.slices) {
        const images = await readSliceImages(test, subset, slice.positions.start, slice.positions.end, models.preprocessing);
        slices.push(await runSlice({ family: models.family, domain: models.domain, settings: slice.settings, images, logger: harness.logger }));
      }
      local = aggregateRobustness({ context: run.aggregate.context, parameters: run.aggregate.parameters, settings: run.aggregate.settings, subset, slices });
    } finally {
      await models.dispose();
    }
  }, 600_000);

  afterAll(async () => {
    await harness?.stop();
  });

  it('cuts the subset into one job per slice', () => {
    expect(run.slices.map((slice) => slice.positions)).toEqual([
      { start: 0, end: 2 },
      { start: 2, end: 4 },
    ]);
  });

  it('uses the built cache', () => {
    expect(fleet.context.cache.keys).toBe(80);
  });

  it('matches the in-process attacks', () => {
    expect(fleet.attacks).toEqual(local.attacks);
  });

  it('matches the in-process curves', () => {
    expect(fleet.curves).toEqual(local.curves);
  });

  it('matches the in-process clean accuracy', () => {
    expect(fleet.clean).toEqual(local.clean);
  });

  it('loads the models once per worker', async () => {
    const loads = (await harness.workerLog()).split('\n').filter((line) => line.includes('"msg":"robustness models loaded"'));

    expect(loads).toHaveLength(1);
  });

  it('joins a run submitted twice', async () => {
    await addRunOnce(harness.client, run, harness.logger);
    const job = await harness.client.getJob(QUEUE_NAMES.robustnessAggregate, robustnessJobIds.aggregate(run.runId));

    expect(await job!.getState()).toBe('completed');
    expect(await harness.client.queue(QUEUE_NAMES.robustness).getJobCountByTypes('waiting', 'active', 'delayed')).toBe(0);
  });

  it('command line joins the finished run', async () => {
    // The same run id as above, so the command finds the completed report job and only reads the report.
    const args = ['robustness', '--fleet', '--storage', harness.storageUrl, '--cache', manifestKey, '--data', cifar10Dir, '--model', resnet32Path, '--key-layers', '82,92,103'];
    const settings = ['--seed', '11', '--images', '4', '--single-pixel-images', '2', '--white-box-images', '2', '--sweep-images', '2', '--slice-size', '2', '--grid-size', '6', '--max-pixels', '20'];
    const env = {
      ...process.env,
      CACHEFLEET_LOG_LEVEL: 'warn',
      S3_ENDPOINT: harness.s3.endpoint,
      S3_REGION: harness.s3.region,
      S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: harness.s3.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: harness.s3.credentials.secretAccessKey,
    };
    const { stdout } = await promisify(execFile)(process.execPath, [cli, ...args, ...settings, '--redis', REDIS_URL, '--prefix', harness.prefix, '--json'], { env, maxBuffer: 64 * 1024 * 1024 });
    const printed = robustnessReportSchema.parse(JSON.parse(stdout));

    expect(printed.attacks).toEqual(fleet.attacks);
  });
});
