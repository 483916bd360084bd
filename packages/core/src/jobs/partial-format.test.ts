import { describe, expect, it } from 'vitest';

import { decodePartialResult, encodePartialResult, type PartialResult } from './partial-format.js';

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks.map((chunk) => Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))));
}

function sample(): PartialResult {
  const rows = 3;
  const classes = 2;
  const thetas = [10, 20];
  const values = (seed: number) => Float32Array.from({ length: thetas.length * rows * classes }, (_, i) => seed + i / 8);
  return {
    header: { role: 'test', rowRange: { start: 256, end: 256 + rows }, numClasses: classes, thetas, shards: [{ index: 4, count: 7 }, { index: 5, count: 0 }, { index: 6, count: 2 }] },
    labels: Int32Array.from([1, 0, 1]),
    logProbs: Float32Array.from([-0.1, -2.3, -1.2, -0.4, -3, -0.05]),
    partials: new Map([
      [4, values(1)],
      [6, values(-5)],
    ]),
  };
}

describe('partial-result format', () => {
  it('round-trips every section', () => {
    const original = sample();
    const decoded = decodePartialResult(concat(encodePartialResult(original)), 'sample');

    expect(decoded.header).toEqual(original.header);
    expect(decoded.labels).toEqual(original.labels);
    expect(decoded.logProbs).toEqual(original.logProbs);
    expect([...decoded.partials.keys()]).toEqual([4, 6]);
    expect(decoded.partials.get(6)).toEqual(original.partials.get(6));
  });

  it('aligns sections to 64 bytes', () => {
    const chunks = encodePartialResult(sample());

    expect(chunks[0].byteLength % 64).toBe(0);
    expect(concat(chunks).byteLength % 64).toBe(0);
  });

  it('rejects a truncated object', () => {
    const bytes = concat(encodePartialResult(sample()));

    expect(() => decodePartialResult(bytes.subarray(0, bytes.length - 70), 'cut')).toThrow(/Partial result cut is unreadable: it is \d+ bytes long, but its header implies/);
  });

  it('rejects other bytes', () => {
    expect(() => decodePartialResult(new Uint8Array(64), 'zeros')).toThrow(/does not start with the partial-result magic bytes/);
  });

  it('requires partials of every scored shard', () => {
    const incomplete = sample();
    incomplete.partials.delete(6);

    expect(() => encodePartialResult(incomplete)).toThrow(/no partials for shard 6/);
  });
});
