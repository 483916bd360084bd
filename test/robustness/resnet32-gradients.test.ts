import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  CacheModelFamily,
  CacheReadout,
  MODEL_NAMES,
  OnnxNetworkGradient,
  TfjsNetworkGradient,
  checkLogProbabilityGradient,
  initBackend,
  loadModel,
  normaliseRows,
  openDatasetSplit,
  resolveKeyLayers,
  type GradientCheckRow,
  type LoadedModel,
  type ModelName,
} from '@cachefleet/core';

import { readFloat32File } from '../../packages/core/src/models/test-fixtures.js';
import { cifar10Dir, referenceDir, requireSharedData, resnet32Path } from '../support/shared.js';

// Gradients of the ResNet32 released with Orhan (2018) and of its cache models. The cache is the
// reference keys of the first 100 training images and their mirror images (200 keys), because
// the full 100,000 keys live in a local key store that CI machines do not have.
const IMAGE_SIZE = 32 * 32 * 3;
const DIM = 12_288;
const IMAGES = 3;
const PARAMETERS = { cache: { theta: 85.5556, lambda: 0.5111 }, cacheOnly: { theta: 72.2222 } };
/** Error of a central difference (step 1e-3) along the gradient and along its sign, relative to the derivative. */
const FINITE_DIFFERENCE_TOLERANCE = 1e-2;
/** Relative L2 error per image between the backward graph and tfjs autodiff of the rebuilt model; measured up to 3.8e-4. */
const AUTODIFF_TOLERANCE = 1e-3;

let loaded: LoadedModel;
let network: OnnxNetworkGradient;
let readout: CacheReadout;
let family: CacheModelFamily;
let inputs: Float32Array;
const checks = new Map<ModelName, GradientCheckRow[]>();

beforeAll(async () => {
  requireSharedData();
  await initBackend('wasm');
  loaded = await loadModel(resnet32Path);
  const keyLayers = resolveKeyLayers(loaded.model, [82, 92, 103]);
  network = await OnnxNetworkGradient.create(loaded, keyLayers, 2);

  const raw = new Float32Array(200 * DIM);
  raw.set(await readFloat32File(path.join(referenceDir, 'resnet32-train-first100-keys-raw.f32')), 0);
  raw.set(await readFloat32File(path.join(referenceDir, 'resnet32-train-flipped-first100-keys-raw.f32')), 100 * DIM);
  const { queries: keys } = normaliseRows(raw, 200, DIM);
  const train = await openDatasetSplit(cifar10Dir, { dataset: 'cifar10', split: 'train' });
  const labels = Int32Array.from({ length: 200 }, (_, i) => train.labels[i % 100]);
  readout = await CacheReadout.create({ blocks: [{ keys, labels, count: 200 }], dim: DIM, numClasses: 10 }, 2);
  family = new CacheModelFamily(network, readout, PARAMETERS);

  inputs = (await readFloat32File(path.join(referenceDir, 'cifar10-test-first100-input.f32'))).slice(0, IMAGES * IMAGE_SIZE);
  for (const model of MODEL_NAMES) {
    const predictions = (await family.evaluate(inputs, IMAGES, [model])).predictions[model]!;
    checks.set(model, await checkLogProbabilityGradient(family, model, inputs, predictions));
  }
}, 300_000);

afterAll(async () => {
  await network?.dispose();
  await readout?.dispose();
  loaded?.model.dispose();
});

describe('ResNet32 input gradient', () => {
  it('matches tfjs autodiff of the rebuilt model', async ({ annotate }) => {
    const tfjs = new TfjsNetworkGradient(loaded, resolveKeyLayers(loaded.model, [82, 92, 103]));
    try {
      const forward = await network.forward(inputs, IMAGES);
      const logitsGrad = Float32Array.from(forward.probabilities, (value, i) => value - (i % 10 === 3 ? 1 : 0));
      const featuresGrad = Float32Array.from({ length: IMAGES * DIM }, (_, i) => Math.sin(i) * 1e-3);

      const expected = await tfjs.inputGradient(inputs, IMAGES, logitsGrad, featuresGrad);
      const actual = await network.inputGradient(inputs, IMAGES, logitsGrad, featuresGrad);
      let worst = 0;
      for (let image = 0; image < IMAGES; image += 1) {
        let difference = 0;
        let norm = 0;
        for (let p = image * IMAGE_SIZE; p < (image + 1) * IMAGE_SIZE; p += 1) {
          difference += (actual[p] - expected[p]) ** 2;
          norm += expected[p] ** 2;
        }
        worst = Math.max(worst, Math.sqrt(difference / norm));
      }
      await annotate(`max relative L2 error ${worst.toExponential(2)}`);

      expect(worst).toBeLessThan(AUTODIFF_TOLERANCE);
    } finally {
      await tfjs.dispose();
    }
  });
});

describe.each(MODEL_NAMES)('%s log-probability gradient', (model) => {
  it('matches finite differences along the gradient', async ({ annotate }) => {
    const rows = checks.get(model)!.filter((row) => row.direction === 'gradient');
    await annotate(rows.map((row) => `image ${row.image}: analytic ${row.analytic.toExponential(4)}, finite difference ${row.finiteDifference.toExponential(4)}`).join('; '));

    expect(Math.max(...rows.map((row) => row.relativeError))).toBeLessThan(FINITE_DIFFERENCE_TOLERANCE);
  });

  it('matches finite differences along its sign', () => {
    const rows = checks.get(model)!.filter((row) => row.direction === 'sign');

    expect(Math.max(...rows.map((row) => row.relativeError))).toBeLessThan(FINITE_DIFFERENCE_TOLERANCE);
  });
});
