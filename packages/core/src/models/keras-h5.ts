import { open } from 'node:fs/promises';

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { Dataset as H5Dataset, File as H5File, Group as H5Group, ready as h5wasmReady } from 'h5wasm/node';

import { CachefleetError } from '../errors.js';
import { assertSupportedLayers } from './supported-layers.js';

/** The 8-byte HDF5 format signature: \x89 H D F \r \n \x1a \n. */
const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** One weight array of a Keras .h5 file. */
export interface KerasWeight {
  /** tfjs weight name: the Keras name without its `:0` suffix, such as `conv2d_1/kernel`. */
  name: string;
  shape: number[];
  values: Float32Array;
}

/** Contents of a Keras 2.x whole-model .h5 file, read into memory. */
export interface KerasH5Contents {
  /** Parsed `model_config` root attribute: `{ class_name, config }` in Keras JSON. */
  modelConfig: Record<string, unknown>;
  /** Weights in file order: by `layer_names`, then by each layer's `weight_names`. */
  weights: KerasWeight[];
  kerasVersion?: string;
}

/**
 * Returns whether the file starts with the HDF5 signature. HDF5 also allows a user block that
 * moves the signature to offset 512, 1024, 2048 and so on, so those offsets are checked too.
 */
export async function hasHdf5Signature(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const buffer = Buffer.alloc(HDF5_SIGNATURE.length);

    for (let offset = 0; offset + buffer.length <= size; offset = offset === 0 ? 512 : offset * 2) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
      if (bytesRead === buffer.length && buffer.equals(HDF5_SIGNATURE)) return true;
    }
    return false;
  } finally {
    await handle.close();
  }
}

/**
 * Reads the model config and every weight of a Keras 2.x whole-model HDF5 file (written by
 * `model.save()`): the root attribute `model_config`, then the group `model_weights`, its
 * attribute `layer_names`, and each layer group's attribute `weight_names`.
 */
export async function readKerasH5(path: string): Promise<KerasH5Contents> {
  if (!(await hasHdf5Signature(path))) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `${path} is not an HDF5 file (the HDF5 signature is missing). ` +
        'Pass a Keras .h5 file written by model.save(), or a tfjs model.json.',
      { path },
    );
  }

  await h5wasmReady;
  const file = openHdf5(path);
  try {
    const modelConfig = readModelConfig(file, path);
    const weights = readWeights(file, path);
    const kerasVersion = readStringAttribute(file, 'keras_version');
    return { modelConfig, weights, kerasVersion };
  } finally {
    file.close();
  }
}

/**
 * Builds a tfjs LayersModel from a Keras .h5 file and sets every weight. Rejects a model with
 * unsupported layers before building it, and a file whose weights do not match the
 * model's weights name for name and shape.
 */
export async function loadKerasH5Model(path: string): Promise<tfl.LayersModel> {
  const contents = await readKerasH5(path);
  assertSupportedLayers(contents.modelConfig, path);

  let model: tfl.LayersModel;
  try {
    model = await tfl.models.modelFromJSON({ modelTopology: contents.modelConfig as tf.io.ModelJSON['modelTopology'] });
  } catch (error) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `TensorFlow.js could not build the model of ${path}: ${errorMessage(error)}. ` +
        'The config may use an option or activation that tfjs-layers 4.22 does not support.',
      { path },
      { cause: error },
    );
  }

  try {
    setWeights(model, contents.weights, path);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

/** Sets every weight of `model` from the file, after checking names and shapes. */
function setWeights(model: tfl.LayersModel, weights: KerasWeight[], path: string): void {
  checkWeightsMatch(model, weights, path);

  const tensors: tf.NamedTensorMap = {};
  for (const weight of weights) {
    tensors[weight.name] = tf.tensor(weight.values, weight.shape, 'float32');
  }

  try {
    model.loadWeights(tensors, true);
  } finally {
    // Variables keep their own reference to the data, so the source tensors can go.
    tf.dispose(tensors);
  }
}

function checkWeightsMatch(model: tfl.LayersModel, weights: KerasWeight[], path: string): void {
  const expected = new Map<string, number[]>();
  for (const layer of model.layers) {
    for (const variable of layer.weights) expected.set(variable.originalName, variable.shape.map((d) => d ?? -1));
  }

  const found = new Map(weights.map((weight) => [weight.name, weight.shape]));
  const missing = [...expected.keys()].filter((name) => !found.has(name));
  const unexpected = [...found.keys()].filter((name) => !expected.has(name));
  const misshapen = [...expected]
    .filter(([name, shape]) => found.has(name) && !sameShape(shape, found.get(name) ?? []))
    .map(([name, shape]) => `${name}: model [${shape.join(', ')}], file [${(found.get(name) ?? []).join(', ')}]`);
  if (missing.length === 0 && unexpected.length === 0 && misshapen.length === 0) return;

  const problems = [
    missing.length > 0 ? `missing from the file: ${summarise(missing)}` : '',
    unexpected.length > 0 ? `in the file but not in the model: ${summarise(unexpected)}` : '',
    misshapen.length > 0 ? `shape mismatch: ${summarise(misshapen)}` : '',
  ].filter((text) => text !== '');
  throw new CachefleetError(
    'MODEL_INVALID',
    `Weights of ${path} do not match its model config (${problems.join('; ')}). ` +
      'The file is incomplete or was edited, so save the model again with Keras model.save().',
    { path, missing, unexpected, misshapen },
  );
}

function openHdf5(path: string): H5File {
  try {
    return new H5File(path, 'r');
  } catch (error) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `HDF5 file ${path} could not be opened: ${errorMessage(error)}. The file may be truncated, so copy or download it again.`,
      { path },
      { cause: error },
    );
  }
}

