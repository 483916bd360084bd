import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

import type * as tfl from '@tensorflow/tfjs-layers';

/** Version tag hashed first, so a future change of the canonical form changes every fingerprint. */
const FINGERPRINT_FORMAT = 'cachefleet-model-fingerprint/v1';

/**
 * Computes the SHA-256 (lowercase hex) of a canonical form of a built model: its topology and
 * every weight value. The same network gives the same fingerprint whether it was loaded from a
 * Keras .h5 file or a tfjs model.json, because both are hashed from the built tfjs model.
 *
 * Topology: `model.toJSON()` (layer classes, configs, inbound connections, input and output
 * layers) serialised with sorted keys. Left out: `keras_version` and `backend`, which name the
 * writer rather than the network, and the model's own name. Weights: for each layer in order and
 * each of its weights, the name, dtype and shape, then the raw values.
 *
 * NOTE: values are hashed in the platform's byte order. Every platform tfjs runs on in Node
 * (x86-64, arm64) is little-endian, so this is float32 little-endian in practice.
 */
export async function computeModelFingerprint(model: tfl.LayersModel): Promise<string> {
  const hash = createHash('sha256');
  hash.update(`${FINGERPRINT_FORMAT}\n`);
  hash.update(`${canonicalJson(canonicalTopology(model))}\n`);

  for (const layer of model.layers) {
    for (const variable of layer.weights) {
      const header = { name: variable.originalName, dtype: variable.dtype, shape: variable.shape };
      hash.update(`${JSON.stringify(header)}\n`);

      // `read()` returns the variable's own tensor, so there is nothing to dispose here.
      const values = await variable.read().data();
      hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    }
  }
  return hash.digest('hex');
}

/** Computes the SHA-256 (lowercase hex) of a file, streaming it so large files are never held whole. */
export async function computeFileSha256(filePath: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(filePath)) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

/**
 * Serialises a JSON value with object keys sorted at every level, so that two equal values give
 * the same text whatever order their keys were inserted in.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item ?? null)).join(',')}]`;

  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => compareCodeUnits(a, b));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }

  // JSON.stringify maps NaN and Infinity to null and returns undefined for functions.
  return JSON.stringify(value) ?? 'null';
}

/** Orders strings by UTF-16 code units, which unlike localeCompare does not depend on the locale. */
function compareCodeUnits(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

function canonicalTopology(model: tfl.LayersModel): unknown {
  // `toJSON(undefined, false)` returns the object form rather than a string.
  const topology = model.toJSON(undefined, false) as { class_name?: unknown; config?: Record<string, unknown> };
  const { name: _modelName, ...config } = topology.config ?? {};
  return { class_name: topology.class_name, config };
}
