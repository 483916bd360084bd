import { cp, open, readFile, writeFile } from 'node:fs/promises';

import { writeKerasH5, type TinyKerasModel } from '../../../packages/core/src/models/test-fixtures.js';

export interface CifarTinyModelOptions {
  /** Units of the output Dense layer. Default 10, as CIFAR-10. */
  numClasses?: number;
  /** Inserts a layer of this Keras class after the convolution, for example one cachefleet cannot run. */
  extraLayerClass?: string;
  /** Fills the convolution kernel with NaN, so every key-layer activation is NaN. */
  nanKernel?: boolean;
}

/**
 * Builds a tiny Keras 2.x classifier for 32×32×3 images: Conv2D (2 filters, 3×3, same) → Flatten →
 * Dense(softmax). Its weights are fixed numbers, so keys built from it are deterministic. Key
 * layer 1 (`conv2d_1`) gives 2,048-dimensional keys.
 */
export function buildCifarTinyModel(options: CifarTinyModelOptions = {}): TinyKerasModel {
  const numClasses = options.numClasses ?? 10;
  const inbound = (name: string): unknown[] => [[[name, 0, 0, {}]]];
  const layers: TinyKerasModel['modelConfig']['config']['layers'] = [
    { name: 'input_1', class_name: 'InputLayer', config: { name: 'input_1', batch_input_shape: [null, 32, 32, 3], dtype: 'float32', sparse: false }, inbound_nodes: [] },
    {
      name: 'conv2d_1',
      class_name: 'Conv2D',
      config: { name: 'conv2d_1', filters: 2, kernel_size: [3, 3], strides: [1, 1], padding: 'same', data_format: 'channels_last', dilation_rate: [1, 1], activation: 'linear', use_bias: true, trainable: true },
      inbound_nodes: inbound('input_1'),
    },
  ];
  let last = 'conv2d_1';
  if (options.extraLayerClass !== undefined) {
    layers.push({ name: 'extra_1', class_name: options.extraLayerClass, config: { name: 'extra_1', trainable: true, stddev: 0.1 }, inbound_nodes: inbound(last) });
    last = 'extra_1';
  }
  layers.push(
    { name: 'flatten_1', class_name: 'Flatten', config: { name: 'flatten_1', trainable: true }, inbound_nodes: inbound(last) },
    { name: 'dense_1', class_name: 'Dense', config: { name: 'dense_1', units: numClasses, activation: 'softmax', use_bias: true, trainable: true }, inbound_nodes: inbound('flatten_1') },
  );

  const weights = [
    { layer: 'conv2d_1', name: 'conv2d_1/kernel:0', shape: [3, 3, 3, 2] },
    { layer: 'conv2d_1', name: 'conv2d_1/bias:0', shape: [2] },
    { layer: 'dense_1', name: 'dense_1/kernel:0', shape: [32 * 32 * 2, numClasses] },
    { layer: 'dense_1', name: 'dense_1/bias:0', shape: [numClasses] },
  ].map((weight, w) => {
    const size = weight.shape.reduce((product, dimension) => product * dimension, 1);
    const nan = options.nanKernel === true && weight.name === 'conv2d_1/kernel:0';
    // Small distinct values in [-0.05, 0.05), so that activations of 0..255 pixels stay moderate.
    const values = Float32Array.from({ length: size }, (_, i) => (nan ? Number.NaN : ((((i + 1) * 37 + w * 11) % 100) / 100 - 0.5) / 10));
    return { ...weight, values };
  });

  return {
    modelConfig: { class_name: 'Model', config: { name: 'cifar_tiny', layers, input_layers: [['input_1', 0, 0]], output_layers: [['dense_1', 0, 0]] } },
    weights,
  };
}

export async function writeCifarTinyModel(file: string, options: CifarTinyModelOptions = {}): Promise<string> {
  await writeKerasH5(file, buildCifarTinyModel(options));
  return file;
}

/** Copies a dataset folder, so that a case can damage its copy. */
export async function copyDataset(source: string, target: string): Promise<string> {
  await cp(source, target, { recursive: true });
  return target;
}

/** Removes the last `bytes` bytes of a file, so it no longer contains whole records. */
export async function truncateFile(file: string, bytes: number): Promise<void> {
  const content = await readFile(file);
  await writeFile(file, content.subarray(0, content.length - bytes));
}

/** Appends `bytes` zero bytes to a file. */
export async function appendBytes(file: string, bytes: number): Promise<void> {
  const handle = await open(file, 'a');
  try {
    await handle.write(Buffer.alloc(bytes));
  } finally {
    await handle.close();
  }
}

/** Sets the label byte of record `record` of a CIFAR-10 file (3,073-byte records, label first). */
export async function setCifar10Label(file: string, record: number, label: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.write(Buffer.from([label]), 0, 1, record * 3073);
  } finally {
    await handle.close();
  }
}
