import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { referenceDir, resnet20Path, resnet32Path } from '../../../../test/support/shared.js';
import { initBackend } from '../models/backend.js';
import { FeatureExtractor, type ExtractionResult } from '../models/extractor.js';
import { resolveKeyLayers } from '../models/key-layers.js';
import { loadModel, type LoadedModel } from '../models/load-model.js';
import { readFloat32File } from '../models/test-fixtures.js';
import { OnnxFeatureExtractor } from './onnx-extractor.js';
import { compareRows } from './test-fixtures.js';

/** Relative L2 error allowed per row, against the PyTorch float32 reference and against tfjs. */
const PARITY_TOLERANCE = 1e-4;
/** Bound on the largest absolute difference. The reference logits and keys reach about 36 in magnitude. */
const MAX_ABSOLUTE_DIFFERENCE = 1e-3;
const REFERENCE_ROWS = 100;
const IMAGE_SIZE = 32 * 32 * 3;
/** 32 does not divide 100, so the reference run also covers a partial last batch at an offset. */
const BATCH_SIZE = 32;

let resnet32: LoadedModel;
let resnet32Extractor: OnnxFeatureExtractor;
let referenceInputs: Float32Array;
let resnet32Result: ExtractionResult;

beforeAll(async () => {
  await initBackend('wasm');
  resnet32 = await loadModel(resnet32Path);
  resnet32Extractor = await OnnxFeatureExtractor.create(resnet32, resolveKeyLayers(resnet32.model, [82, 92, 103]));
  referenceInputs = await readFloat32File(path.join(referenceDir, 'cifar10-test-first100-input.f32'));
  resnet32Result = await resnet32Extractor.run(referenceInputs, REFERENCE_ROWS, BATCH_SIZE);
});

afterAll(async () => {
  await resnet32Extractor.dispose();
  resnet32.model.dispose();
});

describe('OnnxFeatureExtractor on ResNet32', () => {
  it('logits match the reference', async ({ annotate }) => {
    const reference = await readFloat32File(path.join(referenceDir, 'resnet32-test-first100-logits.f32'));

    const errors = compareRows(resnet32Result.logits, reference, REFERENCE_ROWS);
    await annotate(`logits: max relative L2 ${errors.maxRelative.toExponential(2)}, max absolute ${errors.maxAbsolute.toExponential(2)}`);

    expect(errors.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(errors.maxAbsolute).toBeLessThanOrEqual(MAX_ABSOLUTE_DIFFERENCE);
  });

  it('probabilities match the reference', async ({ annotate }) => {
    const reference = await readFloat32File(path.join(referenceDir, 'resnet32-test-first100-probs.f32'));

    const errors = compareRows(resnet32Result.probabilities, reference, REFERENCE_ROWS);
    await annotate(`probabilities: max relative L2 ${errors.maxRelative.toExponential(2)}, max absolute ${errors.maxAbsolute.toExponential(2)}`);

    expect(errors.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
  });

  it('raw keys match the reference', async ({ annotate }) => {
    const reference = await readFloat32File(path.join(referenceDir, 'resnet32-test-first100-keys-raw.f32'));

    const errors = compareRows(resnet32Result.features, reference, REFERENCE_ROWS);
    await annotate(`keys: max relative L2 ${errors.maxRelative.toExponential(2)}, max absolute ${errors.maxAbsolute.toExponential(2)}`);

    expect(resnet32Extractor.featureSize).toBe(12_288);
    expect(errors.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(errors.maxAbsolute).toBeLessThanOrEqual(MAX_ABSOLUTE_DIFFERENCE);
  });

  it('batch size leaves results unchanged', async () => {
    const whole = await resnet32Extractor.run(referenceInputs, REFERENCE_ROWS, REFERENCE_ROWS);

    expect(compareRows(whole.features, resnet32Result.features, REFERENCE_ROWS).maxRelative).toBeLessThanOrEqual(1e-6);
    expect(compareRows(whole.logits, resnet32Result.logits, REFERENCE_ROWS).maxRelative).toBeLessThanOrEqual(1e-6);
  });

  it('zero images give empty arrays', async () => {
    const result = await resnet32Extractor.run(new Float32Array(0), 0, BATCH_SIZE);

    expect(result.logits.length).toBe(0);
    expect(result.features.length).toBe(0);
  });

  it('rejects a wrong input length', async () => {
    const inputs = referenceInputs.subarray(0, 2 * IMAGE_SIZE - 1);

    await expect(resnet32Extractor.run(inputs, 2, BATCH_SIZE)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('rejects a zero batch size', async () => {
    await expect(resnet32Extractor.run(referenceInputs, REFERENCE_ROWS, 0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('reports the row with infinite keys', async () => {
    const inputs = referenceInputs.slice(0, 4 * IMAGE_SIZE);
    inputs.fill(Number.POSITIVE_INFINITY, 2 * IMAGE_SIZE, 3 * IMAGE_SIZE);

    await expect(resnet32Extractor.run(inputs, 4, BATCH_SIZE)).rejects.toMatchObject({ code: 'NON_FINITE_ACTIVATION', details: { row: 2 } });
  });

  it('disposed extractor rejects run', async () => {
    const extractor = await OnnxFeatureExtractor.create(resnet32, resolveKeyLayers(resnet32.model, [82]), { intraOpNumThreads: 1 });

    await extractor.dispose();
    await extractor.dispose();

    await expect(extractor.run(referenceInputs.subarray(0, IMAGE_SIZE), 1)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('OnnxFeatureExtractor on ResNet20', () => {
  it('agrees with the tfjs extractor', async ({ annotate }) => {
    const resnet20 = await loadModel(resnet20Path);
    const keyLayers = resolveKeyLayers(resnet20.model, [49, 57, 64]);
    const tfjs = new FeatureExtractor(resnet20, keyLayers);
    const onnx = await OnnxFeatureExtractor.create(resnet20, keyLayers);

    const expected = tfjs.run(referenceInputs, REFERENCE_ROWS, BATCH_SIZE);
    const actual = await onnx.run(referenceInputs, REFERENCE_ROWS, BATCH_SIZE);
    await onnx.dispose();
    tfjs.dispose();
    resnet20.model.dispose();

    const logits = compareRows(actual.logits, expected.logits, REFERENCE_ROWS);
    const probabilities = compareRows(actual.probabilities, expected.probabilities, REFERENCE_ROWS);
    const features = compareRows(actual.features, expected.features, REFERENCE_ROWS);
    await annotate(
      `ResNet20 onnx vs tfjs wasm: logits ${logits.maxRelative.toExponential(2)} relative / ${logits.maxAbsolute.toExponential(2)} absolute, ` +
        `keys ${features.maxRelative.toExponential(2)} relative / ${features.maxAbsolute.toExponential(2)} absolute`,
    );

    expect(onnx.featureSize).toBe(tfjs.featureSize);
    expect(logits.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(probabilities.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(features.maxRelative).toBeLessThanOrEqual(PARITY_TOLERANCE);
    expect(features.maxAbsolute).toBeLessThanOrEqual(MAX_ABSOLUTE_DIFFERENCE);
  });
});
