import type { Logger } from '../log.js';
import { loadModel, resolveKeyLayers, type BackendPreference } from '../models/index.js';
import { chooseExtractionEngine, type ExtractionEngineName } from './engine-choice.js';
import { ExtractionPool } from './extraction-pool.js';

export interface StartExtractionOptions {
  modelPath: string;
  keyLayers: Array<string | number>;
  engine?: ExtractionEngineName;
  threads?: number;
  backend?: BackendPreference;
  logger: Logger;
}

/**
 * Loads a model, picks its forward-pass engine and starts an extraction pool for it: the one
 * call a worker process needs before its first extraction job.
 */
export async function startExtractionPool(options: StartExtractionOptions): Promise<ExtractionPool> {
  const loaded = await loadModel(options.modelPath);
  let choice;
  try {
    choice = chooseExtractionEngine(loaded, resolveKeyLayers(loaded.model, options.keyLayers), options.engine ?? 'auto', options.logger);
  } finally {
    loaded.model.dispose();
  }

  return ExtractionPool.start({
    engine: choice.engine,
    classifier: choice.classifier,
    modelPath: options.modelPath,
    keyLayers: options.keyLayers,
    threads: options.threads,
    backend: options.backend,
  });
}
