import { describe, expect, it } from 'vitest';

import { readFixedSizeParts } from './fixed-size-parts.js';

async function collect(source: Iterable<Uint8Array>, partSize: number): Promise<Buffer[]> {
  const parts: Buffer[] = [];
  for await (const part of readFixedSizeParts(source, partSize)) {
    parts.push(Buffer.from(part));
  }
  return parts;
}

function sequence(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => i % 251);
}

describe('readFixedSizeParts', () => {
  it('regroups uneven chunks', async () => {
    const data = sequence(1000);
    const chunks = [data.subarray(0, 7), data.subarray(7, 300), data.subarray(300, 301), data.subarray(301)];

    const parts = await collect(chunks, 256);

    expect(parts.map((part) => part.byteLength)).toEqual([256, 256, 256, 232]);
    expect(Buffer.concat(parts).equals(Buffer.from(data))).toBe(true);
  });

  it('ends on a part boundary', async () => {
    const parts = await collect([sequence(512)], 256);

    expect(parts.map((part) => part.byteLength)).toEqual([256, 256]);
  });

  it('yields nothing for empty streams', async () => {
    const parts = await collect([new Uint8Array(0), new Uint8Array(0)], 256);

    expect(parts).toEqual([]);
  });

  it('never reuses a handed-out part', async () => {
    const data = sequence(10);
    const parts: Buffer[] = [];

    // Parts are kept without copying: a reused buffer would change an earlier part.
    for await (const part of readFixedSizeParts([data.subarray(0, 3), data.subarray(3)], 4)) {
      parts.push(part);
    }

    expect(Buffer.concat(parts).equals(Buffer.from(data))).toBe(true);
  });

  it('reports every chunk in order', async () => {
    const seen: number[] = [];
    const chunks = [sequence(3), sequence(5), sequence(2)];

    for await (const _part of readFixedSizeParts(chunks, 4, (chunk) => seen.push(chunk.byteLength))) {
      // Only the callback is observed here.
    }

    expect(seen).toEqual([3, 5, 2]);
  });

  it('rejects a zero part size', async () => {
    await expect(collect([sequence(1)], 0)).rejects.toThrow('partSize 0 is invalid');
  });
});
