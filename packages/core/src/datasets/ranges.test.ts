import { describe, expect, it } from 'vitest';

import { RecordRangeSchema, splitRange, validateRecordRange } from './ranges.js';

describe('validateRecordRange', () => {
  it('accepts ranges inside the split', () => {
    expect(() => validateRecordRange({ start: 0, end: 50_000 }, 50_000)).not.toThrow();
    expect(() => validateRecordRange({ start: 49_999, end: 50_000 }, 50_000)).not.toThrow();
  });

  it('rejects an empty range', () => {
    expect(() => validateRecordRange({ start: 10, end: 10 }, 100)).toThrow(/\[10, 10\).*empty.*0 <= start < end <= 100/);
  });

  it('rejects a reversed range', () => {
    expect(() => validateRecordRange({ start: 20, end: 10 }, 100)).toThrow(/\[20, 10\).*empty/);
  });

  it('rejects an end beyond the split', () => {
    expect(() => validateRecordRange({ start: 0, end: 10_001 }, 10_000)).toThrow(/end 10001 is beyond the split, which has 10000 records/);
  });

  it('rejects a negative start', () => {
    expect(() => validateRecordRange({ start: -1, end: 5 }, 10)).toThrow(/start -1 is negative; expected 0 <= start < end <= 10/);
  });

  it('rejects non-integer bounds', () => {
    expect(() => validateRecordRange({ start: 0.5, end: 5 }, 10)).toThrow(/must be integers/);
  });

  it('raises the INVALID_ARGUMENT code', () => {
    expect(() => validateRecordRange({ start: 5, end: 5 }, 10)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('splitRange', () => {
  it('cuts a range into shards', () => {
    const shards = splitRange({ start: 0, end: 45_000 }, { shardSize: 10_000 });

    expect(shards).toEqual([
      { start: 0, end: 10_000 },
      { start: 10_000, end: 20_000 },
      { start: 20_000, end: 30_000 },
      { start: 30_000, end: 40_000 },
      { start: 40_000, end: 45_000 },
    ]);
  });

  it('covers every index exactly once', () => {
    const range = { start: 123, end: 9_876 };
    const shards = splitRange(range, { shardSize: 1_000 });
    const covered = shards.flatMap((shard) => Array.from({ length: shard.end - shard.start }, (_, i) => shard.start + i));

    expect(covered).toEqual(Array.from({ length: range.end - range.start }, (_, i) => range.start + i));
  });

  it('returns identical shards on repeat', () => {
    const first = splitRange({ start: 45_000, end: 50_000 }, { shardSize: 777 });
    const second = splitRange({ start: 45_000, end: 50_000 }, { shardSize: 777 });

    expect(second).toEqual(first);
  });

  it('returns one shard when it fits', () => {
    expect(splitRange({ start: 5, end: 9 }, { shardSize: 100 })).toEqual([{ start: 5, end: 9 }]);
  });

  it('rejects a zero shard size', () => {
    expect(() => splitRange({ start: 0, end: 10 }, { shardSize: 0 })).toThrow(/Invalid shard size 0/);
  });

  it('rejects a fractional shard size', () => {
    expect(() => splitRange({ start: 0, end: 10 }, { shardSize: 2.5 })).toThrow(/Invalid shard size 2.5/);
  });

  it('rejects an empty range', () => {
    expect(() => splitRange({ start: 3, end: 3 }, { shardSize: 10 })).toThrow(/empty/);
  });
});

describe('RecordRangeSchema', () => {
  it('parses a valid range', () => {
    expect(RecordRangeSchema.parse({ start: 0, end: 5 })).toEqual({ start: 0, end: 5 });
  });

  it('rejects an empty range', () => {
    expect(RecordRangeSchema.safeParse({ start: 5, end: 5 }).success).toBe(false);
  });
});
