import { normalizeKeys } from '../cache/index.js';
import { CachefleetError, isCachefleetError } from '../errors.js';
import type { DatasetSplit, RecordRange } from '../datasets/index.js';
import { mirrorHorizontally, preprocess, type PreprocessingSpec } from '../preprocessing/index.js';
import { createShard, type KeyShard } from '../store/shard-io.js';
import type { BatchExtractor, ForwardBatch } from './extractor.js';
import { logSoftmaxRows } from './log-softmax.js';

export interface SegmentRequest {
  split: DatasetSplit;
  range: RecordRange;
  /** Adds the horizontal mirror image of every record, made after standardisation. */
  includeMirrors: boolean;
  preprocessing: PreprocessingSpec;
  preprocessingHash: string;
  modelFingerprint: string;
  keyLayerNames: string[];
  extractor: BatchExtractor;
  /** Records read and preprocessed per batch sent to the extractor. */
  chunkSize?: number;
  /** Called with the number of images (originals and mirrors) done so far. */
  onProgress?: (done: number, total: number) => void;
}

const IMAGE_SIZE = 32;
const CHANNELS = 3;

/**
 * Extracts the keys of a record range into one shard. Rows are laid out independently of batch
 * size and thread scheduling: the originals in record order, then (with mirrors) the mirror
 * images in the same order. All-zero keys are counted and left out.
 */
