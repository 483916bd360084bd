import { CachefleetError } from '../errors.js';

/**
 * Returns a copy of `n` NHWC images (height `h`, width `w`, `c` channels) with the width axis
 * reversed, i.e. each image mirrored left to right. Apply it after standardisation, as the code
 * of Orhan (2018) does: the per-pixel mean and std are not left-right symmetric, so mirroring
 * the raw pixels first would give a different model input.
 */
export function mirrorHorizontally(input: Float32Array, n: number, h: number, w: number, c: number): Float32Array {
  validateShape(input, n, h, w, c);

  const output = new Float32Array(input.length);
  const rowSize = w * c;
  for (let row = 0; row < n * h; row++) {
    const rowStart = row * rowSize;
    for (let x = 0; x < w; x++) {
      const source = rowStart + x * c;
      const target = rowStart + (w - 1 - x) * c;
      for (let channel = 0; channel < c; channel++) {
        output[target + channel] = input[source + channel];
      }
    }
  }
  return output;
}

function validateShape(input: Float32Array, n: number, h: number, w: number, c: number): void {
  const dims = { n, h, w, c };
  for (const [name, value] of Object.entries(dims)) {
    const minimum = name === 'n' ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < minimum) {
      throw new CachefleetError('INVALID_ARGUMENT', `Invalid ${name} ${String(value)}: expected an integer >= ${minimum}.`, dims);
    }
  }
  if (input.length !== n * h * w * c) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid input for mirroring: it has ${input.length} values, expected n × h × w × c = ${n} × ${h} × ${w} × ${c} = ${n * h * w * c}.`,
      { length: input.length, ...dims },
    );
  }
}
