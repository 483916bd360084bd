import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resnet32Path } from '../../../../test/support/shared.js';
import { initBackend } from './backend.js';
import { canonicalJson, computeModelFingerprint } from './fingerprint.js';
import { saveLayersModel } from './layers-model.js';
import { loadModel, type LoadedModel } from './load-model.js';

let tempDir: string;
let fromH5: LoadedModel;

beforeAll(async () => {
  await initBackend('wasm');
  // Converted copies of the GPL-3.0 models go to a temporary folder only, never into the repository.
  tempDir = await mkdtemp(path.join(tmpdir(), 'cachefleet-fingerprint-'));
  fromH5 = await loadModel(resnet32Path);
});

afterAll(async () => {
  fromH5.model.dispose();
  await rm(tempDir, { recursive: true, force: true });
});

describe('computeModelFingerprint', () => {
  it('equal for .h5 and model.json', async () => {
    const modelJsonPath = await saveLayersModel(fromH5.model, path.join(tempDir, 'resnet32-tfjs'));
    const fromJson = await loadModel(modelJsonPath);

    expect(fromJson.format).toBe('tfjs-layers');
    expect(fromJson.fingerprint).toBe(fromH5.fingerprint);
    expect(fromJson.fileSha256).not.toBe(fromH5.fileSha256);
    fromJson.model.dispose();
  });

  it('is 64 lowercase hex digits', () => {
    expect(fromH5.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes when one weight changes', async () => {
    const modelJsonPath = await saveLayersModel(fromH5.model, path.join(tempDir, 'resnet32-edited'));
    const edited = await loadModel(modelJsonPath);
    const dense = edited.model.getLayer('dense_1');
    const [kernel, bias] = dense.getWeights();
    const values = Float32Array.from(bias.dataSync());
    values[3] += 1e-3;
    const changedBias = tf.tensor(values, bias.shape);

    dense.setWeights([kernel, changedBias]);

    expect(await computeModelFingerprint(edited.model)).not.toBe(fromH5.fingerprint);
    changedBias.dispose();
    edited.model.dispose();
  });

  it('changes when one config changes', async () => {
    const modelJsonPath = await saveLayersModel(fromH5.model, path.join(tempDir, 'resnet32-epsilon'));
    const modelJson = JSON.parse(await readFile(modelJsonPath, 'utf8')) as { modelTopology: { config: { layers: Array<{ name: string; config: { epsilon?: number } }> } } };
    const normalisation = modelJson.modelTopology.config.layers.find((layer) => layer.name === 'batch_normalization_1');
    if (normalisation === undefined) throw new Error('batch_normalization_1 missing from the saved topology');
    normalisation.config.epsilon = 0.002;
    await writeFile(modelJsonPath, JSON.stringify(modelJson));

    const edited = await loadModel(modelJsonPath);

    expect(edited.fingerprint).not.toBe(fromH5.fingerprint);
    edited.model.dispose();
  });

  it('repeats for the same model', async () => {
    expect(await computeModelFingerprint(fromH5.model)).toBe(fromH5.fingerprint);
  });
});

describe('canonicalJson', () => {
  it('sorts keys at every level', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 3, e: 4 }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"e":4,"f":3}]},"b":1}');
  });

  it('drops undefined object values', () => {
    expect(canonicalJson({ a: undefined, b: 2 })).toBe('{"b":2}');
  });
});
