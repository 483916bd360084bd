import path from 'node:path';

import {
  CachefleetError,
  assertInsideFileRoots,
  cacheBuildRequestSchema,
  invalidRequestError,
  keyStoreId,
  loadModel,
  objectKeys,
  jobIds,
  putPreprocessingSpec,
  resolveKeyLayers,
  resolvePreprocessing,
  silentProgress,
  splitRange,
  validateRecordRange,
  openDatasetSplit,
  type BuildJobs,
  type CacheBuildRequest,
  type DatasetSplit,
  type KeyStoreIdentity,
  type Logger,
  type ObjectStore,
  type PreprocessingRef,
} from '@cachefleet/core';

interface ModelInfo {
  path: string;
  fingerprint: string;
  fileSha256: string;
  format: string;
  keyLayers: Array<{ index: number; name: string; shape: number[] }>;
  dim: number;
  numClasses: number;
}

export interface BuildResolverOptions {
  /**
   * Absolute folders in which requests may name dataset folders and model files. Undefined
   * allows every path. A coordinator that takes requests from other users (an HTTP API) sets it.
   */
  fileRoots?: readonly string[];
  /** Name of the setting behind `fileRoots`, for the error message. Default `fileRoots`. */
  fileRootsSetting?: string;
}

/** A build request turned into jobs, with the facts the coordinator found while resolving it. */
export interface ResolvedBuild {
  jobs: BuildJobs;
  manifestKey: string;
  split: DatasetSplit;
}

/**
 * Turns build requests into jobs. It loads each model, opens each split and computes each
 * preprocessing spec once per coordinator run (the three builds of `fleet paper` share them),
 * and stores the spec as an object that every extract job reads.
 */
export class BuildResolver {
  private readonly models = new Map<string, Promise<ModelInfo>>();
  private readonly splits = new Map<string, Promise<DatasetSplit>>();
  private readonly preprocessing = new Map<string, Promise<PreprocessingRef>>();

  constructor(
    /** Opens the store of a storage URL; the caller keeps and closes the stores. */
    private readonly openStore: (url: string) => Promise<ObjectStore>,
    /** Folder of the local statistics cache, shared with `cachefleet evaluate`. */
    private readonly storeDir: string,
    private readonly logger: Logger,
    private readonly options: BuildResolverOptions = {},
  ) {}

  async resolve(request: CacheBuildRequest): Promise<ResolvedBuild> {
    const parsed = cacheBuildRequestSchema.safeParse(request);
    if (!parsed.success) {
      throw invalidRequestError('Cache build request', parsed.error, request);
    }
    const build = parsed.data;
    await assertInsideFileRoots(build.dataDir, this.options.fileRoots, 'Dataset folder', this.options.fileRootsSetting ?? 'fileRoots');
    await assertInsideFileRoots(build.modelPath, this.options.fileRoots, 'Model file', this.options.fileRootsSetting ?? 'fileRoots');

    const split = await this.split(build.dataDir, build.dataset, build.split, build.labelMode);
    const range = build.recordRange ?? { start: 0, end: split.size };
    validateRecordRange(range, split.size, 'build record range');
    const model = await this.model(build.modelPath, build.keyLayers);
    if (model.numClasses !== split.numClasses) {
      throw new CachefleetError('CLASS_COUNT_MISMATCH', `Model ${build.modelPath} outputs ${model.numClasses} classes but ${build.dataset} has ${split.numClasses}. Use a model trained on ${build.dataset}.`, { modelClasses: model.numClasses, datasetClasses: split.numClasses });
    }

    const statisticsSplits = await Promise.all(build.statisticsSplits.map((name) => this.split(build.dataDir, build.dataset, name, build.labelMode)));
    const preprocessing = await this.preprocessingRef(build.storageUrl, statisticsSplits);
    const identity: KeyStoreIdentity = {
      modelFingerprint: model.fingerprint,
      keyLayers: model.keyLayers.map((layer) => layer.name),
      preprocessingHash: preprocessing.hash,
      dataset: { name: split.dataset, split: split.split, labelMode: split.labelMode, fingerprint: split.fingerprint },
      recordRange: { start: range.start, end: range.end },
      includesMirrors: build.includeMirrors,
      shardRecords: build.shardRecords,
    };
    const buildId = build.buildId ?? keyStoreId(identity);

    const shardRanges = splitRange(range, { shardSize: build.shardRecords });
    const extracts = shardRanges.map((shardRange) => ({
      jobId: jobIds.extract(buildId, shardRange),
      data: {
        buildId,
        storageUrl: build.storageUrl,
        dataset: { dir: split.dir, name: split.dataset, split: split.split, labelMode: split.labelMode, fingerprint: split.fingerprint },
        recordRange: shardRange,
        includeMirrors: build.includeMirrors,
        model: { path: model.path, fileSha256: model.fileSha256, fingerprint: model.fingerprint, keyLayers: identity.keyLayers },
        preprocessing,
        shardKey: objectKeys.shard(buildId, shardRange),
      },
    }));

    const manifestKey = objectKeys.manifest(buildId);
    return {
      manifestKey,
      split,
      jobs: {
        buildId,
        extracts,
        merge: {
          buildId,
          storageUrl: build.storageUrl,
          manifestKey,
          identity,
          model: { fingerprint: model.fingerprint, fileSha256: model.fileSha256, format: model.format, source: model.path },
          keyLayers: model.keyLayers,
          dim: model.dim,
          numClasses: model.numClasses,
          preprocessing,
          shards: extracts.map((extract) => ({ key: extract.data.shardKey, recordRange: extract.data.recordRange })),
        },
      },
    };
  }

  /** Opens a split once per coordinator run (it reads and hashes every file of the split). */
  split(dataDir: string, dataset: 'cifar10' | 'cifar100', split: 'train' | 'test', labelMode: 'fine' | 'coarse'): Promise<DatasetSplit> {
    const id = `${path.resolve(dataDir)}|${dataset}|${split}|${labelMode}`;
    return remember(this.splits, id, () => openDatasetSplit(dataDir, { dataset, split, labelMode }));
  }

  private model(modelPath: string, keyLayers: Array<string | number>): Promise<ModelInfo> {
    const source = path.resolve(modelPath);
    return remember(this.models, `${source}|${keyLayers.join(',')}`, async () => {
      const loaded = await loadModel(source);
      try {
        const layers = resolveKeyLayers(loaded.model, keyLayers);
        return {
          path: source,
          fingerprint: loaded.fingerprint,
          fileSha256: loaded.fileSha256,
          format: loaded.format,
          keyLayers: layers.map(({ index, name, shape }) => ({ index, name, shape })),
          dim: layers.reduce((sum, layer) => sum + layer.size, 0),
          numClasses: loaded.numClasses,
        };
      } finally {
        loaded.model.dispose();
      }
    });
  }

  private preprocessingRef(storageUrl: string, splits: DatasetSplit[]): Promise<PreprocessingRef> {
    const id = [storageUrl, ...splits.map((split) => `${split.dataset}:${split.split}:${split.fingerprint}`)].join('|');
    return remember(this.preprocessing, id, async () => {
      const resolved = await resolvePreprocessing(splits, this.storeDir, silentProgress, this.logger);
      return putPreprocessingSpec(await this.openStore(storageUrl), resolved.spec);
    });
  }
}

function remember<T>(map: Map<string, Promise<T>>, id: string, open: () => Promise<T>): Promise<T> {
  let entry = map.get(id);
  if (entry === undefined) {
    entry = open();
    map.set(id, entry);
    entry.catch(() => map.delete(id));
  }
  return entry;
}
