import path from 'node:path';

import {
  CachefleetError,
  ShardCache,
  assertInsideFileRoots,
  computeFileSha256,
  countTensors,
  createScoringEngine,
  openDatasetSplit,
  openObjectStore,
  startExtractionPool,
  type DatasetRef,
  type DatasetSplit,
  type ExtractionPool,
  type Logger,
  type ModelRef,
  type ObjectStore,
  type ScoringEngine,
} from '@cachefleet/core';

import type { WorkerConfig } from './config.js';

interface LoadedModel {
  extractor: ExtractionPool;
  fileSha256: string;
}

/**
 * Resources a worker process loads once and keeps across jobs: object stores, dataset splits,
 * the model, the onnxruntime scoring engine and the decoded-shard cache. Forward passes run in
 * the extraction pool's worker threads, off the event loop that renews BullMQ locks.
 */
export class WorkerResources {
  readonly shardCache: ShardCache;
  private readonly stores = new Map<string, Promise<ObjectStore>>();
  private readonly splits = new Map<string, Promise<DatasetSplit>>();
  private currentModel: { id: string; loaded: Promise<LoadedModel> } | undefined;
  private engine: Promise<ScoringEngine> | undefined;
  private latestPool: ExtractionPool | undefined;

  constructor(
    private readonly config: WorkerConfig,
    private readonly logger: Logger,
  ) {
    this.shardCache = new ShardCache(config.shardCacheBytes);
  }

  /** Opens (once) the store of a job's storage URL, with S3 settings from the environment. */
  store(url: string): Promise<ObjectStore> {
    if (this.config.storageUrl !== undefined && url !== this.config.storageUrl) {
      return Promise.reject(
        new CachefleetError('INVALID_ARGUMENT', `The job's storage URL ${url} differs from CACHEFLEET_STORAGE_URL ${this.config.storageUrl}, the only storage this worker may use. Submit the job with that URL, or change the worker's setting.`, { url }),
      );
    }
    return this.remember(this.stores, url, () => openObjectStore(url, { logger: this.logger }));
  }

  /** Opens (once) a dataset split, which reads and hashes its files. The folder must lie inside CACHEFLEET_FILE_ROOTS when that is set. */
  async split(ref: DatasetRef): Promise<DatasetSplit> {
    await assertInsideFileRoots(ref.dir, this.config.fileRoots, 'Dataset folder', 'CACHEFLEET_FILE_ROOTS');
    const id = `${path.resolve(ref.dir)}|${ref.name}|${ref.split}|${ref.labelMode}`;
    return this.remember(this.splits, id, () => openDatasetSplit(ref.dir, { dataset: ref.name, split: ref.split, labelMode: ref.labelMode }));
  }

  /**
   * Starts the model's worker threads on first use and keeps them. A job for another model or
   * other key layers replaces them, because each thread runs one model. The model file must lie
   * inside CACHEFLEET_FILE_ROOTS when that is set.
   */
  async model(ref: ModelRef): Promise<LoadedModel> {
    await assertInsideFileRoots(ref.path, this.config.fileRoots, 'Model file', 'CACHEFLEET_FILE_ROOTS');
    const id = `${path.resolve(ref.path)}|${ref.keyLayers.join(',')}`;
    if (this.currentModel?.id !== id) {
      const previous = this.currentModel;
      this.currentModel = { id, loaded: this.loadModel(ref) };
      this.currentModel.loaded.catch(() => {
        if (this.currentModel?.id === id) this.currentModel = undefined;
      });
      if (previous !== undefined) await previous.loaded.then((loaded) => loaded.extractor.close(), () => undefined);
    }
    return this.currentModel!.loaded;
  }

  scoringEngine(): Promise<ScoringEngine> {
    this.engine ??= createScoringEngine({ threads: this.config.scoringThreads });
    this.engine.catch(() => {
      this.engine = undefined;
    });
    return this.engine;
  }

  /**
   * Returns the memory figures for the log line of each finished job: resident set and V8 heap in
   * bytes, and the live TensorFlow.js tensors of this thread and of the latest model's extraction
   * threads.
   */
  memoryFigures(): { rssBytes: number; heapUsedBytes: number; numTensors: number } {
    const usage = process.memoryUsage();
    return { rssBytes: usage.rss, heapUsedBytes: usage.heapUsed, numTensors: countTensors() + (this.latestPool?.numTensors ?? 0) };
  }

  /** Releases threads, the onnxruntime session and storage sockets; each step runs even if another fails. */
  async close(): Promise<void> {
    const steps: Array<Promise<unknown>> = [];
    if (this.currentModel !== undefined) steps.push(this.currentModel.loaded.then((loaded) => loaded.extractor.close()));
    if (this.engine !== undefined) steps.push(this.engine.then((engine) => engine.dispose()));
    for (const store of this.stores.values()) steps.push(store.then((opened) => opened.close()));
    this.shardCache.clear();

    const results = await Promise.allSettled(steps);
    for (const result of results) {
      if (result.status === 'rejected') this.logger.warn({ err: result.reason }, 'resource did not close cleanly');
    }
  }

  private async loadModel(ref: ModelRef): Promise<LoadedModel> {
    const started = performance.now();
    const fileSha256 = await computeFileSha256(path.resolve(ref.path));
    const extractor = await startExtractionPool({
      modelPath: ref.path,
      keyLayers: ref.keyLayers,
      engine: this.config.extractionEngine,
      threads: this.config.extractThreads,
      backend: this.config.backend,
      logger: this.logger,
    });
    this.latestPool = extractor;
    this.logger.info({ model: ref.path, engine: extractor.description, durationMs: Math.round(performance.now() - started) }, 'model loaded');
    return { extractor, fileSha256 };
  }

  private remember<T>(map: Map<string, Promise<T>>, id: string, open: () => Promise<T>): Promise<T> {
    let entry = map.get(id);
    if (entry === undefined) {
      entry = open();
      map.set(id, entry);
      // A failed open is forgotten, so the next job tries again.
      entry.catch(() => map.delete(id));
    }
    return entry;
  }
}
