import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** Validation grid of a report: accuracy[theta index][lambda index]. */
export interface GridData {
  thetas: number[];
  lambdas: number[];
  accuracy: number[][];
}

/** Name of the heatmap's cell layer; vega writes it into the SVG as the class `grid_cells_marks`. */
export const HEATMAP_CELL_LAYER = 'grid_cells';
/** Name of the layer that outlines the chosen cell; SVG class `chosen_cell_marks`. */
export const HEATMAP_CHOSEN_LAYER = 'chosen_cell';

const FONT = 'system-ui, sans-serif';

/**
 * Renders a Vega-Lite spec to an SVG string on the server: vega's SVG renderer needs no canvas
 * and no browser, and the page then needs no script to show the figure. Text widths are
 * estimated without a canvas, so labels may sit a few pixels off.
 */
export async function renderVegaLiteSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function percent(value: number): string {
  return `${(value * 100).toFixed(2)} %`;
}

/** Returns the index of `value` in `grid`, within a relative 1e-9 (the chosen θ is one of the grid's own numbers). */
function indexIn(grid: readonly number[], value: number): number {
  return grid.findIndex((item) => Math.abs(item - value) <= 1e-9 * Math.max(1, Math.abs(value)));
}

/**
 * Builds the heatmap of validation accuracy over the θ × λ grid: one cell per grid point, and
 * an outlined cell for the chosen (θ, λ) when it lies on the grid. Every cell carries an ARIA
 * label with its θ, λ and accuracy, which screen readers and the browser test read.
 */
export function heatmapSpec(grid: GridData, chosen: { theta: number; lambda: number } | undefined): TopLevelSpec {
  const chosenTheta = chosen === undefined ? -1 : indexIn(grid.thetas, chosen.theta);
  const chosenLambda = chosen === undefined ? -1 : indexIn(grid.lambdas, chosen.lambda);
  const values = grid.thetas.flatMap((theta, t) =>
    grid.lambdas.map((lambda, l) => ({
      theta,
      lambda,
      accuracy: grid.accuracy[t][l],
      chosen: t === chosenTheta && l === chosenLambda,
      label: `${t === chosenTheta && l === chosenLambda ? 'chosen: ' : ''}θ ${theta}, λ ${lambda}: validation accuracy ${percent(grid.accuracy[t][l])}`,
    })),
  );
  const cellSize = Math.max(6, Math.min(16, Math.floor(528 / Math.max(grid.thetas.length, grid.lambdas.length))));
  const position = {
    x: { field: 'lambda', type: 'ordinal', title: 'λ (cache weight)', axis: { format: '.3~f', labelOverlap: true, labelAngle: -45 } },
    y: { field: 'theta', type: 'ordinal', title: 'θ (cache sharpness)', sort: 'descending', axis: { format: '.3~f', labelOverlap: true } },
  } as const;

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Validation accuracy over the θ × λ grid', subtitle: chosen === undefined || chosenTheta === -1 || chosenLambda === -1 ? 'θ and λ were fixed, not chosen on this grid' : `chosen cell outlined: θ ${chosen.theta}, λ ${chosen.lambda}` },
    width: cellSize * grid.lambdas.length,
    height: cellSize * grid.thetas.length,
    config: { font: FONT, view: { stroke: null } },
    data: { values },
    layer: [
      {
        name: HEATMAP_CELL_LAYER,
        mark: { type: 'rect' },
        encoding: {
          ...position,
          color: { field: 'accuracy', type: 'quantitative', title: 'accuracy', scale: { scheme: 'viridis' }, legend: { format: '.1%' } },
          description: { field: 'label' },
        },
      },
      {
        name: HEATMAP_CHOSEN_LAYER,
        transform: [{ filter: 'datum.chosen' }],
        mark: { type: 'rect', filled: false, stroke: '#e4002b', strokeWidth: 3 },
        encoding: { ...position, description: { field: 'label' } },
      },
    ],
  };
}

/** Builds a grouped bar chart of per-class test accuracy of the three models; classes without test images are left out. */
export function perClassSpec(perClass: { classNames: string[]; baseline: Array<number | null>; cache: Array<number | null>; cacheOnly: Array<number | null> }): TopLevelSpec {
  const models = [
    { name: 'baseline', values: perClass.baseline },
    { name: 'cache', values: perClass.cache },
    { name: 'cache-only', values: perClass.cacheOnly },
  ];
  const values = perClass.classNames.flatMap((className, c) =>
    models.flatMap((model) => {
      const accuracy = model.values[c];
      if (accuracy === null || accuracy === undefined || !Number.isFinite(accuracy)) return [];
      return [{ class: className, model: model.name, accuracy, label: `class ${className}, ${model.name}: ${percent(accuracy)}` }];
    }),
  );

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Test accuracy per class',
    width: Math.max(300, perClass.classNames.length * 48),
    height: 220,
    config: { font: FONT },
    data: { values },
    mark: 'bar',
    encoding: {
      x: { field: 'class', type: 'nominal', title: null, sort: perClass.classNames, axis: { labelAngle: -30 } },
      xOffset: { field: 'model', type: 'nominal', sort: models.map((model) => model.name) },
      y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', axis: { format: '.0%' } },
      color: { field: 'model', type: 'nominal', sort: models.map((model) => model.name), scale: { scheme: 'tableau10' } },
      description: { field: 'label' },
    },
  };
}
