import { CachefleetError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  blurAttack,
  fgsmAttack,
  iterativeFgsmAttack,
  iterativeFgsmAtEpsilon,
  singlePixelAttack,
  strengthGrid,
  type AttackDomain,
  type AttackOutcome,
  type AttackTarget,
} from './attacks.js';
import { MODEL_NAMES, type CacheModelFamily, type ModelName, type ModelOutputs } from './cache-models.js';
import type { AttackName, AttackRecord, GradientAttackName, ImageRecord, ModelPredictions, RobustnessSettings, Setting, SliceResult, SweepRecord } from './schemas.js';

/** Images of one slice: their subset positions, record indices, true labels and preprocessed pixels. */
export interface SliceImages {
  start: number;
  records: number[];
  labels: Int32Array;
  /** NHWC float32, preprocessed like the training data. */
  inputs: Float32Array;
}

export interface RunSliceOptions {
  family: CacheModelFamily;
  domain: AttackDomain;
  settings: RobustnessSettings;
  images: SliceImages;
  logger: Logger;
  /** Called after each part (clean evaluation, one attack, one sweep) with its name. */
  onProgress?: (part: string) => void;
}

/** Adapts one model of the family to the interface the attacks use. */
export function familyTarget(family: CacheModelFamily, model: ModelName): AttackTarget {
  return {
    predict: async (inputs, n) => (await family.evaluate(inputs, n, [model])).predictions[model]!,
    logProbabilityGradient: async (inputs, n, labels) => {
      const result = await family.logProbabilityGradient(inputs, n, model, labels);
      return { predictions: result.outputs.predictions[model]!, gradient: result.gradient };
    },
  };
}

/**
 * Runs every attack the settings ask for on the images of one slice and classifies each
 * adversarial image with all three models. Which parts an image gets depends only on its subset
 * position (the first `singlePixelImages` positions get the single-pixel attack, and so on).
 */
