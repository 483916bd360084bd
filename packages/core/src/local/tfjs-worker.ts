import { parentPort, workerData } from 'node:worker_threads';

import { CachefleetError } from '../errors.js';
import { FeatureExtractor, initBackend, loadModel, resolveKeyLayers } from '../models/index.js';

/**
 * Worker thread of `TfjsThreadPool`: loads the model once and answers `run` messages with one
 * forward pass each. The tfjs wasm backend is single-threaded in Node, so one such thread per
 * core is how extraction uses every core.
 */
export interface TfjsWorkerData {
  modelPath: string;
  keyLayers: Array<string | number>;
  backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  batchSize: number;
}

export type TfjsWorkerRequest = { type: 'run'; id: number; inputs: Float32Array; n: number };

export type TfjsWorkerReply =
  | { type: 'ready'; backend: string; featureSize: number; numClasses: number }
  | { type: 'result'; id: number; logits: Float32Array; probabilities: Float32Array; features: Float32Array }
  | { type: 'error'; id: number; error: { code?: string; message: string; details?: Record<string, unknown> } };

function serializeError(error: unknown): { code?: string; message: string; details?: Record<string, unknown> } {
  if (error instanceof CachefleetError) return { code: error.code, message: error.message, details: error.details };
  return { message: error instanceof Error ? error.message : String(error) };
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('tfjs-worker must run as a worker thread.');
  const data = workerData as TfjsWorkerData;

  let extractor: FeatureExtractor;
  try {
    const backend = await initBackend(data.backend);
    const loaded = await loadModel(data.modelPath);
    extractor = new FeatureExtractor(loaded, resolveKeyLayers(loaded.model, data.keyLayers));
    port.postMessage({ type: 'ready', backend: backend.name, featureSize: extractor.featureSize, numClasses: extractor.numClasses } satisfies TfjsWorkerReply);
  } catch (error) {
    port.postMessage({ type: 'error', id: -1, error: serializeError(error) } satisfies TfjsWorkerReply);
    return;
  }

  port.on('message', (request: TfjsWorkerRequest) => {
    try {
      const result = extractor.run(request.inputs, request.n, data.batchSize);
      const reply: TfjsWorkerReply = { type: 'result', id: request.id, ...result };
      port.postMessage(reply, [result.logits.buffer, result.probabilities.buffer, result.features.buffer] as ArrayBuffer[]);
    } catch (error) {
      port.postMessage({ type: 'error', id: request.id, error: serializeError(error) } satisfies TfjsWorkerReply);
    }
  });
}

void main();
