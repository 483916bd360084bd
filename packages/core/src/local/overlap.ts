import { recordIdentityKey } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import type { KeyShard } from '../store/shard-io.js';

function identityKey(datasetFingerprint: string, index: number, mirrored: number): string {
  return recordIdentityKey({ datasetFingerprint, index, mirrored: mirrored === 1 });
}

/**
 * Fails when a query's record identity (dataset fingerprint, record index, mirrored or not) is
 * also a cache item: scoring it would let the query find itself. Identities, not pixels, are
 * compared, so two different records with equal pixels are not an overlap.
 */
export function assertNoOverlap(queries: KeyShard[], cache: KeyShard[], phase: string): void {
  const cacheIdentities = new Set<string>();
  for (const shard of cache) {
    const fingerprint = shard.header.dataset.fingerprint;
    for (let row = 0; row < shard.header.count; row += 1) {
      cacheIdentities.add(identityKey(fingerprint, shard.recordIndices[row], shard.mirrored[row]));
    }
  }

  for (const shard of queries) {
    const fingerprint = shard.header.dataset.fingerprint;
    for (let row = 0; row < shard.header.count; row += 1) {
      const index = shard.recordIndices[row];
      if (!cacheIdentities.has(identityKey(fingerprint, index, shard.mirrored[row]))) continue;
      throw new CachefleetError(
        'CACHE_OVERLAP',
        `${phase}: query record ${index}${shard.mirrored[row] === 1 ? ' (mirror image)' : ''} of ${shard.header.dataset.name} ${shard.header.dataset.split} is also in the cache, so it would be scored against itself. Use disjoint records, or pass --allow-overlap if this is intended.`,
        { record: index, mirrored: shard.mirrored[row] === 1 },
      );
    }
  }
}