// NOTE: another slice size changes the batches, and onnxruntime's results can differ in the last
// bits between batch shapes (see DEFAULT_QUERY_BLOCK_SIZE), so a borderline prediction may differ.
// Local and fleet runs with the same --slice-size use the same batches.
export async function runSlice(options: RunSliceOptions): Promise<SliceResult> {
  const { family, domain, settings, images, logger } = options;
  const n = images.labels.length;
  const imageSize = domain.lower.length;
  if (images.inputs.length !== n * imageSize || images.records.length !== n) {
    throw new CachefleetError('INVALID_ARGUMENT', `Slice at position ${images.start} has ${images.records.length} records, ${n} labels and ${images.inputs.length / imageSize} images; they must agree.`, { start: images.start });
  }

  const timingsMs: Record<string, number> = {};
  const timed = async <T>(part: string, work: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    const result = await work();
    timingsMs[part] = Math.round(performance.now() - started);
    logger.debug({ part, positions: [images.start, images.start + n], durationMs: timingsMs[part] }, 'robustness part done');
    options.onProgress?.(part);
    return result;
  };

  const clean = await timed('clean', () => family.evaluate(images.inputs, n));
  const records: ImageRecord[] = Array.from({ length: n }, (_, i) => ({
    position: images.start + i,
    record: images.records[i],
    label: images.labels[i],
    clean: predictionsOf(clean, i),
    attacks: [],
    sweeps: [],
  }));

  const count = (limit: number) => Math.max(0, Math.min(n, limit - images.start));
  const grids = {
    fgsm: strengthGrid(settings.fgsm.maxEpsilon, settings.fgsm.count),
    iterative: strengthGrid(settings.iterativeFgsm.maxEpsilon, settings.iterativeFgsm.count),
    blur: strengthGrid(settings.blur.maxStrength, settings.blur.count),
  };
  const attackOn = (attacked: ModelName, attack: AttackName, imageCount: number) => {
    const inputs = images.inputs.subarray(0, imageCount * imageSize);
    const labels = Int32Array.from({ length: imageCount }, (_, i) => clean.predictions[attacked]![i]);
    const target = familyTarget(family, attacked);
    switch (attack) {
      case 'fgsm':
        return fgsmAttack(target, inputs, labels, domain, grids.fgsm);
      case 'iterative-fgsm':
        return iterativeFgsmAttack(target, inputs, labels, domain, grids.iterative, settings.iterativeFgsm.steps);
      case 'single-pixel':
        return singlePixelAttack(target, inputs, labels, images.records.slice(0, imageCount), domain, settings.singlePixel.maxPixels, settings.seed);
      case 'blur':
        return blurAttack(target, inputs, labels, domain, grids.blur);
    }
  };

  const plan: Array<{ setting: Setting; attacked: ModelName; attack: AttackName; imageCount: number }> = [
    { setting: 'transfer', attacked: 'baseline', attack: 'fgsm', imageCount: n },
    { setting: 'transfer', attacked: 'baseline', attack: 'iterative-fgsm', imageCount: n },
    { setting: 'transfer', attacked: 'baseline', attack: 'blur', imageCount: n },
    { setting: 'transfer', attacked: 'baseline', attack: 'single-pixel', imageCount: count(settings.singlePixelImages) },
  ];
  for (const attacked of ['cache', 'cacheOnly'] as const) {
    for (const attack of ['fgsm', 'iterative-fgsm'] as const) {
      plan.push({ setting: 'white-box', attacked, attack, imageCount: count(settings.whiteBoxImages) });
    }
  }

  for (const part of plan) {
    if (part.imageCount === 0) continue;
    const name = `${part.setting} ${part.attack}${part.setting === 'white-box' ? ` on ${part.attacked}` : ''}`;
    await timed(name, async () => {
      const outcomes = await attackOn(part.attacked, part.attack, part.imageCount);
      const classified = await classifyAdversarials(family, outcomes, imageSize);
      outcomes.forEach((outcome, i) => records[i].attacks.push(toAttackRecord(part, outcome, classified[i])));
    });
  }

  const sweepCount = count(settings.sweepImages);
  if (sweepCount > 0) {
    for (const attack of ['fgsm', 'iterative-fgsm'] as const) {
      const sweeps = await timed(`transfer ${attack} sweep`, () => sweepTransfer(family, domain, settings, images, clean, sweepCount, attack, attack === 'fgsm' ? grids.fgsm : grids.iterative));
      sweeps.forEach((sweep, i) => records[i].sweeps.push(sweep));
    }
  }

  return { positions: { start: images.start, end: images.start + n }, images: records, timingsMs, engines: { gradient: family.network.description, readout: family.readout === undefined ? 'none' : `onnxruntime-cpu×${family.readout.threads} GEMM over ${family.readout.numKeys} keys` } };
}

function predictionsOf(outputs: ModelOutputs, row: number): ModelPredictions {
  return { baseline: outputs.predictions.baseline![row], cache: outputs.predictions.cache![row], cacheOnly: outputs.predictions.cacheOnly![row] };
}

/** Classifies every adversarial image that was found with all three models; undefined where none was found. */
async function classifyAdversarials(family: CacheModelFamily, outcomes: AttackOutcome[], imageSize: number): Promise<Array<ModelPredictions | undefined>> {
  const found = outcomes.map((outcome, i) => ({ outcome, i })).filter(({ outcome }) => outcome.found);
  const result: Array<ModelPredictions | undefined> = new Array(outcomes.length).fill(undefined);
  if (found.length === 0) return result;

  const batch = new Float32Array(found.length * imageSize);
  found.forEach(({ outcome }, row) => batch.set(outcome.adversarial!, row * imageSize));
  const outputs = await family.evaluate(batch, found.length, MODEL_NAMES);
  found.forEach(({ i }, row) => {
    result[i] = predictionsOf(outputs, row);
  });
  return result;
}

