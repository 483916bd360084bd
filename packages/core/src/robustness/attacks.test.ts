import { describe, expect, it } from 'vitest';

import { blurAttack, relativePerturbation, singlePixelAttack, strengthGrid, type AttackDomain, type AttackTarget } from './attacks.js';
import { gaussianBlur } from './blur.js';
import { imageSeed, mulberry32, shuffle } from './subset.js';

const HEIGHT = 6;
const WIDTH = 5;
const CHANNELS = 2;
const SIZE = HEIGHT * WIDTH * CHANNELS;
const domain: AttackDomain = { height: HEIGHT, width: WIDTH, channels: CHANNELS, lower: new Float32Array(SIZE).fill(-2), upper: new Float32Array(SIZE).fill(3) };

/** Returns a classifier that predicts class 1 exactly when `decide` is true, with a zero gradient (the search attacks need none). */
function thresholdTarget(decide: (image: Float32Array) => boolean): AttackTarget {
  const predict = async (inputs: Float32Array, n: number) => Int32Array.from({ length: n }, (_, i) => (decide(inputs.subarray(i * SIZE, (i + 1) * SIZE)) ? 1 : 0));
  return {
    predict,
    logProbabilityGradient: async (inputs, n) => ({ predictions: await predict(inputs, n), gradient: new Float32Array(n * SIZE) }),
  };
}

describe('strengthGrid', () => {
  it('spaces values evenly up to the maximum', () => {
    expect(strengthGrid(0.5, 5)).toEqual([0.1, 0.2, 0.3, 0.4, 0.5]);
  });

  it('rejects an empty grid', () => {
    expect(() => strengthGrid(0.5, 0)).toThrow(/grid of 0 values/);
  });
});

describe('singlePixelAttack', () => {
  const images = new Float32Array(2 * SIZE).fill(0.5);
  const labels = new Int32Array(2);
  const records = [17, 4021];

  it('finds the one sensitive pixel in the seeded order', async () => {
    // Class 1 when pixel (4, 3) is at its upper value in channel 1: only setting that pixel high succeeds.
    const position = 4 * WIDTH + 3;
    const target = thresholdTarget((image) => image[position * CHANNELS + 1] === 3);
    const outcomes = await singlePixelAttack(target, images, labels, records, domain, HEIGHT * WIDTH, 2018);

    records.forEach((record, i) => {
      const order = shuffle(Int32Array.from({ length: HEIGHT * WIDTH }, (_, p) => p), mulberry32(imageSeed(2018, record)));
      const tried = order.indexOf(position) + 1;
      expect(outcomes[i].strength, `record ${record}`).toBe(tried);
      // Candidates alternate low and high per pixel, so the high value of that pixel is candidate 2·(tried − 1) + 1.
      expect(outcomes[i].gridIndex).toBe(2 * tried - 1);
    });
  });

  it('changes exactly one pixel', async () => {
    const position = 2 * WIDTH + 1;
    const target = thresholdTarget((image) => image[position * CHANNELS] === -2);
    const [outcome] = await singlePixelAttack(target, images.subarray(0, SIZE), labels.subarray(0, 1), [5], domain, HEIGHT * WIDTH, 1);
    const changed = [...outcome.adversarial!.keys()].filter((i) => outcome.adversarial![i] !== 0.5);

    expect(changed).toEqual([position * CHANNELS, position * CHANNELS + 1]);
  });

  it('gives up after the pixel budget', async () => {
    const target = thresholdTarget(() => false);
    const outcomes = await singlePixelAttack(target, images, labels, records, domain, 7, 2018);

    expect(outcomes.map((outcome) => outcome.found)).toEqual([false, false]);
  });
});

describe('blurAttack', () => {
  it('stops at the first strength that changes the prediction', async () => {
    // A checkerboard loses contrast as σ grows; class 1 once its contrast falls below a threshold.
    const image = Float32Array.from({ length: SIZE }, (_, i) => ((Math.floor(i / CHANNELS) % WIDTH) + Math.floor(i / (CHANNELS * WIDTH))) % 2 === 0 ? 2 : -1);
    const contrast = (x: Float32Array) => Math.max(...x) - Math.min(...x);
    const target = thresholdTarget((x) => contrast(x) < 1.5);
    const strengths = strengthGrid(0.25, 50);
    const [outcome] = await blurAttack(target, image, new Int32Array(1), domain, strengths);

    expect(outcome.found).toBe(true);
    expect(contrast(outcome.adversarial!)).toBeLessThan(1.5);
    expect(outcome.perturbation).toBeCloseTo(relativePerturbation(outcome.adversarial!, image), 12);
    expect(outcome.gridIndex).toBeGreaterThan(0);
    const weaker = gaussianBlur(image, 1, HEIGHT, WIDTH, CHANNELS, strengths[outcome.gridIndex! - 1] * Math.max(HEIGHT, WIDTH));
    expect(contrast(weaker)).toBeGreaterThanOrEqual(1.5);
  });
});
