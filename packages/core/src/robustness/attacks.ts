import { CachefleetError } from '../errors.js';
import { gaussianBlur } from './blur.js';
import { imageSeed, mulberry32, shuffle } from './subset.js';

/**
 * The classifier an attack runs against: its predictions, and the gradient of log p(label | x)
 * with respect to the input. Every attack tries to change the prediction away from `labels`
 * (the attacked model's own predictions on the clean images).
 */
export interface AttackTarget {
  predict(inputs: Float32Array, n: number): Promise<Int32Array>;
  /** Predictions at the inputs and ∂ log p(label | x) / ∂x, [n, H, W, C]. */
  logProbabilityGradient(inputs: Float32Array, n: number, labels: Int32Array): Promise<{ predictions: Int32Array; gradient: Float32Array }>;
}

/** Image geometry (NHWC) and the valid input range per position: the preprocessed values of pixel values 0 and 255. */
export interface AttackDomain {
  height: number;
  width: number;
  channels: number;
  lower: Float32Array;
  upper: Float32Array;
}

/**
 * Outcome of one attack on one image. `strength` is the smallest ε (gradient attacks), the
 * blur strength, or the number of pixels tried (single pixel) that changed the prediction. The
 * adversarial image and its size are kept only for a success.
 */
export interface AttackOutcome {
  found: boolean;
  strength: number | null;
  /** Index into the attack's grid of the strength, or for single pixel the candidate tried (0-based). */
  gridIndex: number | null;
  adversarial: Float32Array | null;
  /** ‖x_adv − x‖₂ / ‖x‖₂ in preprocessed input space. */
  perturbation: number | null;
}

const NOT_FOUND: AttackOutcome = Object.freeze({ found: false, strength: null, gridIndex: null, adversarial: null, perturbation: null });

/** Images per `predict` call of the search attacks. */
const PREDICT_BATCH = 256;

/** Returns `count` evenly spaced values in (0, maximum], numpy's linspace(0, maximum, count + 1)[1:]. */
export function strengthGrid(maximum: number, count: number): number[] {
  if (!(Number.isFinite(maximum) && maximum > 0) || !Number.isInteger(count) || count < 1) {
    throw new CachefleetError('INVALID_ARGUMENT', `Attack grid of ${count} values up to ${maximum} is invalid: give a positive maximum and a positive whole count.`, { maximum, count });
  }
  return Array.from({ length: count }, (_, i) => (maximum * (i + 1)) / count);
}

/** Clips each value into [lower, upper] of its position in the image. */
function clipInto(target: Float32Array, offset: number, domain: AttackDomain): void {
  const size = domain.lower.length;
  for (let i = 0; i < size; i += 1) {
    target[offset + i] = Math.min(domain.upper[i], Math.max(domain.lower[i], target[offset + i]));
  }
}

/** ‖a − b‖₂ / ‖b‖₂ in float64. */
export function relativePerturbation(adversarial: Float32Array, clean: Float32Array): number {
  let difference = 0;
  let norm = 0;
  for (let i = 0; i < clean.length; i += 1) {
    difference += (adversarial[i] - clean[i]) ** 2;
    norm += clean[i] ** 2;
  }
  return Math.sqrt(difference) / Math.sqrt(norm);
}

function success(adversarial: Float32Array, clean: Float32Array, strength: number, gridIndex: number): AttackOutcome {
  return { found: true, strength, gridIndex, adversarial, perturbation: relativePerturbation(adversarial, clean) };
}

/** Loss-ascent direction −sign(∂ log p / ∂x) scaled by each position's input range. */
function ascentSteps(gradient: Float32Array, image: number, domain: AttackDomain): Float32Array {
  const size = domain.lower.length;
  const steps = new Float32Array(size);
  for (let i = 0; i < size; i += 1) {
    steps[i] = -Math.sign(gradient[image * size + i]) * (domain.upper[i] - domain.lower[i]);
  }
  return steps;
}

/** Predicts a batch assembled from one candidate per active image, in PREDICT_BATCH chunks. */
async function predictCandidates(target: AttackTarget, candidates: Float32Array[], imageSize: number): Promise<Int32Array> {
  const predictions = new Int32Array(candidates.length);
  for (let start = 0; start < candidates.length; start += PREDICT_BATCH) {
    const chunk = candidates.slice(start, start + PREDICT_BATCH);
    const batch = new Float32Array(chunk.length * imageSize);
    chunk.forEach((candidate, i) => batch.set(candidate, i * imageSize));
    predictions.set(await target.predict(batch, chunk.length), start);
  }
  return predictions;
}

/**
 * Fast gradient sign method with the smallest ε of `epsilons` (ascending, fractions of each
 * position's input range) that changes the prediction: x_adv = clip(x − ε · range · sign(∂ log p(y)/∂x)),
 * tried in order from the smallest ε. An image whose gradient is zero everywhere cannot move and fails.
 */
