import { parentPort, workerData } from 'node:worker_threads';

import { CachefleetError } from '../errors.js';
import { OnnxFeatureExtractor, type OnnxClassifier } from '../inference/index.js';
import { FeatureExtractor, countTensors, initBackend, loadModel, resolveKeyLayers, type BackendPreference, type ExtractionResult } from '../models/index.js';

/**
 * Worker thread of `ExtractionPool`: starts one extractor and replies to each `run` message with
 * one forward pass. One such thread per core is how extraction uses every core: the tfjs wasm
 * backend is single-threaded in Node, and a one-thread onnxruntime session per thread held up
 * best when other processes share the cores.
 */
export type ExtractionWorkerData =
  | { engine: 'tfjs'; modelPath: string; keyLayers: Array<string | number>; backend: BackendPreference; batchSize: number }
  | { engine: 'onnx'; classifier: OnnxClassifier; batchSize: number };

export type ExtractionWorkerRequest = { type: 'run'; id: number; inputs: Float32Array; n: number };

export type ExtractionWorkerReply =
  | { type: 'ready'; backend: string; featureSize: number; numClasses: number }
  | { type: 'result'; id: number; logits: Float32Array; probabilities: Float32Array; features: Float32Array; /** Live tensors in the thread after the pass (0 for onnxruntime). */ numTensors: number }
  | { type: 'error'; id: number; error: { code?: string; message: string; details?: Record<string, unknown> } };

interface WorkerExtractor {
  featureSize: number;
  numClasses: number;
  run(inputs: Float32Array, n: number, batchSize: number): ExtractionResult | Promise<ExtractionResult>;
}

function serializeError(error: unknown): { code?: string; message: string; details?: Record<string, unknown> } {
  if (error instanceof CachefleetError) return { code: error.code, message: error.message, details: error.details };
  return { message: error instanceof Error ? error.message : String(error) };
}

async function startExtractor(data: ExtractionWorkerData): Promise<{ extractor: WorkerExtractor; backend: string }> {
  if (data.engine === 'onnx') {
    const extractor = await OnnxFeatureExtractor.fromClassifier(data.classifier, { intraOpNumThreads: 1 });
    return { extractor, backend: 'onnxruntime-cpu' };
  }
  const backend = await initBackend(data.backend);
  const loaded = await loadModel(data.modelPath);
  return { extractor: new FeatureExtractor(loaded, resolveKeyLayers(loaded.model, data.keyLayers)), backend: `tfjs-${backend.name}` };
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('extraction-worker must run as a worker thread.');
  const data = workerData as ExtractionWorkerData;

  let extractor: WorkerExtractor;
  try {
    const started = await startExtractor(data);
    extractor = started.extractor;
    port.postMessage({ type: 'ready', backend: started.backend, featureSize: extractor.featureSize, numClasses: extractor.numClasses } satisfies ExtractionWorkerReply);
  } catch (error) {
    port.postMessage({ type: 'error', id: -1, error: serializeError(error) } satisfies ExtractionWorkerReply);
    return;
  }

  // Requests run one at a time, in order, because a forward pass already uses this thread fully.
  let queue = Promise.resolve();
  port.on('message', (request: ExtractionWorkerRequest) => {
    queue = queue.then(async () => {
      try {
        const result = await extractor.run(request.inputs, request.n, data.batchSize);
        const reply: ExtractionWorkerReply = { type: 'result', id: request.id, ...result, numTensors: countTensors() };
        port.postMessage(reply, [result.logits.buffer, result.probabilities.buffer, result.features.buffer] as ArrayBuffer[]);
      } catch (error) {
        port.postMessage({ type: 'error', id: request.id, error: serializeError(error) } satisfies ExtractionWorkerReply);
      }
    });
  });
}

void main();
