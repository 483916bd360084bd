import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { referenceDir, resnet32Path } from '../../../../test/support/shared.js';
import { initBackend } from './backend.js';
import { FeatureExtractor } from './extractor.js';
import { resolveKeyLayers } from './key-layers.js';
import { loadModel, type LoadedModel } from './load-model.js';
import { buildTinyKerasModel, readFloat32File, TINY_INPUT_SHAPE, writeKerasH5 } from './test-fixtures.js';

/** Relative L2 error allowed per row against the independent PyTorch float32 reference. */
const PARITY_TOLERANCE = 1e-4;
const REFERENCE_ROWS = 100;
const IMAGE_SIZE = 32 * 32 * 3;

let tempDir: string;
let resnet32: LoadedModel;
let tiny: LoadedModel;

beforeAll(async () => {
  await initBackend('wasm');
  tempDir = await mkdtemp(path.join(tmpdir(), 'cachefleet-extractor-'));
  resnet32 = await loadModel(resnet32Path);

  const tinyPath = path.join(tempDir, 'tiny.h5');
  await writeKerasH5(tinyPath, buildTinyKerasModel());
  tiny = await loadModel(tinyPath);
});

afterAll(async () => {
  resnet32.model.dispose();
  tiny.model.dispose();
  await rm(tempDir, { recursive: true, force: true });
});

interface RowErrors {
  maxRelative: number;
  worstRow: number;
  maxAbsolute: number;
}

/** Computes ‖ours − reference‖ / ‖reference‖ per row and the largest absolute difference. */
function compareRows(ours: Float32Array, reference: Float32Array, rows: number): RowErrors {
  const width = reference.length / rows;
  const errors: RowErrors = { maxRelative: 0, worstRow: -1, maxAbsolute: 0 };
  for (let row = 0; row < rows; row++) {
    let differenceSquared = 0;
    let referenceSquared = 0;
    for (let i = row * width; i < (row + 1) * width; i++) {
      const difference = ours[i] - reference[i];
      differenceSquared += difference * difference;
      referenceSquared += reference[i] * reference[i];
      errors.maxAbsolute = Math.max(errors.maxAbsolute, Math.abs(difference));
    }
    const relative = Math.sqrt(differenceSquared) / Math.sqrt(referenceSquared);
    if (relative > errors.maxRelative) {
      errors.maxRelative = relative;
      errors.worstRow = row;
    }
  }
  return errors;
}

/** Wraps a model built in memory as a LoadedModel, for heads no test file contains. */
function wrapModel(model: tfl.LayersModel): LoadedModel {
  return { model, format: 'tfjs-layers', sourcePath: '(memory)', fileSha256: '', fingerprint: '', numClasses: 3, inputShape: [4, 4, 1] };
}

