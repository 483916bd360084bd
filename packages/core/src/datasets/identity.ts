import { createHash } from 'node:crypto';

import { CachefleetError } from '../errors.js';

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Identity of one image: the fingerprint of the split it comes from, its index in that split
 * and whether it is the horizontal mirror image. Overlap checks between a cache and its queries
 * compare identities, never pixels, so two equal images at different indices stay distinct.
 */
export interface RecordIdentity {
  /** `DatasetSplit.fingerprint` of the split that `index` refers to. */
  datasetFingerprint: string;
  /** Record index inside the split, counting from 0 in file order. */
  index: number;
  mirrored: boolean;
}

/** Returns a string that is equal for two identities exactly when all three fields are equal, for use as a Set or Map key. */
export function recordIdentityKey(identity: RecordIdentity): string {
  validateRecordIdentity(identity);
  return `${identity.datasetFingerprint}/${identity.index}/${identity.mirrored ? 'mirrored' : 'original'}`;
}

/** Parses a key made by `recordIdentityKey`; throws INVALID_ARGUMENT on any other string. */
export function parseRecordIdentityKey(key: string): RecordIdentity {
  const match = /^([0-9a-f]{64})\/(0|[1-9][0-9]*)\/(mirrored|original)$/.exec(key);
  if (match === null) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid record identity key "${key}": expected "<64 hex digits>/<index>/mirrored" or ".../original".`,
      { key },
    );
  }

  const identity = { datasetFingerprint: match[1], index: Number(match[2]), mirrored: match[3] === 'mirrored' };
  validateRecordIdentity(identity);
  return identity;
}

/**
 * Computes the fingerprint of a split: the SHA-256 of the concatenated raw 32-byte SHA-256
 * digests of its files, in split order. It depends on file contents and order, not on paths.
 */
export function combineFileDigests(fileDigestsHex: readonly string[]): string {
  const hash = createHash('sha256');
  for (const digest of fileDigestsHex) {
    if (!SHA256_HEX.test(digest)) {
      throw new CachefleetError('INVALID_ARGUMENT', `Invalid SHA-256 digest "${digest}": expected 64 lowercase hex digits.`, { digest });
    }
    hash.update(Buffer.from(digest, 'hex'));
  }
  return hash.digest('hex');
}

function validateRecordIdentity(identity: RecordIdentity): void {
  if (!SHA256_HEX.test(identity.datasetFingerprint)) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid record identity: dataset fingerprint "${identity.datasetFingerprint}" is not 64 lowercase hex digits.`,
      { datasetFingerprint: identity.datasetFingerprint },
    );
  }
  if (!Number.isSafeInteger(identity.index) || identity.index < 0) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid record identity: index ${String(identity.index)} is not an integer >= 0.`,
      { index: identity.index },
    );
  }
}
