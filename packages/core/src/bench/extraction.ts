import { existsSync } from 'node:fs';
import path from 'node:path';

import { openDatasetSplit } from '../datasets/index.js';
import { createLogger } from '../log.js';
import { ExtractionPool } from '../local/extraction-pool.js';
import { extractSegment } from '../local/extract-segment.js';
import type { BatchExtractor } from '../local/extractor.js';
import { chooseExtractionEngine } from '../local/engine-choice.js';
import { loadModel, resolveKeyLayers } from '../models/index.js';
import { createDefaultPreprocessingSpec, preprocess, preprocessingHash } from '../preprocessing/index.js';
import type { Benchmark, BenchmarkContext, BenchmarkMeasurement, BenchmarkResult } from './types.js';

/** ResNet32 and its key layers as in Orhan (2018): activation_23, activation_26, activation_29. */
const MODEL_FILE = 'models/keras-cifar10/cifar10_ResNet32v1_model.150.h5';
const KEY_LAYERS = [82, 92, 103];
const DATA_DIR = 'data/cifar-10-batches-bin';

/** Folder with the CIFAR-10 data and the pretrained models: CACHEFLEET_SHARED, else ../shared. */
function sharedDir(): string {
  return path.resolve(process.env.CACHEFLEET_SHARED ?? '../shared');
}

async function timeForwardPasses(extractor: BatchExtractor, inputs: Float32Array, images: number, batch: number): Promise<number> {
  const started = performance.now();
  const inFlight: Array<Promise<unknown>> = [];
  for (let first = 0; first < images; first += batch) {
    const n = Math.min(batch, images - first);
    inFlight.push(extractor.extract(inputs.slice((first % 1024) * 3072, (first % 1024 + n) * 3072), n));
  }
  await Promise.all(inFlight);
  return (images / (performance.now() - started)) * 1000;
}

/**
 * Key extraction speed of ResNet32 on CIFAR-10: the forward pass alone for each engine, and the
 * whole extraction of a record range (reading, preprocessing, mirror images, forward pass,
 * L2 normalisation) as the local run and the fleet's extract jobs do it.
 */
export const extractionBenchmark: Benchmark = {
  name: 'extraction',
  description: 'ResNet32 key extraction in images/s (onnxruntime and TensorFlow.js wasm)',
  async run(context: BenchmarkContext): Promise<BenchmarkResult> {
    const shared = sharedDir();
    const modelPath = path.join(shared, MODEL_FILE);
    const dataDir = path.join(shared, DATA_DIR);
    if (!existsSync(modelPath) || !existsSync(dataDir)) {
      return { name: 'extraction', measurements: [], details: [`skipped: ${modelPath} or ${dataDir} not found; set CACHEFLEET_SHARED to the folder with data/ and models/`] };
    }

    const logger = createLogger('bench').child({}, { level: 'warn' });
    const images = context.quick ? 512 : 4096;
    const batch = 128;
    const loaded = await loadModel(modelPath);
    const keyLayers = resolveKeyLayers(loaded.model, KEY_LAYERS);
    const choice = chooseExtractionEngine(loaded, keyLayers, 'onnx', logger);
    loaded.model.dispose();

    const train = await openDatasetSplit(dataDir, { dataset: 'cifar10', split: 'train' });
    const spec = await createDefaultPreprocessingSpec(dataDir);
    const inputs = preprocess(await train.readPixels(0, 1024), 1024, spec);
    const measurements: BenchmarkMeasurement[] = [];

    const engines = [
      { label: `onnxruntime, ${context.threads} worker threads × 1 intra-op thread`, engine: 'onnx' as const },
      { label: `tfjs wasm, ${context.threads} worker threads`, engine: 'tfjs' as const },
    ];
    for (const { label, engine } of engines) {
      const pool = await ExtractionPool.start({ engine, classifier: choice.classifier, modelPath, keyLayers: KEY_LAYERS, threads: context.threads, batchSize: batch });
      try {
        await timeForwardPasses(pool, inputs, batch * context.threads, batch);
        const count = engine === 'tfjs' ? Math.min(images, 1024) : images;
        measurements.push({ label: `forward pass, ${label}`, value: await timeForwardPasses(pool, inputs, count, batch), unit: 'images/s', note: `${count} images, batch ${batch}` });

        if (engine === 'onnx') {
          const records = images / 2;
          const started = performance.now();
          await extractSegment({
            split: train,
            range: { start: 0, end: records },
            includeMirrors: true,
            preprocessing: spec,
            preprocessingHash: preprocessingHash(spec),
            modelFingerprint: loaded.fingerprint,
            keyLayerNames: keyLayers.map((layer) => layer.name),
            extractor: pool,
          });
          const perSecond = (images / (performance.now() - started)) * 1000;
          measurements.push({ label: `whole extraction, ${label}`, value: perSecond, unit: 'images/s', note: `${records} records and their mirror images, read, preprocessed, normalised` });
        }
      } finally {
        await pool.close();
      }
    }

    return {
      name: 'extraction',
      measurements,
      details: [`model ${modelPath}, key layers ${KEY_LAYERS.join(', ')} (12,288 features per image)`, `${images} images per onnxruntime figure`],
    };
  },
};
