import { createHash } from 'node:crypto';
import { z } from 'zod';

import { CachefleetError } from '../errors.js';

/**
 * Key shard format, version 1. One shard holds the keys of a contiguous record range of one
 * dataset split, with their labels, record identities and the model's log-probabilities, so the
 * same file serves as cache keys and as evaluation queries.
 *
 * Layout (all integers little-endian):
 *
 *   offset 0   8 bytes   magic "CFSHARD\0"
 *   offset 8   uint32    format version (1)
 *   offset 12  uint32    header length H in bytes
 *   offset 16  H bytes   header, UTF-8 JSON (`ShardHeader`), padded with spaces
 *   then five sections, each starting at a multiple of 64 bytes from the start of the file:
 *     labels          int32   × count
 *     recordIndices   uint32  × count   (index within the dataset split)
 *     mirrored        uint8   × count   (1 for a horizontal mirror image)
 *     logProbs        float32 × count × numClasses   (the model's log-softmax output)
 *     keys            float32 × count × dim          (L2-normalised, row-major)
 *
 * The header lists every section's offset and byte length, so a reader can check the file size
 * before reading anything else. The shard's SHA-256 (of the whole file) lives in the manifest
 * that points at the shard, never inside the shard.
 */
export const SHARD_MAGIC = Buffer.from('CFSHARD\0', 'latin1');
export const SHARD_FORMAT_VERSION = 1;
export const SHARD_ALIGNMENT = 64;

const PREAMBLE_BYTES = 16;

export const SECTION_NAMES = ['labels', 'recordIndices', 'mirrored', 'logProbs', 'keys'] as const;
export type SectionName = (typeof SECTION_NAMES)[number];

const sectionSchema = z.object({
  name: z.enum(SECTION_NAMES),
  offset: z.number().int().nonnegative(),
  byteLength: z.number().int().nonnegative(),
});

export const shardHeaderSchema = z.object({
  dtype: z.literal('float32'),
  count: z.number().int().nonnegative(),
  dim: z.number().int().positive(),
  numClasses: z.number().int().positive(),
  modelFingerprint: z.string(),
  keyLayers: z.array(z.string()),
  preprocessingHash: z.string(),
  dataset: z.object({
    name: z.string(),
    split: z.string(),
    fingerprint: z.string(),
  }),
  /** Records the shard was built from, half-open, before dropping all-zero keys. */
  recordRange: z.object({ start: z.number().int().nonnegative(), end: z.number().int().nonnegative() }),
  includesMirrors: z.boolean(),
  /** Identities of records whose key was all zeros and so was left out of the shard. */
  zeroKeyRecords: z.array(z.object({ index: z.number().int(), mirrored: z.boolean() })),
  sections: z.array(sectionSchema).length(SECTION_NAMES.length),
  totalBytes: z.number().int().positive(),
});

export type ShardHeader = z.infer<typeof shardHeaderSchema>;
export type ShardHeaderFields = Omit<ShardHeader, 'sections' | 'totalBytes' | 'dtype'>;

function alignUp(value: number): number {
  return Math.ceil(value / SHARD_ALIGNMENT) * SHARD_ALIGNMENT;
}

function sectionByteLengths(count: number, dim: number, numClasses: number): Record<SectionName, number> {
  return {
    labels: count * 4,
    recordIndices: count * 4,
    mirrored: count,
    logProbs: count * numClasses * 4,
    keys: count * dim * 4,
  };
}

/**
 * Lays out a shard: serialises the header and computes every section's offset. The header's
 * own length depends on the offsets it lists, so the layout is computed until it is stable
 * (two rounds at most, because offsets only grow by whole alignment units).
 */
export function layoutShard(fields: ShardHeaderFields): { header: ShardHeader; preamble: Buffer } {
  const lengths = sectionByteLengths(fields.count, fields.dim, fields.numClasses);
  let headerBytes = 0;

  for (let round = 0; round < 4; round += 1) {
    let offset = alignUp(PREAMBLE_BYTES + headerBytes);
    const sections = SECTION_NAMES.map((name) => {
      const section = { name, offset, byteLength: lengths[name] };
      offset = alignUp(offset + lengths[name]);
      return section;
    });
    const last = sections[sections.length - 1];
    const header: ShardHeader = { dtype: 'float32', ...fields, sections, totalBytes: last.offset + last.byteLength };
    const json = Buffer.from(JSON.stringify(header), 'utf8');

    if (alignUp(PREAMBLE_BYTES + json.length) === sections[0].offset) {
      const padded = Buffer.alloc(sections[0].offset - PREAMBLE_BYTES, 0x20);
      json.copy(padded);
      const preamble = Buffer.alloc(sections[0].offset);
      SHARD_MAGIC.copy(preamble, 0);
      preamble.writeUInt32LE(SHARD_FORMAT_VERSION, 8);
      preamble.writeUInt32LE(padded.length, 12);
      padded.copy(preamble, PREAMBLE_BYTES);
      return { header, preamble };
    }
    headerBytes = json.length;
  }
  throw new Error('Shard header layout did not converge; this is a bug in cachefleet.');
}

/** Parses the fixed 16-byte preamble; returns the header length. */
export function parsePreamble(bytes: Uint8Array, source: string): number {
  if (bytes.length < PREAMBLE_BYTES) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} is ${bytes.length} bytes long, shorter than its ${PREAMBLE_BYTES}-byte preamble. Rebuild the shard.`, { source });
  }
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!view.subarray(0, 8).equals(SHARD_MAGIC)) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `${source} is not a cachefleet key shard (magic bytes ${view.subarray(0, 8).toString('hex')}, expected ${SHARD_MAGIC.toString('hex')}).`, { source });
  }
  const version = view.readUInt32LE(8);
  if (version !== SHARD_FORMAT_VERSION) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} has format version ${version}; this cachefleet reads version ${SHARD_FORMAT_VERSION}. Rebuild the shard with this version.`, { source, version });
  }
  return view.readUInt32LE(12);
}

export const SHARD_PREAMBLE_BYTES = PREAMBLE_BYTES;

/** Parses and validates a shard header, including its section layout. */
export function parseShardHeader(json: Uint8Array, source: string): ShardHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'));
  } catch (error) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} has a header that is not valid JSON. Rebuild the shard.`, { source }, { cause: error });
  }
  const parsed = shardHeaderSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} has an invalid header: ${z.prettifyError(parsed.error)}`, { source });
  }

  const header = parsed.data;
  const expected = layoutShard({ ...header }).header;
  const layoutMatches = header.sections.every((section, i) => {
    const other = expected.sections[i];
    return section.name === other.name && section.offset === other.offset && section.byteLength === other.byteLength;
  });
  if (!layoutMatches || header.totalBytes !== expected.totalBytes) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Shard ${source} lists section offsets that do not match its counts (count ${header.count}, dim ${header.dim}). Rebuild the shard.`, { source });
  }
  return header;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
