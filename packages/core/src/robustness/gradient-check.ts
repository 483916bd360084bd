import { CachefleetError } from '../errors.js';
import type { CacheModelFamily, ModelName } from './cache-models.js';

/** Directions along which the check compares derivatives. */
export const CHECK_DIRECTIONS = ['gradient', 'sign', 'random'] as const;
export type CheckDirection = (typeof CHECK_DIRECTIONS)[number];

export interface GradientCheckRow {
  model: ModelName;
  image: number;
  direction: CheckDirection;
  /** g · d with g the computed gradient and d the unit direction. */
  analytic: number;
  /** (log p(y | x + h·d) − log p(y | x − h·d)) / 2h. */
  finiteDifference: number;
  /** |analytic − finiteDifference| / max(|analytic|, |finiteDifference|). */
  relativeError: number;
}

export interface GradientCheckOptions {
  /** Step h of the central difference, in preprocessed input units along a unit direction. */
  step?: number;
  /** Seed of the random direction. */
  seed?: number;
}

/**
 * Compares ∂ log p(label | x)/∂x of `model` with central finite differences of log p along
 * three unit directions per image: the gradient itself, its sign (the FGSM direction) and a
 * random one. The first two have large derivatives, so float32 rounding in the forward pass
 * barely disturbs the difference. The random direction's derivative is about √(input size)
 * times smaller, so its relative error is larger.
 */
export async function checkLogProbabilityGradient(
  family: CacheModelFamily,
  model: ModelName,
  inputs: Float32Array,
  labels: Int32Array,
  options: GradientCheckOptions = {},
): Promise<GradientCheckRow[]> {
  const step = options.step ?? 1e-3;
  if (!(Number.isFinite(step) && step > 0)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Finite-difference step ${step} is invalid: give a small positive number such as 1e-3.`, { step });
  }
  const n = labels.length;
  const size = family.imageSize;
  const { gradient } = await family.logProbabilityGradient(inputs, n, model, labels);
  let state = (options.seed ?? 1) >>> 0;
  const random = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };

  const rows: GradientCheckRow[] = [];
  for (let image = 0; image < n; image += 1) {
    const g = gradient.subarray(image * size, (image + 1) * size);
    const directions: Record<CheckDirection, Float64Array> = {
      gradient: unit(Float64Array.from(g)),
      sign: unit(Float64Array.from(g, Math.sign)),
      random: unit(Float64Array.from({ length: size }, random)),
    };

    const probes = new Float32Array(2 * CHECK_DIRECTIONS.length * size);
    CHECK_DIRECTIONS.forEach((name, d) => {
      for (let p = 0; p < size; p += 1) {
        const value = inputs[image * size + p];
        probes[(2 * d) * size + p] = value + step * directions[name][p];
        probes[(2 * d + 1) * size + p] = value - step * directions[name][p];
      }
    });
    const outputs = await family.evaluate(probes, 2 * CHECK_DIRECTIONS.length, [model]);
    const logProbability = (row: number) => Math.log(outputs.probabilities[model]![row * family.numClasses + labels[image]]);

    CHECK_DIRECTIONS.forEach((name, d) => {
      let analytic = 0;
      for (let p = 0; p < size; p += 1) analytic += g[p] * directions[name][p];
      const finiteDifference = (logProbability(2 * d) - logProbability(2 * d + 1)) / (2 * step);
      const scale = Math.max(Math.abs(analytic), Math.abs(finiteDifference));
      rows.push({ model, image, direction: name, analytic, finiteDifference, relativeError: scale === 0 ? 0 : Math.abs(analytic - finiteDifference) / scale });
    });
  }
  return rows;
}

function unit(values: Float64Array): Float64Array {
  let norm = 0;
  for (const value of values) norm += value * value;
  norm = Math.sqrt(norm);
  if (norm === 0) return values;
  for (let i = 0; i < values.length; i += 1) values[i] /= norm;
  return values;
}
