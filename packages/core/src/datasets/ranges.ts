import { z } from 'zod';

import { CachefleetError } from '../errors.js';

/** Half-open interval of record indices `[start, end)` inside one dataset split. */
export interface RecordRange {
  start: number;
  end: number;
}

/** Schema for record ranges in job data and configs. Bounds against a split need `validateRecordRange`. */
export const RecordRangeSchema = z
  .object({
    start: z.number().int().nonnegative(),
    end: z.number().int().positive(),
  })
  .refine((range) => range.start < range.end, { message: 'start must be less than end (the range is half-open)' });

export function rangeLength(range: RecordRange): number {
  return range.end - range.start;
}

/** Formats the range as `[start, end)` for messages. */
export function formatRange(range: RecordRange): string {
  return `[${range.start}, ${range.end})`;
}

/**
 * Throws INVALID_ARGUMENT unless `range` is a non-empty range of integer indices inside a split
 * of `size` records, i.e. `0 <= start < end <= size`. `rangeName` names the range in the message.
 */
export function validateRecordRange(range: RecordRange, size: number, rangeName = 'record range'): void {
  validateRangeShape(range, rangeName, size);

  if (range.end > size) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid ${rangeName} ${formatRange(range)}: end ${range.end} is beyond the split, which has ${size} records; ` +
        `${expectedBounds(size)}.`,
      { start: range.start, end: range.end, size },
    );
  }
}

export interface SplitRangeOptions {
  /** Records per shard; the last shard may be shorter. */
  shardSize: number;
}

/**
 * Cuts `range` into consecutive shards of `shardSize` records, in index order. The result depends
 * only on the range and the shard size, so every process that splits the same range gets the
 * same shards.
 */
export function splitRange(range: RecordRange, options: SplitRangeOptions): RecordRange[] {
  validateRangeShape(range, 'record range');
  const { shardSize } = options;
  if (!Number.isSafeInteger(shardSize) || shardSize < 1) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid shard size ${String(shardSize)}: expected an integer of at least 1.`, {
      shardSize,
    });
  }

  const shards: RecordRange[] = [];
  for (let start = range.start; start < range.end; start += shardSize) {
    shards.push({ start, end: Math.min(start + shardSize, range.end) });
  }
  return shards;
}

function validateRangeShape(range: RecordRange, rangeName: string, size?: number): void {
  const { start, end } = range;
  const details = { start, end, ...(size === undefined ? {} : { size }) };
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid ${rangeName} [${String(start)}, ${String(end)}): start and end must be integers; ${expectedBounds(size)}.`,
      details,
    );
  }
  if (start < 0) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid ${rangeName} ${formatRange(range)}: start ${start} is negative; ${expectedBounds(size)}.`,
      details,
    );
  }
  if (start >= end) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid ${rangeName} ${formatRange(range)}: the range is empty because end is exclusive; ${expectedBounds(size)}.`,
      details,
    );
  }
}

function expectedBounds(size: number | undefined): string {
  return size === undefined ? 'expected 0 <= start < end' : `expected 0 <= start < end <= ${size}`;
}
