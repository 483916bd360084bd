import { CachefleetError } from '../errors.js';
import type { RecordRange } from '../datasets/index.js';

/**
 * The paper's protocol as record ranges. Tuning: queries are the last `validationSize`
 * training images and their mirror images, the cache the other training images and their mirror
 * images. Test: queries are the test images, the cache all training images and their mirror
 * images. `limit` keeps the first `limit` records of each of the three splits, for quick runs.
 */
export interface ProtocolPlan {
  train: RecordRange;
  validation: RecordRange;
  test: RecordRange;
}

export const DEFAULT_VALIDATION_SIZE = 5_000;

export function planProtocol(trainSize: number, testSize: number, options: { limit?: number; validationSize?: number } = {}): ProtocolPlan {
  const validationSize = options.validationSize ?? DEFAULT_VALIDATION_SIZE;
  if (!Number.isInteger(validationSize) || validationSize <= 0 || validationSize >= trainSize) {
    throw new CachefleetError('INVALID_ARGUMENT', `Validation size ${validationSize} is invalid: it must be a whole number between 1 and ${trainSize - 1} (the training split has ${trainSize} records).`, { validationSize });
  }
  const limit = options.limit;
  if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0)) {
    throw new CachefleetError('INVALID_ARGUMENT', `--limit ${limit} is invalid: give a positive whole number of records per split, or leave it out for the full protocol.`, { limit });
  }

  const trainEnd = trainSize - validationSize;
  const cap = (range: RecordRange): RecordRange => (limit === undefined ? range : { start: range.start, end: Math.min(range.end, range.start + limit) });

  return {
    train: cap({ start: 0, end: trainEnd }),
    validation: cap({ start: trainEnd, end: trainSize }),
    test: cap({ start: 0, end: testSize }),
  };
}
