import { CachefleetError } from '../errors.js';
import { parsePreprocessingSpec, type PreprocessingSpec } from './spec.js';

/** Float32 copies of a spec's arrays, built once per spec object; the spec is validated on first use. */
interface PreparedSpec {
  imageSize: number;
  /** `fround(x / scale)` for every uint8 value x. */
  scaled: Float32Array;
  mean: Float32Array;
  std: Float32Array;
}

const preparedSpecs = new WeakMap<PreprocessingSpec, PreparedSpec>();

/**
 * Converts `n` uint8 NHWC images into the model input, NHWC float32, computing each value as
 * `(x / scale − mean) / std` with the per-pixel mean and std of `spec`. Every step is rounded to
 * float32 (Math.fround), so the result has the same bits as numpy's float32 arithmetic. That is true
 * because a float64 result of +, − or ÷ on float32 operands, rounded to float32, equals the
 * correctly rounded float32 result.
 */
export function preprocess(pixels: Uint8Array, n: number, spec: PreprocessingSpec): Float32Array {
  const prepared = prepareSpec(spec);
  validatePixels(pixels, n, prepared.imageSize);

  const { imageSize, scaled, mean, std } = prepared;
  const output = new Float32Array(n * imageSize);
  for (let image = 0; image < n; image++) {
    const offset = image * imageSize;
    for (let i = 0; i < imageSize; i++) {
      const centred = Math.fround(scaled[pixels[offset + i]] - mean[i]);
      output[offset + i] = centred / std[i];
    }
  }
  return output;
}

function prepareSpec(spec: PreprocessingSpec): PreparedSpec {
  const cached = preparedSpecs.get(spec);
  if (cached !== undefined) {
    return cached;
  }

  const parsed = parsePreprocessingSpec(spec);
  const scaled = new Float32Array(256);
  for (let value = 0; value < 256; value++) {
    scaled[value] = value / parsed.scale;
  }
  const prepared: PreparedSpec = {
    imageSize: parsed.height * parsed.width * parsed.channels,
    scaled,
    mean: Float32Array.from(parsed.standardization.mean),
    std: Float32Array.from(parsed.standardization.std),
  };
  preparedSpecs.set(spec, prepared);
  return prepared;
}

function validatePixels(pixels: Uint8Array, n: number, imageSize: number): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid image count ${String(n)}: expected an integer >= 0.`, { n });
  }
  if (pixels.length !== n * imageSize) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Invalid pixel buffer: it has ${pixels.length} bytes, expected ${n * imageSize} for ${n} images of ${imageSize} bytes (height × width × channels).`,
      { length: pixels.length, n, imageSize },
    );
  }
}