describe('FeatureExtractor on ResNet32', () => {
  it('matches the reference within 1e-4', async ({ annotate }) => {
    const inputs = await readFloat32File(path.join(referenceDir, 'cifar10-test-first100-input.f32'));
    const referenceLogits = await readFloat32File(path.join(referenceDir, 'resnet32-test-first100-logits.f32'));
    const referenceProbabilities = await readFloat32File(path.join(referenceDir, 'resnet32-test-first100-probs.f32'));
    const referenceKeys = await readFloat32File(path.join(referenceDir, 'resnet32-test-first100-keys-raw.f32'));
    const extractor = new FeatureExtractor(resnet32, resolveKeyLayers(resnet32.model, [82, 92, 103]));

    const result = extractor.run(inputs, REFERENCE_ROWS, 128);
    const logits = compareRows(result.logits, referenceLogits, REFERENCE_ROWS);
    const probabilities = compareRows(result.probabilities, referenceProbabilities, REFERENCE_ROWS);
    const keys = compareRows(result.features, referenceKeys, REFERENCE_ROWS);
    await annotate(`ResNet32 parity, 100 test images: ${JSON.stringify({ logits, probabilities, keys })}`);

    expect(extractor.logitsSource).toBe('dense-kernel');
    expect(extractor.featureSize).toBe(12_288);
    expect(result.features).toHaveLength(REFERENCE_ROWS * 12_288);
    expect(logits.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(probabilities.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(keys.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    extractor.dispose();
  });

  it('gives equal results for any batchSize', async () => {
    const inputs = (await readFloat32File(path.join(referenceDir, 'cifar10-test-first100-input.f32'))).subarray(0, 20 * IMAGE_SIZE);
    const extractor = new FeatureExtractor(resnet32, resolveKeyLayers(resnet32.model, [82, 92, 103]));

    const whole = extractor.run(inputs, 20, 128);
    const split = extractor.run(inputs, 20, 7);

    // Other batch sizes may sum in another order, and 1e-5 relative covers that float32 rounding.
    expect(compareRows(split.features, whole.features, 20).maxRelative).toBeLessThanOrEqual(1e-5);
    expect(compareRows(split.logits, whole.logits, 20).maxRelative).toBeLessThanOrEqual(1e-5);
    extractor.dispose();
  });

  it('leaks no tensors across runs', async () => {
    const inputs = (await readFloat32File(path.join(referenceDir, 'cifar10-test-first100-input.f32'))).subarray(0, 10 * IMAGE_SIZE);
    const extractor = new FeatureExtractor(resnet32, resolveKeyLayers(resnet32.model, [82, 92, 103]));
    extractor.run(inputs, 10, 4);
    const tensorsBefore = tf.memory().numTensors;
    const bytesBefore = tf.memory().numBytes;

    for (let call = 0; call < 3; call++) extractor.run(inputs, 10, 4);

    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(tf.memory().numBytes).toBe(bytesBefore);
    extractor.dispose();
  });

  it('dispose leaves the model usable', () => {
    const extractor = new FeatureExtractor(resnet32, resolveKeyLayers(resnet32.model, [82]));
    extractor.dispose();

    const images = tf.zeros([1, 32, 32, 3]);
    const output = resnet32.model.predict(images, { batchSize: 1 }) as tf.Tensor;

    expect(output.shape).toEqual([1, 10]);
    expect(() => extractor.run(new Float32Array(IMAGE_SIZE), 1)).toThrow(/was disposed/);
    tf.dispose([images, output]);
  });
});

describe('FeatureExtractor input checks', () => {
  it('rejects NaN activations naming the row', () => {
    const extractor = new FeatureExtractor(tiny, resolveKeyLayers(tiny.model, ['conv2d_1']));
    const imageSize = TINY_INPUT_SHAPE[0] * TINY_INPUT_SHAPE[1] * TINY_INPUT_SHAPE[2];
    const inputs = new Float32Array(5 * imageSize).fill(0.25);
    inputs[3 * imageSize + 5] = Number.NaN;
    const tensorsBefore = tf.memory().numTensors;

    const run = (): unknown => extractor.run(inputs, 5, 2);

    expect(run).toThrow(expect.objectContaining({ code: 'NON_FINITE_ACTIVATION', details: expect.objectContaining({ row: 3 }) }));
    expect(run).toThrow(/Key layer conv2d_1 \(index 1\) produced NaN for row 3 of this call/);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('rejects inputs of the wrong length', () => {
    const extractor = new FeatureExtractor(tiny, resolveKeyLayers(tiny.model, ['conv2d_1']));
    const run = (): unknown => extractor.run(new Float32Array(15), 1);

    expect(run).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(run).toThrow(/Input holds 15 floats, but 1 images of shape \[4, 4, 1\] need 16/);
  });

  it('returns empty arrays for zero images', () => {
    const extractor = new FeatureExtractor(tiny, resolveKeyLayers(tiny.model, ['conv2d_1']));

    const result = extractor.run(new Float32Array(0), 0);

    expect(result.features).toHaveLength(0);
    expect(result.logits).toHaveLength(0);
  });

  it('rejects a key layer of another model', () => {
    const foreign = resolveKeyLayers(resnet32.model, [82]);

    expect(() => new FeatureExtractor(tiny, foreign)).toThrow(expect.objectContaining({ code: 'KEY_LAYER_NOT_FOUND' }));
  });
});

describe('FeatureExtractor logits source', () => {
  /** Builds 4×4×1 → Flatten → Dense(3, denseActivation) → optional Activation layer. */
  function buildHeadModel(denseActivation: 'linear' | 'softmax', finalActivation?: 'softmax' | 'sigmoid'): tfl.LayersModel {
    const input = tfl.input({ shape: [4, 4, 1] });
    const flat = tfl.layers.flatten().apply(input) as tfl.SymbolicTensor;
    const dense = tfl.layers.dense({ units: 3, activation: denseActivation, kernelInitializer: 'glorotUniform', biasInitializer: 'ones' }).apply(flat) as tfl.SymbolicTensor;
    const output = finalActivation === undefined ? dense : (tfl.layers.activation({ activation: finalActivation }).apply(dense) as tfl.SymbolicTensor);
    return tfl.model({ inputs: input, outputs: output });
  }

  /** Computes the reference logits x · kernel + bias of the model's Dense layer in float64. */
  function denseLogits(model: tfl.LayersModel, inputs: Float32Array, n: number): Float64Array {
    const dense = model.layers.find((layer) => layer.getClassName() === 'Dense') as tfl.layers.Layer;
    const [kernel, bias] = dense.getWeights().map((weight) => weight.dataSync());
    const logits = new Float64Array(n * 3);
    for (let row = 0; row < n; row++) {
      for (let unit = 0; unit < 3; unit++) {
        let sum = bias[unit];
        for (let i = 0; i < 16; i++) sum += inputs[row * 16 + i] * kernel[i * 3 + unit];
        logits[row * 3 + unit] = sum;
      }
    }
    return logits;
  }

  const inputs = Float32Array.from({ length: 2 * 16 }, (_, i) => Math.sin(i));
  const cases = [
    { name: 'Dense with softmax', dense: 'linear', final: 'softmax', source: 'softmax-input' },
    { name: 'linear Dense', dense: 'linear', final: undefined, source: 'output' },
    { name: 'Dense softmax kernel', dense: 'softmax', final: undefined, source: 'dense-kernel' },
  ] as const;

  for (const testCase of cases) {
    it(`recovers logits for ${testCase.name}`, () => {
      const model = buildHeadModel(testCase.dense, testCase.final);
      const extractor = new FeatureExtractor(wrapModel(model), resolveKeyLayers(model, [1]));
      const expected = denseLogits(model, inputs, 2);

      const result = extractor.run(inputs, 2);

      expect(extractor.logitsSource).toBe(testCase.source);
      // float32 matrix product of 16 terms against a float64 sum: 1e-5 absolute.
      for (let i = 0; i < expected.length; i++) expect(Math.abs(result.logits[i] - expected[i])).toBeLessThanOrEqual(1e-5);
      model.dispose();
    });
  }

  it('accepts the output layer as key', () => {
    const model = buildHeadModel('softmax');
    const extractor = new FeatureExtractor(wrapModel(model), resolveKeyLayers(model, [model.layers.length - 1]));

    const result = extractor.run(inputs, 2);

    expect(Array.from(result.features)).toEqual(Array.from(result.probabilities));
    model.dispose();
  });

  it('falls back to log-probabilities', () => {
    const model = buildHeadModel('linear', 'sigmoid');
    const extractor = new FeatureExtractor(wrapModel(model), resolveKeyLayers(model, [1]));

    const result = extractor.run(inputs, 2);

    expect(extractor.logitsSource).toBe('log-probabilities');
    for (let i = 0; i < result.logits.length; i++) expect(Math.abs(result.logits[i] - Math.log(result.probabilities[i]))).toBeLessThanOrEqual(1e-6);
    model.dispose();
  });
});
