import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resnet32Path } from '../../../../test/support/shared.js';
import { initBackend } from './backend.js';
import { saveLayersModel } from './layers-model.js';
import { loadModel } from './load-model.js';
import { buildTinyKerasModel, TINY_INPUT_SHAPE, TINY_NUM_CLASSES, writeKerasH5 } from './test-fixtures.js';

let tempDir: string;

beforeAll(async () => {
  await initBackend('wasm');
  tempDir = await mkdtemp(path.join(tmpdir(), 'cachefleet-load-model-'));
});

afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true });
});

describe('loadModel', () => {
  it('loads the ResNet32 .h5 file', async () => {
    const expectedSha256 = createHash('sha256').update(await readFile(resnet32Path)).digest('hex');

    const loaded = await loadModel(resnet32Path);

    expect(loaded.format).toBe('keras-h5');
    expect(loaded.sourcePath).toBe(resnet32Path);
    expect(loaded.fileSha256).toBe(expectedSha256);
    expect(loaded.numClasses).toBe(10);
    expect(loaded.inputShape).toEqual([32, 32, 3]);
    expect(loaded.model.layers).toHaveLength(114);
    loaded.model.dispose();
  });

  it('detects HDF5 by signature, not extension', async () => {
    const oddName = path.join(tempDir, 'tiny.weights');
    await writeKerasH5(oddName, buildTinyKerasModel());

    const loaded = await loadModel(oddName);

    expect(loaded.format).toBe('keras-h5');
    expect(loaded.numClasses).toBe(TINY_NUM_CLASSES);
    expect(loaded.inputShape).toEqual([...TINY_INPUT_SHAPE]);
    loaded.model.dispose();
  });

  it('accepts a folder with model.json', async () => {
    const h5Path = path.join(tempDir, 'tiny.h5');
    await writeKerasH5(h5Path, buildTinyKerasModel());
    const fromH5 = await loadModel(h5Path);
    const folder = path.join(tempDir, 'tiny-tfjs');
    await saveLayersModel(fromH5.model, folder);

    const fromFolder = await loadModel(folder);

    expect(fromFolder.format).toBe('tfjs-layers');
    expect(fromFolder.sourcePath).toBe(path.join(folder, 'model.json'));
    expect(fromFolder.fingerprint).toBe(fromH5.fingerprint);
    fromH5.model.dispose();
    fromFolder.model.dispose();
  });

  it('rejects a file that is not HDF5', async () => {
    const textPath = path.join(tempDir, 'model.bin');
    await writeFile(textPath, 'plain text, not a model\n');

    const load = loadModel(textPath);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/model\.bin is neither an HDF5 file .* nor a \.json file/);
  });

  it('rejects a path that does not exist', async () => {
    const missing = path.join(tempDir, 'absent.h5');

    const load = loadModel(missing);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/absent\.h5 not found/);
  });

  it('rejects a folder without model.json', async () => {
    const emptyFolder = path.join(tempDir, 'empty');
    await mkdir(emptyFolder);

    await expect(loadModel(emptyFolder)).rejects.toThrow(/empty has no model\.json/);
  });

  it('rejects a model without image input', async () => {
    const input = tfl.input({ shape: [20] });
    const output = tfl.layers.dense({ units: 4, activation: 'softmax' }).apply(input) as tfl.SymbolicTensor;
    const vectorModel = tfl.model({ inputs: input, outputs: output });
    const folder = path.join(tempDir, 'vector-model');
    await saveLayersModel(vectorModel, folder);
    vectorModel.dispose();

    const load = loadModel(folder);

    await expect(load).rejects.toMatchObject({ code: 'MODEL_INVALID' });
    await expect(load).rejects.toThrow(/one image input of fixed shape \[batch, height, width, channels\], but its inputs are \[null, 20\]/);
  });
});
