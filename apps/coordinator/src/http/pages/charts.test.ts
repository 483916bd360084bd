import { describe, expect, it } from 'vitest';

import { linspace } from '@cachefleet/core';

import { HEATMAP_CELL_LAYER, HEATMAP_CHOSEN_LAYER, heatmapSpec, perClassSpec, renderVegaLiteSvg } from './charts.js';

/** Returns the `<path>` elements of the SVG group of a named vega-lite layer; vega writes an empty group as `<g …/>`. */
function pathsOfLayer(svg: string, layer: string): string[] {
  const group = new RegExp(`<g class="mark-rect role-mark ${layer}_marks"[^>]*?(?:/>|>([\\s\\S]*?)</g>)`).exec(svg);
  if (group === null) throw new Error(`The SVG has no group of layer ${layer}.`);
  return (group[1] ?? '').match(/<path [^>]*>/g) ?? [];
}

function grid(thetaCount: number, lambdaCount: number) {
  const thetas = linspace(10, 90, thetaCount);
  const lambdas = linspace(0.1, 0.9, lambdaCount);
  const accuracy = thetas.map((_, t) => lambdas.map((_, l) => 0.5 + ((t * lambdaCount + l) % 7) / 100));
  return { thetas, lambdas, accuracy };
}

describe('heatmap', () => {
  it('draws one cell per grid point', async () => {
    const data = grid(33, 33);

    const svg = await renderVegaLiteSvg(heatmapSpec(data, { theta: data.thetas[5], lambda: data.lambdas[7] }));

    expect(pathsOfLayer(svg, HEATMAP_CELL_LAYER)).toHaveLength(33 * 33);
  });

  it('outlines the chosen cell', async () => {
    const data = grid(33, 33);

    const svg = await renderVegaLiteSvg(heatmapSpec(data, { theta: data.thetas[5], lambda: data.lambdas[7] }));
    const chosen = pathsOfLayer(svg, HEATMAP_CHOSEN_LAYER);

    expect(chosen).toHaveLength(1);
    expect(chosen[0]).toContain(`aria-label="chosen: θ ${data.thetas[5]}, λ ${data.lambdas[7]}: validation accuracy`);
  });

  it('marks no cell for values off the grid', async () => {
    const data = grid(5, 3);

    const svg = await renderVegaLiteSvg(heatmapSpec(data, { theta: 11, lambda: 0.5 }));

    expect(pathsOfLayer(svg, HEATMAP_CELL_LAYER)).toHaveLength(15);
    expect(pathsOfLayer(svg, HEATMAP_CHOSEN_LAYER)).toHaveLength(0);
  });
});

describe('per-class chart', () => {
  it('leaves out classes without test images', async () => {
    const svg = await renderVegaLiteSvg(perClassSpec({ classNames: ['cat', 'dog'], baseline: [0.5, null], cache: [0.75, null], cacheOnly: [0.25, null] }));
    const bars = svg.match(/<path [^>]*aria-label="class [^"]*"/g) ?? [];

    expect(bars).toHaveLength(3);
    expect(svg).toContain('aria-label="class cat, cache: 75.00 %"');
  });
});
