import { CachefleetError } from '../errors.js';
import { parsePreprocessingSpec, preprocessingHash, type PreprocessingSpec } from '../preprocessing/index.js';
import { sha256Hex } from '../store/shard-format.js';
import type { ObjectStore } from '../storage/index.js';
import type { PreprocessingRef } from './build-schemas.js';
import { objectKeys } from './names.js';

/**
 * Stores a preprocessing spec as JSON under a key derived from its hash, so that every job of a
 * build reads the same statistics the coordinator computed once. Writing it again rewrites the
 * same bytes.
 */
export async function putPreprocessingSpec(store: ObjectStore, spec: PreprocessingSpec): Promise<PreprocessingRef> {
  const hash = preprocessingHash(spec);
  const key = objectKeys.preprocessing(hash);
  const bytes = Buffer.from(JSON.stringify(spec), 'utf8');

  const written = await store.put(key, bytes, { contentLength: bytes.length });
  return { key, sha256: written.sha256, hash };
}

/**
 * Reads a preprocessing spec and checks both the object's SHA-256 and the spec's hash, so a
 * changed or damaged object fails the job instead of producing keys with other statistics.
 */
export async function getPreprocessingSpec(store: ObjectStore, ref: PreprocessingRef): Promise<PreprocessingSpec> {
  const bytes = await store.getBytes(ref.key);
  const sha256 = sha256Hex(bytes);
  if (sha256 !== ref.sha256) {
    throw new CachefleetError('CHECKSUM_MISMATCH', `Preprocessing object ${ref.key} in ${store.describe()} has SHA-256 ${sha256}, but the job expects ${ref.sha256}. Submit the build again so the coordinator rewrites it.`, { key: ref.key });
  }

  const spec = parsePreprocessingSpec(JSON.parse(Buffer.from(bytes).toString('utf8')));
  const hash = preprocessingHash(spec);
  if (hash !== ref.hash) {
    throw new CachefleetError('KEY_STORE_MISMATCH', `Preprocessing object ${ref.key} has spec hash ${hash}, but the job expects ${ref.hash}. Submit the build again.`, { key: ref.key });
  }
  return spec;
}

/** Describes a spec in one line for reports, in the local run's wording. */
export function describePreprocessing(spec: PreprocessingSpec): string {
  const source = spec.standardization.source;
  const splitNames = source.splits.map((split) => split.split).join('+');
  return `x/${spec.scale}, then per-pixel standardisation with statistics over ${source.dataset} ${splitNames} (${source.recordCount} records)`;
}
