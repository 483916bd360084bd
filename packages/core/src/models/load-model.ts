import { stat } from 'node:fs/promises';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import { createLogger } from '../log.js';
import { initBackend } from './backend.js';
import { computeFileSha256, computeModelFingerprint } from './fingerprint.js';
import { hasHdf5Signature, loadKerasH5Model } from './keras-h5.js';
import { loadLayersModelFile } from './layers-model.js';

export type ModelFormat = 'keras-h5' | 'tfjs-layers';

/** A built image classifier with what cachefleet records about it. */
export interface LoadedModel {
  model: tfl.LayersModel;
  format: ModelFormat;
  /** Absolute path of the file that was read: the .h5 file, or model.json for tfjs models. */
  sourcePath: string;
  /** SHA-256 (lowercase hex) of the file at `sourcePath`. For tfjs models it covers model.json, not the weight files. */
  fileSha256: string;
  /** SHA-256 of the canonical topology and every weight, equal for one network in either format. */
  fingerprint: string;
  numClasses: number;
  /** Input image shape without the batch dimension, NHWC: [height, width, channels]. */
  inputShape: [number, number, number];
}

const log = createLogger('cachefleet.models.load');

/**
 * Loads an image classifier from a Keras 2.x .h5 file (recognised by the HDF5 signature,
 * whatever its extension), a tfjs `model.json`, or a folder that contains `model.json`.
 * Starts the `auto` backend when no backend runs yet. The caller owns the model and disposes
 * it with `model.dispose()`.
 */
export async function loadModel(modelPath: string): Promise<LoadedModel> {
  const startedAt = performance.now();
  // `backendName` stays unset until a backend is set. Asking `tf.getBackend()` instead would
  // start wasm synchronously, which throws.
  if (tf.engine().backendName == null) await initBackend('auto');

  const sourcePath = await resolveModelFile(path.resolve(modelPath));
  const format = await detectFormat(sourcePath);

  const model = format === 'keras-h5' ? await loadKerasH5Model(sourcePath) : await loadLayersModelFile(sourcePath);
  try {
    const inputShape = readInputShape(model, sourcePath);
    const numClasses = readNumClasses(model, sourcePath);
    const [fileSha256, fingerprint] = await Promise.all([computeFileSha256(sourcePath), computeModelFingerprint(model)]);

    log.info(
      { path: sourcePath, format, fingerprint, numClasses, inputShape, layers: model.layers.length, durationMs: Math.round(performance.now() - startedAt) },
      'model loaded',
    );
    return { model, format, sourcePath, fileSha256, fingerprint, numClasses, inputShape };
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/** Maps a folder to its model.json and rejects a path that does not exist. */
async function resolveModelFile(modelPath: string): Promise<string> {
  let info;
  try {
    info = await stat(modelPath);
  } catch (error) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Model file ${modelPath} not found. Pass a Keras .h5 file, a tfjs model.json, or a folder that contains model.json.`,
      { path: modelPath },
      { cause: error },
    );
  }

  if (!info.isDirectory()) return modelPath;

  const modelJsonPath = path.join(modelPath, 'model.json');
  const jsonInfo = await stat(modelJsonPath).catch(() => undefined);
  if (jsonInfo?.isFile() !== true) {
    throw new CachefleetError('MODEL_INVALID', `Folder ${modelPath} has no model.json. Pass a Keras .h5 file, or the folder written by tfjs model.save().`, { path: modelPath });
  }
  return modelJsonPath;
}

async function detectFormat(sourcePath: string): Promise<ModelFormat> {
  if (await hasHdf5Signature(sourcePath)) return 'keras-h5';
  if (sourcePath.toLowerCase().endsWith('.json')) return 'tfjs-layers';

  throw new CachefleetError(
    'MODEL_INVALID',
    `${sourcePath} is neither an HDF5 file (the HDF5 signature is missing) nor a .json file. ` +
      'Pass a Keras .h5 file written by model.save(), a tfjs model.json, or a folder that contains model.json.',
    { path: sourcePath },
  );
}

function readInputShape(model: tfl.LayersModel, sourcePath: string): [number, number, number] {
  const shape = model.inputs.length === 1 ? model.inputs[0].shape : [];
  const [, height, width, channels] = shape;
  const known = [height, width, channels].every((dimension) => typeof dimension === 'number' && dimension > 0);
  if (shape.length !== 4 || !known) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Model ${sourcePath} must have one image input of fixed shape [batch, height, width, channels], ` +
        `but its inputs are ${describeShapes(model.inputs)}. Export the classifier with a fixed NHWC input size.`,
      { path: sourcePath, inputs: model.inputs.map((input) => input.shape) },
    );
  }
  return [height as number, width as number, channels as number];
}

function readNumClasses(model: tfl.LayersModel, sourcePath: string): number {
  const shape = model.outputs.length === 1 ? model.outputs[0].shape : [];
  const numClasses = shape[1];
  if (shape.length !== 2 || typeof numClasses !== 'number' || numClasses < 2) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Model ${sourcePath} must have one output of shape [batch, classes] with at least 2 classes, ` +
        `but its outputs are ${describeShapes(model.outputs)}. Pass an image classifier.`,
      { path: sourcePath, outputs: model.outputs.map((output) => output.shape) },
    );
  }
  return numClasses;
}

function describeShapes(tensors: Array<{ shape: Array<number | null> }>): string {
  return tensors.map((tensor) => `[${tensor.shape.map((dimension) => dimension ?? 'null').join(', ')}]`).join(', ') || 'none';
}