export async function extractSegment(request: SegmentRequest): Promise<KeyShard> {
  const { split, range, includeMirrors, extractor } = request;
  const chunkSize = request.chunkSize ?? 256;
  const records = range.end - range.start;
  const total = records * (includeMirrors ? 2 : 1);
  const dim = extractor.featureSize;
  const numClasses = extractor.numClasses;

  if (numClasses !== split.numClasses) {
    throw new CachefleetError(
      'CLASS_COUNT_MISMATCH',
      `The model outputs ${numClasses} classes but dataset ${split.dataset} (${split.split}) has ${split.numClasses}. Use a model trained on this dataset.`,
      { modelClasses: numClasses, datasetClasses: split.numClasses },
    );
  }

  const keys = new Float32Array(total * dim);
  const logProbs = new Float32Array(total * numClasses);
  const labels = new Int32Array(total);
  const recordIndices = new Uint32Array(total);
  const mirrored = new Uint8Array(total);
  const zeroRows: number[] = [];
  let done = 0;

  const recordOf = (firstRow: number, row: number): number => range.start + ((firstRow + row) % records);
  // Extractors and normalizeKeys name the row of their batch, but the user needs the dataset record.
  const withRecord = (error: unknown, firstRow: number, isMirror: boolean): unknown => {
    if (!isCachefleetError(error, 'NON_FINITE_ACTIVATION') || typeof error.details.row !== 'number') return error;
    const record = recordOf(firstRow, error.details.row);
    const layer = typeof error.details.layer === 'string' ? ` in key layer ${error.details.layer}` : '';
    return new CachefleetError(
      'NON_FINITE_ACTIVATION',
      `Record ${record}${isMirror ? ' (mirror image)' : ''} of ${split.dataset} ${split.split} gives the key-layer activation ${String(error.details.value)}${layer}. Check the model weights and the preprocessing statistics.`,
      { ...error.details, record, mirrored: isMirror },
      { cause: error },
    );
  };

  const store = (batch: ForwardBatch, firstRow: number, n: number, isMirror: boolean): void => {
    try {
      const { zeroRows: zeros } = normalizeKeys(batch.features, n, dim);
      for (const row of zeros) zeroRows.push(firstRow + row);
    } catch (error) {
      throw withRecord(error, firstRow, isMirror);
    }

    keys.set(batch.features, firstRow * dim);
    logSoftmaxRows(batch.logits, n, numClasses, logProbs, firstRow);
    for (let row = 0; row < n; row += 1) {
      const record = recordOf(firstRow, row);
      labels[firstRow + row] = split.labels[record];
      recordIndices[firstRow + row] = record;
      mirrored[firstRow + row] = isMirror ? 1 : 0;
    }
    done += n;
    request.onProgress?.(done, total);
  };

  // A batch that fails leaves the set before the loop may await it, so its error is kept here.
  // Otherwise the rejection would go unhandled (which ends a Node process) and the shard would
  // be written with the batch's rows left empty.
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  const throwIfFailed = (): void => {
    if (failure !== undefined) throw failure.error;
  };
  const submit = async (inputs: Float32Array, firstRow: number, n: number, isMirror: boolean): Promise<void> => {
    throwIfFailed();
    while (inFlight.size >= extractor.concurrency) await Promise.race(inFlight).catch(() => undefined);
    throwIfFailed();
    const task = extractor.extract(inputs, n).then(
      (batch) => store(batch, firstRow, n, isMirror),
      (error: unknown) => {
        throw withRecord(error, firstRow, isMirror);
      },
    );
    const tracked = task.finally(() => inFlight.delete(tracked));
    tracked.catch((error: unknown) => {
      failure ??= { error };
    });
    inFlight.add(tracked);
  };

  for (let start = range.start; start < range.end; start += chunkSize) {
    const end = Math.min(start + chunkSize, range.end);
    const n = end - start;
    const pixels = await split.readPixels(start, end);
    const inputs = preprocess(pixels, n, request.preprocessing);
    const mirrors = includeMirrors ? mirrorHorizontally(inputs, n, IMAGE_SIZE, IMAGE_SIZE, CHANNELS) : undefined;

    await submit(inputs, start - range.start, n, false);
    if (mirrors !== undefined) await submit(mirrors, records + start - range.start, n, true);
  }
  await Promise.allSettled(inFlight);
  throwIfFailed();

  // Identities of dropped rows are read before compaction moves later rows over them.
  const zeroKeyRecords = zeroRows.sort((a, b) => a - b).map((row) => ({ index: recordIndices[row], mirrored: mirrored[row] === 1 }));
  const kept = compactRows({ keys, logProbs, labels, recordIndices, mirrored }, zeroRows, dim, numClasses);
  return createShard(
    {
      count: kept.labels.length,
      dim,
      numClasses,
      modelFingerprint: request.modelFingerprint,
      keyLayers: request.keyLayerNames,
      preprocessingHash: request.preprocessingHash,
      dataset: { name: split.dataset, split: split.split, fingerprint: split.fingerprint },
      recordRange: { start: range.start, end: range.end },
      includesMirrors: includeMirrors,
      zeroKeyRecords,
    },
    kept,
  );
}

interface Rows {
  keys: Float32Array;
  logProbs: Float32Array;
  labels: Int32Array;
  recordIndices: Uint32Array;
  mirrored: Uint8Array;
}

/** Removes the given rows by shifting later rows up in place; returns views of the kept rows. */
function compactRows(rows: Rows, dropped: number[], dim: number, numClasses: number): Rows {
  if (dropped.length === 0) return rows;
  const drop = new Set(dropped);
  const total = rows.labels.length;
  let target = 0;

  for (let row = 0; row < total; row += 1) {
    if (drop.has(row)) continue;
    if (target !== row) {
      rows.keys.copyWithin(target * dim, row * dim, (row + 1) * dim);
      rows.logProbs.copyWithin(target * numClasses, row * numClasses, (row + 1) * numClasses);
      rows.labels[target] = rows.labels[row];
      rows.recordIndices[target] = rows.recordIndices[row];
      rows.mirrored[target] = rows.mirrored[row];
    }
    target += 1;
  }

  return {
    keys: rows.keys.subarray(0, target * dim),
    logProbs: rows.logProbs.subarray(0, target * numClasses),
    labels: rows.labels.subarray(0, target),
    recordIndices: rows.recordIndices.subarray(0, target),
    mirrored: rows.mirrored.subarray(0, target),
  };
}
