import path from 'node:path';

import { DEFAULT_LAMBDAS, DEFAULT_THETAS, createScoringEngine } from '../cache/index.js';
import { openDatasetSplit, type DatasetName } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { initBackend, loadModel, resolveKeyLayers, type BackendPreference } from '../models/index.js';
import { LocalKeyStore } from '../store/local-key-store.js';
import type { BatchExtractor } from './extractor.js';
import { assertNoOverlap } from './overlap.js';
import { planProtocol } from './plan.js';
import { resolvePreprocessing } from './preprocessing-setup.js';
import { StageTimer, silentProgress, type ProgressSink } from './progress.js';
import type { EvaluationReport } from './report.js';
import { loadOrExtractSegment, type LoadedSegment, type ModelSummary, type SegmentContext } from './segments.js';
import { chooseExtractionEngine, type ExtractionEngineName } from './engine-choice.js';
import { ExtractionPool } from './extraction-pool.js';
import { tuneAndTest } from './tune-and-test.js';

export interface LocalEvaluationOptions {
  /** Folder of the dataset in its binary format (for example `cifar-10-batches-bin`). */
  dataDir: string;
  dataset?: DatasetName;
  modelPath: string;
  /** Key layers by name or 0-based index into the Keras layer list. */
  keyLayers: Array<string | number>;
  /** Fixed θ and λ of the cache model; both or neither. */
  theta?: number;
  lambda?: number;
  /** Fixed θ of the cache-only model. */
  thetaCacheOnly?: number;
  thetas?: readonly number[];
  lambdas?: readonly number[];
  limit?: number;
  validationSize?: number;
  /**
   * Splits whose images give the standardisation statistics; default both, because the ResNets
   * released with Orhan (2018) were trained with statistics over all 60,000 CIFAR-10 images.
   */
  statisticsSplits?: Array<'train' | 'test'>;
  /**
   * Records per key shard (default: one shard per split). The fleet cuts caches into shards;
   * the same value here reproduces its results bit for bit.
   */
  shardRecords?: number;
  /** Folder of the key stores, reused across runs. */
  storeDir: string;
  /** Lets evaluation items also be cache items. */
  allowOverlap?: boolean;
  threads?: number;
  /** Forward-pass engine: `auto` (default) uses onnxruntime when the model converts, else tfjs. */
  engine?: ExtractionEngineName;
  backend?: BackendPreference;
  progress?: ProgressSink;
  logger?: Logger;
}

function validateFixedParameters(options: LocalEvaluationOptions): void {
  const { theta, lambda, thetaCacheOnly } = options;
  if ((theta === undefined) !== (lambda === undefined)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Only one of θ (${theta}) and λ (${lambda}) was given. Give both --theta and --lambda to skip tuning, or neither to tune them on the validation split.`, { theta, lambda });
  }
  for (const [name, value] of [['--theta', theta], ['--theta-cache-only', thetaCacheOnly]] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
      throw new CachefleetError('INVALID_ARGUMENT', `${name} ${value} is invalid: θ must be a finite number greater than 0 (the paper's values are about 10 to 90).`, { [name]: value });
    }
  }
  if (lambda !== undefined && !(Number.isFinite(lambda) && lambda >= 0 && lambda <= 1)) {
    throw new CachefleetError('INVALID_ARGUMENT', `--lambda ${lambda} is invalid: λ is the cache's weight in the mixture and must be between 0 and 1.`, { lambda });
  }
}

/**
 * Runs the cache model's protocol in one process with local files: extract (or reuse) keys,
 * tune θ and λ on the validation split unless they are given, evaluate on the test split and
 * return the report.
 */
