import { availableParallelism } from 'node:os';

import { createLogger } from '../log.js';
import { silentProgress } from '../local/progress.js';
import { aggregateRobustness, type RobustnessReport } from './aggregate.js';
import { CacheModelFamily, MODEL_NAMES } from './cache-models.js';
import { CacheReadout } from './cache-readout.js';
import { checkLogProbabilityGradient, type GradientCheckRow } from './gradient-check.js';
import { loadLocalCache, type LocalCacheOptions } from './local-setup.js';
import { OnnxNetworkGradient, type NetworkGradient } from './network-gradient.js';
import { runSlice } from './run-slice.js';
import { cacheParametersSchema, robustnessSettingsSchema, type CacheParameters, type RobustnessSettingsInput, type SliceResult } from './schemas.js';
import { attackDomain, readSliceImages, slicePositions } from './slice-inputs.js';
import { pickSubset } from './subset.js';
import { TfjsNetworkGradient } from './tfjs-gradient.js';

export type GradientEngineName = 'onnx' | 'tfjs';

export interface LocalRobustnessOptions extends Omit<LocalCacheOptions, 'progress' | 'logger'> {
  parameters?: Partial<CacheParameters>;
  settings?: RobustnessSettingsInput;
  /** `onnx` (default): the hand-built backward graph. `tfjs`: the model rebuilt from plain tfjs ops, about 27 times slower for ResNet32. */
  gradientEngine?: GradientEngineName;
  /** Images of the subset whose gradients are checked against finite differences, for each model (default 0). */
  gradientCheckImages?: number;
  progress?: LocalCacheOptions['progress'];
  logger?: LocalCacheOptions['logger'];
  /** Called after each slice with the positions done and the subset size. */
  onSlice?: (done: number, total: number) => void;
}

/** A robustness report with the finite-difference check of the run, when one was asked for. */
export interface LocalRobustnessReport extends RobustnessReport {
  gradientCheck?: { step: number; rows: GradientCheckRow[]; maxRelativeError: Record<string, number>; durationMs: number };
}

/**
 * Runs the robustness evaluation in one process. It loads the model and the cache of every
 * training image and its mirror image from the local key store, extracting what is missing.
 * Then it picks the seeded test subset, runs every slice in order and aggregates the report.
 */
export async function runLocalRobustness(options: LocalRobustnessOptions): Promise<LocalRobustnessReport> {
  const settings = robustnessSettingsSchema.parse(options.settings ?? {});
  const parameters = cacheParametersSchema.parse(options.parameters ?? {});
  const logger = options.logger ?? createLogger('cachefleet.robustness');
  const threads = options.threads ?? availableParallelism();
  const started = performance.now();

  const local = await loadLocalCache({ ...options, progress: options.progress ?? silentProgress, logger });
  const loadMs = Math.round(performance.now() - started);
  let network: NetworkGradient | undefined;
  let readout: CacheReadout | undefined;
  try {
    network = options.gradientEngine === 'tfjs' ? new TfjsNetworkGradient(local.loaded, local.keyLayers) : await OnnxNetworkGradient.create(local.loaded, local.keyLayers, threads);
    readout = await CacheReadout.create(local.keys, threads);
    const family = new CacheModelFamily(network, readout, { cache: { theta: parameters.theta, lambda: parameters.lambda }, cacheOnly: { theta: parameters.thetaCacheOnly } });
    const domain = attackDomain(local.preprocessing.spec);
    const subset = pickSubset(local.test.size, settings.images, settings.seed);
    logger.info({ images: subset.size, seed: subset.seed, keys: readout.numKeys, gradient: network.description, loadMs }, 'robustness run started');

    const slices: SliceResult[] = [];
    for (const { start, end } of slicePositions(subset.size, settings.sliceSize)) {
      const images = await readSliceImages(local.test, subset, start, end, local.preprocessing.spec);
      const slice = await runSlice({ family, domain, settings, images, logger });
      slices.push(slice);
      logger.info({ positions: [start, end], timingsMs: slice.timingsMs }, 'robustness slice done');
      options.onSlice?.(end, subset.size);
    }

    const report: LocalRobustnessReport = aggregateRobustness({
      context: {
        model: { source: local.model.source, fingerprint: local.model.fingerprint, fileSha256: local.model.fileSha256, keyLayers: local.model.keyLayers.map((layer) => layer.name) },
        cache: { keys: readout.numKeys, stores: local.segments.map((segment) => `${segment.role}: ${segment.manifest.id} (${segment.manifest.count} keys, ${segment.reused ? 'reused' : 'extracted'})`) },
        preprocessing: { hash: local.preprocessing.hash, description: local.preprocessing.description },
        dataset: { name: local.test.dataset, dir: options.dataDir, testFingerprint: local.test.fingerprint },
        runner: 'local',
      },
      parameters,
      settings,
      subset,
      slices,
    });
    report.timingsMs = { 'load model and cache': loadMs, ...report.timingsMs };

    const checkImages = options.gradientCheckImages ?? 0;
    if (checkImages > 0) {
      const checkStarted = performance.now();
      const images = await readSliceImages(local.test, subset, 0, Math.min(checkImages, subset.size), local.preprocessing.spec);
      const clean = await family.evaluate(images.inputs, images.labels.length);
      const rows: GradientCheckRow[] = [];
      for (const model of MODEL_NAMES) {
        rows.push(...(await checkLogProbabilityGradient(family, model, images.inputs, clean.predictions[model]!)));
      }
      const maxRelativeError: Record<string, number> = {};
      for (const row of rows) maxRelativeError[row.direction] = Math.max(maxRelativeError[row.direction] ?? 0, row.relativeError);
      report.gradientCheck = { step: 1e-3, rows, maxRelativeError, durationMs: Math.round(performance.now() - checkStarted) };
      report.timingsMs['gradient check'] = report.gradientCheck.durationMs;
    }
    return report;
  } finally {
    await network?.dispose();
    await readout?.dispose();
    local.loaded.model.dispose();
  }
}
