import type { DatasetSplit } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import type { Logger } from '../log.js';
import { loadModel, resolveKeyLayers } from '../models/index.js';
import { parsePreprocessingSpec, preprocessingHash, type PreprocessingSpec } from '../preprocessing/index.js';
import { aggregateRobustness, type RobustnessReport } from '../robustness/aggregate.js';
import type { AttackDomain } from '../robustness/attacks.js';
import { CacheModelFamily } from '../robustness/cache-models.js';
import { CacheReadout, type CacheKeySet } from '../robustness/cache-readout.js';
import { OnnxNetworkGradient } from '../robustness/network-gradient.js';
import { runSlice } from '../robustness/run-slice.js';
import { sliceResultSchema, type SliceResult } from '../robustness/schemas.js';
import { attackDomain, readSliceImages } from '../robustness/slice-inputs.js';
import { pickSubset } from '../robustness/subset.js';
import type { KeyStoreManifest } from '../store/key-store-manifest.js';
import { sha256Hex } from '../store/shard-format.js';
import type { ObjectStore } from '../storage/index.js';
import { readManifest } from './merge-job.js';
import type { RobustnessAggregateJobData, RobustnessAggregateResult, RobustnessJobData, RobustnessJobResult } from './robustness-schemas.js';
import { loadShardObject } from './shard-objects.js';

/** The three models of a run, built once per worker process and kept across its slices. */
export interface RobustnessModels {
  family: CacheModelFamily;
  domain: AttackDomain;
  preprocessing: PreprocessingSpec;
  dispose(): Promise<void>;
}

/**
 * Loads the model (checking its file SHA-256 and fingerprint against the job), the cache's
 * manifests and every shard they list (checking size and SHA-256), and builds the gradient
 * graph and the cache read-out. The preprocessing comes from the manifests, which carry the
 * spec the keys were made with. About 5 GB of memory for ResNet32's 100,000 keys.
 */
export async function loadRobustnessModels(store: ObjectStore, data: Pick<RobustnessJobData, 'model' | 'cache' | 'parameters'>, options: { threads: number; logger: Logger }): Promise<RobustnessModels> {
  const manifests: KeyStoreManifest[] = [];
  for (const key of data.cache.manifests) manifests.push((await readManifest(store, key)).manifest);
  const preprocessing = checkManifests(manifests, data);

  const loaded = await loadModel(data.model.path);
  let network: OnnxNetworkGradient | undefined;
  try {
    if (loaded.fileSha256 !== data.model.fileSha256 || loaded.fingerprint !== data.model.fingerprint) {
      throw new CachefleetError(
        'KEY_STORE_MISMATCH',
        `Model file ${data.model.path} has SHA-256 ${loaded.fileSha256} and fingerprint ${loaded.fingerprint} on this worker, but the run expects ${data.model.fileSha256} and ${data.model.fingerprint}. Give every worker the same model file as the coordinator.`,
        { path: data.model.path },
      );
    }
    const keyLayers = resolveKeyLayers(loaded.model, data.model.keyLayers);
    network = await OnnxNetworkGradient.create(loaded, keyLayers, options.threads);
  } finally {
    // The onnxruntime graphs hold copies of the weights, so the tfjs model is not needed any more.
    loaded.model.dispose();
  }

  const blocks: CacheKeySet['blocks'] = [];
  for (const manifest of manifests) {
    for (const ref of manifest.shards) {
      const shard = await loadShardObject(store, { key: ref.path, sha256: ref.sha256, bytes: ref.bytes });
      blocks.push({ keys: shard.keys, labels: shard.labels, count: shard.header.count });
    }
  }
  const readout = await CacheReadout.create({ blocks, dim: manifests[0].dim, numClasses: manifests[0].numClasses }, options.threads);
  options.logger.info({ keys: readout.numKeys, manifests: data.cache.manifests, gradient: network.description }, 'robustness models loaded');

  const family = new CacheModelFamily(network, readout, { cache: { theta: data.parameters.theta, lambda: data.parameters.lambda }, cacheOnly: { theta: data.parameters.thetaCacheOnly } });
  const domain = attackDomain(preprocessing);
  return {
    family,
    domain,
    preprocessing,
    dispose: async () => {
      await Promise.allSettled([network!.dispose(), readout.dispose()]);
    },
  };
}

