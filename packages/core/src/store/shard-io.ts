import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

import { CachefleetError } from '../errors.js';
import {
  SHARD_PREAMBLE_BYTES,
  layoutShard,
  parsePreamble,
  parseShardHeader,
  type SectionName,
  type ShardHeader,
  type ShardHeaderFields,
} from './shard-format.js';

/** A shard in memory: its header and one typed array per section. */
export interface KeyShard {
  header: ShardHeader;
  labels: Int32Array;
  recordIndices: Uint32Array;
  mirrored: Uint8Array;
  logProbs: Float32Array;
  keys: Float32Array;
}

export interface ShardDigest {
  sha256: string;
  bytes: number;
}

/** Keys are written in slices of this size so no copy of the whole key matrix is ever made. */
const WRITE_CHUNK_BYTES = 16 * 1024 * 1024;

/**
 * A byte view of part of a typed array. Views are made per chunk, never of a whole section,
 * because V8 limits a Uint8Array to 2^32 − 1 elements while a key section can be larger
 * (90,000 keys of 12,288 float32 values are 4.4 GB).
 */
function byteView(array: ArrayBufferView, start: number, end: number): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset + start, end - start);
}

function sectionArrays(shard: Omit<KeyShard, 'header'>): Record<SectionName, ArrayBufferView> {
  return {
    labels: shard.labels,
    recordIndices: shard.recordIndices,
    mirrored: shard.mirrored,
    logProbs: shard.logProbs,
    keys: shard.keys,
  };
}

/**
 * Builds a shard from its arrays, checking that every array has the length the header fields
 * imply.
 */
export function createShard(fields: ShardHeaderFields, arrays: Omit<KeyShard, 'header'>): KeyShard {
  const { count, dim, numClasses } = fields;
  const expected: Array<[string, number, number]> = [
    ['labels', arrays.labels.length, count],
    ['recordIndices', arrays.recordIndices.length, count],
    ['mirrored', arrays.mirrored.length, count],
    ['logProbs', arrays.logProbs.length, count * numClasses],
    ['keys', arrays.keys.length, count * dim],
  ];
  for (const [name, actual, wanted] of expected) {
    if (actual !== wanted) {
      throw new Error(`Shard array ${name} has ${actual} elements, expected ${wanted} for count ${count}; this is a bug in cachefleet.`);
    }
  }
  return { header: layoutShard(fields).header, ...arrays };
}

/**
 * Encodes a shard as a sequence of byte chunks: the preamble, then each section and its
 * alignment padding. Chunks are views of the shard's arrays, not copies.
 */
export function* encodeShard(shard: KeyShard): Generator<Uint8Array> {
  const { header, preamble } = layoutShard(shard.header);
  const arrays = sectionArrays(shard);
  let position = preamble.length;
  yield preamble;

  for (const section of header.sections) {
    if (section.offset > position) {
      yield new Uint8Array(section.offset - position);
      position = section.offset;
    }
    const array = arrays[section.name];
    for (let start = 0; start < array.byteLength; start += WRITE_CHUNK_BYTES) {
      yield byteView(array, start, Math.min(start + WRITE_CHUNK_BYTES, array.byteLength));
    }
    position += array.byteLength;
  }
}

/**
 * Writes a shard to a file atomically: into a temporary file beside it, then renamed, so a
 * crash leaves either no shard or a whole one. Returns the file's SHA-256 and size.
 */
export async function writeShardFile(filePath: string, shard: KeyShard): Promise<ShardDigest> {
  await mkdir(path.dirname(filePath), { recursive: true });
  const temporaryPath = `${filePath}.partial-${process.pid}`;
  const hash = createHash('sha256');
  let bytes = 0;
  const handle = await open(temporaryPath, 'w');

  try {
    for (const chunk of encodeShard(shard)) {
      hash.update(chunk);
      await handle.write(chunk);
      bytes += chunk.length;
    }
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporaryPath, { force: true });
    throw error;
  }
  await handle.close();
  await rename(temporaryPath, filePath);
  return { sha256: hash.digest('hex'), bytes };
}

interface Region {
  offset: number;
  target: ArrayBufferView;
}

/**
 * Decodes a shard from a stream of byte chunks (a file or an object-storage body) straight into
 * preallocated typed arrays, hashing as it goes. With `expected`, a size or SHA-256 that differs
 * fails with KEY_STORE_CORRUPT naming the source, so no caller ever scores bad data.
 */
