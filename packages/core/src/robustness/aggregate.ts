import { CachefleetError } from '../errors.js';
import { strengthGrid } from './attacks.js';
import { MODEL_NAMES, type ModelName } from './cache-models.js';
import { GRADIENT_ATTACKS, type AttackName, type AttackRecord, type CacheParameters, type GradientAttackName, type ImageRecord, type RobustnessSettings, type Setting, type SliceResult } from './schemas.js';
import { SUBSET_ALGORITHM, type RecordSubset } from './subset.js';

export const ROBUSTNESS_REPORT_KIND = 'cachefleet-robustness-report';
export const ROBUSTNESS_REPORT_VERSION = 1;

/** Quantiles of a sample (numpy's default linear interpolation); null fields for an empty sample. */
export interface Quantiles {
  count: number;
  min: number | null;
  p05: number | null;
  p25: number | null;
  median: number | null;
  p75: number | null;
  p95: number | null;
  max: number | null;
  mean: number | null;
}

/** Aggregate of one attack in one setting against one model. */
export interface AttackSummary {
  setting: Setting;
  attacked: ModelName;
  attack: AttackName;
  /** Origin of the row, when it is not a run of its own. */
  note?: string;
  images: number;
  /** Images for which an adversarial image was found. */
  found: number;
  successRate: number;
  /** Accuracy of each model on the adversarial images found, against the true labels. */
  accuracy: Record<ModelName, number | null>;
  /** Accuracy of the attacked model under the attack over all attacked images: found adversarials count as its predictions, the others as its clean prediction. */
  robustAccuracy: number;
  /** ‖x_adv − x‖₂ / ‖x‖₂ of the adversarial images found. */
  perturbation: Quantiles;
  /** ε, blur strength or pixels tried at success. */
  strength: Quantiles;
  strengthUnit: string;
}

/** Accuracy under attack at each ε budget of a gradient attack's grid. */
export interface BudgetCurve {
  setting: Setting;
  attack: GradientAttackName;
  model: ModelName;
  images: number;
  epsilons: number[];
  accuracy: number[];
}

/** One robustness comparison of a cache model with the baseline. */
export interface RobustnessComparison {
  setting: Setting;
  attack: AttackName;
  model: 'cache' | 'cacheOnly';
  metric: string;
  baseline: number | null;
  value: number | null;
  moreRobust: boolean | null;
}

export interface RobustnessReport {
  kind: typeof ROBUSTNESS_REPORT_KIND;
  schemaVersion: typeof ROBUSTNESS_REPORT_VERSION;
  createdAt: string;
  context: RobustnessContext;
  parameters: CacheParameters;
  settings: RobustnessSettings;
  subset: { seed: number; size: number; algorithm: string; sha256: string; records: number[] };
  engines: SliceResult['engines'];
  clean: { images: number; accuracy: Record<ModelName, number> };
  attacks: AttackSummary[];
  curves: BudgetCurve[];
  comparisons: RobustnessComparison[];
  /** Wall time of each part summed over slices, in milliseconds. */
  timingsMs: Record<string, number>;
  /** Every image's clean predictions and attack records, in subset order, perturbation sizes included. */
  // NOTE: optional because the first ResNet32 reports in reports/ were written before this field existed.
  images?: ImageRecord[];
}

/** Sources of the model, cache and data, for the report. */
export interface RobustnessContext {
  model: { source: string; fingerprint: string; fileSha256: string; keyLayers: string[] };
  cache: { keys: number; stores: string[] };
  preprocessing: { hash: string; description: string };
  dataset: { name: string; dir: string; testFingerprint: string };
  /** Runner of the slices: `local` or `fleet`. */
  runner: string;
}

const STRENGTH_UNITS: Record<AttackName, string> = {
  fgsm: 'ε, fraction of the input range',
  'iterative-fgsm': 'ε, fraction of the input range',
  'single-pixel': 'pixels tried',
  blur: 'σ / image side',
};

/** Returns the quantiles of `values` with numpy's default (linear) interpolation. */
export function quantiles(values: readonly number[]): Quantiles {
  if (values.length === 0) {
    return { count: 0, min: null, p05: null, p25: null, median: null, p75: null, p95: null, max: null, mean: null };
  }
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => {
    const position = q * (sorted.length - 1);
    const below = Math.floor(position);
    const above = Math.min(below + 1, sorted.length - 1);
    return sorted[below] + (sorted[above] - sorted[below]) * (position - below);
  };
  return {
    count: sorted.length,
    min: sorted[0],
    p05: at(0.05),
    p25: at(0.25),
    median: at(0.5),
    p75: at(0.75),
    p95: at(0.95),
    max: sorted[sorted.length - 1],
    mean: sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
  };
}

/**
 * Builds the report from the slices of one run. Throws INVALID_ARGUMENT when the slices do not
 * cover the subset exactly once, so a missing or repeated fleet job cannot pass unnoticed.
 */
