import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { makeInputs } from '../inference/test-fixtures.js';
import { initBackend } from '../models/backend.js';
import { resolveKeyLayers } from '../models/key-layers.js';
import { CacheModelFamily, MODEL_NAMES, normaliseRows, type ModelName } from './cache-models.js';
import { CacheReadout } from './cache-readout.js';
import { checkLogProbabilityGradient } from './gradient-check.js';
import { OnnxNetworkGradient } from './network-gradient.js';
import { buildGradientFixture, GRADIENT_FIXTURE_SHAPE } from './test-fixtures.js';

// The fixture network with a cache of 120 keys made from its own features of other inputs, with
// θ small enough that many keys share the read-out's weight (the full model's θ = 85 on 12,288
// dimensions behaves alike, with fewer keys in play).
const CACHE_IMAGES = 120;
const IMAGES = 4;
const PARAMETERS = { cache: { theta: 8, lambda: 0.4 }, cacheOnly: { theta: 5 } };
/** Largest error of the central difference (step 1e-3) along the gradient and its sign, relative to the derivative. */
const TOLERANCE = 1e-2;

let fixture: ReturnType<typeof buildGradientFixture>;
let network: OnnxNetworkGradient;
let readout: CacheReadout;
let family: CacheModelFamily;
const inputs = makeInputs(IMAGES, GRADIENT_FIXTURE_SHAPE, 4242);

beforeAll(async () => {
  await initBackend('cpu');
  fixture = buildGradientFixture('dense-softmax');
  network = await OnnxNetworkGradient.create(fixture.loaded, resolveKeyLayers(fixture.loaded.model, fixture.keyLayers), 1);

  const cacheInputs = makeInputs(CACHE_IMAGES, GRADIENT_FIXTURE_SHAPE, 99);
  const forward = await network.forward(cacheInputs, CACHE_IMAGES);
  const { queries: keys } = normaliseRows(forward.features, CACHE_IMAGES, network.featureSize);
  const labels = Int32Array.from({ length: CACHE_IMAGES }, (_, i) => i % network.numClasses);
  readout = await CacheReadout.create({ blocks: [{ keys, labels, count: CACHE_IMAGES }], dim: network.featureSize, numClasses: network.numClasses }, 1);
  family = new CacheModelFamily(network, readout, PARAMETERS);
});

afterAll(async () => {
  await network.dispose();
  await readout.dispose();
  fixture.loaded.model.dispose();
});

describe('CacheModelFamily', () => {
  it('mixes the model and the cache', async () => {
    const outputs = await family.evaluate(inputs, IMAGES);
    const forward = await network.forward(inputs, IMAGES);
    const { queries } = normaliseRows(forward.features, IMAGES, network.featureSize);
    const scores = await readout.score(queries, IMAGES, [PARAMETERS.cache.theta, PARAMETERS.cacheOnly.theta]);
    const C = network.numClasses;
    const { lambda } = PARAMETERS.cache;

    for (let i = 0; i < IMAGES * C; i += 1) {
      const cacheProbability = Math.exp(scores.logProbabilities[i]);
      expect(outputs.probabilities.cache![i]).toBeCloseTo((1 - lambda) * outputs.probabilities.baseline![i] + lambda * cacheProbability, 12);
      expect(outputs.probabilities.cacheOnly![i]).toBeCloseTo(Math.exp(scores.logProbabilities[IMAGES * C + i]), 12);
    }
  });

  it.each(MODEL_NAMES)('%s gradient matches finite differences', async (model: ModelName) => {
    const labels = (await family.evaluate(inputs, IMAGES, [model])).predictions[model]!;
    const rows = await checkLogProbabilityGradient(family, model, inputs, labels);
    const checked = rows.filter((row) => row.direction !== 'random');

    expect(Math.max(...checked.map((row) => row.relativeError))).toBeLessThan(TOLERANCE);
  });

  it('gradient of another label points elsewhere', async () => {
    // Guards the check above: the gradients of two different labels must not both pass for one label.
    const labels = (await family.evaluate(inputs, IMAGES, ['cache'])).predictions.cache!;
    const other = labels.map((label) => (label + 1) % network.numClasses);
    const [own, wrong] = [await family.logProbabilityGradient(inputs, IMAGES, 'cache', labels), await family.logProbabilityGradient(inputs, IMAGES, 'cache', other)];
    const size = family.imageSize;
    let dot = 0;
    let ownNorm = 0;
    let wrongNorm = 0;
    for (let p = 0; p < size; p += 1) {
      dot += own.gradient[p] * wrong.gradient[p];
      ownNorm += own.gradient[p] ** 2;
      wrongNorm += wrong.gradient[p] ** 2;
    }

    expect(dot / Math.sqrt(ownNorm * wrongNorm)).toBeLessThan(0.99);
  });

  it('rejects a label count that differs from the images', async () => {
    await expect(family.logProbabilityGradient(inputs, IMAGES, 'cache', new Int32Array(IMAGES - 1))).rejects.toThrow(/3 labels were given for 4 images/);
  });

  it('rejects cache models without a cache', async () => {
    const withoutCache = new CacheModelFamily(network, undefined, PARAMETERS);

    await expect(withoutCache.evaluate(inputs, IMAGES, ['cache'])).rejects.toThrow(/need the cache/);
  });
});