export async function runLocalEvaluation(options: LocalEvaluationOptions): Promise<EvaluationReport> {
  validateFixedParameters(options);
  const logger = options.logger ?? createLogger('cachefleet');
  const progress = options.progress ?? silentProgress;
  const timer = new StageTimer();
  const datasetName = options.dataset ?? 'cifar10';
  const thetas = options.thetas ?? DEFAULT_THETAS;
  const lambdas = options.lambdas ?? DEFAULT_LAMBDAS;

  const setup = await timer.time('load model and data', async () => {
    const backend = await initBackend(options.backend ?? 'auto');
    const loaded = await loadModel(options.modelPath);
    const keyLayers = resolveKeyLayers(loaded.model, options.keyLayers);
    const train = await openDatasetSplit(options.dataDir, { dataset: datasetName, split: 'train' });
    const test = await openDatasetSplit(options.dataDir, { dataset: datasetName, split: 'test' });
    if (loaded.numClasses !== train.numClasses) {
      throw new CachefleetError('CLASS_COUNT_MISMATCH', `Model ${options.modelPath} outputs ${loaded.numClasses} classes but ${datasetName} has ${train.numClasses}. Use a model trained on ${datasetName}.`, { modelClasses: loaded.numClasses, datasetClasses: train.numClasses });
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
    const engineChoice = chooseExtractionEngine(loaded, keyLayers, options.engine ?? 'auto', logger);
    loaded.model.dispose();
    return { backend, model, train, test, engineChoice };
  });
  const { backend, model, train, test, engineChoice } = setup;
  logger.info({ backend: backend.name, model: model.source, fingerprint: model.fingerprint, keyLayers: model.keyLayers.map((l) => l.name), dim: model.dim }, 'model loaded');

  const statisticsSplits = (options.statisticsSplits ?? ['train', 'test']).map((name) => (name === 'train' ? train : test));
  const preprocessing = await timer.time('preprocessing statistics', () => resolvePreprocessing(statisticsSplits, options.storeDir, progress, logger));
  const plan = planProtocol(train.size, test.size, { limit: options.limit, validationSize: options.validationSize });

  let extractor: BatchExtractor | undefined;
  const context: SegmentContext = {
    store: new LocalKeyStore(options.storeDir),
    model,
    preprocessing: preprocessing.spec,
    preprocessingHash: preprocessing.hash,
    extractor: async () => {
      extractor ??= await ExtractionPool.start({
        engine: engineChoice.engine,
        classifier: engineChoice.classifier,
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

  let segments: { train: LoadedSegment; validation: LoadedSegment; test: LoadedSegment };
  try {
    segments = {
      train: await timer.time('extract train', () => loadOrExtractSegment(context, 'train', train, plan.train, true, options.shardRecords)),
      validation: await timer.time('extract validation', () => loadOrExtractSegment(context, 'validation', train, plan.validation, true, options.shardRecords)),
      test: await timer.time('extract test', () => loadOrExtractSegment(context, 'test', test, plan.test, false, options.shardRecords)),
    };
  } finally {
    await extractor?.close();
  }

  const validationCache = segments.train.shards;
  const testCache = [...segments.train.shards, ...segments.validation.shards];
  if (options.allowOverlap !== true) {
    assertNoOverlap(segments.validation.shards, validationCache, 'Validation');
    assertNoOverlap(segments.test.shards, testCache, 'Test');
  }

  const engine = await createScoringEngine({ threads: options.threads });
  try {
    return await tuneAndTest({
      engine,
      timer,
      progress,
      logger,
      segments,
      validationCache,
      testCache,
      thetas,
      lambdas,
      fixed: { theta: options.theta, lambda: options.lambda, thetaCacheOnly: options.thetaCacheOnly },
      model,
      backend: backend.name,
      extractionEngine: extractor?.description ?? 'none (all keys reused from the key store)',
      scoringEngine: `onnxruntime-node, ${engine.threads} intra-op threads`,
      preprocessing: { hash: preprocessing.hash, description: preprocessing.description },
      dataset: { name: datasetName, dir: path.resolve(options.dataDir), train, test },
      limit: options.limit ?? null,
    });
  } finally {
    await engine.dispose();
  }
}