export function aggregateRobustness(input: { context: RobustnessContext; parameters: CacheParameters; settings: RobustnessSettings; subset: RecordSubset; slices: SliceResult[] }): RobustnessReport {
  const { settings, subset } = input;
  const images = collectImages(input.slices, subset);

  const clean = {
    images: images.length,
    accuracy: Object.fromEntries(MODEL_NAMES.map((model) => [model, fraction(images.filter((image) => image.clean[model] === image.label).length, images.length)])) as Record<ModelName, number>,
  };

  const attacks: AttackSummary[] = [];
  const groups = new Map<string, Array<{ image: ImageRecord; record: AttackRecord }>>();
  for (const image of images) {
    for (const record of image.attacks) {
      const key = `${record.setting}|${record.attacked}|${record.attack}`;
      groups.set(key, [...(groups.get(key) ?? []), { image, record }]);
    }
  }
  for (const entries of groups.values()) {
    attacks.push(summarise(entries));
  }
  // With white-box images, the baseline's own white-box attack is its transfer attack: the same gradients and images.
  for (const attack of GRADIENT_ATTACKS) {
    const entries = (groups.get(`transfer|baseline|${attack}`) ?? []).filter(({ image }) => image.position < settings.whiteBoxImages);
    if (entries.length > 0) {
      attacks.push({ ...summarise(entries), setting: 'white-box', note: `the transfer attack's records on the first ${settings.whiteBoxImages} images, which are also the baseline's white-box attack` });
    }
  }

  const curves = budgetCurves(images, settings);
  const timingsMs: Record<string, number> = {};
  for (const slice of input.slices) {
    for (const [part, duration] of Object.entries(slice.timingsMs)) timingsMs[part] = (timingsMs[part] ?? 0) + duration;
  }

  return {
    kind: ROBUSTNESS_REPORT_KIND,
    schemaVersion: ROBUSTNESS_REPORT_VERSION,
    createdAt: new Date().toISOString(),
    context: input.context,
    parameters: input.parameters,
    settings,
    subset: { seed: subset.seed, size: subset.size, algorithm: SUBSET_ALGORITHM, sha256: subset.sha256, records: subset.indices },
    engines: input.slices[0].engines,
    clean,
    attacks: sortAttacks(attacks),
    curves,
    comparisons: compare(attacks, curves),
    timingsMs,
    images,
  };
}

