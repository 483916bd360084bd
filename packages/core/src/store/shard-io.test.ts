import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createShard, decodeShard, encodeShard, readShardFile, readShardHeader, writeShardFile, type KeyShard } from './shard-io.js';
import type { ShardHeaderFields } from './shard-format.js';

function makeShard(count: number, dim: number, numClasses: number): KeyShard {
  const fields: ShardHeaderFields = {
    count,
    dim,
    numClasses,
    modelFingerprint: 'model-fp',
    keyLayers: ['activation_23'],
    preprocessingHash: 'prep-hash',
    dataset: { name: 'cifar10', split: 'train', fingerprint: 'data-fp' },
    recordRange: { start: 10, end: 10 + count },
    includesMirrors: false,
    zeroKeyRecords: [],
  };
  const keys = Float32Array.from({ length: count * dim }, (_, i) => Math.sin(i));
  const logProbs = Float32Array.from({ length: count * numClasses }, (_, i) => -i / 7);
  return createShard(fields, {
    labels: Int32Array.from({ length: count }, (_, i) => i % numClasses),
    recordIndices: Uint32Array.from({ length: count }, (_, i) => 10 + i),
    mirrored: Uint8Array.from({ length: count }, (_, i) => i % 2),
    logProbs,
    keys,
  });
}

async function* chunksOf(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let start = 0; start < bytes.length; start += size) yield bytes.subarray(start, start + size);
}

describe('key shard files', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-shard-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips every section', async () => {
    const shard = makeShard(37, 13, 10);
    const file = path.join(dir, 'roundtrip.cfshard');
    const digest = await writeShardFile(file, shard);

    const read = await readShardFile(file, digest);

    expect(read.digest).toEqual(digest);
    expect(read.header).toEqual(shard.header);
    expect(read.keys).toEqual(shard.keys);
    expect(read.logProbs).toEqual(shard.logProbs);
    expect(read.labels).toEqual(shard.labels);
    expect(read.recordIndices).toEqual(shard.recordIndices);
    expect(read.mirrored).toEqual(shard.mirrored);
  });

  it('decodes from tiny stream chunks', async () => {
    const shard = makeShard(5, 3, 2);
    const bytes = Buffer.concat([...encodeShard(shard)]);

    const read = await decodeShard(chunksOf(bytes, 7), 'memory');

    expect(read.keys).toEqual(shard.keys);
    expect(read.digest.bytes).toBe(bytes.length);
  });

  it('aligns sections to 64 bytes', () => {
    const shard = makeShard(3, 5, 10);

    for (const section of shard.header.sections) expect(section.offset % 64).toBe(0);
  });

  it('reads the header alone', async () => {
    const shard = makeShard(4, 2, 3);
    const file = path.join(dir, 'header.cfshard');
    await writeShardFile(file, shard);

    expect(await readShardHeader(file)).toEqual(shard.header);
  });

  it('rejects a truncated shard', async () => {
    const file = path.join(dir, 'truncated.cfshard');
    const digest = await writeShardFile(file, makeShard(20, 8, 10));
    await truncate(file, digest.bytes - 4);

    await expect(readShardFile(file)).rejects.toThrow(/truncated or has trailing data/);
  });

  it('rejects a changed byte by checksum', async () => {
    const file = path.join(dir, 'corrupt.cfshard');
    const digest = await writeShardFile(file, makeShard(20, 8, 10));
    const bytes = await readFile(file);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(file, bytes);

    await expect(readShardFile(file, digest)).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
  });

  it('rejects a file with another magic', async () => {
    const file = path.join(dir, 'not-a-shard.bin');
    await writeFile(file, Buffer.from('PK\u0003\u0004 this is a zip file, not a shard'));

    await expect(readShardFile(file)).rejects.toThrow(/not a cachefleet key shard/);
  });

  it('rejects arrays of the wrong length', () => {
    const shard = makeShard(2, 2, 2);

    expect(() => createShard({ ...shard.header, count: 3 }, shard)).toThrow(/labels has 2 elements, expected 3/);
  });
});
