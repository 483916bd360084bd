import path from 'node:path';

import {
  CachefleetError,
  QUEUE_NAMES,
  cacheParametersSchema,
  createLogger,
  deriveRobustnessRunId,
  describePreprocessing,
  loadModel,
  openDatasetSplit,
  openObjectStore,
  parsePreprocessingSpec,
  readManifest,
  resolveKeyLayers,
  robustnessAggregateResultSchema,
  robustnessFlowSpec,
  robustnessJobIds,
  robustnessObjectKeys,
  robustnessReportSchema,
  robustnessSettingsSchema,
  slicePositions,
  type CacheParameters,
  type KeyStoreManifest,
  type Logger,
  type ObjectStore,
  type RobustnessAggregateJobData,
  type RobustnessJobData,
  type RobustnessReport,
  type RobustnessSettingsInput,
} from '@cachefleet/core';

import { FleetClient } from '../fleet/fleet-client.js';
import { waitForJob } from '../fleet/wait-for-job.js';

/** Flags of `cachefleet robustness` that only fleet runs read. */
export interface FleetRobustnessFlags {
  data: string;
  model: string;
  keyLayers: Array<string | number>;
  storage?: string;
  cache?: string[];
  runId?: string;
  redis: string;
  prefix: string;
  wait: boolean;
}

/** The run as job data, before it is added to the fleet. */
export interface PlannedRobustnessRun {
  runId: string;
  aggregate: RobustnessAggregateJobData;
  slices: RobustnessJobData[];
}

/**
 * Plans a fleet run and cuts the subset into one job per slice. It reads the model for its
 * SHA-256 and fingerprint, which every worker checks, the test split for its fingerprint, and the
 * cache's manifests for the key count and the preprocessing. Every worker must be able to read
 * the model and dataset paths under the same names.
 */
export async function planFleetRobustness(store: ObjectStore, flags: FleetRobustnessFlags & { storage: string; cache: string[] }, settingsInput: RobustnessSettingsInput, parametersInput: CacheParameters): Promise<PlannedRobustnessRun> {
  const settings = robustnessSettingsSchema.parse(settingsInput);
  const parameters = cacheParametersSchema.parse(parametersInput);

  const loaded = await loadModel(flags.model);
  let keyLayerNames: string[];
  try {
    keyLayerNames = resolveKeyLayers(loaded.model, flags.keyLayers).map((layer) => layer.name);
  } finally {
    loaded.model.dispose();
  }
  const test = await openDatasetSplit(flags.data, { dataset: 'cifar10', split: 'test' });
  const manifests: KeyStoreManifest[] = [];
  for (const key of flags.cache) manifests.push((await readManifest(store, key)).manifest);
  const preprocessing = parsePreprocessingSpec(manifests[0].preprocessing);

  const shared = {
    storageUrl: flags.storage,
    model: { path: path.resolve(flags.model), fileSha256: loaded.fileSha256, fingerprint: loaded.fingerprint, keyLayers: keyLayerNames },
    dataset: { dir: path.resolve(flags.data), name: test.dataset, split: test.split, labelMode: test.labelMode, fingerprint: test.fingerprint },
    cache: { manifests: flags.cache },
    parameters,
    settings,
  };
  const runId = flags.runId ?? deriveRobustnessRunId(shared);
  const slices = slicePositions(settings.images, settings.sliceSize).map((positions) => ({ ...shared, runId, positions, outputKey: robustnessObjectKeys.slice(runId, positions) }));
  const aggregate: RobustnessAggregateJobData = {
    runId,
    storageUrl: flags.storage,
    reportKey: robustnessObjectKeys.report(runId),
    parameters,
    settings,
    splitSize: test.size,
    context: {
      model: { source: shared.model.path, fingerprint: loaded.fingerprint, fileSha256: loaded.fileSha256, keyLayers: keyLayerNames },
      cache: { keys: manifests.reduce((sum, manifest) => sum + manifest.count, 0), stores: flags.cache.map((key, i) => `${key} (${manifests[i].count} keys)`) },
      preprocessing: { hash: manifests[0].identity.preprocessingHash, description: describePreprocessing(preprocessing) },
      dataset: { name: test.dataset, dir: shared.dataset.dir, testFingerprint: test.fingerprint },
      runner: 'fleet',
    },
  };
  return { runId, aggregate, slices };
}

/**
 * Submits a robustness run to the fleet and, unless `--no-wait`, waits for its report. A run
 * whose report job already exists is not added again: BullMQ would attach a second set of
 * children to the existing parent.
 */
export async function submitRobustnessToFleet(flags: FleetRobustnessFlags, settings: RobustnessSettingsInput, parameters: CacheParameters): Promise<RobustnessReport | undefined> {
  if (flags.storage === undefined || flags.cache === undefined || flags.cache.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'A fleet run needs --storage URL and --cache with the manifest object keys of the cache key stores (for example builds/<id>/manifest.json of the train build).', {});
  }
  const logger = createLogger('cachefleet');
  const store = await openObjectStore(flags.storage, { logger });
  const client = await FleetClient.connect({ redisUrl: flags.redis, prefix: flags.prefix, logger });
  try {
    const run = await planFleetRobustness(store, { ...flags, storage: flags.storage, cache: flags.cache }, settings, parameters);
    await addRunOnce(client, run, logger);
    if (!flags.wait) {
      process.stdout.write(`${JSON.stringify({ runId: run.runId, reportJobId: robustnessJobIds.aggregate(run.runId), reportKey: run.aggregate.reportKey, slices: run.slices.length }, null, 2)}\n`);
      return undefined;
    }

    const result = robustnessAggregateResultSchema.parse(await waitForJob(client, QUEUE_NAMES.robustnessAggregate, robustnessJobIds.aggregate(run.runId)));
    const bytes = await store.getBytes(result.reportKey);
    return robustnessReportSchema.parse(JSON.parse(Buffer.from(bytes).toString('utf8')));
  } finally {
    await store.close();
    await client.close();
  }
}

/** Adds the run's flow unless its report job already exists, and logs which happened. */
export async function addRunOnce(client: FleetClient, run: PlannedRobustnessRun, logger: Logger): Promise<void> {
  const reportJobId = robustnessJobIds.aggregate(run.runId);
  const existing = await client.getJob(QUEUE_NAMES.robustnessAggregate, reportJobId);
  if (existing !== undefined) {
    logger.info({ runId: run.runId, reportJobId }, 'robustness run already submitted; waiting for it');
    return;
  }
  await client.addFlow(robustnessFlowSpec(run.aggregate, run.slices, client.settings));
  logger.info({ runId: run.runId, slices: run.slices.length, reportJobId }, 'robustness run submitted');
}
