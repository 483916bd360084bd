import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from './backend.js';
import { loadKerasH5Model } from './keras-h5.js';
import { loadLayersModelFile, SAVED_WEIGHTS_FILE, saveLayersModel } from './layers-model.js';
import { buildTinyKerasModel, TINY_INPUT_SHAPE, writeKerasH5 } from './test-fixtures.js';

let tempDir: string;
let tiny: tfl.LayersModel;

beforeAll(async () => {
  await initBackend('wasm');
  tempDir = await mkdtemp(path.join(tmpdir(), 'cachefleet-layers-model-'));
  const h5Path = path.join(tempDir, 'tiny.h5');
  await writeKerasH5(h5Path, buildTinyKerasModel());
  tiny = await loadKerasH5Model(h5Path);
});

afterAll(async () => {
  tiny.dispose();
  await rm(tempDir, { recursive: true, force: true });
});

/** Saves the tiny model into a fresh subfolder and returns the model.json path. */
async function saveTiny(name: string): Promise<string> {
  return saveLayersModel(tiny, path.join(tempDir, name));
}

async function editModelJson(modelJsonPath: string, edit: (modelJson: Record<string, any>) => void): Promise<void> {
  const modelJson = JSON.parse(await readFile(modelJsonPath, 'utf8')) as Record<string, any>;
  edit(modelJson);
  await writeFile(modelJsonPath, JSON.stringify(modelJson));
}

describe('saveLayersModel and loadLayersModelFile', () => {
  it('round trip keeps predictions identical', async () => {
    const modelJsonPath = await saveTiny('round-trip');
    const reloaded = await loadLayersModelFile(modelJsonPath);
    const images = tf.randomUniform([5, ...TINY_INPUT_SHAPE], -1, 1, 'float32', 3);

    const before = tiny.predict(images, { batchSize: 5 }) as tf.Tensor;
    const after = reloaded.predict(images, { batchSize: 5 }) as tf.Tensor;

    expect(Array.from(await after.data())).toEqual(Array.from(await before.data()));
    tf.dispose([images, before, after]);
    reloaded.dispose();
  });

  it('writes model.json and one weight file', async () => {
    const modelJsonPath = await saveTiny('layout');
    const modelJson = JSON.parse(await readFile(modelJsonPath, 'utf8')) as { weightsManifest: Array<{ paths: string[] }> };

    expect(path.basename(modelJsonPath)).toBe('model.json');
    expect(modelJson.weightsManifest).toHaveLength(1);
    expect(modelJson.weightsManifest[0].paths).toEqual([SAVED_WEIGHTS_FILE]);
  });
});

describe('loadLayersModelFile', () => {
  it('rejects a weight path outside the folder', async () => {
    const modelJsonPath = await saveTiny('escape');
    await editModelJson(modelJsonPath, (modelJson) => {
      modelJson.weightsManifest[0].paths = ['../round-trip/weights.bin'];
    });

    const load = loadLayersModelFile(modelJsonPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/lists weight file "\.\.\/round-trip\/weights\.bin", which lies outside the model folder/);
  });

  it('rejects a missing weight file', async () => {
    const modelJsonPath = await saveTiny('missing-weights');
    await rm(path.join(path.dirname(modelJsonPath), SAVED_WEIGHTS_FILE));

    const load = loadLayersModelFile(modelJsonPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/weights\.bin, listed in .*model\.json, could not be read/);
  });

  it('rejects a truncated weight file', async () => {
    const modelJsonPath = await saveTiny('truncated');
    // The tiny model has 18 + 2 + 96 + 3 = 119 float32 values, 476 bytes.
    await truncate(path.join(path.dirname(modelJsonPath), SAVED_WEIGHTS_FILE), 400);

    const load = loadLayersModelFile(modelJsonPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/hold 400 bytes, but its weightsManifest describes 476/);
  });

  it('rejects an unsupported layer, listing it', async () => {
    const modelJsonPath = await saveTiny('unsupported');
    await editModelJson(modelJsonPath, (modelJson) => {
      const flatten = modelJson.modelTopology.config.layers.find((layer: { name: string }) => layer.name === 'flatten_1');
      flatten.class_name = 'TimeDistributed';
    });

    const load = loadLayersModelFile(modelJsonPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_UNSUPPORTED_LAYER' });
    await expect(load).rejects.toThrow(/TimeDistributed \(flatten_1\)/);
  });

  it('rejects a file without modelTopology', async () => {
    const modelJsonPath = await saveTiny('no-topology');
    await editModelJson(modelJsonPath, (modelJson) => {
      delete modelJson.modelTopology;
    });

    const load = loadLayersModelFile(modelJsonPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/has no modelTopology object/);
  });
});
