/**
 * What a forward pass returns for a batch of `n` preprocessed images: arrays in row-major
 * order, `features` being the raw (not yet normalised) concatenated key-layer activations.
 */
export interface ForwardBatch {
  logits: Float32Array;
  probabilities: Float32Array;
  features: Float32Array;
}

/** Runs the model on batches; implementations may run several batches at once. */
export interface BatchExtractor {
  readonly featureSize: number;
  readonly numClasses: number;
  /** Name of the engine and backend, recorded in reports (for example "tfjs-wasm×2"). */
  readonly description: string;
  /** How many batches to keep in flight to keep every thread busy. */
  readonly concurrency: number;
  extract(inputs: Float32Array, n: number): Promise<ForwardBatch>;
  close(): Promise<void>;
}
