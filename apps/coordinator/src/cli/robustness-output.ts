import Table from 'cli-table3';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

import { robustnessPlotSpec, type Quantiles, type RobustnessReport } from '@cachefleet/core';

/**
 * Renders the report's accuracy-against-ε plot to SVG with Vega-Lite and Vega's headless view.
 * The data are inline in the spec, so nothing is loaded from files or the network.
 */
export async function renderRobustnessSvg(report: RobustnessReport): Promise<string> {
  const compiled = compile(robustnessPlotSpec(report) as unknown as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function percent(value: number | null): string {
  return value === null ? '—' : `${(value * 100).toFixed(1)} %`;
}

function spread(quantiles: Quantiles, digits: number): string {
  if (quantiles.count === 0) return '—';
  const format = (value: number | null) => (value === null ? '—' : value.toFixed(digits));
  return `${format(quantiles.p05)} / ${format(quantiles.median)} / ${format(quantiles.p95)}`;
}

const MODEL_LABELS = { baseline: 'baseline', cache: 'cache', cacheOnly: 'cache-only' } as const;

function verdict(moreRobust: boolean | null): string {
  if (moreRobust === null) return '—';
  return moreRobust ? 'yes' : 'no';
}

/** Formats the report as terminal tables: clean accuracy, each attack, and the robustness comparisons. */
export function formatRobustnessTables(report: RobustnessReport): string {
  const attacks = new Table({
    head: ['setting', 'attacked', 'attack', 'images', 'found', 'baseline acc.', 'cache acc.', 'cache-only acc.', '‖δ‖/‖x‖ p5 / median / p95', 'strength median'],
  });
  for (const row of report.attacks) {
    attacks.push([
      row.setting,
      MODEL_LABELS[row.attacked],
      row.attack,
      String(row.images),
      String(row.found),
      percent(row.accuracy.baseline),
      percent(row.accuracy.cache),
      percent(row.accuracy.cacheOnly),
      spread(row.perturbation, 4),
      row.strength.median === null ? '—' : `${Number(row.strength.median.toFixed(4))} (${row.strengthUnit})`,
    ]);
  }

  const comparisons = new Table({ head: ['setting', 'attack', 'model', 'metric', 'baseline', 'model value', 'more robust'] });
  for (const row of report.comparisons) {
    const format = (value: number | null) => (value === null ? '—' : value.toFixed(4));
    comparisons.push([row.setting, row.attack, MODEL_LABELS[row.model], row.metric, format(row.baseline), format(row.value), verdict(row.moreRobust)]);
  }

  const clean = report.clean.accuracy;
  return [
    `subset: ${report.subset.size} test images, seed ${report.subset.seed}; clean accuracy: baseline ${percent(clean.baseline)}, cache ${percent(clean.cache)}, cache-only ${percent(clean.cacheOnly)}`,
    'Accuracy on the adversarial images found (true labels):',
    attacks.toString(),
    'Is each cache model more robust than the baseline?',
    comparisons.toString(),
    `time per part (s): ${Object.entries(report.timingsMs)
      .map(([part, ms]) => `${part} ${(ms / 1000).toFixed(1)}`)
      .join(', ')}`,
  ].join('\n');
}
