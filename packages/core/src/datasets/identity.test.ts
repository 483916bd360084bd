import { describe, expect, it } from 'vitest';

import { combineFileDigests, parseRecordIdentityKey, recordIdentityKey } from './identity.js';

const fingerprint = 'a'.repeat(64);

describe('recordIdentityKey', () => {
  it('separates mirrored from original', () => {
    const original = recordIdentityKey({ datasetFingerprint: fingerprint, index: 7, mirrored: false });
    const mirrored = recordIdentityKey({ datasetFingerprint: fingerprint, index: 7, mirrored: true });

    expect(mirrored).not.toBe(original);
  });

  it('separates different indices', () => {
    const first = recordIdentityKey({ datasetFingerprint: fingerprint, index: 1, mirrored: false });
    const eleventh = recordIdentityKey({ datasetFingerprint: fingerprint, index: 11, mirrored: false });

    expect(eleventh).not.toBe(first);
  });

  it('separates different fingerprints', () => {
    const train = recordIdentityKey({ datasetFingerprint: fingerprint, index: 0, mirrored: false });
    const test = recordIdentityKey({ datasetFingerprint: 'b'.repeat(64), index: 0, mirrored: false });

    expect(test).not.toBe(train);
  });

  it('round-trips through the parser', () => {
    const identity = { datasetFingerprint: fingerprint, index: 49_999, mirrored: true };

    expect(parseRecordIdentityKey(recordIdentityKey(identity))).toEqual(identity);
  });

  it('rejects a negative index', () => {
    expect(() => recordIdentityKey({ datasetFingerprint: fingerprint, index: -1, mirrored: false })).toThrow(/index -1/);
  });

  it('rejects a malformed fingerprint', () => {
    expect(() => recordIdentityKey({ datasetFingerprint: 'abc', index: 0, mirrored: false })).toThrow(/fingerprint "abc"/);
  });

  it('rejects a malformed key', () => {
    expect(() => parseRecordIdentityKey(`${fingerprint}/01/original`)).toThrow(/Invalid record identity key/);
  });
});

describe('combineFileDigests', () => {
  it('depends on file order', () => {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);

    expect(combineFileDigests([a, b])).not.toBe(combineFileDigests([b, a]));
  });

  it('rejects a non-hex digest', () => {
    expect(() => combineFileDigests(['xyz'])).toThrow(/Invalid SHA-256 digest "xyz"/);
  });
});
