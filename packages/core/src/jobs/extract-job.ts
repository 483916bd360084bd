import { formatRange, validateRecordRange, type DatasetSplit } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import { extractSegment } from '../local/extract-segment.js';
import type { BatchExtractor } from '../local/extractor.js';
import { encodeShard, type KeyShard } from '../store/shard-io.js';
import type { ObjectStore } from '../storage/index.js';
import type { ExtractJobData, ExtractResult } from './build-schemas.js';
import { throwIfCancelled, type CancellationCheck } from './cancellation.js';
import { getPreprocessingSpec } from './preprocessing-object.js';

export interface ExtractJobResources {
  store: ObjectStore;
  /** The split named by the job, opened by the worker (which keeps it across jobs). */
  split: DatasetSplit;
  /** Model runner, loaded once per worker process. */
  extractor: BatchExtractor;
  /** SHA-256 of the model file as this worker reads it. */
  modelFileSha256: string;
  onProgress?: (done: number, total: number) => void;
  /** Checked before and after every batch and before the upload; a cancelled run stops the job with RUN_CANCELLED and writes no shard. */
  isCancelled?: CancellationCheck;
}

/**
 * Extracts the keys of one shard with the same function as the local run (so the shard is
 * byte-identical to a local shard of the same range) and streams it to `data.shardKey`.
 */
export async function runExtractJob(data: ExtractJobData, resources: ExtractJobResources): Promise<ExtractResult> {
  const { store, split } = resources;
  assertSameInputs(data, split, resources.modelFileSha256);
  validateRecordRange(data.recordRange, split.size, 'shard record range');
  const jobName = `Extract job of build ${data.buildId}`;
  const extractor = checkingEachBatch(resources.extractor, resources.isCancelled, jobName);
  await throwIfCancelled(resources.isCancelled, jobName);
  const started = performance.now();

  const preprocessing = await getPreprocessingSpec(store, data.preprocessing);
  const shard = await extractSegment({
    split,
    range: data.recordRange,
    includeMirrors: data.includeMirrors,
    preprocessing,
    preprocessingHash: data.preprocessing.hash,
    modelFingerprint: data.model.fingerprint,
    keyLayerNames: data.model.keyLayers,
    extractor,
    onProgress: resources.onProgress,
  });

  await throwIfCancelled(resources.isCancelled, jobName);
  const written = await store.put(data.shardKey, shardChunks(shard), { contentLength: shard.header.totalBytes });
  return {
    key: data.shardKey,
    sha256: written.sha256,
    bytes: written.bytes,
    count: shard.header.count,
    recordRange: { start: data.recordRange.start, end: data.recordRange.end },
    zeroKeyCount: shard.header.zeroKeyRecords.length,
    engine: extractor.description,
    durationMs: Math.round(performance.now() - started),
  };
}

/**
 * Wraps an extractor so that the cancellation check runs before and after every batch. The
 * check after a batch matters because extractSegment keeps `concurrency` batches in flight, so
 * the last ones of a shard start long before the job ends.
 */
function checkingEachBatch(extractor: BatchExtractor, isCancelled: CancellationCheck | undefined, jobName: string): BatchExtractor {
  if (isCancelled === undefined) return extractor;
  return {
    featureSize: extractor.featureSize,
    numClasses: extractor.numClasses,
    description: extractor.description,
    concurrency: extractor.concurrency,
    extract: async (inputs, n) => {
      await throwIfCancelled(isCancelled, jobName);
      const batch = await extractor.extract(inputs, n);
      await throwIfCancelled(isCancelled, jobName);
      return batch;
    },
    close: () => extractor.close(),
  };
}

async function* shardChunks(shard: KeyShard): AsyncGenerator<Uint8Array> {
  yield* encodeShard(shard);
}

/** Raises KEY_STORE_MISMATCH (no retries) when this worker's dataset or model file differs from the coordinator's. */
function assertSameInputs(data: ExtractJobData, split: DatasetSplit, modelFileSha256: string): void {
  if (split.fingerprint !== data.dataset.fingerprint) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Dataset ${data.dataset.name} ${data.dataset.split} at ${data.dataset.dir} has fingerprint ${split.fingerprint} on this worker, but the build expects ${data.dataset.fingerprint}. Give every worker the same dataset files as the coordinator.`,
      { expected: data.dataset.fingerprint, actual: split.fingerprint, range: formatRange(data.recordRange) },
    );
  }
  // NOTE: for a TensorFlow.js model.json the file SHA-256 covers model.json only, not the weight files.
  if (modelFileSha256 !== data.model.fileSha256) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Model file ${data.model.path} has SHA-256 ${modelFileSha256} on this worker, but the build expects ${data.model.fileSha256}. Give every worker the same model file as the coordinator.`,
      { expected: data.model.fileSha256, actual: modelFileSha256 },
    );
  }
}
