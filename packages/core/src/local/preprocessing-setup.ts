import path from 'node:path';

import type { DatasetSplit } from '../datasets/index.js';
import type { Logger } from '../log.js';
import { createPreprocessingSpec, loadOrComputeStatistics, preprocessingHash, type PreprocessingSpec } from '../preprocessing/index.js';
import type { ProgressSink } from './progress.js';

export interface ResolvedPreprocessing {
  spec: PreprocessingSpec;
  hash: string;
  /** One line for reports, such as "x/255, per-pixel standardisation over cifar10 train+test (60000 records)". */
  description: string;
}

/**
 * Builds the preprocessing spec whose statistics come from `splits` (by default every CIFAR-10
 * image, train and test, because the ResNets released with Orhan (2018) were trained with those
 * statistics). Statistics are kept under `storeDir/statistics`, keyed by the splits'
 * fingerprints, so later runs skip the pass over the images.
 */
export async function resolvePreprocessing(splits: DatasetSplit[], storeDir: string, progress: ProgressSink, logger: Logger): Promise<ResolvedPreprocessing> {
  const stage = 'preprocessing statistics';
  const records = splits.reduce((sum, split) => sum + split.size, 0);
  progress.start(stage, records, 'images');
  const statistics = await loadOrComputeStatistics(splits, { cacheDir: path.join(storeDir, 'statistics'), logger });
  progress.update(stage, records);
  progress.finish(stage);

  const spec = createPreprocessingSpec(statistics);
  const source = spec.standardization.source;
  const splitNames = source.splits.map((split) => split.split).join('+');
  return {
    spec,
    hash: preprocessingHash(spec),
    description: `x/${spec.scale}, then per-pixel standardisation with statistics over ${source.dataset} ${splitNames} (${source.recordCount} records)`,
  };
}
