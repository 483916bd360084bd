import type { RobustnessReport } from './aggregate.js';

const MODEL_LABELS = { baseline: 'baseline ResNet', cache: 'cache model', cacheOnly: 'cache-only model' } as const;
const ATTACK_LABELS = { fgsm: 'FGSM', 'iterative-fgsm': 'iterative FGSM (10 steps)' } as const;
const SETTING_LABELS = { transfer: 'transfer (made on the baseline)', 'white-box': 'white-box (made on each model)' } as const;

/**
 * Returns a Vega-Lite specification of accuracy under attack against the ε budget, one panel per
 * gradient attack and setting, one line per model. The data are inline, so rendering needs no
 * file or network access. ε is on a log axis because the models change most below ε = 0.05.
 */
export function robustnessPlotSpec(report: RobustnessReport): Record<string, unknown> {
  const values = report.curves.flatMap((curve) =>
    curve.epsilons.map((epsilon, j) => ({
      setting: SETTING_LABELS[curve.setting],
      attack: ATTACK_LABELS[curve.attack],
      model: MODEL_LABELS[curve.model],
      images: curve.images,
      epsilon,
      accuracy: curve.accuracy[j],
    })),
  );

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `Accuracy under attack against the ε budget (test subset of ${report.subset.size} images, seed ${report.subset.seed})`,
      subtitle: [
        'An image counts as correct at ε when the model classifies it and every attack image up to ε correctly.',
        `Transfer panels: the first ${report.settings.sweepImages} images of the subset; white-box panels: the first ${report.settings.whiteBoxImages}.`,
      ],
    },
    data: { values },
    facet: {
      row: { field: 'setting', type: 'nominal', title: null, sort: Object.values(SETTING_LABELS) },
      column: { field: 'attack', type: 'nominal', title: null, sort: Object.values(ATTACK_LABELS) },
    },
    spec: {
      width: 300,
      height: 200,
      mark: { type: 'line', point: { size: 12 } },
      encoding: {
        x: { field: 'epsilon', type: 'quantitative', scale: { type: 'log' }, title: 'ε (fraction of the input range, log scale)' },
        y: { field: 'accuracy', type: 'quantitative', scale: { domain: [0, 1] }, title: 'accuracy under attack' },
        color: { field: 'model', type: 'nominal', title: 'model', sort: Object.values(MODEL_LABELS) },
        tooltip: [{ field: 'model' }, { field: 'epsilon', format: '.3f' }, { field: 'accuracy', format: '.3f' }, { field: 'images' }],
      },
    },
    resolve: { scale: { x: 'independent' } },
  };
}
