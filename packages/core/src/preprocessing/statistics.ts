import { CachefleetError } from '../errors.js';
import { IMAGE_CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH } from '../datasets/formats.js';
import type { DatasetSplit } from '../datasets/split.js';
import type { StatisticsSource } from './spec.js';

/** Records per `readPixels` call while accumulating: about 3 MB of pixels at a time. */
const DEFAULT_CHUNK_RECORDS = 1000;

/** Per-pixel statistics of images scaled to [0, 1], in HWC order. */
export interface PixelStatistics {
  height: number;
  width: number;
  channels: number;
  /** Mean of x / 255 at each pixel and channel, rounded to float32. */
  mean: Float32Array;
  /** Population standard deviation (ddof 0) of x / 255 at each pixel and channel, rounded to float32. */
  std: Float32Array;
  source: StatisticsSource;
}

export interface ComputeStatisticsOptions {
  /** Records read per step; default 1,000. */
  chunkRecords?: number;
}

/**
 * Computes the per-pixel mean and population standard deviation of x / 255 over every record of
 * `splits`, which must be distinct splits of one dataset. Streams the pixels in chunks and sums
 * raw uint8 values and their squares in float64, which is exact up to 2^53 / 255² ≈ 1.4e11 records,
 * so the result does not depend on the order or chunking of the records.
 */
export async function computeStatistics(splits: DatasetSplit[], options: ComputeStatisticsOptions = {}): Promise<PixelStatistics> {
  validateSplits(splits);
  const chunkRecords = options.chunkRecords ?? DEFAULT_CHUNK_RECORDS;
  if (!Number.isSafeInteger(chunkRecords) || chunkRecords < 1) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid chunkRecords ${String(chunkRecords)}: expected an integer of at least 1.`, {
      chunkRecords,
    });
  }

  const imageSize = IMAGE_HEIGHT * IMAGE_WIDTH * IMAGE_CHANNELS;
  const sum = new Float64Array(imageSize);
  const sumOfSquares = new Float64Array(imageSize);
  let recordCount = 0;
  for (const split of splits) {
    for (let start = 0; start < split.size; start += chunkRecords) {
      const end = Math.min(start + chunkRecords, split.size);
      const pixels = await split.readPixels(start, end);
      accumulate(pixels, end - start, imageSize, sum, sumOfSquares);
    }
    recordCount += split.size;
  }

  const { mean, std } = finishStatistics(sum, sumOfSquares, recordCount);
  return {
    height: IMAGE_HEIGHT,
    width: IMAGE_WIDTH,
    channels: IMAGE_CHANNELS,
    mean,
    std,
    source: {
      dataset: splits[0].dataset,
      splits: splits.map((split) => ({ split: split.split, fingerprint: split.fingerprint, size: split.size })),
      recordCount,
    },
  };
}

function accumulate(pixels: Uint8Array, count: number, imageSize: number, sum: Float64Array, sumOfSquares: Float64Array): void {
  for (let record = 0; record < count; record++) {
    const offset = record * imageSize;
    for (let i = 0; i < imageSize; i++) {
      const value = pixels[offset + i];
      sum[i] += value;
      sumOfSquares[i] += value * value;
    }
  }
}

/**
 * Turns the sums into float32 statistics in units of x / 255. The variance numerator
 * `n·Σx² − (Σx)²` is computed exactly while n·n·255² < 2^53, i.e. up to about 370,000 records,
 * so it suffers no cancellation error there.
 */
function finishStatistics(sum: Float64Array, sumOfSquares: Float64Array, n: number): { mean: Float32Array; std: Float32Array } {
  const mean = new Float32Array(sum.length);
  const std = new Float32Array(sum.length);
  for (let i = 0; i < sum.length; i++) {
    mean[i] = sum[i] / (n * 255);
    const varianceNumerator = Math.max(0, n * sumOfSquares[i] - sum[i] * sum[i]);
    std[i] = Math.sqrt(varianceNumerator) / (n * 255);

    if (std[i] === 0) {
      const h = Math.floor(i / (IMAGE_WIDTH * IMAGE_CHANNELS));
      const w = Math.floor(i / IMAGE_CHANNELS) % IMAGE_WIDTH;
      const c = i % IMAGE_CHANNELS;
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Pixel (row ${h}, column ${w}, channel ${c}) has the same value in all ${n} records, so its standard deviation is 0 ` +
          'and standardisation would divide by zero. Compute the statistics over more records.',
        { row: h, column: w, channel: c, recordCount: n },
      );
    }
  }
  return { mean, std };
}

function validateSplits(splits: DatasetSplit[]): void {
  if (splits.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'Invalid statistics source: no splits given; pass at least one opened dataset split.', {});
  }

  const dataset = splits[0].dataset;
  const fingerprints = new Set<string>();
  for (const split of splits) {
    if (split.dataset !== dataset) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Invalid statistics source: splits of ${dataset} and ${split.dataset} were mixed; pass splits of one dataset.`,
        { datasets: [dataset, split.dataset] },
      );
    }
    if (fingerprints.has(split.fingerprint)) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Invalid statistics source: the ${split.dataset} ${split.split} split (fingerprint ${split.fingerprint}) was passed twice, ` +
          'which would count its records twice. Pass each split once.',
        { fingerprint: split.fingerprint },
      );
    }
    fingerprints.add(split.fingerprint);
  }
}
