import { describe, expect, it } from 'vitest';

import { aggregateRobustness, quantiles, type RobustnessContext } from './aggregate.js';
import { cacheParametersSchema, robustnessSettingsSchema, type AttackRecord, type ImageRecord, type SliceResult } from './schemas.js';
import { pickSubset } from './subset.js';

const context: RobustnessContext = {
  model: { source: 'model.h5', fingerprint: 'f', fileSha256: 'a'.repeat(64), keyLayers: ['k'] },
  cache: { keys: 10, stores: ['s'] },
  preprocessing: { hash: 'h', description: 'd' },
  dataset: { name: 'cifar10', dir: '/data', testFingerprint: 't' },
  runner: 'local',
};
const settings = robustnessSettingsSchema.parse({ images: 4, singlePixelImages: 0, whiteBoxImages: 2, sweepImages: 2, sliceSize: 2, fgsm: { count: 5 }, iterativeFgsm: { count: 5 }, blur: { count: 5 } });
const parameters = cacheParametersSchema.parse({});
const subset = pickSubset(100, 4, 5);

function record(overrides: Partial<AttackRecord>): AttackRecord {
  return { setting: 'transfer', attacked: 'baseline', attack: 'fgsm', found: false, strength: null, gridIndex: null, perturbation: null, predictions: null, ...overrides };
}

/** Four images with label 0; image 3 is misclassified by the baseline. */
function image(position: number): ImageRecord {
  const found = position < 3;
  return {
    position,
    record: subset.indices[position],
    label: 0,
    clean: { baseline: position === 3 ? 1 : 0, cache: 0, cacheOnly: 0 },
    attacks: [
      record({ found, strength: found ? 0.1 * (position + 1) : null, gridIndex: found ? position : null, perturbation: found ? 0.01 * (position + 1) : null, predictions: found ? { baseline: 1, cache: position === 0 ? 1 : 0, cacheOnly: 0 } : null }),
      ...(position < 2 ? [record({ setting: 'white-box', attacked: 'cache', found: true, strength: 0.2, gridIndex: 1, perturbation: 0.05, predictions: { baseline: 1, cache: 1, cacheOnly: 1 } })] : []),
    ],
    sweeps: position < 2 ? [{ attack: 'fgsm', firstError: { baseline: position, cache: null, cacheOnly: 3 } }] : [],
  };
}

function slices(images: ImageRecord[]): SliceResult[] {
  return [
    { positions: { start: 0, end: 2 }, images: images.slice(0, 2), timingsMs: { clean: 5 }, engines: { gradient: 'g', readout: 'r' } },
    { positions: { start: 2, end: 4 }, images: images.slice(2), timingsMs: { clean: 7 }, engines: { gradient: 'g', readout: 'r' } },
  ];
}

describe('quantiles', () => {
  it('interpolates like numpy', () => {
    // numpy.quantile([1, 2, 3, 4, 10], [0.05, 0.25, 0.5, 0.75, 0.95]) = [1.2, 2, 3, 4, 8.8].
    const result = quantiles([10, 2, 4, 1, 3]);

    expect([result.p05, result.p25, result.median, result.p75, result.p95].map((value) => Number(value!.toFixed(10)))).toEqual([1.2, 2, 3, 4, 8.8]);
  });

  it('returns nulls for no values', () => {
    expect(quantiles([]).median).toBeNull();
  });
});

describe('aggregateRobustness', () => {
  const images = [0, 1, 2, 3].map(image);
  const report = aggregateRobustness({ context, parameters, settings, subset, slices: slices(images) });
  const transfer = report.attacks.find((row) => row.setting === 'transfer' && row.attack === 'fgsm')!;

  it('counts adversarial images found', () => {
    expect([transfer.images, transfer.found]).toEqual([4, 3]);
  });

  it('scores models on the adversarial images', () => {
    expect(transfer.accuracy).toEqual({ baseline: 0, cache: 2 / 3, cacheOnly: 1 });
  });

  it('reports clean accuracy', () => {
    expect(report.clean.accuracy).toEqual({ baseline: 0.75, cache: 1, cacheOnly: 1 });
  });

  it('summarises perturbation sizes', () => {
    expect(transfer.perturbation.median).toBeCloseTo(0.02, 12);
  });

  it('keeps every image record', () => {
    expect(report.images?.map((entry) => entry.position)).toEqual([0, 1, 2, 3]);
  });

  it('adds sums of part timings', () => {
    expect(report.timingsMs.clean).toBe(12);
  });

  it('builds transfer curves from the sweeps', () => {
    const baseline = report.curves.find((curve) => curve.setting === 'transfer' && curve.attack === 'fgsm' && curve.model === 'baseline')!;
    const cacheOnly = report.curves.find((curve) => curve.setting === 'transfer' && curve.attack === 'fgsm' && curve.model === 'cacheOnly')!;

    expect(baseline.accuracy).toEqual([0.5, 0, 0, 0, 0]);
    expect(cacheOnly.accuracy).toEqual([1, 1, 1, 0, 0]);
  });

  it('builds white-box curves from the searches', () => {
    const cache = report.curves.find((curve) => curve.setting === 'white-box' && curve.attack === 'fgsm' && curve.model === 'cache')!;

    expect(cache.accuracy).toEqual([1, 0, 0, 0, 0]);
  });

  it('states the transfer comparison', () => {
    const comparison = report.comparisons.find((row) => row.setting === 'transfer' && row.attack === 'fgsm' && row.model === 'cache')!;

    expect([comparison.baseline, comparison.value, comparison.moreRobust]).toEqual([0, 2 / 3, true]);
  });

  it('rejects a missing slice', () => {
    expect(() => aggregateRobustness({ context, parameters, settings, subset, slices: slices(images).slice(0, 1) })).toThrow(/cover 2 positions \(2 missing, first 2, 0 repeated\)/);
  });

  it('rejects a repeated slice', () => {
    const [first, second] = slices(images);

    expect(() => aggregateRobustness({ context, parameters, settings, subset, slices: [first, second, first] })).toThrow(/0 missing, 2 repeated/);
  });

  it('rejects records of another subset', () => {
    const shifted = images.map((entry) => ({ ...entry, record: entry.record + 1 }));

    expect(() => aggregateRobustness({ context, parameters, settings, subset, slices: slices(shifted) })).toThrow(/Position 0 holds test record/);
  });
});
