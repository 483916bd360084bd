import { CachefleetError } from '../errors.js';

/** Throws INVALID_ARGUMENT unless `value` is an integer of at least `minimum`. */
export function assertInteger(name: string, value: number, minimum: number): void {
  if (!Number.isInteger(value) || value < minimum) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `${name} must be an integer of at least ${minimum}, got ${value}. Pass a whole count such as ${Math.max(minimum, 1)}.`,
      { [name]: value },
    );
  }
}

/** Throws INVALID_ARGUMENT unless `array` has exactly `expected` elements. */
export function assertLength(name: string, array: ArrayLike<unknown>, expected: number, layout: string): void {
  if (array.length !== expected) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `${name} has ${array.length} values but the layout ${layout} needs ${expected}. Check the row count and dimension passed with it.`,
      { name, length: array.length, expected },
    );
  }
}

/** Throws INVALID_ARGUMENT unless `array` has at least `minimum` elements. */
export function assertMinimumLength(name: string, array: ArrayLike<unknown>, minimum: number, layout: string): void {
  if (array.length < minimum) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `${name} has ${array.length} values but the layout ${layout} needs at least ${minimum}. Check the row count and dimension passed with it.`,
      { name, length: array.length, minimum },
    );
  }
}

/**
 * Throws INVALID_ARGUMENT unless `thetas` is a non-empty list of finite values above 0.
 * Theta is the inverse temperature of the cache: theta = 0 would weight every key equally.
 */
export function assertThetas(thetas: readonly number[]): void {
  if (thetas.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'thetas is empty. Pass at least one theta, for example DEFAULT_THETAS.', {
      thetas: [],
    });
  }

  thetas.forEach((theta, index) => {
    // The scoring graph takes thetas as float32, so they must be finite in float32 too.
    if (!Number.isFinite(Math.fround(theta)) || theta <= 0) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `thetas[${index}] is ${theta}, but every theta must be a finite float32 number above 0. Use values such as 10 to 90.`,
        { index, theta },
      );
    }
  });
}

/**
 * Throws INVALID_ARGUMENT unless `lambdas` is a non-empty list of mixture weights in [0, 1].
 * Lambda is the weight of the cache in (1 - lambda) * p_model + lambda * p_cache.
 */
export function assertLambdas(lambdas: readonly number[]): void {
  if (lambdas.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', 'lambdas is empty. Pass at least one lambda, for example DEFAULT_LAMBDAS.', {
      lambdas: [],
    });
  }

  lambdas.forEach((lambda, index) => {
    assertLambda(lambda, `lambdas[${index}]`);
  });
}

/** Throws INVALID_ARGUMENT unless `lambda` is a mixture weight in [0, 1]. */
export function assertLambda(lambda: number, name = 'lambda'): void {
  if (!Number.isFinite(lambda) || lambda < 0 || lambda > 1) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `${name} is ${lambda}, but a mixture weight must lie in [0, 1]. Use 0 for the model alone and 1 for the cache alone.`,
      { name, lambda },
    );
  }
}

/**
 * Throws CLASS_COUNT_MISMATCH for a label at or above `numClasses` and INVALID_ARGUMENT for a
 * negative label. Only the first `count` labels are checked; messages number them from
 * `firstIndex`, the position of labels[0] in the caller's whole sequence.
 */
export function assertLabels(name: string, labels: Int32Array, count: number, numClasses: number, firstIndex = 0): void {
  for (let index = 0; index < count; index += 1) {
    const label = labels[index];
    const position = firstIndex + index;

    if (label >= numClasses) {
      throw new CachefleetError(
        'CLASS_COUNT_MISMATCH',
        `${name}[${position}] is class ${label}, but numClasses is ${numClasses}. Pass the class count of the model that produced the cache, or rebuild the cache with this model.`,
        { index: position, label, numClasses },
      );
    }

    if (label < 0) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `${name}[${position}] is ${label}, but a class label must be at least 0. Check how the labels were decoded.`,
        { index: position, label },
      );
    }
  }
}
