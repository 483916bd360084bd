import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { buildSyntheticModel, compareRows, makeInputs, SYNTHETIC_INPUT_SHAPE, type SyntheticHead } from '../inference/test-fixtures.js';
import { initBackend } from '../models/backend.js';
import { resolveKeyLayers } from '../models/key-layers.js';
import { OnnxNetworkGradient } from './network-gradient.js';
import { exportGradientGraph } from './onnx-gradient.js';
import { buildGradientFixture, GRADIENT_FIXTURE_SHAPE } from './test-fixtures.js';
import { TfjsNetworkGradient } from './tfjs-gradient.js';

// The fixture models cover what ResNet32 does not: strided `same` padding on an odd image size,
// a convolution without bias, a three-input Add, BatchNormalization after Add and after Dense,
// overlapping average pooling, and a Flatten over a 2×2 image. The inference tests' synthetic
// model adds a dilated convolution and padded average pooling, whose tfjs gradients are missing
// or wrong, so it is checked against finite differences only.
const HEADS: SyntheticHead[] = ['dense-softmax', 'activation-softmax', 'dense-linear'];
const IMAGES = 5;
const IMAGE_SIZE = GRADIENT_FIXTURE_SHAPE.reduce((product, dim) => product * dim, 1);
/** Relative L2 error per image between the hand-built backward graph and tfjs autodiff (both float32). */
const AUTODIFF_TOLERANCE = 1e-4;

/** Deterministic upstream gradients in [-0.5, 0.5). */
function upstream(length: number, seed: number): Float32Array {
  let state = seed >>> 0;
  return Float32Array.from({ length }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  });
}

beforeAll(async () => {
  await initBackend('cpu');
});

describe.each(HEADS)('input gradient graph, %s head', (head) => {
  let fixture: ReturnType<typeof buildGradientFixture>;
  let onnx: OnnxNetworkGradient;
  let tfjs: TfjsNetworkGradient;
  const inputs = makeInputs(IMAGES, GRADIENT_FIXTURE_SHAPE);

  beforeAll(async () => {
    fixture = buildGradientFixture(head);
    const keyLayers = resolveKeyLayers(fixture.loaded.model, fixture.keyLayers);
    onnx = await OnnxNetworkGradient.create(fixture.loaded, keyLayers, 1);
    tfjs = new TfjsNetworkGradient(fixture.loaded, keyLayers);
  });

  afterAll(async () => {
    await onnx.dispose();
    await tfjs.dispose();
    fixture.loaded.model.dispose();
  });

  it('forward pass matches tfjs', async () => {
    const [fromOnnx, fromTfjs] = [await onnx.forward(inputs, IMAGES), await tfjs.forward(inputs, IMAGES)];

    expect(compareRows(fromOnnx.logits, fromTfjs.logits, IMAGES).maxRelative).toBeLessThan(1e-5);
    expect(compareRows(fromOnnx.features, fromTfjs.features, IMAGES).maxRelative).toBeLessThan(1e-5);
  });

  it('logits gradient matches tfjs autodiff', async () => {
    const logitsGrad = upstream(IMAGES * onnx.numClasses, 11);
    const featuresGrad = new Float32Array(IMAGES * onnx.featureSize);

    const expected = await tfjs.inputGradient(inputs, IMAGES, logitsGrad, featuresGrad);
    const actual = await onnx.inputGradient(inputs, IMAGES, logitsGrad, featuresGrad);

    expect(compareRows(actual, expected, IMAGES).maxRelative).toBeLessThan(AUTODIFF_TOLERANCE);
  });

  it('features gradient matches tfjs autodiff', async () => {
    const logitsGrad = new Float32Array(IMAGES * onnx.numClasses);
    const featuresGrad = upstream(IMAGES * onnx.featureSize, 23);

    const expected = await tfjs.inputGradient(inputs, IMAGES, logitsGrad, featuresGrad);
    const actual = await onnx.inputGradient(inputs, IMAGES, logitsGrad, featuresGrad);

    expect(compareRows(actual, expected, IMAGES).maxRelative).toBeLessThan(AUTODIFF_TOLERANCE);
  });

  it('matches central finite differences', async () => {
    const errors = await finiteDifferenceErrors(onnx, inputs, IMAGES, IMAGE_SIZE);

    expect(Math.max(...errors)).toBeLessThan(FINITE_DIFFERENCE_TOLERANCE);
  });
});

