import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cifar10Dir, referenceDir, resnet32Path } from '../../../../test/support/shared.js';
import { openDatasetSplit } from '../datasets/index.js';
import { OnnxFeatureExtractor } from '../inference/index.js';
import { FeatureExtractor, initBackend, loadModel, resolveKeyLayers, type ExtractionResult } from '../models/index.js';
import { readFloat32File } from '../models/test-fixtures.js';
import { createDefaultPreprocessingSpec, mirrorHorizontally, preprocess } from '../preprocessing/index.js';

const RECORDS = 100;
const DIM = 12_288;
const TOLERANCE = 1e-4;

/** Largest per-row relative L2 error ‖ours − ref‖ / ‖ref‖ and largest absolute difference. */
function compareRows(ours: Float32Array, reference: Float32Array, rows: number, columns: number): { maxRelative: number; maxAbsolute: number } {
  let maxRelative = 0;
  let maxAbsolute = 0;
  for (let row = 0; row < rows; row += 1) {
    let difference = 0;
    let norm = 0;
    for (let c = 0; c < columns; c += 1) {
      const delta = ours[row * columns + c] - reference[row * columns + c];
      difference += delta * delta;
      norm += reference[row * columns + c] ** 2;
      maxAbsolute = Math.max(maxAbsolute, Math.abs(delta));
    }
    maxRelative = Math.max(maxRelative, Math.sqrt(difference / norm));
  }
  return { maxRelative, maxAbsolute };
}

interface Engine {
  run(inputs: Float32Array, n: number): ExtractionResult | Promise<ExtractionResult>;
  dispose(): void | Promise<void>;
}

describe.each(['tfjs', 'onnx'] as const)('training keys through the %s pipeline', (engineName) => {
  let engine: Engine;
  let inputs: Float32Array;

  beforeAll(async () => {
    await initBackend('wasm');
    const loaded = await loadModel(resnet32Path);
    const keyLayers = resolveKeyLayers(loaded.model, [82, 92, 103]);
    engine = engineName === 'tfjs' ? new FeatureExtractor(loaded, keyLayers) : await OnnxFeatureExtractor.create(loaded, keyLayers, { intraOpNumThreads: 1 });
    const train = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'train' });
    const spec = await createDefaultPreprocessingSpec(cifar10Dir);
    inputs = preprocess(await train.readPixels(0, RECORDS), RECORDS, spec);
  });

  afterAll(async () => {
    await engine.dispose();
  });

  it('matches reference keys of originals', async () => {
    const reference = await readFloat32File(path.join(referenceDir, 'resnet32-train-first100-keys-raw.f32'));

    const { features } = await engine.run(inputs.slice(), RECORDS);
    const { maxRelative, maxAbsolute } = compareRows(features, reference, RECORDS, DIM);

    console.info(`${engineName} train keys: max relative L2 error ${maxRelative.toExponential(2)}, max abs difference ${maxAbsolute.toExponential(2)}`);
    expect(maxRelative).toBeLessThanOrEqual(TOLERANCE);
  });

  it('matches reference keys of mirror images', async () => {
    const reference = await readFloat32File(path.join(referenceDir, 'resnet32-train-flipped-first100-keys-raw.f32'));

    const { features } = await engine.run(mirrorHorizontally(inputs, RECORDS, 32, 32, 3), RECORDS);
    const { maxRelative, maxAbsolute } = compareRows(features, reference, RECORDS, DIM);

    console.info(`${engineName} mirror keys: max relative L2 error ${maxRelative.toExponential(2)}, max abs difference ${maxAbsolute.toExponential(2)}`);
    expect(maxRelative).toBeLessThanOrEqual(TOLERANCE);
  });
});
