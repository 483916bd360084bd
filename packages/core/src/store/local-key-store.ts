import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { CachefleetError } from '../errors.js';
import {
  assertStoreMatches,
  keyStoreId,
  parseKeyStoreManifest,
  KEY_STORE_FORMAT_VERSION,
  type KeyStoreIdentity,
  type KeyStoreManifest,
  type ShardRef,
} from './key-store-manifest.js';
import { readShardFile, writeShardFile, type KeyShard } from './shard-io.js';

const MANIFEST_FILE = 'manifest.json';

/** File name of the shard of records [start, end), derived from the range alone. */
export function shardFileName(range: { start: number; end: number }): string {
  return `keys-${range.start}-${range.end}.cfshard`;
}

export type NewKeyStore = Omit<KeyStoreManifest, 'kind' | 'formatVersion' | 'id' | 'createdAt' | 'shards' | 'count'>;

/**
 * Key stores on the local file system, one folder per store id under `rootDir`. A later run with
 * the same model fingerprint, key layers, preprocessing and records finds the store and skips
 * extraction; anything else gets a new id and a new store.
 */
export class LocalKeyStore {
  constructor(readonly rootDir: string) {}

  folderFor(identity: KeyStoreIdentity): string {
    return path.join(this.rootDir, keyStoreId(identity));
  }

  /** Returns the manifest of a complete store for `identity`, or undefined when none exists. */
  async find(identity: KeyStoreIdentity): Promise<KeyStoreManifest | undefined> {
    const manifestPath = path.join(this.folderFor(identity), MANIFEST_FILE);
    let text: string;
    try {
      text = await readFile(manifestPath, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    return readManifest(text, manifestPath, identity);
  }

  /** Writes one shard of a store; the store stays invisible until `commit` writes its manifest. */
  async writeShard(identity: KeyStoreIdentity, shard: KeyShard): Promise<ShardRef> {
    const folder = this.folderFor(identity);
    await mkdir(folder, { recursive: true });
    const file = shardFileName(shard.header.recordRange);
    const digest = await writeShardFile(path.join(folder, file), shard);
    return { path: file, sha256: digest.sha256, bytes: digest.bytes, count: shard.header.count, recordRange: shard.header.recordRange };
  }

  /** Writes the manifest of shards already written: the store becomes visible only now. */
  async commit(store: NewKeyStore, shards: ShardRef[]): Promise<KeyStoreManifest> {
    const folder = this.folderFor(store.identity);

    const manifest: KeyStoreManifest = {
      kind: 'cachefleet-key-store',
      formatVersion: KEY_STORE_FORMAT_VERSION,
      id: keyStoreId(store.identity),
      createdAt: new Date().toISOString(),
      ...store,
      count: shards.reduce((sum, shard) => sum + shard.count, 0),
      shards,
    };

    const manifestPath = path.join(folder, MANIFEST_FILE);
    const temporaryPath = `${manifestPath}.partial-${process.pid}`;
    await writeFile(temporaryPath, JSON.stringify(manifest, null, 2));
    await rename(temporaryPath, manifestPath);
    return manifest;
  }

  /** Reads every shard of a store, verifying size and SHA-256 against the manifest. */
  async load(manifest: KeyStoreManifest): Promise<KeyShard[]> {
    const folder = path.join(this.rootDir, manifest.id);
    const shards: KeyShard[] = [];
    for (const ref of manifest.shards) {
      shards.push(await readShardFile(path.join(folder, ref.path), { sha256: ref.sha256, bytes: ref.bytes }));
    }
    return shards;
  }
}

/**
 * Reads a manifest given by path, as a user does when pointing at a store explicitly, and checks
 * it against what the current run expects.
 */
export async function readKeyStoreManifest(manifestPath: string, expected?: KeyStoreIdentity): Promise<KeyStoreManifest> {
  let text: string;
  try {
    text = await readFile(manifestPath, 'utf8');
  } catch (error) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Cannot read key store manifest ${manifestPath}: ${(error as Error).message}. Check the path.`, { source: manifestPath }, { cause: error });
  }
  return readManifest(text, manifestPath, expected);
}

function readManifest(text: string, source: string, expected?: KeyStoreIdentity): KeyStoreManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Key store manifest ${source} is not valid JSON. Delete the store folder to rebuild it.`, { source }, { cause: error });
  }
  const manifest = parseKeyStoreManifest(raw, source);
  if (expected !== undefined) assertStoreMatches(manifest, expected, source);
  return manifest;
}