function collectImages(slices: SliceResult[], subset: RecordSubset): ImageRecord[] {
  if (slices.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'No slice results to aggregate. Run at least one slice of the subset.', {});
  }
  const images = slices.flatMap((slice) => slice.images).sort((a, b) => a.position - b.position);
  const positions = images.map((image) => image.position);
  const complete = images.length === subset.size && positions.every((position, i) => position === i);
  if (!complete) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `The slices cover ${images.length} positions (${describeGaps(positions, subset.size)}), but the subset has ${subset.size}. Aggregate the results of every slice of one run exactly once.`,
      { positions: images.length, subsetSize: subset.size },
    );
  }
  for (const image of images) {
    if (image.record !== subset.indices[image.position]) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Position ${image.position} holds test record ${image.record}, but the subset with seed ${subset.seed} has record ${subset.indices[image.position]} there. Aggregate slices of one run only.`,
        { position: image.position },
      );
    }
  }
  return images;
}

function describeGaps(positions: number[], size: number): string {
  const seen = new Set(positions);
  const missing = [...Array(size).keys()].filter((position) => !seen.has(position));
  const repeated = positions.length - seen.size;
  return `${missing.length} missing${missing.length > 0 ? `, first ${missing[0]}` : ''}, ${repeated} repeated`;
}

function summarise(entries: Array<{ image: ImageRecord; record: AttackRecord }>): AttackSummary {
  const { setting, attacked, attack } = entries[0].record;
  const found = entries.filter(({ record }) => record.found);
  const accuracy = Object.fromEntries(
    MODEL_NAMES.map((model) => [model, found.length === 0 ? null : fraction(found.filter(({ image, record }) => record.predictions![model] === image.label).length, found.length)]),
  ) as Record<ModelName, number | null>;
  const robustCorrect = entries.filter(({ image, record }) => (record.found ? record.predictions![attacked] : image.clean[attacked]) === image.label).length;

  return {
    setting,
    attacked,
    attack,
    images: entries.length,
    found: found.length,
    successRate: fraction(found.length, entries.length),
    accuracy,
    robustAccuracy: fraction(robustCorrect, entries.length),
    perturbation: quantiles(found.map(({ record }) => record.perturbation!)),
    strength: quantiles(found.map(({ record }) => record.strength!)),
    strengthUnit: STRENGTH_UNITS[attack],
  };
}

/**
 * Accuracy under attack with budget ε_j: the share of images a model classifies correctly
 * clean and on every attack image with ε ≤ ε_j. Transfer curves come from the sweep records
 * (images made on the baseline at every ε). White-box curves come from the search records: the
 * search tries each ε in order and stops at the first that changes the prediction, which for a
 * correctly classified image is the first error.
 */
function budgetCurves(images: ImageRecord[], settings: RobustnessSettings): BudgetCurve[] {
  const grids: Record<GradientAttackName, number[]> = {
    fgsm: strengthGrid(settings.fgsm.maxEpsilon, settings.fgsm.count),
    'iterative-fgsm': strengthGrid(settings.iterativeFgsm.maxEpsilon, settings.iterativeFgsm.count),
  };
  const curves: BudgetCurve[] = [];
  const curve = (setting: Setting, attack: GradientAttackName, model: ModelName, firstErrors: Array<number | null>): BudgetCurve => {
    const epsilons = grids[attack];
    const accuracy = epsilons.map((_, j) => fraction(firstErrors.filter((first) => first === null || first > j).length, firstErrors.length));
    return { setting, attack, model, images: firstErrors.length, epsilons, accuracy };
  };

  for (const attack of GRADIENT_ATTACKS) {
    const swept = images.map((image) => image.sweeps.find((sweep) => sweep.attack === attack)).filter((sweep) => sweep !== undefined);
    if (swept.length > 0) {
      for (const model of MODEL_NAMES) curves.push(curve('transfer', attack, model, swept.map((sweep) => sweep.firstError[model])));
    }

    const whiteBoxImages = images.filter((image) => image.position < settings.whiteBoxImages);
    if (whiteBoxImages.length === 0) continue;
    for (const model of MODEL_NAMES) {
      const setting = model === 'baseline' ? 'transfer' : 'white-box';
      const firstErrors = whiteBoxImages.map((image) => {
        if (image.clean[model] !== image.label) return -1;
        const record = image.attacks.find((candidate) => candidate.setting === setting && candidate.attacked === model && candidate.attack === attack);
        return record?.found === true ? record.gridIndex : null;
      });
      curves.push(curve('white-box', attack, model, firstErrors));
    }
  }
  return curves;
}

/**
 * States, per attack and cache model, whether it is more robust than the baseline on the same
 * images. Transfer: accuracy on the baseline's adversarial images. White-box: the mean of the
 * accuracy-under-attack curve over the ε grid (the area under it, scaled to [0, 1]), and the
 * median size of the successful attacks. Accuracy at the grid's largest ε alone separates the
 * models poorly, because nearly every attack succeeds there.
 */
function compare(attacks: AttackSummary[], curves: BudgetCurve[]): RobustnessComparison[] {
  const comparisons: RobustnessComparison[] = [];
  const find = (setting: Setting, attacked: ModelName, attack: AttackName) => attacks.find((row) => row.setting === setting && row.attacked === attacked && row.attack === attack);
  const meanAccuracy = (attack: AttackName, model: ModelName): number | null => {
    const curve = curves.find((candidate) => candidate.setting === 'white-box' && candidate.attack === attack && candidate.model === model);
    return curve === undefined ? null : curve.accuracy.reduce((sum, value) => sum + value, 0) / curve.accuracy.length;
  };
  const higher = (baseline: number | null, value: number | null) => (baseline === null || value === null ? null : value > baseline);

  for (const row of attacks.filter((candidate) => candidate.setting === 'transfer')) {
    for (const model of ['cache', 'cacheOnly'] as const) {
      comparisons.push({
        setting: 'transfer',
        attack: row.attack,
        model,
        metric: "accuracy on the baseline's adversarial images",
        baseline: row.accuracy.baseline,
        value: row.accuracy[model],
        moreRobust: higher(row.accuracy.baseline, row.accuracy[model]),
      });
    }
  }

  for (const row of attacks.filter((candidate) => candidate.setting === 'white-box' && candidate.attacked !== 'baseline')) {
    const reference = find('white-box', 'baseline', row.attack);
    if (reference === undefined) continue;
    const model = row.attacked as 'cache' | 'cacheOnly';
    const baselineMean = meanAccuracy(row.attack, 'baseline');
    const mean = meanAccuracy(row.attack, model);
    comparisons.push({
      setting: 'white-box',
      attack: row.attack,
      model,
      metric: 'mean accuracy under its own white-box attack over the ε grid',
      baseline: baselineMean,
      value: mean,
      moreRobust: higher(baselineMean, mean),
    });
    comparisons.push({
      setting: 'white-box',
      attack: row.attack,
      model,
      metric: 'median perturbation ‖x_adv − x‖/‖x‖ of its successful white-box attacks',
      baseline: reference.perturbation.median,
      value: row.perturbation.median,
      moreRobust: higher(reference.perturbation.median, row.perturbation.median),
    });
  }
  return comparisons;
}

function sortAttacks(attacks: AttackSummary[]): AttackSummary[] {
  const order = (row: AttackSummary) => [row.setting === 'transfer' ? 0 : 1, ['fgsm', 'iterative-fgsm', 'single-pixel', 'blur'].indexOf(row.attack), MODEL_NAMES.indexOf(row.attacked)];
  return [...attacks].sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
}

function fraction(count: number, total: number): number {
  return total === 0 ? 0 : count / total;
}