function toAttackRecord(part: { setting: Setting; attacked: ModelName; attack: AttackName }, outcome: AttackOutcome, predictions: ModelPredictions | undefined): AttackRecord {
  return {
    setting: part.setting,
    attacked: part.attacked,
    attack: part.attack,
    found: outcome.found,
    strength: outcome.strength,
    gridIndex: outcome.gridIndex,
    perturbation: outcome.perturbation,
    predictions: predictions ?? null,
  };
}

/**
 * Runs the transfer sweep. For each ε of the grid in ascending order, it makes the attack's image
 * against the baseline at exactly that ε and classifies it with all three models. It stops once
 * every model has misclassified one, because the budget accuracy needs only each first error.
 */
async function sweepTransfer(
  family: CacheModelFamily,
  domain: AttackDomain,
  settings: RobustnessSettings,
  images: SliceImages,
  clean: ModelOutputs,
  imageCount: number,
  attack: GradientAttackName,
  epsilons: number[],
): Promise<SweepRecord[]> {
  const imageSize = domain.lower.length;
  const inputs = images.inputs.subarray(0, imageCount * imageSize);
  const baselineLabels = Int32Array.from({ length: imageCount }, (_, i) => clean.predictions.baseline![i]);
  const target = familyTarget(family, 'baseline');
  const { gradient } = await target.logProbabilityGradient(inputs, imageCount, baselineLabels);

  const sweeps: SweepRecord[] = Array.from({ length: imageCount }, (_, i) => ({
    attack,
    firstError: {
      baseline: clean.predictions.baseline![i] === images.labels[i] ? null : -1,
      cache: clean.predictions.cache![i] === images.labels[i] ? null : -1,
      cacheOnly: clean.predictions.cacheOnly![i] === images.labels[i] ? null : -1,
    },
  }));
  const pending = (i: number) => MODEL_NAMES.some((model) => sweeps[i].firstError[model] === null);
  let active = [...Array(imageCount).keys()].filter(pending);

  for (let e = 0; e < epsilons.length && active.length > 0; e += 1) {
    const activeInputs = new Float32Array(active.length * imageSize);
    active.forEach((image, row) => activeInputs.set(inputs.subarray(image * imageSize, (image + 1) * imageSize), row * imageSize));
    const activeGradient = new Float32Array(active.length * imageSize);
    active.forEach((image, row) => activeGradient.set(gradient.subarray(image * imageSize, (image + 1) * imageSize), row * imageSize));
    const labels = Int32Array.from(active, (image) => baselineLabels[image]);

    const candidates =
      attack === 'fgsm'
        ? fgsmCandidates(activeInputs, activeGradient, domain, epsilons[e])
        : await iterativeFgsmAtEpsilon(target, activeInputs, labels, activeGradient, domain, epsilons[e], settings.iterativeFgsm.steps);
    const outputs = await family.evaluate(candidates, active.length, MODEL_NAMES);

    active.forEach((image, row) => {
      for (const model of MODEL_NAMES) {
        if (sweeps[image].firstError[model] === null && outputs.predictions[model]![row] !== images.labels[image]) {
          sweeps[image].firstError[model] = e;
        }
      }
    });
    active = active.filter(pending);
  }
  return sweeps;
}

/** FGSM images at one ε for a batch, from the gradients of log p at the clean images. */
function fgsmCandidates(inputs: Float32Array, gradient: Float32Array, domain: AttackDomain, epsilon: number): Float32Array {
  const size = domain.lower.length;
  const candidates = new Float32Array(inputs.length);
  for (let i = 0; i < inputs.length; i += 1) {
    const p = i % size;
    const value = inputs[i] - epsilon * Math.sign(gradient[i]) * (domain.upper[p] - domain.lower[p]);
    candidates[i] = Math.min(domain.upper[p], Math.max(domain.lower[p], value));
  }
  return candidates;
}
