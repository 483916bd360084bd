import * as tfl from '@tensorflow/tfjs-layers';
import onnxProto from 'onnx-proto';
import { beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../models/backend.js';
import { FeatureExtractor } from '../models/extractor.js';
import { resolveKeyLayers } from '../models/key-layers.js';
import { exportToOnnx, ONNX_VALUE_NAMES } from './onnx-export.js';
import { OnnxFeatureExtractor } from './onnx-extractor.js';
import {
  buildSyntheticModel,
  compareRows,
  describeLoaded,
  makeInputs,
  setDeterministicWeights,
  SYNTHETIC_INPUT_SHAPE,
  type SyntheticHead,
} from './test-fixtures.js';

/** Relative L2 error allowed per row between the ONNX graph and tfjs on the same weights. */
const TOLERANCE = 1e-4;
const IMAGE_COUNT = 7;

beforeAll(async () => {
  await initBackend('wasm');
});

/** Model with one convolution whose head or middle layer the caller chooses. */
function buildSmallModel(middle: (input: tfl.SymbolicTensor) => tfl.SymbolicTensor, headActivation: 'softmax' | 'relu' = 'softmax'): tfl.LayersModel {
  const input = tfl.input({ shape: [6, 6, 2] });
  const conv = tfl.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same' }).apply(input) as tfl.SymbolicTensor;
  const flat = tfl.layers.flatten().apply(middle(conv));
  const output = tfl.layers.dense({ units: 4, activation: headActivation }).apply(flat) as tfl.SymbolicTensor;
  const model = tfl.model({ inputs: input, outputs: output, name: 'small' });
  setDeterministicWeights(model);
  return model;
}

describe('exportToOnnx on the synthetic model', () => {
  const cases: Array<{ head: SyntheticHead; foldBatchNorm: boolean }> = [
    { head: 'dense-softmax', foldBatchNorm: true },
    { head: 'dense-softmax', foldBatchNorm: false },
    { head: 'activation-softmax', foldBatchNorm: true },
    { head: 'dense-linear', foldBatchNorm: true },
  ];

  it.each(cases)('$head head (fold $foldBatchNorm) matches tfjs', async ({ head, foldBatchNorm }) => {
    const synthetic = buildSyntheticModel(head);
    const keyLayers = resolveKeyLayers(synthetic.loaded.model, synthetic.keyLayers);
    const inputs = makeInputs(IMAGE_COUNT, SYNTHETIC_INPUT_SHAPE);
    const tfjs = new FeatureExtractor(synthetic.loaded, keyLayers);
    const onnx = await OnnxFeatureExtractor.create(synthetic.loaded, keyLayers, { foldBatchNorm, intraOpNumThreads: 1 });

    const expected = tfjs.run(inputs, IMAGE_COUNT, 3);
    const actual = await onnx.run(inputs, IMAGE_COUNT, 3);
    await onnx.dispose();
    tfjs.dispose();
    synthetic.loaded.model.dispose();

    expect(onnx.logitsSource).toBe(tfjs.logitsSource);
    expect(onnx.featureSize).toBe(tfjs.featureSize);
    expect(compareRows(actual.logits, expected.logits, IMAGE_COUNT).maxRelative).toBeLessThanOrEqual(TOLERANCE);
    expect(compareRows(actual.probabilities, expected.probabilities, IMAGE_COUNT).maxRelative).toBeLessThanOrEqual(TOLERANCE);
    expect(compareRows(actual.features, expected.features, IMAGE_COUNT).maxRelative).toBeLessThanOrEqual(TOLERANCE);
  });

  it('sequential model matches tfjs', async () => {
    const model = tfl.sequential({
      layers: [
        tfl.layers.conv2d({ inputShape: [6, 6, 2], filters: 3, kernelSize: 3, strides: 2, padding: 'same' }),
        tfl.layers.batchNormalization(),
        tfl.layers.activation({ activation: 'relu' }),
        tfl.layers.flatten(),
        tfl.layers.dense({ units: 4, activation: 'softmax' }),
      ],
    });
    setDeterministicWeights(model);
    const loaded = describeLoaded(model, [6, 6, 2], 4);
    const keyLayers = resolveKeyLayers(model, [2]);
    const inputs = makeInputs(IMAGE_COUNT, [6, 6, 2]);
    const tfjs = new FeatureExtractor(loaded, keyLayers);
    const onnx = await OnnxFeatureExtractor.create(loaded, keyLayers, { intraOpNumThreads: 1 });

    const expected = tfjs.run(inputs, IMAGE_COUNT, IMAGE_COUNT);
    const actual = await onnx.run(inputs, IMAGE_COUNT, IMAGE_COUNT);
    await onnx.dispose();
    tfjs.dispose();
    model.dispose();

    expect(compareRows(actual.logits, expected.logits, IMAGE_COUNT).maxRelative).toBeLessThanOrEqual(TOLERANCE);
    expect(compareRows(actual.features, expected.features, IMAGE_COUNT).maxRelative).toBeLessThanOrEqual(TOLERANCE);
  });

  it('folds only safe batch norms', () => {
    const synthetic = buildSyntheticModel('dense-softmax');

    const folded = exportToOnnx(synthetic.loaded.model, { keyLayers: synthetic.keyLayers });
    const unfolded = exportToOnnx(synthetic.loaded.model, { keyLayers: synthetic.keyLayers, foldBatchNorm: false });
    synthetic.loaded.model.dispose();

    expect(folded.foldedBatchNorms).toBe(synthetic.foldableBatchNorms);
    expect(unfolded.foldedBatchNorms).toBe(0);
  });

  it('graph declares its named outputs', () => {
    const synthetic = buildSyntheticModel('dense-softmax');
    const exported = exportToOnnx(synthetic.loaded.model, { keyLayers: synthetic.keyLayers });
    synthetic.loaded.model.dispose();

    const decoded = onnxProto.onnx.ModelProto.decode(exported.modelBytes);
    const graph = decoded.graph as onnxProto.onnx.GraphProto;
    expect(graph.input.map((value) => value.name)).toEqual([ONNX_VALUE_NAMES.input]);
    expect(graph.output.map((value) => value.name)).toEqual([ONNX_VALUE_NAMES.probabilities, ONNX_VALUE_NAMES.logits, ONNX_VALUE_NAMES.features]);
    // protobufjs decodes int64 fields as Long objects, so the version is compared as text.
    expect(String(decoded.opsetImport[0].version)).toBe(String(exported.opsetVersion));
  });

  it('key layers describe their shapes', () => {
    const synthetic = buildSyntheticModel('dense-softmax');
    const exported = exportToOnnx(synthetic.loaded.model, { keyLayers: synthetic.keyLayers });
    synthetic.loaded.model.dispose();

    // relu_key 5×5×4, features 5×5×4, bn_after_add 5×5×4, flatten_2x2 16.
    expect(exported.keyLayers.map((keyLayer) => keyLayer.shape)).toEqual([[5, 5, 4], [5, 5, 4], [5, 5, 4], [16]]);
    expect(exported.featureSize).toBe(3 * 100 + 16);
  });
});

describe('exportToOnnx rejections', () => {
  it('lists every unsupported layer class', () => {
    const model = buildSmallModel((conv) => {
      const pooled = tfl.layers.maxPooling2d({ poolSize: 2 }).apply(conv);
      return tfl.layers.dropout({ rate: 0.5 }).apply(pooled) as tfl.SymbolicTensor;
    });

    const exporting = (): unknown => exportToOnnx(model, { keyLayers: [1] });

    expect(exporting).toThrow(expect.objectContaining({ code: 'MODEL_UNSUPPORTED_LAYER' }));
    expect(exporting).toThrow(/Dropout/);
    expect(exporting).toThrow(/MaxPooling2D/);
    model.dispose();
  });

  it('rejects an unsupported activation', () => {
    const model = buildSmallModel((conv) => tfl.layers.activation({ activation: 'tanh' }).apply(conv) as tfl.SymbolicTensor);

    const exporting = (): unknown => exportToOnnx(model, { keyLayers: [1] });

    expect(exporting).toThrow(expect.objectContaining({ code: 'MODEL_UNSUPPORTED_LAYER' }));
    expect(exporting).toThrow(/tanh/);
    model.dispose();
  });

  it('rejects a head without logits', () => {
    const model = buildSmallModel((conv) => conv, 'relu');

    const exporting = (): unknown => exportToOnnx(model, { keyLayers: [1] });

    expect(exporting).toThrow(expect.objectContaining({ code: 'MODEL_INVALID' }));
    model.dispose();
  });

  it('rejects a missing key layer', () => {
    const model = buildSmallModel((conv) => conv);

    expect(() => exportToOnnx(model, { keyLayers: [model.layers.length] })).toThrow(expect.objectContaining({ code: 'KEY_LAYER_NOT_FOUND' }));
    expect(() => exportToOnnx(model, { keyLayers: [1.5] })).toThrow(expect.objectContaining({ code: 'KEY_LAYER_NOT_FOUND' }));
    expect(() => exportToOnnx(model, { keyLayers: [] })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    model.dispose();
  });

  it('extractor rejects foreign key layers', async () => {
    const model = buildSmallModel((conv) => conv);
    const loaded = describeLoaded(model, [6, 6, 2], 4);
    const foreign = [{ index: 1, name: 'activation_23', shape: [6, 6, 3], size: 108 }];

    await expect(OnnxFeatureExtractor.create(loaded, foreign)).rejects.toMatchObject({ code: 'KEY_LAYER_NOT_FOUND' });
    model.dispose();
  });
});
