import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';

import { CachefleetError } from '../errors.js';
import { IMAGE_BYTES, PLANE_BYTES, type DatasetFormat, type LabelMode } from './formats.js';

/** Chunk size for streaming a record file while hashing it: 1 MiB. */
const SCAN_CHUNK_BYTES = 1 << 20;
/** Records per read when copying pixels: about 3 MB per read, whatever the requested range. */
const READ_CHUNK_RECORDS = 1024;

/** Result of one pass over a record file. */
export interface RecordFileScan {
  path: string;
  recordCount: number;
  /** SHA-256 of the whole file, lowercase hex. */
  sha256: string;
  /** Every label field of the format, one value per record. */
  labels: Map<LabelMode, Uint8Array>;
}

/**
 * Reads a record file once, streaming: checks that its size is a whole, non-zero number of
 * records, hashes it and extracts every label, rejecting a label beyond its class count.
 * `fixHint` ends each error message with what the user can do about it.
 */
export async function scanRecordFile(path: string, format: DatasetFormat, fixHint: string): Promise<RecordFileScan> {
  const { size } = await stat(path);
  const recordCount = countRecords(path, size, format, fixHint);

  const labels = new Map<LabelMode, Uint8Array>();
  // Index of the next record whose label byte has not been seen yet, per label field.
  const nextRecord = new Map<LabelMode, number>();
  for (const field of format.labelFields) {
    labels.set(field.mode, new Uint8Array(recordCount));
    nextRecord.set(field.mode, 0);
  }

  const hash = createHash('sha256');
  let chunkStart = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: SCAN_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    const chunkEnd = chunkStart + chunk.length;

    for (const field of format.labelFields) {
      const fieldLabels = labels.get(field.mode) as Uint8Array;
      let record = nextRecord.get(field.mode) as number;
      let position = record * format.recordBytes + field.offset;
      while (position < chunkEnd && record < recordCount) {
        const value = chunk[position - chunkStart];
        if (value >= field.numClasses) {
          throw new CachefleetError(
            'DATASET_INVALID',
            `Invalid ${format.displayName} file ${path}: the ${labelDescription(format, field.mode)} at byte offset ${position} ` +
              `(record ${record}) is ${value}, outside 0..${field.numClasses - 1}. ${fixHint}`,
            { path, offset: position, record, value, numClasses: field.numClasses, labelMode: field.mode },
          );
        }
        fieldLabels[record] = value;
        record += 1;
        position += format.recordBytes;
      }
      nextRecord.set(field.mode, record);
    }

    chunkStart = chunkEnd;
  }

  if (chunkStart !== size) {
    throw new CachefleetError(
      'DATASET_INVALID',
      `${format.displayName} file ${path} changed while it was read: ${chunkStart} bytes read, ${size} expected. ${fixHint}`,
      { path, bytesRead: chunkStart, size },
    );
  }

  return { path, recordCount, sha256: hash.digest('hex'), labels };
}

/**
 * Copies the pixels of records `[firstRecord, firstRecord + count)` of one file into `out` at
 * `outOffset`, converting each record from planar R, G, B (CHW) to interleaved HWC. Reads only
 * those records, in chunks of at most `READ_CHUNK_RECORDS`.
 */
export async function readRecordPixels(
  path: string,
  format: DatasetFormat,
  firstRecord: number,
  count: number,
  out: Uint8Array,
  outOffset: number,
): Promise<void> {
  const chunkRecords = Math.min(count, READ_CHUNK_RECORDS);
  const buffer = Buffer.allocUnsafe(chunkRecords * format.recordBytes);
  const handle = await open(path, 'r');
  try {
    for (let done = 0; done < count; done += chunkRecords) {
      const records = Math.min(chunkRecords, count - done);
      const bytes = records * format.recordBytes;
      const position = (firstRecord + done) * format.recordBytes;
      await readExactly(handle, buffer, bytes, position, path, format);

      for (let r = 0; r < records; r++) {
        planarToInterleaved(buffer, r * format.recordBytes + format.labelBytes, out, outOffset + (done + r) * IMAGE_BYTES);
      }
    }
  } finally {
    await handle.close();
  }
}

function countRecords(path: string, size: number, format: DatasetFormat, fixHint: string): number {
  const remainder = size % format.recordBytes;
  const recordCount = (size - remainder) / format.recordBytes;

  if (remainder !== 0) {
    const offset = size - remainder;
    throw new CachefleetError(
      'DATASET_INVALID',
      `Invalid ${format.displayName} file ${path}: its size ${size} bytes is not a whole number of ${format.recordBytes}-byte records ` +
        `(the record at byte offset ${offset} has only ${remainder} bytes), so the file is truncated or has extra bytes. ${fixHint}`,
      { path, size, offset, remainder, recordBytes: format.recordBytes },
    );
  }
  if (recordCount === 0) {
    throw new CachefleetError('DATASET_INVALID', `Invalid ${format.displayName} file ${path}: it is empty (0 bytes). ${fixHint}`, {
      path,
      size,
      offset: 0,
    });
  }
  return recordCount;
}

async function readExactly(
  handle: Awaited<ReturnType<typeof open>>,
  buffer: Buffer,
  bytes: number,
  position: number,
  path: string,
  format: DatasetFormat,
): Promise<void> {
  let filled = 0;
  while (filled < bytes) {
    const { bytesRead } = await handle.read(buffer, filled, bytes - filled, position + filled);
    if (bytesRead === 0) {
      throw new CachefleetError(
        'DATASET_INVALID',
        `${format.displayName} file ${path} ends at byte offset ${position + filled}, before the ${bytes} bytes requested at offset ` +
          `${position}; it was truncated after the dataset was opened. Open the dataset again.`,
        { path, offset: position + filled, requestedBytes: bytes },
      );
    }
    filled += bytesRead;
  }
}

/** Writes one record's pixels, stored as three 32×32 planes (R, G, B), as 32×32×3 interleaved bytes. */
function planarToInterleaved(source: Uint8Array, sourceOffset: number, target: Uint8Array, targetOffset: number): void {
  const green = sourceOffset + PLANE_BYTES;
  const blue = sourceOffset + 2 * PLANE_BYTES;
  for (let pixel = 0; pixel < PLANE_BYTES; pixel++) {
    const t = targetOffset + 3 * pixel;
    target[t] = source[sourceOffset + pixel];
    target[t + 1] = source[green + pixel];
    target[t + 2] = source[blue + pixel];
  }
}

function labelDescription(format: DatasetFormat, mode: LabelMode): string {
  return format.labelFields.length > 1 ? `${mode} label` : 'label';
}
