import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resnet32Path } from '../../../../test/support/shared.js';
import { initBackend } from './backend.js';
import { hasHdf5Signature, loadKerasH5Model, readKerasH5 } from './keras-h5.js';
import { buildTinyKerasModel, writeKerasH5 } from './test-fixtures.js';

let tempDir: string;

beforeAll(async () => {
  await initBackend('wasm');
  tempDir = await mkdtemp(path.join(tmpdir(), 'cachefleet-keras-h5-'));
});

afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true });
});

describe('hasHdf5Signature', () => {
  it('accepts the ResNet32 file', async () => {
    expect(await hasHdf5Signature(resnet32Path)).toBe(true);
  });

  it('rejects a text file', async () => {
    const textPath = path.join(tempDir, 'notes.h5');
    await writeFile(textPath, 'not a model\n');

    expect(await hasHdf5Signature(textPath)).toBe(false);
  });
});

describe('readKerasH5', () => {
  it('reads ResNet32 config and weights', async () => {
    const contents = await readKerasH5(resnet32Path);
    const layers = (contents.modelConfig.config as { layers: unknown[] }).layers;

    expect(contents.kerasVersion).toBe('2.1.1');
    expect(layers).toHaveLength(114);
    expect(contents.weights[0].name).toBe('conv2d_1/kernel');
    expect(contents.weights[0].shape).toEqual([3, 3, 3, 16]);
  });

  it('rejects a non-HDF5 file', async () => {
    const textPath = path.join(tempDir, 'fake.h5');
    await writeFile(textPath, '{"this is": "json, not HDF5"}');

    await expect(readKerasH5(textPath)).rejects.toMatchObject({ code: 'MODEL_INVALID', message: expect.stringContaining(textPath) });
    await expect(readKerasH5(textPath)).rejects.toThrow(/not an HDF5 file/);
  });

  it('rejects a weights-only file', async () => {
    const weightsOnlyPath = path.join(tempDir, 'weights-only.h5');
    await writeKerasH5(weightsOnlyPath, buildTinyKerasModel(), { omitModelConfig: true });

    await expect(readKerasH5(weightsOnlyPath)).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(readKerasH5(weightsOnlyPath)).rejects.toThrow(/no model_config attribute.*model\.save\(path\)/);
  });

  it('rejects a missing weight dataset', async () => {
    const incompletePath = path.join(tempDir, 'incomplete.h5');
    await writeKerasH5(incompletePath, buildTinyKerasModel(), { omitWeight: 'dense_1/bias:0' });

    await expect(readKerasH5(incompletePath)).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(readKerasH5(incompletePath)).rejects.toThrow(/missing weight model_weights\/dense_1\/dense_1\/bias:0/);
  });
});

describe('loadKerasH5Model', () => {
  it('sets every weight of the tiny model', async () => {
    const tiny = buildTinyKerasModel();
    const tinyPath = path.join(tempDir, 'tiny.h5');
    await writeKerasH5(tinyPath, tiny);

    const model = await loadKerasH5Model(tinyPath);
    const denseKernel = model.getLayer('dense_1').getWeights()[0];

    expect(Array.from(denseKernel.dataSync())).toEqual(Array.from(tiny.weights[2].values));
    model.dispose();
  });

  it('rejects an unsupported layer, listing it', async () => {
    const tiny = buildTinyKerasModel();
    const layers = tiny.modelConfig.config.layers;
    // A Lambda layer (arbitrary Python code) between Flatten and Dense, and a GaussianNoise layer after it.
    layers.splice(3, 0, { name: 'lambda_1', class_name: 'Lambda', config: { name: 'lambda_1' }, inbound_nodes: [[['flatten_1', 0, 0, {}]]] });
    layers.splice(4, 0, { name: 'gaussian_noise_1', class_name: 'GaussianNoise', config: { name: 'gaussian_noise_1', stddev: 0.1 }, inbound_nodes: [[['lambda_1', 0, 0, {}]]] });
    layers[5].inbound_nodes = [[['gaussian_noise_1', 0, 0, {}]]];
    const unsupportedPath = path.join(tempDir, 'unsupported.h5');
    await writeKerasH5(unsupportedPath, tiny);

    const load = loadKerasH5Model(unsupportedPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_UNSUPPORTED_LAYER' });
    await expect(load).rejects.toThrow(/Lambda \(lambda_1\); GaussianNoise \(gaussian_noise_1\)/);
  });

  it('rejects weights of the wrong shape', async () => {
    const tiny = buildTinyKerasModel();
    const conv = tiny.modelConfig.config.layers[1];
    conv.config.filters = 4;
    const mismatchPath = path.join(tempDir, 'mismatch.h5');
    await writeKerasH5(mismatchPath, tiny);
    const tensorsBefore = tf.memory().numTensors;

    const load = loadKerasH5Model(mismatchPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/shape mismatch: conv2d_1\/kernel: model \[3, 3, 1, 4\], file \[3, 3, 1, 2\]/);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });
});
