import { canonicalJson } from '../canonical-json.js';
import { CachefleetError } from '../errors.js';
import { KEY_STORE_FORMAT_VERSION, parseKeyStoreManifest, type KeyStoreManifest, type ShardRef } from '../store/key-store-manifest.js';
import type { ShardHeader } from '../store/shard-format.js';
import { sha256Hex } from '../store/shard-format.js';
import { isObjectNotFound, type ObjectStore } from '../storage/index.js';
import type { ExtractResult, MergeJobData, MergeResult } from './build-schemas.js';
import { throwIfCancelled, type CancellationCheck } from './cancellation.js';
import { getPreprocessingSpec } from './preprocessing-object.js';
import { verifyShardObject } from './shard-objects.js';

/**
 * Mutual exclusion across processes, named by a string. The worker backs it with a Redis
 * `SET NX` lock, because s3rver (unlike S3 and MinIO) ignores conditional writes.
 */
export interface NamedLock {
  withLock<T>(name: string, work: () => Promise<T>): Promise<T>;
}

export interface MergeJobResources {
  store: ObjectStore;
  lock: NamedLock;
  /** Checked first and again under the lock before the manifest is written; a cancelled build gets no manifest. */
  isCancelled?: CancellationCheck;
}

/**
 * Checks every shard of a build (size, streamed SHA-256, and the header's model fingerprint,
 * key layers, dimensions, preprocessing hash and records), then writes the manifest, last, so
 * the build becomes visible only when it is complete. Under the build's lock an existing
 * manifest is kept, so a build gets one manifest however often its merge runs.
 */
export async function runMergeJob(data: MergeJobData, extracts: readonly ExtractResult[], resources: MergeJobResources): Promise<MergeResult> {
  const { store } = resources;
  const jobName = `Merge job of build ${data.buildId}`;
  await throwIfCancelled(resources.isCancelled, jobName);
  const byKey = new Map(extracts.map((result) => [result.key, result]));
  const refs: ShardRef[] = [];
  let zeroKeyCount = 0;
  let durationMs = 0;
  const engines = new Set<string>();

  for (const expected of data.shards) {
    const result = byKey.get(expected.key);
    if (result === undefined) {
      throw new CachefleetError('KEY_STORE_CORRUPT', `Build ${data.buildId} has no extract result for shard ${expected.key}. Submit the build again.`, { buildId: data.buildId, key: expected.key });
    }
    const header = await verifyShardObject(store, result);
    assertHeaderMatches(header, data, result);
    refs.push({ path: result.key, sha256: result.sha256, bytes: result.bytes, count: result.count, recordRange: result.recordRange });
    zeroKeyCount += header.zeroKeyRecords.length;
    durationMs += result.durationMs;
    engines.add(result.engine);
  }

  const preprocessing = await getPreprocessingSpec(store, data.preprocessing);
  const engine = [...engines].sort().join(', ');
  const manifest: KeyStoreManifest = {
    kind: 'cachefleet-key-store',
    formatVersion: KEY_STORE_FORMAT_VERSION,
    id: data.buildId,
    createdAt: new Date().toISOString(),
    identity: data.identity,
    model: data.model,
    keyLayers: data.keyLayers,
    preprocessing,
    dim: data.dim,
    numClasses: data.numClasses,
    count: refs.reduce((sum, ref) => sum + ref.count, 0),
    zeroKeyCount,
    shards: refs,
    extraction: { backend: engine, engine, durationMs },
  };

  return resources.lock.withLock(`manifest-${data.buildId}`, async () => {
    await throwIfCancelled(resources.isCancelled, jobName);
    return writeManifestOnce(store, data, manifest);
  });
}

/** Writes the manifest unless one exists; an existing one must list the same shards. */
async function writeManifestOnce(store: ObjectStore, data: MergeJobData, manifest: KeyStoreManifest): Promise<MergeResult> {
  const existing = await readManifestIfPresent(store, data.manifestKey);
  if (existing !== undefined) return keepExisting(data, manifest, existing);

  const bytes = Buffer.from(JSON.stringify(manifest, null, 2), 'utf8');
  const created = await store.putIfAbsent(data.manifestKey, bytes);
  if (!created) {
    const other = await readManifestIfPresent(store, data.manifestKey);
    if (other !== undefined) return keepExisting(data, manifest, other);
  }
  return { buildId: data.buildId, manifestKey: data.manifestKey, manifestSha256: sha256Hex(bytes), count: manifest.count, shards: manifest.shards.length, written: true };
}

function keepExisting(data: MergeJobData, manifest: KeyStoreManifest, existing: { manifest: KeyStoreManifest; sha256: string }): MergeResult {
  if (canonicalJson(existing.manifest.shards) !== canonicalJson(manifest.shards)) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Build ${data.buildId} already has a manifest at ${data.manifestKey} that lists other shards than this merge verified. Delete the build's objects or choose another build id.`,
      { buildId: data.buildId, manifestKey: data.manifestKey },
    );
  }
  return { buildId: data.buildId, manifestKey: data.manifestKey, manifestSha256: existing.sha256, count: existing.manifest.count, shards: existing.manifest.shards.length, written: false };
}

/** Reads and parses a manifest object; undefined when there is none. */
export async function readManifestIfPresent(store: ObjectStore, key: string): Promise<{ manifest: KeyStoreManifest; sha256: string } | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await store.getBytes(key);
  } catch (error) {
    if (isObjectNotFound(error)) return undefined;
    throw error;
  }
  return { manifest: parseManifestBytes(bytes, `${store.describe()} ${key}`), sha256: sha256Hex(bytes) };
}

/** Reads a manifest that must exist. */
export async function readManifest(store: ObjectStore, key: string): Promise<{ manifest: KeyStoreManifest; sha256: string }> {
  const found = await readManifestIfPresent(store, key);
  if (found === undefined) {
    throw new CachefleetError('INVALID_ARGUMENT', `Key store manifest ${key} was not found in ${store.describe()}. Build the key store first, or check the key.`, { key });
  }
  return found;
}

function parseManifestBytes(bytes: Uint8Array, source: string): KeyStoreManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Key store manifest ${source} is not valid JSON. Delete it and submit the build again.`, { source }, { cause: error });
  }
  return parseKeyStoreManifest(raw, source);
}

function assertHeaderMatches(header: ShardHeader, data: MergeJobData, result: ExtractResult): void {
  const identity = data.identity;
  const checks: Array<[string, unknown, unknown]> = [
    ['model fingerprint', header.modelFingerprint, identity.modelFingerprint],
    ['key layers', header.keyLayers.join(','), identity.keyLayers.join(',')],
    ['preprocessing hash', header.preprocessingHash, identity.preprocessingHash],
    ['dim', header.dim, data.dim],
    ['classes', header.numClasses, data.numClasses],
    ['dataset', `${header.dataset.name}/${header.dataset.split}/${header.dataset.fingerprint}`, `${identity.dataset.name}/${identity.dataset.split}/${identity.dataset.fingerprint}`],
    ['record range', `${header.recordRange.start}-${header.recordRange.end}`, `${result.recordRange.start}-${result.recordRange.end}`],
    ['mirrors', header.includesMirrors, identity.includesMirrors],
    ['key count', header.count, result.count],
  ];

  const differences = checks.filter(([, actual, expected]) => actual !== expected).map(([name, actual, expected]) => `${name} ${String(actual)} (expected ${String(expected)})`);
  if (differences.length > 0) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Shard ${result.key} of build ${data.buildId} does not match the build: ${differences.join('; ')}. Submit the build again to rewrite it.`,
      { key: result.key, differences },
    );
  }
}
