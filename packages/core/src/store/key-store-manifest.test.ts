import { describe, expect, it } from 'vitest';

import { assertStoreMatches, keyStoreId, parseKeyStoreManifest, type KeyStoreIdentity, type KeyStoreManifest } from './key-store-manifest.js';

const identity: KeyStoreIdentity = {
  modelFingerprint: 'a'.repeat(64),
  keyLayers: ['activation_23', 'activation_26'],
  preprocessingHash: 'b'.repeat(64),
  dataset: { name: 'cifar10', split: 'train', labelMode: 'fine', fingerprint: 'c'.repeat(64) },
  recordRange: { start: 0, end: 45_000 },
  includesMirrors: true,
  shardRecords: 45_000,
};

function manifestFor(storeIdentity: KeyStoreIdentity): KeyStoreManifest {
  return {
    kind: 'cachefleet-key-store',
    formatVersion: 1,
    id: keyStoreId(storeIdentity),
    createdAt: '2026-01-01T00:00:00.000Z',
    identity: storeIdentity,
    model: { fingerprint: storeIdentity.modelFingerprint, fileSha256: 'd'.repeat(64), format: 'keras-h5', source: '/models/resnet32.h5' },
    keyLayers: [{ index: 82, name: 'activation_23', shape: [8, 8, 64] }],
    preprocessing: {},
    dim: 4096,
    numClasses: 10,
    count: 90_000,
    zeroKeyCount: 0,
    shards: [{ path: 'keys.cfshard', sha256: 'e'.repeat(64), bytes: 1024, count: 90_000, recordRange: { start: 0, end: 45_000 } }],
    extraction: { backend: 'wasm', engine: 'tfjs-wasm×2', durationMs: 1 },
  };
}

describe('key store manifests', () => {
  it('derives one id regardless of key order', () => {
    const reordered: KeyStoreIdentity = {
      shardRecords: 45_000,
      includesMirrors: true,
      recordRange: { end: 45_000, start: 0 },
      dataset: { fingerprint: 'c'.repeat(64), labelMode: 'fine', split: 'train', name: 'cifar10' },
      preprocessingHash: 'b'.repeat(64),
      keyLayers: ['activation_23', 'activation_26'],
      modelFingerprint: 'a'.repeat(64),
    };

    expect(keyStoreId(reordered)).toBe(keyStoreId(identity));
  });

  it('derives another id for other records', () => {
    expect(keyStoreId({ ...identity, recordRange: { start: 0, end: 45_001 } })).not.toBe(keyStoreId(identity));
  });

  it('accepts a matching store', () => {
    expect(() => assertStoreMatches(manifestFor(identity), identity, 'store')).not.toThrow();
  });

  it('names another model in the error', () => {
    const other = manifestFor({ ...identity, modelFingerprint: 'f'.repeat(64) });

    expect(() => assertStoreMatches(other, identity, 'store')).toThrow(/model fingerprint f{64} \(expected a{64}\)/);
  });

  it('names other preprocessing in the error', () => {
    const other = manifestFor({ ...identity, preprocessingHash: '0'.repeat(64) });

    expect(() => assertStoreMatches(other, identity, 'store')).toThrow(expect.objectContaining({ code: 'KEY_STORE_MISMATCH' }));
  });

  it('rejects a manifest without shards', () => {
    const broken = { ...manifestFor(identity), shards: [] };

    expect(() => parseKeyStoreManifest(broken, 'broken.json')).toThrow(/Key store manifest broken.json is invalid/);
  });
});