export async function fgsmAttack(target: AttackTarget, images: Float32Array, labels: Int32Array, domain: AttackDomain, epsilons: readonly number[]): Promise<AttackOutcome[]> {
  const imageSize = domain.lower.length;
  const n = labels.length;
  const outcomes: AttackOutcome[] = new Array(n).fill(NOT_FOUND);
  const { gradient } = await target.logProbabilityGradient(images, n, labels);
  const steps = Array.from({ length: n }, (_, image) => ascentSteps(gradient, image, domain));
  let active = [...Array(n).keys()].filter((image) => steps[image].some((value) => value !== 0));

  for (let e = 0; e < epsilons.length && active.length > 0; e += 1) {
    const epsilon = epsilons[e];
    const candidates = active.map((image) => {
      const candidate = new Float32Array(imageSize);
      for (let i = 0; i < imageSize; i += 1) candidate[i] = images[image * imageSize + i] + epsilon * steps[image][i];
      clipInto(candidate, 0, domain);
      return candidate;
    });
    const predictions = await predictCandidates(target, candidates, imageSize);
    active = active.filter((image, i) => {
      if (predictions[i] === labels[image]) return true;
      outcomes[image] = success(candidates[i], images.subarray(image * imageSize, (image + 1) * imageSize), epsilon, e);
      return false;
    });
  }
  return outcomes;
}

/**
 * Iterative FGSM: for each ε of `epsilons` in ascending order, `steps` steps of ε / steps from the
 * clean image, each clipped into the valid range, stopping at the first step whose image changes
 * the prediction. The first ε with such a step wins. The gradient at the clean image is computed
 * once and shared by every ε.
 */
export async function iterativeFgsmAttack(
  target: AttackTarget,
  images: Float32Array,
  labels: Int32Array,
  domain: AttackDomain,
  epsilons: readonly number[],
  steps: number,
): Promise<AttackOutcome[]> {
  const imageSize = domain.lower.length;
  const n = labels.length;
  const outcomes: AttackOutcome[] = new Array(n).fill(NOT_FOUND);
  const { gradient } = await target.logProbabilityGradient(images, n, labels);
  let remaining = [...Array(n).keys()].filter((image) => gradient.subarray(image * imageSize, (image + 1) * imageSize).some((value) => value !== 0));

  for (let e = 0; e < epsilons.length && remaining.length > 0; e += 1) {
    const batchImages = gatherRows(images, remaining, imageSize);
    const batchGradient = gatherRows(gradient, remaining, imageSize);
    const batchLabels = Int32Array.from(remaining, (image) => labels[image]);
    const run = await runIterations(target, batchImages, batchLabels, batchGradient, domain, epsilons[e], steps);

    remaining = remaining.filter((image, row) => {
      if (!run.flipped[row]) return true;
      const adversarial = run.iterates.slice(row * imageSize, (row + 1) * imageSize);
      outcomes[image] = success(adversarial, images.subarray(image * imageSize, (image + 1) * imageSize), epsilons[e], e);
      return false;
    });
  }
  return outcomes;
}

/**
 * The iterative FGSM images of a batch at one ε: each image's last iterate, which is the first
 * one that changed the prediction, or the one after `steps` steps. `gradient` contains ∂ log p / ∂x
 * at the clean images.
 */
export async function iterativeFgsmAtEpsilon(
  target: AttackTarget,
  images: Float32Array,
  labels: Int32Array,
  gradient: Float32Array,
  domain: AttackDomain,
  epsilon: number,
  steps: number,
): Promise<Float32Array> {
  return (await runIterations(target, images, labels, gradient, domain, epsilon, steps)).iterates;
}

async function runIterations(
  target: AttackTarget,
  images: Float32Array,
  labels: Int32Array,
  initialGradient: Float32Array,
  domain: AttackDomain,
  epsilon: number,
  steps: number,
): Promise<{ iterates: Float32Array; flipped: boolean[] }> {
  const imageSize = domain.lower.length;
  const n = labels.length;
  const stepSize = epsilon / steps;
  const iterates = images.slice();
  const flipped = new Array<boolean>(n).fill(false);
  let active = [...Array(n).keys()];
  let directions = active.map((image) => ascentSteps(initialGradient, image, domain));

  for (let step = 1; step <= steps && active.length > 0; step += 1) {
    for (let row = 0; row < active.length; row += 1) {
      const offset = active[row] * imageSize;
      for (let p = 0; p < imageSize; p += 1) iterates[offset + p] += stepSize * directions[row][p];
      clipInto(iterates, offset, domain);
    }

    // The last step needs only the predictions; earlier ones also need the next gradient.
    const batch = gatherRows(iterates, active, imageSize);
    const activeLabels = Int32Array.from(active, (image) => labels[image]);
    let predictions: Int32Array;
    let gradient: Float32Array | undefined;
    if (step < steps) {
      ({ predictions, gradient } = await target.logProbabilityGradient(batch, active.length, activeLabels));
    } else {
      predictions = await target.predict(batch, active.length);
    }

    const keep: number[] = [];
    active.forEach((image, row) => {
      if (predictions[row] !== labels[image]) {
        flipped[image] = true;
      } else {
        keep.push(row);
      }
    });
    if (gradient !== undefined) {
      directions = keep.map((row) => ascentSteps(gradient!, row, domain));
    }
    active = keep.map((row) => active[row]);
  }
  return { iterates, flipped };
}

