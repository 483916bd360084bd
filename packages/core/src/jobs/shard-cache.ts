import type { KeyShard } from '../store/shard-io.js';
import type { ObjectStore } from '../storage/index.js';
import { loadShardObject, type ShardObjectRef } from './shard-objects.js';

/** Loads shards for evaluate jobs; the worker keeps one per process. */
export interface ShardLoader {
  load(store: ObjectStore, ref: ShardObjectRef): Promise<KeyShard>;
}

function shardBytes(shard: KeyShard): number {
  return shard.keys.byteLength + shard.logProbs.byteLength + shard.labels.byteLength + shard.recordIndices.byteLength + shard.mirrored.byteLength;
}

/**
 * Least-recently-used cache of decoded shards within a byte budget, so that a worker whose
 * evaluate jobs share shards reads each shard once when the cache fits in the budget. Entries
 * are keyed by store, object key and SHA-256, so a rewritten object is never served stale.
 *
 * The budget bounds what the cache keeps between jobs. A running job also holds references to
 * its own shards, so while it runs a process may hold up to one shard group beyond the budget.
 */
export class ShardCache implements ShardLoader {
  private readonly entries = new Map<string, { shard: KeyShard; bytes: number }>();
  private readonly loading = new Map<string, Promise<KeyShard>>();
  private totalBytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly budgetBytes: number) {}

  get bytes(): number {
    return this.totalBytes;
  }

  async load(store: ObjectStore, ref: ShardObjectRef): Promise<KeyShard> {
    const id = `${store.describe()}|${ref.key}|${ref.sha256}`;
    const cached = this.entries.get(id);
    if (cached !== undefined) {
      this.entries.delete(id);
      this.entries.set(id, cached);
      this.hits += 1;
      return cached.shard;
    }

    const pending = this.loading.get(id);
    if (pending !== undefined) return pending;

    this.misses += 1;
    const promise = loadShardObject(store, ref).finally(() => this.loading.delete(id));
    this.loading.set(id, promise);
    const shard = await promise;
    this.insert(id, shard);
    return shard;
  }

  clear(): void {
    this.entries.clear();
    this.totalBytes = 0;
  }

  private insert(id: string, shard: KeyShard): void {
    const bytes = shardBytes(shard);
    if (bytes > this.budgetBytes) return;

    while (this.totalBytes + bytes > this.budgetBytes) {
      const [oldest, entry] = this.entries.entries().next().value as [string, { bytes: number }];
      this.entries.delete(oldest);
      this.totalBytes -= entry.bytes;
    }
    this.entries.set(id, { shard, bytes });
    this.totalBytes += bytes;
  }
}
