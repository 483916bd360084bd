import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { resnet20Path, resnet32Path } from '../../../../test/support/shared.js';
import { initBackend } from './backend.js';
import { parseKeyLayerList, resolveKeyLayers } from './key-layers.js';
import { loadModel, type LoadedModel } from './load-model.js';

let resnet32: LoadedModel;
let resnet20: LoadedModel;

beforeAll(async () => {
  await initBackend('wasm');
  resnet32 = await loadModel(resnet32Path);
  resnet20 = await loadModel(resnet20Path);
});

afterAll(() => {
  resnet32.model.dispose();
  resnet20.model.dispose();
});

describe('parseKeyLayerList', () => {
  it('parses indices as numbers', () => {
    expect(parseKeyLayerList('82,92,103')).toEqual([82, 92, 103]);
  });

  it('parses names and trims spaces', () => {
    expect(parseKeyLayerList(' activation_23 , activation_26')).toEqual(['activation_23', 'activation_26']);
  });

  it('keeps mixed names and indices', () => {
    expect(parseKeyLayerList('activation_23,92')).toEqual(['activation_23', 92]);
  });

  it('rejects an empty entry', () => {
    const parse = (): unknown => parseKeyLayerList('82,,103');

    expect(parse).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(parse).toThrow(/"82,,103" has an empty entry/);
  });
});

describe('resolveKeyLayers', () => {
  it('maps ResNet32 indices to activations', () => {
    const keyLayers = resolveKeyLayers(resnet32.model, [82, 92, 103]);

    expect(keyLayers.map((keyLayer) => keyLayer.name)).toEqual(['activation_23', 'activation_26', 'activation_29']);
    for (const keyLayer of keyLayers) {
      expect(keyLayer.shape).toEqual([8, 8, 64]);
      expect(keyLayer.size).toBe(4096);
    }
  });

  it('maps ResNet20 indices to activations', () => {
    const keyLayers = resolveKeyLayers(resnet20.model, [49, 57, 64]);

    expect(keyLayers.map((keyLayer) => keyLayer.name)).toEqual(['activation_14', 'activation_16', 'activation_18']);
    for (const keyLayer of keyLayers) {
      expect(keyLayer.shape).toEqual([8, 8, 64]);
    }
  });

  it('finds the same layers by name', () => {
    const byName = resolveKeyLayers(resnet32.model, ['activation_23', 'activation_26', 'activation_29']);

    expect(byName.map((keyLayer) => keyLayer.index)).toEqual([82, 92, 103]);
  });

  it('treats digit strings as indices', () => {
    expect(resolveKeyLayers(resnet32.model, ['82'])[0].name).toBe('activation_23');
  });

  it('rejects an unknown name with suggestions', () => {
    const resolve = (): unknown => resolveKeyLayers(resnet32.model, ['activation_230']);

    expect(resolve).toThrow(expect.objectContaining({ code: 'KEY_LAYER_NOT_FOUND' }));
    expect(resolve).toThrow(/Key layer "activation_230" not found/);
    expect(resolve).toThrow(/index from 0 to 113/);
    expect(resolve).toThrow(/Similar names: activation_23 \(82\)/);
  });

  it('rejects an index out of range', () => {
    const resolve = (): unknown => resolveKeyLayers(resnet32.model, [82, 114]);

    expect(resolve).toThrow(expect.objectContaining({ code: 'KEY_LAYER_NOT_FOUND' }));
    expect(resolve).toThrow(/Key layer index 114 does not exist: valid indices are 0 to 113/);
    expect(resolve).toThrow(/113: dense_1/);
  });

  it('rejects the same layer twice', () => {
    const resolve = (): unknown => resolveKeyLayers(resnet32.model, [82, 'activation_23']);

    expect(resolve).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(resolve).toThrow(/are the same layer, activation_23 \(index 82\)/);
  });

  it('rejects an empty list', () => {
    expect(() => resolveKeyLayers(resnet32.model, [])).toThrow(/key-layer list is empty/);
  });
});