function readModelConfig(file: H5File, path: string): Record<string, unknown> {
  const text = readStringAttribute(file, 'model_config');
  if (text === undefined) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `HDF5 file ${path} has no model_config attribute, so it holds weights only. ` +
        'Save the whole model with Keras model.save(path), not model.save_weights(path).',
      { path },
    );
  }

  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `The model_config attribute of ${path} is not valid JSON: ${errorMessage(error)}. Save the model again with Keras model.save().`,
      { path },
      { cause: error },
    );
  }

  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new CachefleetError('MODEL_INVALID', `The model_config attribute of ${path} is not a JSON object. Save the model again with Keras model.save().`, { path });
  }
  return config as Record<string, unknown>;
}

function readWeights(file: H5File, path: string): KerasWeight[] {
  const group = file.get('model_weights');
  if (!(group instanceof H5Group)) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `HDF5 file ${path} has no model_weights group. Save the whole model with Keras model.save(path) so that the weights are stored.`,
      { path },
    );
  }

  const weights: KerasWeight[] = [];
  for (const layerName of readStringListAttribute(group, 'layer_names', path)) {
    const layerGroup = group.get(layerName);
    if (!(layerGroup instanceof H5Group)) {
      throw new CachefleetError('MODEL_INVALID', `HDF5 file ${path} lists layer ${layerName} in model_weights/layer_names but has no group for it. The file is incomplete, so save the model again.`, { path, layer: layerName });
    }

    for (const weightName of readStringListAttribute(layerGroup, 'weight_names', path)) {
      weights.push(readWeight(group, layerName, weightName, path));
    }
  }
  return weights;
}

function readWeight(group: H5Group, layerName: string, weightName: string, path: string): KerasWeight {
  const dataset = group.get(`${layerName}/${weightName}`);
  if (!(dataset instanceof H5Dataset)) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `HDF5 file ${path} is missing weight model_weights/${layerName}/${weightName}, which layer ${layerName} lists in weight_names. The file is incomplete, so save the model again.`,
      { path, layer: layerName, weight: weightName },
    );
  }

  const shape = dataset.shape ?? [];
  const raw = dataset.value;
  let values: Float32Array;
  if (raw instanceof Float32Array) values = raw;
  else if (raw instanceof Float64Array) values = Float32Array.from(raw);
  else if (typeof raw === 'number') values = Float32Array.of(raw);
  else {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Weight model_weights/${layerName}/${weightName} of ${path} has data type ${JSON.stringify(dataset.dtype)}; cachefleet reads float32 and float64 weights only.`,
      { path, layer: layerName, weight: weightName },
    );
  }

  // Keras names a variable `layer/kernel:0`, and tfjs-layers names the same variable `layer/kernel`.
  return { name: weightName.replace(/:\d+$/, ''), shape, values };
}

function readStringAttribute(entity: H5Group, name: string): string | undefined {
  if (!Object.prototype.hasOwnProperty.call(entity.attrs, name)) return undefined;

  const value = entity.get_attribute(name, false);
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  if (Array.isArray(value) && value.length === 1 && typeof value[0] === 'string') return value[0];
  return undefined;
}

/**
 * Reads a list-of-strings attribute such as `layer_names`. A layer without weights stores an
 * empty array, which h5wasm returns as an empty Float64Array rather than a string list.
 */
function readStringListAttribute(entity: H5Group, name: string, path: string): string[] {
  if (!Object.prototype.hasOwnProperty.call(entity.attrs, name)) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `HDF5 group ${entity.path} of ${path} has no ${name} attribute, so it is not a Keras 2.x model file. Save the model with Keras 2.x model.save().`,
      { path, group: entity.path, attribute: name },
    );
  }

  const value = entity.get_attribute(name, false);
  if (typeof value === 'string') return [value];
  if (ArrayBuffer.isView(value) && value.byteLength === 0) return [];
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value as string[];

  throw new CachefleetError(
    'MODEL_INVALID',
    `Attribute ${name} of HDF5 group ${entity.path} in ${path} is not a list of strings. Save the model again with Keras 2.x model.save().`,
    { path, group: entity.path, attribute: name },
  );
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((dimension, index) => dimension === b[index]);
}

/** Joins up to five items and counts the rest, so messages stay one line for big models. */
function summarise(items: string[]): string {
  const firstItems = items.slice(0, 5).join(', ');
  return items.length > 5 ? `${firstItems} and ${items.length - 5} more` : firstItems;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
