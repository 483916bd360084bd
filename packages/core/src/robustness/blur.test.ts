import { describe, expect, it } from 'vitest';

import { gaussianBlur, gaussianKernel, reflectIndex } from './blur.js';

describe('reflectIndex', () => {
  it.each([
    [-1, 4, 0],
    [-2, 4, 1],
    [4, 4, 3],
    [5, 4, 2],
    [8, 4, 0],
    [-5, 4, 3],
    [13, 4, 2],
  ])('maps %i in a row of %i to %i', (index, size, expected) => {
    expect(reflectIndex(index, size)).toBe(expected);
  });
});

describe('gaussianKernel', () => {
  it('has the scipy radius and unit sum', () => {
    const kernel = gaussianKernel(1.5);

    expect(kernel.length).toBe(2 * Math.floor(4 * 1.5 + 0.5) + 1);
    expect(kernel.reduce((sum, value) => sum + value, 0)).toBeCloseTo(1, 12);
  });

  it('rejects a non-positive sigma', () => {
    expect(() => gaussianKernel(0)).toThrow(/Blur sigma 0 is invalid/);
  });
});

describe('gaussianBlur', () => {
  // A 5×4 image with 2 channels, x[i] = ((7i) mod 11) − 3 in NHWC order. Expected values from
  // scipy 1.17.1: scipy.ndimage.gaussian_filter(x.astype(float64), (σ, σ, 0), mode='reflect').
  const image = Float32Array.from({ length: 40 }, (_, i) => ((i * 7) % 11) - 3);
  const scipy: Record<string, number[]> = {
    '0.6': [-2.307107, 4.34912, 0.18085, 4.085785, 3.16078, 0.703796, 5.630142, 1.676965, -1.477764, 3.955808],
    '4': [1.82592, 2.253169, 1.832953, 2.253663, 1.842918, 2.254413, 1.849905, 2.254956, 1.830827, 2.251361],
  };

  it.each(Object.keys(scipy))('matches scipy at sigma %s', (sigma) => {
    const blurred = gaussianBlur(image, 1, 5, 4, 2, Number(sigma));

    scipy[sigma].forEach((expected, i) => expect(blurred[i]).toBeCloseTo(expected, 4));
  });

  it('keeps a constant image', () => {
    const constant = new Float32Array(2 * 6 * 7 * 3).fill(1.25);

    expect(Array.from(gaussianBlur(constant, 2, 6, 7, 3, 2.3)).every((value) => Math.abs(value - 1.25) < 1e-6)).toBe(true);
  });

  it('keeps channels apart', () => {
    const twoChannels = Float32Array.from({ length: 4 * 4 * 2 }, (_, i) => (i % 2 === 0 ? 1 : -1));

    expect(Array.from(gaussianBlur(twoChannels, 1, 4, 4, 2, 1)).every((value, i) => Math.abs(value - (i % 2 === 0 ? 1 : -1)) < 1e-6)).toBe(true);
  });
});
