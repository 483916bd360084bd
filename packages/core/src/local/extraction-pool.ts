import os from 'node:os';
import { Worker } from 'node:worker_threads';

import { CachefleetError, type ErrorCode } from '../errors.js';
import type { OnnxClassifier } from '../inference/index.js';
import type { BackendPreference } from '../models/index.js';
import type { BatchExtractor, ForwardBatch } from './extractor.js';
import type { ExtractionWorkerData, ExtractionWorkerReply } from './extraction-worker.js';
import { startWorker } from './worker-url.js';

interface Pending {
  resolve: (batch: ForwardBatch) => void;
  reject: (error: Error) => void;
}

interface PoolThread {
  worker: Worker;
  busy: number;
  /** Live TensorFlow.js tensors the thread reported after its latest forward pass. */
  numTensors: number;
}

export interface ExtractionPoolOptions {
  /** `onnx` runs an onnxruntime graph converted from the model; `tfjs` runs TensorFlow.js. */
  engine: 'tfjs' | 'onnx';
  modelPath: string;
  keyLayers: Array<string | number>;
  /** The converted graph, required for the `onnx` engine. */
  classifier?: OnnxClassifier;
  /** Worker threads; default one per core. */
  threads?: number;
  backend?: BackendPreference;
  /** Images per forward pass inside a thread (tfjs defaults to 32, about 20 % slower than 128). */
  batchSize?: number;
}

function toError(error: { code?: string; message: string; details?: Record<string, unknown> }): Error {
  if (error.code !== undefined) return new CachefleetError(error.code as ErrorCode, error.message, error.details ?? {});
  return new Error(error.message);
}

/**
 * Runs the model in several worker threads, one model per thread, and hands each batch to the
 * least busy thread.
 */
export class ExtractionPool implements BatchExtractor {
  private readonly threads: PoolThread[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  private constructor(
    readonly featureSize: number,
    readonly numClasses: number,
    readonly description: string,
  ) {}

  get concurrency(): number {
    return this.threads.length * 2;
  }

  /** Live TensorFlow.js tensors in all threads, as of each thread's latest forward pass. */
  get numTensors(): number {
    return this.threads.reduce((sum, thread) => sum + thread.numTensors, 0);
  }

  static async start(options: ExtractionPoolOptions): Promise<ExtractionPool> {
    const count = options.threads ?? os.availableParallelism();
    const batchSize = options.batchSize ?? 128;
    let data: ExtractionWorkerData;
    if (options.engine === 'onnx') {
      if (options.classifier === undefined) throw new Error('ExtractionPool: the onnx engine needs the converted classifier; this is a bug in cachefleet.');
      data = { engine: 'onnx', classifier: options.classifier, batchSize };
    } else {
      data = { engine: 'tfjs', modelPath: options.modelPath, keyLayers: options.keyLayers, backend: options.backend ?? 'auto', batchSize };
    }
    const workers = Array.from({ length: count }, () => startWorker('extraction-worker', import.meta.url, { workerData: data }));

    let ready: Array<Extract<ExtractionWorkerReply, { type: 'ready' }>>;
    try {
      ready = await Promise.all(workers.map(waitForReady));
    } catch (error) {
      await Promise.all(workers.map((worker) => worker.terminate()));
      throw error;
    }

    const first = ready[0];
    const pool = new ExtractionPool(first.featureSize, first.numClasses, `${first.backend}×${count} threads`);
    for (const worker of workers) pool.attach(worker);
    return pool;
  }

  private attach(worker: Worker): void {
    const thread: PoolThread = { worker, busy: 0, numTensors: 0 };
    this.threads.push(thread);

    worker.on('message', (reply: ExtractionWorkerReply) => {
      if (reply.type === 'ready') return;
      const pending = this.pending.get(reply.id);
      if (pending === undefined) return;
      this.pending.delete(reply.id);
      thread.busy -= 1;
      if (reply.type === 'result') {
        thread.numTensors = reply.numTensors;
        pending.resolve(reply);
      }
      else pending.reject(toError(reply.error));
    });
    worker.on('error', (error) => this.failAll(error));
  }

  private failAll(error: Error): void {
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }

  extract(inputs: Float32Array, n: number): Promise<ForwardBatch> {
    const thread = this.threads.reduce((least, candidate) => (candidate.busy < least.busy ? candidate : least));
    const id = this.nextId++;
    thread.busy += 1;
    return new Promise<ForwardBatch>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      thread.worker.postMessage({ type: 'run', id, inputs, n }, [inputs.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.failAll(new Error('Extraction pool closed.'));
    await Promise.all(this.threads.map((thread) => thread.worker.terminate()));
  }
}

function waitForReady(worker: Worker): Promise<Extract<ExtractionWorkerReply, { type: 'ready' }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (reply: ExtractionWorkerReply): void => {
      if (reply.type === 'ready') resolve(reply);
      else if (reply.type === 'error') reject(toError(reply.error));
    };
    worker.once('message', onMessage);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new CachefleetError('BACKEND_UNAVAILABLE', `An extraction worker thread exited with code ${code} before loading the model.`)));
  });
}
