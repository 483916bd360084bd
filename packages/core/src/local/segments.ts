import type { Logger } from 'pino';

import { splitRange, type DatasetSplit, type RecordRange } from '../datasets/index.js';
import type { PreprocessingSpec } from '../preprocessing/index.js';
import type { KeyStoreIdentity, KeyStoreManifest, ShardRef } from '../store/key-store-manifest.js';
import type { LocalKeyStore } from '../store/local-key-store.js';
import type { KeyShard } from '../store/shard-io.js';
import { extractSegment } from './extract-segment.js';
import type { BatchExtractor } from './extractor.js';
import type { ProgressSink } from './progress.js';

export interface ModelSummary {
  fingerprint: string;
  fileSha256: string;
  format: string;
  source: string;
  keyLayers: Array<{ index: number; name: string; shape: number[] }>;
  dim: number;
  numClasses: number;
}

export interface SegmentContext {
  store: LocalKeyStore;
  model: ModelSummary;
  preprocessing: PreprocessingSpec;
  preprocessingHash: string;
  /** Starts the extractor on first use, so a run whose keys are all stored starts no model threads. */
  extractor: () => Promise<BatchExtractor>;
  progress: ProgressSink;
  logger: Logger;
}

export interface LoadedSegment {
  role: string;
  /** Shards in record order. */
  shards: KeyShard[];
  manifest: KeyStoreManifest;
  reused: boolean;
}

export function segmentIdentity(context: SegmentContext, split: DatasetSplit, range: RecordRange, includeMirrors: boolean, shardRecords: number): KeyStoreIdentity {
  return {
    modelFingerprint: context.model.fingerprint,
    keyLayers: context.model.keyLayers.map((layer) => layer.name),
    preprocessingHash: context.preprocessingHash,
    dataset: { name: split.dataset, split: split.split, labelMode: split.labelMode, fingerprint: split.fingerprint },
    recordRange: { start: range.start, end: range.end },
    includesMirrors: includeMirrors,
    shardRecords,
  };
}

/**
 * Returns the keys of one record range: from the key store when a store with the same model,
 * key layers, preprocessing and records exists, otherwise by extracting and storing them.
 */
export async function loadOrExtractSegment(
  context: SegmentContext,
  role: string,
  split: DatasetSplit,
  range: RecordRange,
  includeMirrors: boolean,
  shardRecords = range.end - range.start,
): Promise<LoadedSegment> {
  const identity = segmentIdentity(context, split, range, includeMirrors, shardRecords);
  const stage = `extract ${role}`;
  const existing = await context.store.find(identity);

  if (existing !== undefined) {
    context.logger.info({ role, storeId: existing.id, keys: existing.count }, 'reusing stored keys');
    context.progress.start(stage, existing.count, 'keys (stored)');
    const shards = await context.store.load(existing);
    context.progress.update(stage, existing.count);
    context.progress.finish(stage);
    return { role, shards, manifest: existing, reused: true };
  }

  const extractor = await context.extractor();
  const images = (range.end - range.start) * (includeMirrors ? 2 : 1);
  context.progress.start(stage, images, 'images');
  const started = performance.now();

  const shards: KeyShard[] = [];
  const refs: ShardRef[] = [];
  for (const shardRange of splitRange(range, { shardSize: shardRecords })) {
    const done = shards.reduce((sum, shard) => sum + (shard.header.recordRange.end - shard.header.recordRange.start), 0) * (includeMirrors ? 2 : 1);
    const shard = await extractSegment({
      split,
      range: shardRange,
      includeMirrors,
      preprocessing: context.preprocessing,
      preprocessingHash: context.preprocessingHash,
      modelFingerprint: context.model.fingerprint,
      keyLayerNames: identity.keyLayers,
      extractor,
      onProgress: (shardDone) => context.progress.update(stage, done + shardDone),
    });
    refs.push(await context.store.writeShard(identity, shard));
    shards.push(shard);
  }
  const durationMs = performance.now() - started;
  context.progress.finish(stage);
  const zeroKeys = shards.reduce((sum, shard) => sum + shard.header.zeroKeyRecords.length, 0);
  context.logger.info({ role, images, shards: shards.length, durationMs: Math.round(durationMs), imagesPerSecond: Math.round((images / durationMs) * 1000), zeroKeys }, 'extracted keys');

  const manifest = await context.store.commit(
    {
      identity,
      model: { fingerprint: context.model.fingerprint, fileSha256: context.model.fileSha256, format: context.model.format, source: context.model.source },
      keyLayers: context.model.keyLayers,
      preprocessing: context.preprocessing,
      dim: context.model.dim,
      numClasses: context.model.numClasses,
      zeroKeyCount: zeroKeys,
      extraction: { backend: extractor.description, engine: extractor.description, durationMs },
    },
    refs,
  );
  return { role, shards, manifest, reused: false };
}
