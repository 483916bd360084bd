import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import { CachefleetError } from '../errors.js';
import { assertSupportedLayers } from './supported-layers.js';

/** File name `saveLayersModel` gives the single weight file it writes. */
export const SAVED_WEIGHTS_FILE = 'weights.bin';

/** Bytes per value of each stored weight dtype. `string` weights have no fixed size, so they are absent. */
const BYTES_PER_VALUE: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/**
 * Loads a tfjs LayersModel from a `model.json` and the weight files its `weightsManifest` lists,
 * read from disk relative to the model.json folder. Rejects unsupported layers before building
 * and sets every weight strictly (a weight missing on either side is an error).
 */
export async function loadLayersModelFile(modelJsonPath: string): Promise<tfl.LayersModel> {
  const artifacts = await readModelArtifacts(modelJsonPath);
  assertSupportedLayers(artifacts.modelTopology, modelJsonPath);

  const handler: tf.io.IOHandler = { load: async () => artifacts };
  try {
    return await tfl.loadLayersModel(handler, { strict: true });
  } catch (error) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `TensorFlow.js could not build the model of ${modelJsonPath}: ${errorMessage(error)}. ` +
        'Check that model.json and its weight files come from the same tfjs model.save().',
      { path: modelJsonPath },
      { cause: error },
    );
  }
}

/**
 * Reads `model.json` and its weight files into tfjs model artifacts, checking that the weight
 * files hold exactly the bytes the manifest describes.
 */
export async function readModelArtifacts(modelJsonPath: string): Promise<tf.io.ModelArtifacts> {
  const modelJson = await readModelJson(modelJsonPath);
  const folder = path.dirname(modelJsonPath);

  return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
    const weightSpecs = manifest.flatMap((group) => group.weights);
    const buffers: ArrayBuffer[] = [];
    for (const group of manifest) {
      for (const relativePath of group.paths) {
        buffers.push(await readWeightFile(folder, relativePath, modelJsonPath));
      }
    }

    const weightData = tf.io.CompositeArrayBuffer.join(buffers);
    checkWeightBytes(weightSpecs, weightData.byteLength, modelJsonPath);
    return [weightSpecs, weightData];
  });
}

/**
 * Writes `model` as `model.json` plus one weight file into `folder` (created when missing) and
 * returns the path of model.json. The models cachefleet ships with are GPL-3.0, so write
 * converted copies only to private or temporary folders.
 */
export async function saveLayersModel(model: tfl.LayersModel, folder: string): Promise<string> {
  await mkdir(folder, { recursive: true });
  const modelJsonPath = path.join(folder, 'model.json');

  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology ?? {},
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{ paths: [SAVED_WEIGHTS_FILE], weights: artifacts.weightSpecs ?? [] }],
      };

      // Weights first, so that a model.json on disk never points to a weight file not yet written.
      await writeFile(path.join(folder, SAVED_WEIGHTS_FILE), new Uint8Array(weightData));
      await writeFile(modelJsonPath, JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  return modelJsonPath;
}

async function readModelJson(modelJsonPath: string): Promise<tf.io.ModelJSON> {
  let text: string;
  try {
    text = await readFile(modelJsonPath, 'utf8');
  } catch (error) {
    throw new CachefleetError('MODEL_INVALID', `Model file ${modelJsonPath} could not be read: ${errorMessage(error)}. Check the path.`, { path: modelJsonPath }, { cause: error });
  }

  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new CachefleetError('MODEL_INVALID', `${modelJsonPath} is not valid JSON: ${errorMessage(error)}. Pass the model.json written by tfjs model.save().`, { path: modelJsonPath }, { cause: error });
  }

  const record = parsed as Partial<tf.io.ModelJSON> | null;
  if (typeof record !== 'object' || record === null || typeof record.modelTopology !== 'object' || record.modelTopology === null) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `${modelJsonPath} has no modelTopology object, so it is not a tfjs LayersModel. Pass the model.json written by tfjs model.save() (graph models are not supported).`,
      { path: modelJsonPath },
    );
  }
  if (!Array.isArray(record.weightsManifest)) {
    throw new CachefleetError('MODEL_INVALID', `${modelJsonPath} has no weightsManifest list, so its weights cannot be found. Save the model again with tfjs model.save().`, { path: modelJsonPath });
  }
  return record as tf.io.ModelJSON;
}

/** Reads one weight file named in the manifest, whose path must stay inside the model folder. */
async function readWeightFile(folder: string, relativePath: string, modelJsonPath: string): Promise<ArrayBuffer> {
  const resolved = path.resolve(folder, relativePath);
  const inside = path.relative(folder, resolved);
  if (path.isAbsolute(relativePath) || inside === '..' || inside.startsWith(`..${path.sep}`)) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `${modelJsonPath} lists weight file "${relativePath}", which lies outside the model folder. Weight paths must be relative names inside ${folder}.`,
      { path: modelJsonPath, weightFile: relativePath },
    );
  }

  try {
    const bytes = await readFile(resolved);
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  } catch (error) {
    throw new CachefleetError(
      'MODEL_INVALID',
      `Weight file ${resolved}, listed in ${modelJsonPath}, could not be read: ${errorMessage(error)}. Copy every file of the saved model together.`,
      { path: modelJsonPath, weightFile: resolved },
      { cause: error },
    );
  }
}

function checkWeightBytes(specs: tf.io.WeightsManifestEntry[], actualBytes: number, modelJsonPath: string): void {
  let expectedBytes = 0;
  for (const spec of specs) {
    const storedDtype = spec.quantization?.dtype ?? spec.dtype;
    const bytesPerValue = BYTES_PER_VALUE[storedDtype];
    // Strings are stored with a length prefix per value, so their size is known only by decoding.
    if (bytesPerValue === undefined) return;
    expectedBytes += bytesPerValue * spec.shape.reduce((product, dimension) => product * dimension, 1);
  }
  if (expectedBytes === actualBytes) return;

  throw new CachefleetError(
    'MODEL_INVALID',
    `Weight files of ${modelJsonPath} hold ${actualBytes} bytes, but its weightsManifest describes ${expectedBytes}. ` +
      'A weight file is truncated or belongs to another model, so copy the saved model again.',
    { path: modelJsonPath, expectedBytes, actualBytes },
  );
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
