import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { openDatasetSplit, type DatasetSplit } from '../datasets/index.js';
import { writeSyntheticDataset } from '../datasets/synthetic.js';
import { createDefaultPreprocessingSpec, type PreprocessingSpec } from '../preprocessing/index.js';
import { extractSegment } from './extract-segment.js';
import type { BatchExtractor, ForwardBatch } from './extractor.js';

const FEATURES = 4;
const CLASSES = 10;

/**
 * A stand-in for the model that returns constant features after `delayMs`, and rejects
 * its `failAt`-th call (1-based) at once. The failing call starts while earlier batches are
 * still in flight, as a cancellation check or a thread error does.
 */
function failingExtractor(failAt: number, delayMs: number): BatchExtractor {
  let calls = 0;
  return {
    featureSize: FEATURES,
    numClasses: CLASSES,
    description: 'test extractor',
    concurrency: 2,
    async extract(_inputs: Float32Array, n: number): Promise<ForwardBatch> {
      calls += 1;
      if (calls === failAt) throw new Error(`batch ${calls} failed`);
      await sleep(delayMs);
      return { features: new Float32Array(n * FEATURES).fill(1), logits: new Float32Array(n * CLASSES), probabilities: new Float32Array(n * CLASSES).fill(0.1) };
    },
    close: async () => undefined,
  };
}

describe('extractSegment', () => {
  let dir: string;
  let split: DatasetSplit;
  let preprocessing: PreprocessingSpec;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-segment-'));
    const dataDir = await writeSyntheticDataset(dir, { dataset: 'cifar10', trainRecordsPerFile: 40 });
    split = await openDatasetSplit(dataDir, { dataset: 'cifar10', split: 'train' });
    preprocessing = await createDefaultPreprocessingSpec(dataDir);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('rejects with a failed batch', async () => {
    const extracting = extractSegment({
      split,
      range: { start: 0, end: 160 },
      includeMirrors: false,
      preprocessing,
      preprocessingHash: 'test',
      modelFingerprint: 'test',
      keyLayerNames: ['test'],
      extractor: failingExtractor(3, 20),
      chunkSize: 16,
    });

    // A rejection left without a handler would also fail this file as an unhandled error.
    await expect(extracting).rejects.toThrow('batch 3 failed');
  });

  it('rejects with a failed last batch', async () => {
    const extracting = extractSegment({
      split,
      range: { start: 0, end: 64 },
      includeMirrors: true,
      preprocessing,
      preprocessingHash: 'test',
      modelFingerprint: 'test',
      keyLayerNames: ['test'],
      extractor: failingExtractor(8, 20),
      chunkSize: 16,
    });

    await expect(extracting).rejects.toThrow('batch 8 failed');
  });
});
