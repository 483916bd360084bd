import path from 'node:path';

import { openDatasetSplit, type DatasetName, type DatasetSplit } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import type { Logger } from '../log.js';
import { chooseExtractionEngine } from '../local/engine-choice.js';
import { ExtractionPool } from '../local/extraction-pool.js';
import type { BatchExtractor } from '../local/extractor.js';
import { planProtocol } from '../local/plan.js';
import { resolvePreprocessing, type ResolvedPreprocessing } from '../local/preprocessing-setup.js';
import type { ProgressSink } from '../local/progress.js';
import { loadOrExtractSegment, type LoadedSegment, type ModelSummary, type SegmentContext } from '../local/segments.js';
import { initBackend, loadModel, resolveKeyLayers, type BackendInfo, type BackendPreference, type KeyLayer, type LoadedModel } from '../models/index.js';
import { LocalKeyStore } from '../store/local-key-store.js';
import type { CacheKeySet } from './cache-readout.js';

export interface LocalCacheOptions {
  dataDir: string;
  dataset?: DatasetName;
  modelPath: string;
  keyLayers: Array<string | number>;
  /** Folder of the key stores; the run of `cachefleet evaluate` with the same model, layers and preprocessing fills it. */
  storeDir: string;
  /** The last `validationSize` training records are the validation part of the cache (default 5,000). */
  validationSize?: number;
  /** Only the first `limit` records of the train and of the validation part go into the cache, for quick runs. */
  limit?: number;
  statisticsSplits?: Array<'train' | 'test'>;
  /** Records per key shard; must match the stored run's value to reuse its keys (default one shard per split). */
  shardRecords?: number;
  threads?: number;
  backend?: BackendPreference;
  progress: ProgressSink;
  logger: Logger;
}

/** Everything a local robustness run needs besides the attacks. The caller disposes `loaded.model`. */
export interface LocalCache {
  backend: BackendInfo;
  loaded: LoadedModel;
  keyLayers: KeyLayer[];
  model: ModelSummary;
  preprocessing: ResolvedPreprocessing;
  test: DatasetSplit;
  /** The cache: every training image (or the first `limit` of each part) and its mirror image, train part then validation part. */
  keys: CacheKeySet;
  segments: LoadedSegment[];
}

/**
 * Loads the model and the cache of the test protocol of Orhan (2018): the keys of all training
 * images and their mirror images. Keys come from the local key store when a run with the same model, key
 * layers, preprocessing and records stored them (as `cachefleet evaluate` does), and are extracted
 * and stored otherwise.
 */
export async function loadLocalCache(options: LocalCacheOptions): Promise<LocalCache> {
  const { logger, progress } = options;
  const datasetName = options.dataset ?? 'cifar10';
  const backend = await initBackend(options.backend ?? 'auto');
  const loaded = await loadModel(options.modelPath);
  try {
    const keyLayers = resolveKeyLayers(loaded.model, options.keyLayers);
    const train = await openDatasetSplit(options.dataDir, { dataset: datasetName, split: 'train' });
    const test = await openDatasetSplit(options.dataDir, { dataset: datasetName, split: 'test' });
    if (loaded.numClasses !== train.numClasses) {
      throw new CachefleetError(
        'CLASS_COUNT_MISMATCH',
        `Model ${options.modelPath} outputs ${loaded.numClasses} classes but ${datasetName} has ${train.numClasses}. Use a model trained on ${datasetName}.`,
        { modelClasses: loaded.numClasses, datasetClasses: train.numClasses },
      );
    }

    const model: ModelSummary = {
      fingerprint: loaded.fingerprint,
      fileSha256: loaded.fileSha256,
      format: loaded.format,
      source: path.resolve(options.modelPath),
      keyLayers: keyLayers.map(({ index, name, shape }) => ({ index, name, shape })),
      dim: keyLayers.reduce((sum, layer) => sum + layer.size, 0),
      numClasses: loaded.numClasses,
    };
    const statisticsSplits = (options.statisticsSplits ?? ['train', 'test']).map((name) => (name === 'train' ? train : test));
    const preprocessing = await resolvePreprocessing(statisticsSplits, options.storeDir, progress, logger);
    const plan = planProtocol(train.size, test.size, { validationSize: options.validationSize, limit: options.limit });

    let extractor: BatchExtractor | undefined;
    const context: SegmentContext = {
      store: new LocalKeyStore(options.storeDir),
      model,
      preprocessing: preprocessing.spec,
      preprocessingHash: preprocessing.hash,
      extractor: async () => {
        const choice = chooseExtractionEngine(loaded, keyLayers, 'auto', logger);
        extractor ??= await ExtractionPool.start({
          engine: choice.engine,
          classifier: choice.classifier,
          modelPath: options.modelPath,
          keyLayers: options.keyLayers,
          threads: options.threads,
          backend: options.backend,
        });
        return extractor;
      },
      progress,
      logger,
    };

    const segments: LoadedSegment[] = [];
    try {
      segments.push(await loadOrExtractSegment(context, 'train', train, plan.train, true, options.shardRecords));
      segments.push(await loadOrExtractSegment(context, 'validation', train, plan.validation, true, options.shardRecords));
    } finally {
      await extractor?.close();
    }

    const shards = segments.flatMap((segment) => segment.shards);
    const keys: CacheKeySet = {
      blocks: shards.map((shard) => ({ keys: shard.keys, labels: shard.labels, count: shard.header.count })),
      dim: model.dim,
      numClasses: model.numClasses,
    };
    return { backend, loaded, keyLayers, model, preprocessing, test, keys, segments };
  } catch (error) {
    loaded.model.dispose();
    throw error;
  }
}
