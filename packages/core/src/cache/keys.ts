import { CachefleetError } from '../errors.js';
import { assertInteger, assertLength } from './validation.js';

/** Rows that normalizeKeys could not normalise because every value was 0. */
export interface NormalizeKeysResult {
  zeroRows: number[];
}

/** Feature rows and their labels after dropRows. */
export interface KeptRows {
  features: Float32Array;
  labels: Int32Array;
  count: number;
}

/**
 * Scales each row of the row-major [n, dim] matrix to unit L2 norm, in place. The sum of squares
 * is accumulated in float64, so no row of float32 values can overflow or lose small terms.
 * An all-zero row has no direction: it is left as zeros and its index is returned in `zeroRows`
 * so that the caller can count, report and drop it.
 *
 * Throws NON_FINITE_ACTIVATION for a row with NaN or an infinite value. Rows before that row are
 * already normalised when it throws.
 */
export function normalizeKeys(features: Float32Array, n: number, dim: number): NormalizeKeysResult {
  assertInteger('n', n, 0);
  assertInteger('dim', dim, 1);
  assertLength('features', features, n * dim, `[n=${n}, dim=${dim}]`);

  const zeroRows: number[] = [];

  for (let row = 0; row < n; row += 1) {
    const start = row * dim;
    const end = start + dim;
    let sumOfSquares = 0;

    for (let index = start; index < end; index += 1) {
      sumOfSquares += features[index] * features[index];
    }

    // Squares of float32 values stay far below the float64 maximum, so a non-finite sum means
    // the row itself contains NaN or an infinity.
    if (!Number.isFinite(sumOfSquares)) {
      throwNonFiniteRow(features, row, dim);
    }

    if (sumOfSquares === 0) {
      zeroRows.push(row);
      continue;
    }

    const norm = Math.sqrt(sumOfSquares);
    for (let index = start; index < end; index += 1) {
      features[index] = features[index] / norm;
    }
  }

  return { zeroRows };
}

function throwNonFiniteRow(features: Float32Array, row: number, dim: number): never {
  const start = row * dim;
  let column = 0;
  while (column < dim && Number.isFinite(features[start + column])) {
    column += 1;
  }

  const value = features[start + column];
  throw new CachefleetError(
    'NON_FINITE_ACTIVATION',
    `Feature row ${row} has the value ${value} at column ${column}, so it cannot be normalised. Check the model and the input image of this row.`,
    { row, column, value },
  );
}

/**
 * Copies the rows of a row-major [n, dim] matrix and their labels, leaving out the row indices
 * in `rows` (in any order, duplicates allowed). The inputs are not changed.
 */
export function dropRows(features: Float32Array, labels: Int32Array, n: number, dim: number, rows: readonly number[]): KeptRows {
  assertInteger('n', n, 0);
  assertInteger('dim', dim, 1);
  assertLength('features', features, n * dim, `[n=${n}, dim=${dim}]`);
  assertLength('labels', labels, n, `[n=${n}]`);

  const dropped = new Uint8Array(n);
  for (const row of rows) {
    if (!Number.isInteger(row) || row < 0 || row >= n) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Row index ${row} to drop is outside the ${n} rows. Pass indices returned by normalizeKeys for the same matrix.`,
        { row, n },
      );
    }
    dropped[row] = 1;
  }

  let count = 0;
  for (let row = 0; row < n; row += 1) {
    count += dropped[row] === 0 ? 1 : 0;
  }

  const keptFeatures = new Float32Array(count * dim);
  const keptLabels = new Int32Array(count);
  let target = 0;

  for (let row = 0; row < n; row += 1) {
    if (dropped[row] === 1) {
      continue;
    }
    keptFeatures.set(features.subarray(row * dim, (row + 1) * dim), target * dim);
    keptLabels[target] = labels[row];
    target += 1;
  }

  return { features: keptFeatures, labels: keptLabels, count };
}