export async function decodeShard(
  chunks: AsyncIterable<Uint8Array>,
  source: string,
  expected?: Partial<ShardDigest>,
): Promise<KeyShard & { digest: ShardDigest }> {
  const hash = createHash('sha256');
  let position = 0;
  let prefix: Buffer = Buffer.alloc(0);
  let header: ShardHeader | undefined;
  let shard: KeyShard | undefined;
  let regions: Region[] = [];

  for await (const chunk of chunks) {
    hash.update(chunk);
    let data = chunk;
    let dataStart = position;
    position += chunk.length;

    if (header === undefined) {
      prefix = Buffer.concat([prefix, chunk]);
      if (prefix.length < SHARD_PREAMBLE_BYTES) continue;
      const headerLength = parsePreamble(prefix, source);
      if (prefix.length < SHARD_PREAMBLE_BYTES + headerLength) continue;

      header = parseShardHeader(prefix.subarray(SHARD_PREAMBLE_BYTES, SHARD_PREAMBLE_BYTES + headerLength), source);
      if (expected?.bytes !== undefined && expected.bytes !== header.totalBytes) {
        throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} declares ${header.totalBytes} bytes but its manifest lists ${expected.bytes}. Rebuild the shard.`, { source });
      }
      shard = allocateShard(header);
      regions = header.sections.map((section) => ({ offset: section.offset, target: sectionArrays(shard!)[section.name] }));
      data = prefix;
      dataStart = 0;
    }

    copyIntoRegions(regions, data, dataStart);
  }

  if (header === undefined || shard === undefined) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} ended after ${position} bytes, before its header was complete. Rebuild the shard.`, { source });
  }
  if (position !== header.totalBytes) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} is ${position} bytes long but its header declares ${header.totalBytes}; the file is truncated or has trailing data. Rebuild the shard.`, { source, bytes: position });
  }

  const digest = { sha256: hash.digest('hex'), bytes: position };
  if (expected?.sha256 !== undefined && expected.sha256 !== digest.sha256) {
    throw new CachefleetError('CHECKSUM_MISMATCH', `Shard ${source} has SHA-256 ${digest.sha256} but its manifest lists ${expected.sha256}; the stored shard was changed or damaged. Rebuild the shard.`, { source });
  }
  return { ...shard, digest };
}

function allocateShard(header: ShardHeader): KeyShard {
  return {
    header,
    labels: new Int32Array(header.count),
    recordIndices: new Uint32Array(header.count),
    mirrored: new Uint8Array(header.count),
    logProbs: new Float32Array(header.count * header.numClasses),
    keys: new Float32Array(header.count * header.dim),
  };
}

/** Copies the part of `data` (which starts at file offset `dataStart`) that falls in each region. */
function copyIntoRegions(regions: Region[], data: Uint8Array, dataStart: number): void {
  const dataEnd = dataStart + data.length;
  for (const region of regions) {
    const regionEnd = region.offset + region.target.byteLength;
    const start = Math.max(dataStart, region.offset);
    const end = Math.min(dataEnd, regionEnd);
    if (start >= end) continue;
    byteView(region.target, start - region.offset, end - region.offset).set(data.subarray(start - dataStart, end - dataStart));
  }
}

/** Reads a shard file in 16 MiB chunks; see `decodeShard`. */
export async function readShardFile(filePath: string, expected?: Partial<ShardDigest>): Promise<KeyShard & { digest: ShardDigest }> {
  const stream = createReadStream(filePath, { highWaterMark: WRITE_CHUNK_BYTES });
  try {
    return await decodeShard(stream, filePath, expected);
  } finally {
    stream.destroy();
  }
}

/** Reads only the header of a shard file. */
export async function readShardHeader(filePath: string): Promise<ShardHeader> {
  const handle = await open(filePath, 'r');
  try {
    const preamble = Buffer.alloc(SHARD_PREAMBLE_BYTES);
    const { bytesRead } = await handle.read(preamble, 0, SHARD_PREAMBLE_BYTES, 0);
    const headerLength = parsePreamble(preamble.subarray(0, bytesRead), filePath);
    const json = Buffer.alloc(headerLength);
    await handle.read(json, 0, headerLength, SHARD_PREAMBLE_BYTES);
    return parseShardHeader(json, filePath);
  } finally {
    await handle.close();
  }
}
