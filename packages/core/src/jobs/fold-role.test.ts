import { describe, expect, it } from 'vitest';

import { foldPartials } from '../cache/shard-partials.js';
import type { RecordRange } from '../datasets/index.js';
import { sha256Hex } from '../store/shard-format.js';
import type { ObjectStore } from '../storage/index.js';
import type { EvaluateResult, RolePlanSummary } from './evaluation-schemas.js';
import { foldRole } from './fold-role.js';
import { encodePartialResult } from './partial-format.js';

// Five queries, two thetas and three classes per shard: small enough to list by hand, and the
// values are distinct so that a misplaced row changes the result.
const QUERIES = 5;
const THETAS = [10, 20];
const CLASSES = 3;
const SUMMARY: RolePlanSummary = { role: 'test', numQueries: QUERIES, scoredShards: [0, 1], shardCount: 2, cacheKeys: 40 };

/** [T][Q][C] partials of one shard over all queries, different for every shard. */
function wholeShard(shard: number): Float32Array {
  return Float32Array.from({ length: THETAS.length * QUERIES * CLASSES }, (_, i) => Math.fround(Math.log(1 + i + 7 * shard) - shard));
}

/** Rows [start, end) of a [T][Q][C] array, as one partial object stores them: [T][rows][C]. */
function rowsOf(values: Float32Array, rows: RecordRange): Float32Array {
  const length = (rows.end - rows.start) * CLASSES;
  const out = new Float32Array(THETAS.length * length);
  for (let t = 0; t < THETAS.length; t += 1) out.set(values.subarray((t * QUERIES + rows.start) * CLASSES, (t * QUERIES + rows.end) * CLASSES), t * length);
  return out;
}

/** An in-memory object store with only what foldRole reads. */
class MemoryStore {
  readonly objects = new Map<string, Uint8Array>();

  async getBytes(key: string): Promise<Uint8Array> {
    return this.objects.get(key)!;
  }

  describe(): string {
    return 'memory://test';
  }
}

/** Writes one partial object for `rows` with the given shards' partials; returns its evaluate result. */
function writePiece(store: MemoryStore, rows: RecordRange, shards: number[], thetas = THETAS): EvaluateResult {
  const count = rows.end - rows.start;
  const chunks = encodePartialResult({
    header: { role: 'test', rowRange: rows, numClasses: CLASSES, thetas, shards: shards.map((index) => ({ index, count: 20 })) },
    labels: Int32Array.from({ length: count }, (_, i) => (rows.start + i) % CLASSES),
    logProbs: new Float32Array(count * CLASSES).fill(-1),
    partials: new Map(shards.map((index) => [index, rowsOf(wholeShard(index), rows)])),
  });
  const bytes = Buffer.concat(chunks);
  const key = `partials/${rows.start}-${rows.end}-${shards.join('.')}`;
  store.objects.set(key, bytes);
  return { key, sha256: sha256Hex(bytes), bytes: bytes.length, role: 'test', rowRange: rows, shardRange: { start: shards[0], end: shards[shards.length - 1] + 1 }, durationMs: 1 };
}

describe('foldRole', () => {
  it('folds split shards bit for bit', async () => {
    const store = new MemoryStore();
    const results = [writePiece(store, { start: 0, end: QUERIES }, [0]), writePiece(store, { start: 0, end: 2 }, [1]), writePiece(store, { start: 2, end: QUERIES }, [1])];

    const folded = await foldRole(store as unknown as ObjectStore, SUMMARY, THETAS, results);

    expect(Array.from(folded.partials)).toEqual(Array.from(foldPartials([wholeShard(0), wholeShard(1)])));
    expect(Array.from(folded.labels)).toEqual([0, 1, 2, 0, 1]);
    expect(folded.coverage.queriesScored).toBe(QUERIES);
  });

  it('rejects rows without partials', async () => {
    const store = new MemoryStore();
    const results = [writePiece(store, { start: 0, end: QUERIES }, [0]), writePiece(store, { start: 0, end: 2 }, [1])];

    await expect(foldRole(store as unknown as ObjectStore, SUMMARY, THETAS, results)).rejects.toThrow(/shard 1 has no partials for rows \[2, 5\)/);
  });

  it('rejects rows scored twice', async () => {
    const store = new MemoryStore();
    const results = [writePiece(store, { start: 0, end: QUERIES }, [0, 1]), writePiece(store, { start: 0, end: 2 }, [1])];

    await expect(foldRole(store as unknown as ObjectStore, SUMMARY, THETAS, results)).rejects.toThrow(/shard 1 was scored twice for rows \[0, 2\)/);
  });

  it('rejects other thetas', async () => {
    const store = new MemoryStore();
    const results = [writePiece(store, { start: 0, end: QUERIES }, [0, 1], [10, 30])];

    await expect(foldRole(store as unknown as ObjectStore, SUMMARY, THETAS, results)).rejects.toThrow(/scored for θ 10, 30 instead of 10, 20/);
  });

  it('rejects a missing shard', async () => {
    const store = new MemoryStore();
    const results = [writePiece(store, { start: 0, end: QUERIES }, [0])];

    await expect(foldRole(store as unknown as ObjectStore, SUMMARY, THETAS, results)).rejects.toThrow(/the partials of shards 1 are missing/);
  });

  it('rejects a changed object', async () => {
    const store = new MemoryStore();
    const result = writePiece(store, { start: 0, end: QUERIES }, [0, 1]);
    store.objects.get(result.key)![100] ^= 1;

    await expect(foldRole(store as unknown as ObjectStore, SUMMARY, THETAS, [result])).rejects.toThrow(/has SHA-256 [0-9a-f]{64}, but its evaluate job wrote/);
  });
});
