import { z } from 'zod';

import { CachefleetError } from '../errors.js';

/**
 * Partial-result object, format version 1: what one evaluate job computed for one slice of
 * queries against one group of cache shards. All integers and floats are little-endian.
 *
 *   offset 0   8 bytes   magic "CFPART\0\0"
 *   offset 8   uint32    format version (1)
 *   offset 12  uint32    header length H in bytes
 *   offset 16  H bytes   header, UTF-8 JSON (`PartialHeader`), padded with spaces so that the
 *                        first section starts at a multiple of 64 bytes
 *   then, each section starting at a multiple of 64 bytes:
 *     labels     int32   × Q           (the queries' labels)
 *     logProbs   float32 × Q × C       (the model's log-softmax output per query)
 *     partials   float32 × T × Q × C   one section per shard of `shards` with count > 0, in that
 *                                      order: L[t][q][c] = log Σ exp(θ_t q·k) over the shard's
 *                                      keys k of class c (see scoring-engine.ts)
 *
 * Q is `rowRange.end - rowRange.start`, T the length of `thetas`, C `numClasses`. Empty shards
 * are listed with count 0 and have no section, as the local fold skips them.
 */
export const PARTIAL_MAGIC = Buffer.from('CFPART\0\0', 'latin1');
export const PARTIAL_FORMAT_VERSION = 1;
const ALIGNMENT = 64;
const PREAMBLE_BYTES = 16;

export const partialHeaderSchema = z.object({
  role: z.string(),
  /** Rows of the role's stacked query set, half-open. */
  rowRange: z.object({ start: z.number().int().nonnegative(), end: z.number().int().positive() }),
  numClasses: z.number().int().positive(),
  thetas: z.array(z.number()).min(1),
  /** Global shard indices of the cache (manifests in order, shards in record order) and their key counts. */
  shards: z.array(z.object({ index: z.number().int().nonnegative(), count: z.number().int().nonnegative() })).min(1),
});
export type PartialHeader = z.infer<typeof partialHeaderSchema>;

/** A decoded partial-result object. `partials` maps a global shard index to its [T][Q][C] partials. */
export interface PartialResult {
  header: PartialHeader;
  labels: Int32Array;
  logProbs: Float32Array;
  partials: Map<number, Float32Array>;
}

function alignUp(value: number): number {
  return Math.ceil(value / ALIGNMENT) * ALIGNMENT;
}

function sectionLengths(header: PartialHeader): number[] {
  const rows = header.rowRange.end - header.rowRange.start;
  const perShard = header.thetas.length * rows * header.numClasses * 4;
  const scored = header.shards.filter((shard) => shard.count > 0).length;
  return [rows * 4, rows * header.numClasses * 4, ...new Array<number>(scored).fill(perShard)];
}

/** Encodes a partial result as a list of chunks (views of the arrays, not copies). */
export function encodePartialResult(result: PartialResult): Uint8Array[] {
  const header = partialHeaderSchema.parse(result.header);
  const scored = header.shards.filter((shard) => shard.count > 0);
  const arrays: Uint8Array[] = [bytesOf(result.labels), bytesOf(result.logProbs)];
  for (const shard of scored) {
    const partials = result.partials.get(shard.index);
    if (partials === undefined) throw new Error(`Partial result has no partials for shard ${shard.index}; this is a bug in cachefleet.`);
    arrays.push(bytesOf(partials));
  }

  const lengths = sectionLengths(header);
  arrays.forEach((array, i) => {
    if (array.byteLength !== lengths[i]) throw new Error(`Partial result section ${i} has ${array.byteLength} bytes, expected ${lengths[i]}; this is a bug in cachefleet.`);
  });

  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const firstSection = alignUp(PREAMBLE_BYTES + json.length);
  const preamble = Buffer.alloc(firstSection, 0x20);
  PARTIAL_MAGIC.copy(preamble, 0);
  preamble.writeUInt32LE(PARTIAL_FORMAT_VERSION, 8);
  preamble.writeUInt32LE(firstSection - PREAMBLE_BYTES, 12);
  json.copy(preamble, PREAMBLE_BYTES);

  const chunks: Uint8Array[] = [preamble];
  for (const array of arrays) {
    chunks.push(array);
    const padding = alignUp(array.byteLength) - array.byteLength;
    if (padding > 0) chunks.push(new Uint8Array(padding));
  }
  return chunks;
}

/** Decodes a partial-result object; `source` names it in errors. Arrays are copies, aligned for typed-array views. */
export function decodePartialResult(bytes: Uint8Array, source: string): PartialResult {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.length < PREAMBLE_BYTES || !view.subarray(0, 8).equals(PARTIAL_MAGIC)) {
    throw corrupt(source, 'it does not start with the partial-result magic bytes');
  }
  const version = view.readUInt32LE(8);
  if (version !== PARTIAL_FORMAT_VERSION) throw corrupt(source, `it has format version ${version}, and this cachefleet reads ${PARTIAL_FORMAT_VERSION}`);
  const headerLength = view.readUInt32LE(12);
  if (PREAMBLE_BYTES + headerLength > view.length) throw corrupt(source, 'its header is truncated');

  let raw: unknown;
  try {
    raw = JSON.parse(view.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength).toString('utf8'));
  } catch (error) {
    throw corrupt(source, `its header is not valid JSON (${(error as Error).message})`);
  }
  const parsed = partialHeaderSchema.safeParse(raw);
  if (!parsed.success) throw corrupt(source, `its header is invalid: ${z.prettifyError(parsed.error)}`);
  const header = parsed.data;

  const lengths = sectionLengths(header);
  const offsets: number[] = [];
  let offset = PREAMBLE_BYTES + headerLength;
  for (const length of lengths) {
    offsets.push(offset);
    offset = alignUp(offset + length);
  }
  const expectedBytes = offsets[offsets.length - 1] + lengths[lengths.length - 1];
  if (view.length !== expectedBytes && view.length !== alignUp(expectedBytes)) {
    throw corrupt(source, `it is ${view.length} bytes long, but its header implies ${expectedBytes}`);
  }

  const copy = (index: number): ArrayBuffer => {
    const slice = new Uint8Array(lengths[index]);
    slice.set(view.subarray(offsets[index], offsets[index] + lengths[index]));
    return slice.buffer;
  };
  const partials = new Map<number, Float32Array>();
  header.shards
    .filter((shard) => shard.count > 0)
    .forEach((shard, i) => partials.set(shard.index, new Float32Array(copy(2 + i))));

  return { header, labels: new Int32Array(copy(0)), logProbs: new Float32Array(copy(1)), partials };
}

function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

function corrupt(source: string, reason: string): CachefleetError {
  return new CachefleetError('KEY_STORE_CORRUPT', `Partial result ${source} is unreadable: ${reason}. Run the evaluation again to rewrite it.`, { source });
}