/** Checks that every cache store was made from this model and key layers with one preprocessing, and returns that preprocessing. */
function checkManifests(manifests: KeyStoreManifest[], data: Pick<RobustnessJobData, 'model' | 'cache'>): PreprocessingSpec {
  const reference = manifests[0];
  manifests.forEach((manifest, i) => {
    const key = data.cache.manifests[i];
    const differences: string[] = [];
    if (manifest.identity.modelFingerprint !== data.model.fingerprint) differences.push(`model fingerprint ${manifest.identity.modelFingerprint}, not ${data.model.fingerprint}`);
    if (manifest.identity.keyLayers.join(',') !== data.model.keyLayers.join(',')) differences.push(`key layers ${manifest.identity.keyLayers.join(',')}, not ${data.model.keyLayers.join(',')}`);
    if (manifest.identity.preprocessingHash !== reference.identity.preprocessingHash) differences.push(`preprocessing ${manifest.identity.preprocessingHash}, not ${reference.identity.preprocessingHash}`);
    if (differences.length > 0) {
      throw new CachefleetError('KEY_STORE_MISMATCH', `Cache store ${key} does not fit this run: ${differences.join('; ')}. Build the cache with the run's model and key layers.`, { key, differences });
    }
  });

  const spec = parsePreprocessingSpec(reference.preprocessing);
  if (preprocessingHash(spec) !== reference.identity.preprocessingHash) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `The preprocessing in manifest ${data.cache.manifests[0]} does not hash to its identity's ${reference.identity.preprocessingHash}. Rebuild the key store.`, {
      key: data.cache.manifests[0],
    });
  }
  return spec;
}

export interface RobustnessJobResources {
  store: ObjectStore;
  /** The test split named by the job, opened by the worker. */
  split: DatasetSplit;
  models: RobustnessModels;
  logger: Logger;
  onProgress?: (part: string) => void;
}

/** Runs every attack of the run on one slice of the subset and writes the slice's records as JSON to `data.outputKey`. */
export async function runRobustnessJob(data: RobustnessJobData, resources: RobustnessJobResources): Promise<RobustnessJobResult> {
  const started = performance.now();
  const { split, models, store } = resources;
  if (split.fingerprint !== data.dataset.fingerprint) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Dataset ${data.dataset.name} ${data.dataset.split} at ${data.dataset.dir} has fingerprint ${split.fingerprint} on this worker, but the run expects ${data.dataset.fingerprint}. Give every worker the same dataset files as the coordinator.`,
      { expected: data.dataset.fingerprint, actual: split.fingerprint },
    );
  }

  const subset = pickSubset(split.size, data.settings.images, data.settings.seed);
  const images = await readSliceImages(split, subset, data.positions.start, data.positions.end, models.preprocessing);
  const slice = await runSlice({ family: models.family, domain: models.domain, settings: data.settings, images, logger: resources.logger, onProgress: resources.onProgress });

  const written = await store.put(data.outputKey, Buffer.from(JSON.stringify(slice)));
  return { key: data.outputKey, sha256: written.sha256, bytes: written.bytes, positions: data.positions, durationMs: Math.round(performance.now() - started) };
}

/** Reads every slice object (checking its SHA-256), aggregates the report and writes it to `data.reportKey`. */
export async function runRobustnessAggregateJob(data: RobustnessAggregateJobData, results: readonly RobustnessJobResult[], resources: { store: ObjectStore }): Promise<{ report: RobustnessReport; result: RobustnessAggregateResult }> {
  const { store } = resources;
  const slices: SliceResult[] = [];
  for (const result of results) {
    const bytes = await store.getBytes(result.key);
    const sha256 = sha256Hex(bytes);
    if (sha256 !== result.sha256) {
      throw new CachefleetError('CHECKSUM_MISMATCH', `Slice result ${store.describe()} ${result.key} has SHA-256 ${sha256}, but its job wrote ${result.sha256}. Submit the run again to rewrite it.`, { key: result.key });
    }
    slices.push(sliceResultSchema.parse(JSON.parse(Buffer.from(bytes).toString('utf8'))));
  }

  const subset = pickSubset(data.splitSize, data.settings.images, data.settings.seed);
  const report = aggregateRobustness({ context: data.context, parameters: data.parameters, settings: data.settings, subset, slices });
  const bytes = Buffer.from(JSON.stringify(report, null, 2));
  const written = await store.put(data.reportKey, bytes);
  return { report, result: { runId: data.runId, reportKey: data.reportKey, reportSha256: written.sha256, images: report.clean.images, slices: slices.length } };
}
