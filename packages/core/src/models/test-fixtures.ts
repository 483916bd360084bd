import { readFile } from 'node:fs/promises';

import { File as H5File, ready as h5wasmReady } from 'h5wasm/node';

/**
 * Helpers for the tests of this folder: a tiny Keras 2.x .h5 model written with h5wasm (there
 * is no Python to write one), and a reader for the raw float32 reference files.
 */

/** Tiny classifier: 4×4×1 input → Conv2D (2 filters, 3×3, same) → Flatten → Dense(3, softmax). */
export const TINY_INPUT_SHAPE = [4, 4, 1] as const;
export const TINY_NUM_CLASSES = 3;

interface KerasLayerConfig {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: unknown[];
}

export interface TinyKerasModel {
  modelConfig: { class_name: string; config: { name: string; layers: KerasLayerConfig[]; input_layers: unknown[]; output_layers: unknown[] } };
  /** Weights by layer, each name in Keras form (`conv2d_1/kernel:0`). */
  weights: Array<{ layer: string; name: string; shape: number[]; values: Float32Array }>;
}

/** Builds the tiny model's Keras config and deterministic weights (no randomness). */
export function buildTinyKerasModel(): TinyKerasModel {
  const inbound = (name: string): unknown[] => [[[name, 0, 0, {}]]];
  const layers: KerasLayerConfig[] = [
    { name: 'input_1', class_name: 'InputLayer', config: { name: 'input_1', batch_input_shape: [null, ...TINY_INPUT_SHAPE], dtype: 'float32', sparse: false }, inbound_nodes: [] },
    {
      name: 'conv2d_1',
      class_name: 'Conv2D',
      config: { name: 'conv2d_1', filters: 2, kernel_size: [3, 3], strides: [1, 1], padding: 'same', data_format: 'channels_last', dilation_rate: [1, 1], activation: 'linear', use_bias: true, trainable: true },
      inbound_nodes: inbound('input_1'),
    },
    { name: 'flatten_1', class_name: 'Flatten', config: { name: 'flatten_1', trainable: true }, inbound_nodes: inbound('conv2d_1') },
    { name: 'dense_1', class_name: 'Dense', config: { name: 'dense_1', units: TINY_NUM_CLASSES, activation: 'softmax', use_bias: true, trainable: true }, inbound_nodes: inbound('flatten_1') },
  ];

  const weights = [
    { layer: 'conv2d_1', name: 'conv2d_1/kernel:0', shape: [3, 3, 1, 2] },
    { layer: 'conv2d_1', name: 'conv2d_1/bias:0', shape: [2] },
    { layer: 'dense_1', name: 'dense_1/kernel:0', shape: [32, TINY_NUM_CLASSES] },
    { layer: 'dense_1', name: 'dense_1/bias:0', shape: [TINY_NUM_CLASSES] },
  ].map((weight, w) => {
    const size = weight.shape.reduce((product, dimension) => product * dimension, 1);
    // Small distinct values in [-0.5, 0.5) so that every weight matters to the output.
    const values = Float32Array.from({ length: size }, (_, i) => (((i + 1) * 37 + w * 11) % 100) / 100 - 0.5);
    return { ...weight, values };
  });

  const modelConfig = {
    class_name: 'Model',
    config: { name: 'tiny', layers, input_layers: [['input_1', 0, 0]], output_layers: [['dense_1', 0, 0]] },
  };
  return { modelConfig, weights };
}

export interface WriteKerasH5Options {
  /** Leave out the `model_config` attribute, as `model.save_weights()` does. */
  omitModelConfig?: boolean;
  /** Leave out the dataset of this Keras weight name (still listed in weight_names). */
  omitWeight?: string;
}

/** Writes `model` as a Keras 2.x whole-model HDF5 file, the layout `model.save()` produces. */
export async function writeKerasH5(path: string, model: TinyKerasModel, options: WriteKerasH5Options = {}): Promise<void> {
  await h5wasmReady;
  const file = new H5File(path, 'w');
  try {
    if (options.omitModelConfig !== true) file.create_attribute('model_config', JSON.stringify(model.modelConfig));
    file.create_attribute('keras_version', '2.1.1');
    file.create_attribute('backend', 'tensorflow');

    const group = file.create_group('model_weights');
    const layerNames = model.modelConfig.config.layers.map((layer) => layer.name);
    group.create_attribute('layer_names', layerNames);

    for (const layerName of layerNames) {
      const layerGroup = group.create_group(layerName);
      const layerWeights = model.weights.filter((weight) => weight.layer === layerName);
      // Keras stores an empty float64 array for a layer without weights.
      layerGroup.create_attribute('weight_names', layerWeights.length > 0 ? layerWeights.map((weight) => weight.name) : new Float64Array(0));
      if (layerWeights.length > 0) layerGroup.create_group(layerName);

      for (const weight of layerWeights) {
        if (weight.name === options.omitWeight) continue;
        layerGroup.create_dataset({ name: weight.name, data: weight.values, shape: weight.shape, dtype: '<f' });
      }
    }
  } finally {
    file.close();
  }
}

/** Reads a raw little-endian float32 file into its own Float32Array. */
export async function readFloat32File(path: string): Promise<Float32Array> {
  const bytes = await readFile(path);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}
