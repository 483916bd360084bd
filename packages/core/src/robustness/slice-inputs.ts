import type { DatasetSplit } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import { preprocess, type PreprocessingSpec } from '../preprocessing/index.js';
import type { AttackDomain } from './attacks.js';
import type { SliceImages } from './run-slice.js';
import type { RecordSubset } from './subset.js';

/**
 * Returns the valid input range per position: the preprocessed values of pixel values 0 and 255.
 * With a positive standard deviation per position, 0 maps to the lower bound.
 */
export function attackDomain(spec: PreprocessingSpec): AttackDomain {
  const imageSize = spec.height * spec.width * spec.channels;
  const lower = preprocess(new Uint8Array(imageSize), 1, spec);
  const upper = preprocess(new Uint8Array(imageSize).fill(255), 1, spec);
  for (let i = 0; i < imageSize; i += 1) {
    if (!(upper[i] > lower[i])) {
      throw new CachefleetError('INVALID_ARGUMENT', `The preprocessing maps pixel values 0 and 255 at position ${i} to ${lower[i]} and ${upper[i]}, so that position has no valid range to perturb. Check the standardisation statistics.`, {
        position: i,
      });
    }
  }
  return { height: spec.height, width: spec.width, channels: spec.channels, lower, upper };
}

/** Reads and preprocesses the subset records at positions [start, end). */
export async function readSliceImages(split: DatasetSplit, subset: RecordSubset, start: number, end: number, spec: PreprocessingSpec): Promise<SliceImages> {
  if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start < end && end <= subset.size)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Positions [${start}, ${end}) are not a slice of the ${subset.size}-image subset. Give 0 ≤ start < end ≤ ${subset.size}.`, { start, end });
  }
  const records = subset.indices.slice(start, end);
  const imageSize = spec.height * spec.width * spec.channels;
  const pixels = new Uint8Array(records.length * imageSize);
  for (let i = 0; i < records.length; i += 1) {
    pixels.set(await split.readPixels(records[i], records[i] + 1), i * imageSize);
  }
  return { start, records, labels: Int32Array.from(records, (record) => split.labels[record]), inputs: preprocess(pixels, records.length, spec) };
}

/** Cuts positions [0, size) into consecutive slices of `sliceSize`. */
export function slicePositions(size: number, sliceSize: number): Array<{ start: number; end: number }> {
  const slices: Array<{ start: number; end: number }> = [];
  for (let start = 0; start < size; start += sliceSize) {
    slices.push({ start, end: Math.min(size, start + sliceSize) });
  }
  return slices;
}