describe.each(HEADS)('input gradient graph with dilation, %s head', (head) => {
  it('matches central finite differences', async () => {
    const synthetic = buildSyntheticModel(head);
    const network = await OnnxNetworkGradient.create(synthetic.loaded, resolveKeyLayers(synthetic.loaded.model, synthetic.keyLayers), 1);
    try {
      const size = SYNTHETIC_INPUT_SHAPE.reduce((product, dim) => product * dim, 1);
      const errors = await finiteDifferenceErrors(network, makeInputs(IMAGES, SYNTHETIC_INPUT_SHAPE), IMAGES, size);

      expect(Math.max(...errors)).toBeLessThan(FINITE_DIFFERENCE_TOLERANCE);
    } finally {
      await network.dispose();
      synthetic.loaded.model.dispose();
    }
  });
});

/** Error of a central difference (step 1e-3, float32 forward passes) relative to the gradient's norm. */
const FINITE_DIFFERENCE_TOLERANCE = 1e-2;

/**
 * For random upstream gradients, L(x) = logitsGrad·logits(x) + featuresGrad·features(x) has
 * exactly those upstream gradients, so its derivative along a unit direction d is g·d. Compares
 * that with a central difference along the gradient's own direction and along three random
 * directions, and returns |difference − g·d| / ‖g‖ for every image and direction.
 */
async function finiteDifferenceErrors(network: OnnxNetworkGradient, inputs: Float32Array, images: number, imageSize: number): Promise<number[]> {
  const { numClasses, featureSize } = network;
  const logitsGrad = upstream(images * numClasses, 5);
  const featuresGrad = upstream(images * featureSize, 7);
  const gradient = await network.inputGradient(inputs, images, logitsGrad, featuresGrad);
  const step = 1e-3;
  const errors: number[] = [];

  for (let image = 0; image < images; image += 1) {
    const g = gradient.subarray(image * imageSize, (image + 1) * imageSize);
    const norm = Math.hypot(...g);
    const directions = [Float64Array.from(g, (value) => value / norm), ...[31, 37, 41].map((seed) => unitVector(upstream(imageSize, seed + image)))];
    const probes = new Float32Array(2 * directions.length * imageSize);
    directions.forEach((direction, d) => {
      for (let p = 0; p < imageSize; p += 1) {
        probes[2 * d * imageSize + p] = inputs[image * imageSize + p] + step * direction[p];
        probes[(2 * d + 1) * imageSize + p] = inputs[image * imageSize + p] - step * direction[p];
      }
    });
    const outputs = await network.forward(probes, 2 * directions.length);
    const objective = (row: number): number => {
      let value = 0;
      for (let c = 0; c < numClasses; c += 1) value += logitsGrad[image * numClasses + c] * outputs.logits[row * numClasses + c];
      for (let f = 0; f < featureSize; f += 1) value += featuresGrad[image * featureSize + f] * outputs.features[row * featureSize + f];
      return value;
    };
    directions.forEach((direction, d) => {
      let expected = 0;
      for (let p = 0; p < imageSize; p += 1) expected += g[p] * direction[p];
      errors.push(Math.abs((objective(2 * d) - objective(2 * d + 1)) / (2 * step) - expected) / norm);
    });
  }
  return errors;
}

describe('TfjsNetworkGradient', () => {
  it('rejects padded average pooling', () => {
    const synthetic = buildSyntheticModel('dense-softmax');
    try {
      expect(() => new TfjsNetworkGradient(synthetic.loaded, resolveKeyLayers(synthetic.loaded.model, synthetic.keyLayers))).toThrow(/dilated convolution|average pooling with padding/);
    } finally {
      synthetic.loaded.model.dispose();
    }
  });
});

describe('exportGradientGraph', () => {
  it('rejects a key layer outside the model', () => {
    const synthetic = buildSyntheticModel('dense-softmax');
    try {
      expect(() => exportGradientGraph(synthetic.loaded.model, { keyLayers: [999] })).toThrow(/Key layer index 999 does not exist/);
    } finally {
      synthetic.loaded.model.dispose();
    }
  });
});

function unitVector(values: Float32Array): Float64Array {
  const norm = Math.hypot(...values);
  return Float64Array.from(values, (value) => value / norm);
}
