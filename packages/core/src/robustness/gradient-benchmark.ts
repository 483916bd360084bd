#!/usr/bin/env node
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { openDatasetSplit } from '../datasets/index.js';
import { createLogger } from '../log.js';
import { silentProgress } from '../local/progress.js';
import { initBackend, loadModel, resolveKeyLayers, type BackendPreference, type LoadedModel } from '../models/index.js';
import { preprocess } from '../preprocessing/index.js';
import { resolvePreprocessing } from '../local/preprocessing-setup.js';
import { CacheModelFamily, MODEL_NAMES } from './cache-models.js';
import { CacheReadout } from './cache-readout.js';
import { loadLocalCache } from './local-setup.js';
import { OnnxNetworkGradient, type NetworkGradient } from './network-gradient.js';
import { TfjsNetworkGradient } from './tfjs-gradient.js';

/** One timed configuration: images per second, best of `repeats` runs after one warm-up run. */
export interface BenchmarkRow {
  measurement: string;
  engine: string;
  threads: number;
  batch: number;
  imagesPerSecond: number;
}

async function time(work: () => Promise<unknown>, repeats: number): Promise<number> {
  await work();
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < repeats; i += 1) {
    const started = performance.now();
    await work();
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

/** Times the forward pass and the input gradient of both gradient engines on real test images. */
export async function benchmarkNetworkGradients(loaded: LoadedModel, keyLayers: Parameters<typeof OnnxNetworkGradient.create>[1], inputs: Float32Array, options: { images: number; repeats: number; tfjsImages: number }): Promise<BenchmarkRow[]> {
  const rows: BenchmarkRow[] = [];
  const upstream = (network: NetworkGradient, n: number) => ({
    logits: Float32Array.from({ length: n * network.numClasses }, (_, i) => (i % network.numClasses === 0 ? -1 : 0.1)),
    features: new Float32Array(n * network.featureSize),
  });

  for (const threads of [1, availableParallelism()]) {
    for (const batch of [16, 32, 64, 128]) {
      const network = await OnnxNetworkGradient.create(loaded, keyLayers, threads, batch);
      try {
        const n = options.images;
        const { logits, features } = upstream(network, n);
        const forwardMs = await time(() => network.forward(inputs.subarray(0, n * 3072), n), options.repeats);
        rows.push({ measurement: 'forward', engine: 'onnxruntime', threads, batch, imagesPerSecond: (n / forwardMs) * 1000 });
        const gradientMs = await time(() => network.inputGradient(inputs.subarray(0, n * 3072), n, logits, features), options.repeats);
        rows.push({ measurement: 'input gradient', engine: 'onnxruntime backward graph', threads, batch, imagesPerSecond: (n / gradientMs) * 1000 });
      } finally {
        await network.dispose();
      }
    }
  }

  const tfjs = new TfjsNetworkGradient(loaded, keyLayers);
  try {
    const n = options.tfjsImages;
    const { logits, features } = upstream(tfjs, n);
    const gradientMs = await time(() => tfjs.inputGradient(inputs.subarray(0, n * 3072), n, logits, features), 1);
    rows.push({ measurement: 'input gradient', engine: tfjs.description, threads: 1, batch: 32, imagesPerSecond: (n / gradientMs) * 1000 });
  } finally {
    await tfjs.dispose();
  }
  return rows;
}

/** Times the three models' evaluation and the cache models' log-probability gradient with the full cache. */
export async function benchmarkCacheModels(family: CacheModelFamily, inputs: Float32Array, options: { images: number; repeats: number }): Promise<BenchmarkRow[]> {
  const rows: BenchmarkRow[] = [];
  const n = options.images;
  const images = inputs.subarray(0, n * family.imageSize);
  const evaluateMs = await time(() => family.evaluate(images, n), options.repeats);
  rows.push({ measurement: 'classify with all three models', engine: `network + ${family.readout!.numKeys}-key read-out`, threads: family.readout!.threads, batch: n, imagesPerSecond: (n / evaluateMs) * 1000 });

  const labels = new Int32Array(n);
  for (const model of MODEL_NAMES) {
    const gradientMs = await time(() => family.logProbabilityGradient(images, n, model, labels), options.repeats);
    rows.push({ measurement: `∂ log p / ∂x, ${model}`, engine: 'onnxruntime', threads: family.readout!.threads, batch: n, imagesPerSecond: (n / gradientMs) * 1000 });
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      data: { type: 'string' },
      model: { type: 'string' },
      'key-layers': { type: 'string', default: '82,92,103' },
      store: { type: 'string' },
      backend: { type: 'string', default: 'wasm' },
      'cache-batches': { type: 'string', default: '16,64,256' },
    },
  });
  if (values.data === undefined || values.model === undefined) {
    process.stderr.write('Usage: gradient-benchmark --data DIR --model FILE [--key-layers 82,92,103] [--store DIR] [--backend wasm] [--cache-batches 16,64,256]\n');
    process.exitCode = 1;
    return;
  }
  const logger = createLogger('cachefleet.bench');
  const keyLayerSpecs = values['key-layers'].split(',').map((item) => (/^\d+$/.test(item) ? Number(item) : item));
  const started = { load: loadavg()[0] };
  const rows: BenchmarkRow[] = [];

  await initBackend(values.backend as BackendPreference);
  const loaded = await loadModel(values.model);
  const keyLayers = resolveKeyLayers(loaded.model, keyLayerSpecs);
  const train = await openDatasetSplit(values.data, { dataset: 'cifar10', split: 'train' });
  const test = await openDatasetSplit(values.data, { dataset: 'cifar10', split: 'test' });
  const storeDir = values.store ?? path.join(process.env.HOME ?? '.', '.cache', 'cachefleet', 'keys');
  const preprocessing = await resolvePreprocessing([train, test], storeDir, silentProgress, logger);
  const inputs = preprocess(await test.readPixels(0, 256), 256, preprocessing.spec);
  rows.push(...(await benchmarkNetworkGradients(loaded, keyLayers, inputs, { images: 256, repeats: 3, tfjsImages: 32 })));
  loaded.model.dispose();

  if (values.store !== undefined) {
    const local = await loadLocalCache({ dataDir: values.data, modelPath: values.model, keyLayers: keyLayerSpecs, storeDir, progress: silentProgress, logger });
    const network = await OnnxNetworkGradient.create(local.loaded, local.keyLayers, availableParallelism());
    const readout = await CacheReadout.create(local.keys, availableParallelism());
    const family = new CacheModelFamily(network, readout, { cache: { theta: 85.5556, lambda: 0.5111 }, cacheOnly: { theta: 72.2222 } });
    for (const batch of values['cache-batches'].split(',').map(Number)) {
      rows.push(...(await benchmarkCacheModels(family, inputs, { images: batch, repeats: 1 })));
    }
    await network.dispose();
    await readout.dispose();
    local.loaded.model.dispose();
  }

  const machine = { cpu: cpus()[0]?.model, cores: availableParallelism(), loadAverageBefore: started.load, loadAverageAfter: loadavg()[0] };
  process.stdout.write(`${JSON.stringify({ machine, rows }, null, 2)}\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    process.stderr.write(`gradient-benchmark: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  });
}
