import { describe, expect, it } from 'vitest';

import { mirrorHorizontally } from './mirror.js';

/** Value that encodes its own NHWC position, so a wrong index shows in the failure. */
function positionValue(image: number, row: number, column: number, channel: number): number {
  return image * 1000 + row * 100 + column * 10 + channel;
}

function makeImages(n: number, h: number, w: number, c: number): Float32Array {
  const images = new Float32Array(n * h * w * c);
  for (let image = 0; image < n; image++) {
    for (let row = 0; row < h; row++) {
      for (let column = 0; column < w; column++) {
        for (let channel = 0; channel < c; channel++) {
          images[((image * h + row) * w + column) * c + channel] = positionValue(image, row, column, channel);
        }
      }
    }
  }
  return images;
}

describe('mirrorHorizontally', () => {
  it('reverses the width axis', () => {
    const [n, h, w, c] = [2, 3, 4, 3];
    const mirrored = mirrorHorizontally(makeImages(n, h, w, c), n, h, w, c);

    for (let image = 0; image < n; image++) {
      for (let row = 0; row < h; row++) {
        for (let column = 0; column < w; column++) {
          for (let channel = 0; channel < c; channel++) {
            const actual = mirrored[((image * h + row) * w + column) * c + channel];
            expect(actual, `image ${image}, row ${row}, column ${column}, channel ${channel}`).toBe(
              positionValue(image, row, w - 1 - column, channel),
            );
          }
        }
      }
    }
  });

  it('keeps rows and channels', () => {
    // One 1×2 RGB image: pixel (0, 0) = [1, 2, 3], pixel (0, 1) = [4, 5, 6].
    const mirrored = mirrorHorizontally(Float32Array.from([1, 2, 3, 4, 5, 6]), 1, 1, 2, 3);

    expect(Array.from(mirrored)).toEqual([4, 5, 6, 1, 2, 3]);
  });

  it('twice returns the input', () => {
    const images = makeImages(3, 32, 32, 3);
    const twice = mirrorHorizontally(mirrorHorizontally(images, 3, 32, 32, 3), 3, 32, 32, 3);

    expect(Buffer.from(twice.buffer).equals(Buffer.from(images.buffer))).toBe(true);
  });

  it('leaves the input unchanged', () => {
    const images = makeImages(1, 2, 2, 1);
    const copy = images.slice();
    mirrorHorizontally(images, 1, 2, 2, 1);

    expect(Array.from(images)).toEqual(Array.from(copy));
  });

  it('keeps odd middle column', () => {
    const images = makeImages(1, 1, 5, 1);

    expect(mirrorHorizontally(images, 1, 1, 5, 1)[2]).toBe(images[2]);
  });

  it('rejects a length mismatch', () => {
    expect(() => mirrorHorizontally(new Float32Array(10), 1, 2, 2, 3)).toThrow(/has 10 values, expected n × h × w × c = 1 × 2 × 2 × 3 = 12/);
  });

  it('rejects a zero width', () => {
    expect(() => mirrorHorizontally(new Float32Array(0), 1, 2, 0, 3)).toThrow(/Invalid w 0: expected an integer >= 1/);
  });
});
