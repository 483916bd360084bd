import { CachefleetError } from '../errors.js';

/** Kernel radius in standard deviations, as scipy.ndimage.gaussian_filter's default `truncate`. */
const TRUNCATE = 4;

/**
 * Returns the normalised 1-D Gaussian kernel of standard deviation `sigma` (pixels), with radius
 * round(4σ) as scipy.ndimage computes it (`int(truncate * sigma + 0.5)`).
 */
export function gaussianKernel(sigma: number): Float64Array {
  if (!(Number.isFinite(sigma) && sigma > 0)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Blur sigma ${sigma} is invalid: give a positive number of pixels.`, { sigma });
  }
  const radius = Math.floor(TRUNCATE * sigma + 0.5);
  const kernel = new Float64Array(2 * radius + 1);
  let total = 0;
  for (let offset = -radius; offset <= radius; offset += 1) {
    const value = Math.exp((-0.5 * offset * offset) / (sigma * sigma));
    kernel[offset + radius] = value;
    total += value;
  }
  for (let i = 0; i < kernel.length; i += 1) kernel[i] /= total;
  return kernel;
}

/**
 * Maps an index outside [0, size) back inside by mirroring with the edge value repeated
 * (d c b a | a b c d | d c b a), scipy.ndimage's `reflect` mode, for any distance from the edge.
 */
export function reflectIndex(index: number, size: number): number {
  const period = 2 * size;
  let folded = index % period;
  if (folded < 0) folded += period;
  return folded < size ? folded : period - 1 - folded;
}

/**
 * Blurs n NHWC images with a Gaussian of standard deviation `sigma` pixels over height and width
 * (none across channels), as scipy.ndimage.gaussian_filter(image, (σ, σ, 0)) with mode `reflect`.
 * The two passes accumulate in float64 and round once to float32.
 */
export function gaussianBlur(images: Float32Array, n: number, height: number, width: number, channels: number, sigma: number): Float32Array {
  const imageSize = height * width * channels;
  if (images.length !== n * imageSize) {
    throw new CachefleetError('INVALID_ARGUMENT', `Blur input has ${images.length} values, but ${n} images of ${height}×${width}×${channels} need ${n * imageSize}.`, { length: images.length, n });
  }
  const kernel = gaussianKernel(sigma);
  const radius = (kernel.length - 1) / 2;
  const output = new Float32Array(images.length);
  const rows = new Float64Array(imageSize);

  for (let image = 0; image < n; image += 1) {
    const offset = image * imageSize;
    // Pass 1 blurs along the width into `rows`; pass 2 blurs `rows` along the height.
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        for (let c = 0; c < channels; c += 1) {
          let sum = 0;
          for (let k = -radius; k <= radius; k += 1) {
            sum += kernel[k + radius] * images[offset + (y * width + reflectIndex(x + k, width)) * channels + c];
          }
          rows[(y * width + x) * channels + c] = sum;
        }
      }
    }
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        for (let c = 0; c < channels; c += 1) {
          let sum = 0;
          for (let k = -radius; k <= radius; k += 1) {
            sum += kernel[k + radius] * rows[(reflectIndex(y + k, height) * width + x) * channels + c];
          }
          output[offset + (y * width + x) * channels + c] = sum;
        }
      }
    }
  }
  return output;
}
