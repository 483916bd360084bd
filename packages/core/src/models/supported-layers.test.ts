import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from './backend.js';
import { assertSupportedLayers, findUnsupportedLayers, SUPPORTED_LAYER_CLASSES } from './supported-layers.js';

beforeAll(async () => {
  await initBackend('wasm');
});

/** Builds a small classifier that uses every class of SUPPORTED_LAYER_CLASSES at least once. */
function buildModelWithEveryClass(): tfl.LayersModel {
  const apply = (layer: tfl.layers.Layer, input: tfl.SymbolicTensor | tfl.SymbolicTensor[]): tfl.SymbolicTensor =>
    layer.apply(input) as tfl.SymbolicTensor;

  const input = tfl.input({ shape: [8, 8, 3] });
  const padded = apply(tfl.layers.zeroPadding2d({ padding: 1 }), input);
  const conv = apply(tfl.layers.conv2d({ filters: 4, kernelSize: 3 }), padded);
  const depthwise = apply(tfl.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same' }), conv);
  const separable = apply(tfl.layers.separableConv2d({ filters: 4, kernelSize: 3, padding: 'same' }), depthwise);
  const normalised = apply(tfl.layers.batchNormalization(), separable);
  const activated = apply(tfl.layers.activation({ activation: 'relu' }), normalised);
  const relu = apply(tfl.layers.reLU(), activated);
  const leaky = apply(tfl.layers.leakyReLU(), normalised);
  const sum = apply(tfl.layers.add(), [relu, leaky]);
  const product = apply(tfl.layers.multiply(), [sum, conv]);
  const stacked = apply(tfl.layers.concatenate(), [product, conv]);
  const averaged = apply(tfl.layers.averagePooling2d({ poolSize: 2 }), stacked);
  const maxed = apply(tfl.layers.maxPooling2d({ poolSize: 2 }), stacked);
  const globalAverage = apply(tfl.layers.globalAveragePooling2d({}), averaged);
  const globalMax = apply(tfl.layers.globalMaxPooling2d({}), maxed);
  const flat = apply(tfl.layers.flatten(), averaged);
  const reshaped = apply(tfl.layers.reshape({ targetShape: [4 * 4 * 8] }), maxed);
  const features = apply(tfl.layers.concatenate(), [globalAverage, globalMax, flat, reshaped]);
  const hidden = apply(tfl.layers.dense({ units: 16, activation: 'relu' }), features);
  const dropped = apply(tfl.layers.dropout({ rate: 0.5 }), hidden);
  const scores = apply(tfl.layers.dense({ units: 3 }), dropped);
  const probabilities = apply(tfl.layers.softmax(), scores);
  return tfl.model({ inputs: input, outputs: probabilities });
}

async function predictOn(backend: 'wasm' | 'cpu', model: tfl.LayersModel, images: tf.Tensor): Promise<Float32Array> {
  await initBackend(backend);
  const output = model.predict(images, { batchSize: 2 }) as tf.Tensor;
  const values = (await output.data()) as Float32Array;
  output.dispose();
  return values;
}

describe('SUPPORTED_LAYER_CLASSES', () => {
  it('each class runs on wasm and cpu', async () => {
    const model = buildModelWithEveryClass();
    const classes = new Set(model.layers.map((layer) => layer.getClassName()));
    expect([...classes].sort()).toEqual([...SUPPORTED_LAYER_CLASSES].sort());

    // The loaders build from JSON, so rebuild the model from its own config with the same weights.
    const rebuilt = await tfl.models.modelFromJSON({ modelTopology: model.toJSON(undefined, false) as tf.io.ModelJSON['modelTopology'] });
    rebuilt.setWeights(model.getWeights());
    const images = tf.randomUniform([2, 8, 8, 3], -1, 1, 'float32', 7);

    const onWasm = await predictOn('wasm', rebuilt, images);
    const onCpu = await predictOn('cpu', rebuilt, images);
    await initBackend('wasm');

    expect(onWasm).toHaveLength(6);
    expect(onWasm.every(Number.isFinite)).toBe(true);
    // The two backends sum in different orders, and 1e-5 covers float32 rounding of values near 1.
    const maxDifference = Math.max(...onWasm.map((value, i) => Math.abs(value - onCpu[i])));
    expect(maxDifference).toBeLessThanOrEqual(1e-5);

    images.dispose();
    model.dispose();
    rebuilt.dispose();
  });
});

describe('findUnsupportedLayers', () => {
  const functionalConfig = {
    class_name: 'Model',
    config: {
      layers: [
        { class_name: 'InputLayer', name: 'input_1', config: { name: 'input_1' } },
        { class_name: 'Lambda', name: 'lambda_1', config: { name: 'lambda_1' } },
        { class_name: 'Conv2D', name: 'conv2d_1', config: { name: 'conv2d_1' } },
        { class_name: 'Lambda', name: 'lambda_2', config: { name: 'lambda_2' } },
        { class_name: 'MyCustomLayer', name: 'custom_1', config: { name: 'custom_1' } },
      ],
    },
  };

  it('groups unsupported layers by class', () => {
    const unsupported = findUnsupportedLayers(functionalConfig, 'model.h5');

    expect(unsupported).toEqual([
      { className: 'Lambda', layerNames: ['lambda_1', 'lambda_2'] },
      { className: 'MyCustomLayer', layerNames: ['custom_1'] },
    ]);
  });

  it('reads the Keras 2.1 Sequential list', () => {
    const sequential = { class_name: 'Sequential', config: [{ class_name: 'Dense', config: { name: 'dense_1' } }, { class_name: 'LSTM', config: { name: 'lstm_1' } }] };

    expect(findUnsupportedLayers(sequential, 'model.h5')).toEqual([{ className: 'LSTM', layerNames: ['lstm_1'] }]);
  });

  it('rejects a config without layers', () => {
    const check = (): unknown => findUnsupportedLayers({ class_name: 'Model', config: {} }, 'weights.h5');

    expect(check).toThrow(expect.objectContaining({ code: 'MODEL_INVALID' }));
    expect(check).toThrow(/weights\.h5 has no layer list/);
  });
});

describe('assertSupportedLayers', () => {
  it('names every unsupported class and layer', () => {
    const config = { class_name: 'Model', config: { layers: [{ class_name: 'Lambda', name: 'lambda_1' }, { class_name: 'GRU', name: 'gru_1' }] } };
    const check = (): void => assertSupportedLayers(config, '/models/odd.h5');

    expect(check).toThrow(expect.objectContaining({ code: 'MODEL_UNSUPPORTED_LAYER' }));
    expect(check).toThrow(/Model \/models\/odd\.h5 contains layer classes cachefleet cannot run: Lambda \(lambda_1\); GRU \(gru_1\)\./);
  });

  it('accepts a supported config', () => {
    const config = { class_name: 'Model', config: { layers: [{ class_name: 'InputLayer', name: 'input_1' }, { class_name: 'Dense', name: 'dense_1' }] } };

    expect(() => assertSupportedLayers(config, 'model.h5')).not.toThrow();
  });
});