/** Copies the listed rows of a row-major matrix into a new one. */
function gatherRows(values: Float32Array, rows: readonly number[], width: number): Float32Array {
  const gathered = new Float32Array(rows.length * width);
  rows.forEach((row, i) => gathered.set(values.subarray(row * width, (row + 1) * width), i * width));
  return gathered;
}

/**
 * Single-pixel attack. Pixels (all channels of one position) are visited in a random order,
 * seeded per image from `seed` and its record index. Each is set to the lowest, then to the
 * highest valid value, one pixel at a time on the clean image, until the prediction changes or
 * `maxPixels` pixels were tried. `strength` is the number of pixels tried up to the success.
 */
export async function singlePixelAttack(
  target: AttackTarget,
  images: Float32Array,
  labels: Int32Array,
  recordIndices: readonly number[],
  domain: AttackDomain,
  maxPixels: number,
  seed: number,
): Promise<AttackOutcome[]> {
  const { height, width, channels } = domain;
  const imageSize = height * width * channels;
  const n = labels.length;
  const pixelCount = Math.min(maxPixels, height * width);
  const outcomes: AttackOutcome[] = new Array(n).fill(NOT_FOUND);
  const orders = recordIndices.map((record) => shuffle(Int32Array.from({ length: height * width }, (_, i) => i), mulberry32(imageSeed(seed, record))));
  let active = [...Array(n).keys()];

  let first = 0;
  while (first < pixelCount && active.length > 0) {
    // About 4,096 candidates (50 MB for CIFAR images) per round, whatever the number of active images.
    const pixelsPerRound = Math.min(256, Math.max(4, Math.floor(2048 / active.length)));
    const last = Math.min(first + pixelsPerRound, pixelCount);
    const candidates: Float32Array[] = [];
    const owners: Array<{ image: number; tried: number; candidate: number }> = [];
    for (const image of active) {
      for (let p = first; p < last; p += 1) {
        const position = orders[image][p];
        [domain.lower, domain.upper].forEach((extreme, side) => {
          const candidate = images.slice(image * imageSize, (image + 1) * imageSize);
          for (let c = 0; c < channels; c += 1) candidate[position * channels + c] = extreme[position * channels + c];
          candidates.push(candidate);
          owners.push({ image, tried: p + 1, candidate: 2 * p + side });
        });
      }
    }

    const predictions = await predictCandidates(target, candidates, imageSize);
    const solved = new Set<number>();
    for (let i = 0; i < candidates.length; i += 1) {
      const { image, tried, candidate } = owners[i];
      if (solved.has(image) || predictions[i] === labels[image]) continue;
      solved.add(image);
      outcomes[image] = success(candidates[i], images.subarray(image * imageSize, (image + 1) * imageSize), tried, candidate);
    }
    active = active.filter((image) => !solved.has(image));
    first = last;
  }
  return outcomes;
}

/**
 * Gaussian blur with the smallest strength of `strengths` (ascending) that changes the
 * prediction: σ = strength × max(height, width) pixels over height and width, mode `reflect`,
 * then clipped into the valid range. The blur runs on the preprocessed input, as the other attacks.
 */
export async function blurAttack(target: AttackTarget, images: Float32Array, labels: Int32Array, domain: AttackDomain, strengths: readonly number[]): Promise<AttackOutcome[]> {
  const { height, width, channels } = domain;
  const imageSize = height * width * channels;
  const n = labels.length;
  const outcomes: AttackOutcome[] = new Array(n).fill(NOT_FOUND);
  let active = [...Array(n).keys()];

  for (let s = 0; s < strengths.length && active.length > 0; s += 1) {
    const sigma = strengths[s] * Math.max(height, width);
    const candidates = active.map((image) => {
      const blurred = gaussianBlur(images.subarray(image * imageSize, (image + 1) * imageSize), 1, height, width, channels, sigma);
      clipInto(blurred, 0, domain);
      return blurred;
    });
    const predictions = await predictCandidates(target, candidates, imageSize);
    active = active.filter((image, i) => {
      if (predictions[i] === labels[image]) return true;
      outcomes[image] = success(candidates[i], images.subarray(image * imageSize, (image + 1) * imageSize), strengths[s], s);
      return false;
    });
  }
  return outcomes;
}
