import { createHash } from 'node:crypto';
import { z } from 'zod';

import { canonicalJson } from '../canonical-json.js';
import { CachefleetError } from '../errors.js';

/**
 * Manifest of a key store: what the keys were computed from (model, key layers, preprocessing,
 * records) and the shards that hold them. A store is visible only once its manifest exists, and
 * the manifest is written after every shard it lists is complete.
 */
export const KEY_STORE_FORMAT_VERSION = 1;

export const keyLayerRefSchema = z.object({
  index: z.number().int().nonnegative(),
  name: z.string(),
  shape: z.array(z.number().int().positive()),
});

export const shardRefSchema = z.object({
  /** Path relative to the manifest's folder (local) or object key relative to the store root. */
  path: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().positive(),
  count: z.number().int().nonnegative(),
  recordRange: z.object({ start: z.number().int().nonnegative(), end: z.number().int().nonnegative() }),
});

export const keyStoreIdentitySchema = z.object({
  modelFingerprint: z.string(),
  keyLayers: z.array(z.string()),
  preprocessingHash: z.string(),
  dataset: z.object({
    name: z.string(),
    split: z.string(),
    labelMode: z.string(),
    fingerprint: z.string(),
  }),
  recordRange: z.object({ start: z.number().int().nonnegative(), end: z.number().int().nonnegative() }),
  includesMirrors: z.boolean(),
  /** Records per shard; the last shard may hold fewer. */
  shardRecords: z.number().int().positive(),
});

export const keyStoreManifestSchema = z.object({
  kind: z.literal('cachefleet-key-store'),
  formatVersion: z.literal(KEY_STORE_FORMAT_VERSION),
  id: z.string(),
  createdAt: z.string(),
  identity: keyStoreIdentitySchema,
  model: z.object({
    fingerprint: z.string(),
    fileSha256: z.string(),
    format: z.string(),
    source: z.string(),
  }),
  keyLayers: z.array(keyLayerRefSchema),
  /** The full preprocessing spec, so a store is self-contained. */
  preprocessing: z.unknown(),
  dim: z.number().int().positive(),
  numClasses: z.number().int().positive(),
  count: z.number().int().nonnegative(),
  zeroKeyCount: z.number().int().nonnegative(),
  shards: z.array(shardRefSchema).min(1),
  extraction: z.object({
    backend: z.string(),
    engine: z.string(),
    durationMs: z.number().nonnegative(),
  }),
});

export type KeyStoreIdentity = z.infer<typeof keyStoreIdentitySchema>;
export type KeyStoreManifest = z.infer<typeof keyStoreManifestSchema>;
export type ShardRef = z.infer<typeof shardRefSchema>;

/**
 * Derives a store id from everything that determines its keys. Two runs with the same model
 * fingerprint, key layers, preprocessing and records get the same id and so share one store.
 */
export function keyStoreId(identity: KeyStoreIdentity): string {
  return createHash('sha256').update(canonicalJson(identity)).digest('hex').slice(0, 32);
}

/** Parses a manifest, naming the source and zod's description of what is wrong. */
export function parseKeyStoreManifest(raw: unknown, source: string): KeyStoreManifest {
  const parsed = keyStoreManifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Key store manifest ${source} is invalid: ${z.prettifyError(parsed.error)}. Delete the store folder to rebuild it.`, { source });
  }
  return parsed.data;
}

/**
 * Checks that a store was built for the expected model, key layers, preprocessing and records,
 * and names every field that differs.
 */
export function assertStoreMatches(manifest: KeyStoreManifest, expected: KeyStoreIdentity, source: string): void {
  const actual = manifest.identity;
  const differences: string[] = [];

  if (actual.modelFingerprint !== expected.modelFingerprint) {
    differences.push(`model fingerprint ${actual.modelFingerprint} (expected ${expected.modelFingerprint})`);
  }
  if (actual.keyLayers.join(',') !== expected.keyLayers.join(',')) {
    differences.push(`key layers ${actual.keyLayers.join(',')} (expected ${expected.keyLayers.join(',')})`);
  }
  if (actual.preprocessingHash !== expected.preprocessingHash) {
    differences.push(`preprocessing ${actual.preprocessingHash} (expected ${expected.preprocessingHash})`);
  }
  if (canonicalJson(actual.dataset) !== canonicalJson(expected.dataset)) {
    differences.push(`dataset ${canonicalJson(actual.dataset)} (expected ${canonicalJson(expected.dataset)})`);
  }
  if (canonicalJson(actual.recordRange) !== canonicalJson(expected.recordRange) || actual.includesMirrors !== expected.includesMirrors) {
    differences.push(`records ${canonicalJson(actual.recordRange)} mirrors=${actual.includesMirrors} (expected ${canonicalJson(expected.recordRange)} mirrors=${expected.includesMirrors})`);
  }

  if (differences.length > 0) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Key store ${source} was built with different inputs: ${differences.join('; ')}. Use a store built with this model and preprocessing, or delete it to rebuild.`,
      { source, differences },
    );
  }
}

