import { createHash } from 'node:crypto';

import { CachefleetError } from '../errors.js';
import { SHARD_PREAMBLE_BYTES, parsePreamble, parseShardHeader, type ShardHeader } from '../store/shard-format.js';
import { decodeShard, type KeyShard } from '../store/shard-io.js';
import type { ObjectStore } from '../storage/index.js';

/** A shard object as manifests and job data name it. */
export interface ShardObjectRef {
  key: string;
  sha256: string;
  bytes: number;
}

/**
 * Streams a shard object once: checks its length with `head`, hashes every byte and parses the
 * header from the first bytes. Returns the header; a size or SHA-256 that differs from `ref`
 * raises KEY_STORE_CORRUPT or CHECKSUM_MISMATCH naming the object.
 */
export async function verifyShardObject(store: ObjectStore, ref: ShardObjectRef): Promise<ShardHeader> {
  const source = `${store.describe()} ${ref.key}`;
  const head = await store.head(ref.key);
  if (head === undefined) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} does not exist, although its extract job completed. Submit the build again to rewrite it.`, { key: ref.key });
  }
  if (head.bytes !== ref.bytes) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} is ${head.bytes} bytes, but its extract job wrote ${ref.bytes}. Submit the build again to rewrite it.`, { key: ref.key, bytes: head.bytes, expected: ref.bytes });
  }

  const hash = createHash('sha256');
  let prefix = Buffer.alloc(0);
  let header: ShardHeader | undefined;
  let bytes = 0;
  for await (const chunk of store.get(ref.key)) {
    hash.update(chunk);
    bytes += chunk.length;
    if (header !== undefined) continue;

    prefix = Buffer.concat([prefix, chunk]);
    if (prefix.length < SHARD_PREAMBLE_BYTES) continue;
    const headerLength = parsePreamble(prefix, source);
    if (prefix.length < SHARD_PREAMBLE_BYTES + headerLength) continue;
    header = parseShardHeader(prefix.subarray(SHARD_PREAMBLE_BYTES, SHARD_PREAMBLE_BYTES + headerLength), source);
    prefix = Buffer.alloc(0);
  }

  const sha256 = hash.digest('hex');
  if (header === undefined || bytes !== ref.bytes) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} ended after ${bytes} bytes, expected ${ref.bytes}. Submit the build again to rewrite it.`, { key: ref.key, bytes });
  }
  if (sha256 !== ref.sha256) {
    throw new CachefleetError('CHECKSUM_MISMATCH', `Shard ${source} has SHA-256 ${sha256}, but its extract job wrote ${ref.sha256}; the object was changed or damaged. Submit the build again to rewrite it.`, { key: ref.key });
  }
  if (header.totalBytes !== bytes) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} declares ${header.totalBytes} bytes in its header but is ${bytes} bytes long. Submit the build again to rewrite it.`, { key: ref.key });
  }
  return header;
}

/** Reads a whole shard into typed arrays, checking its size and SHA-256 as it streams. */
export async function loadShardObject(store: ObjectStore, ref: ShardObjectRef): Promise<KeyShard> {
  const shard = await decodeShard(store.get(ref.key), `${store.describe()} ${ref.key}`, { sha256: ref.sha256, bytes: ref.bytes });
  const { digest: _digest, ...rest } = shard;
  return rest;
}
