import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';

import type { FleetEvaluationReport, Logger } from '@cachefleet/core';

import { runIdParamsSchema } from '../runs/api-schemas.js';
import type { RunService } from '../runs/run-service.js';
import { heatmapSpec, perClassSpec, renderVegaLiteSvg } from './charts.js';
import { sendPage } from './html.js';
import { renderRunPage, type ReportFigures } from './run-page.js';
import { RUN_PAGE_SCRIPT } from './run-page-script.js';
import { renderRunsPage } from './runs-page.js';

// Rendered figures of completed evaluations, whose reports never change; about 300 kB of SVG
// each for the default 33 × 33 grid.
const MAX_CACHED_FIGURES = 32;

/** Renders the heatmap and the per-class chart of a report with vega-lite. */
export async function renderReportFigures(report: FleetEvaluationReport): Promise<ReportFigures> {
  const heatmapSvg = report.grid === null ? undefined : await renderVegaLiteSvg(heatmapSpec(report.grid, report.cache.tuned ? { theta: report.cache.theta, lambda: report.cache.lambda } : undefined));
  const perClassSvg = await renderVegaLiteSvg(perClassSpec(report.perClassAccuracy));
  return { heatmapSvg, perClassSvg };
}

/** Registers the browser pages: the run list at /, a page per run, and the run page's script. */
export function registerPageRoutes(app: FastifyInstance, runs: RunService, logger: Logger): void {
  const figures = new Map<string, ReportFigures>();
  const typed = app.withTypeProvider<ZodTypeProvider>();

  typed.get('/', { schema: { hide: true } }, async (_request, reply) => sendPage(reply, renderRunsPage(await runs.list({ limit: 200 }))));

  typed.get('/runs/:runId', { schema: { hide: true, params: runIdParamsSchema } }, async (request, reply) => {
    const record = await runs.get(request.params.runId);
    if (record.kind !== 'evaluation' || record.state !== 'completed') return sendPage(reply, renderRunPage(record));

    // Reports store NaN per-class accuracy (a class absent from the test slice) as null, so they are not parsed with the strict report schema.
    const report = (await runs.readReport(record.runId)) as FleetEvaluationReport;
    // A resubmitted run may get a new report, so the cache key includes the submission count.
    const cacheKey = `${record.runId}#${record.submissions}`;
    let rendered = figures.get(cacheKey);
    if (rendered === undefined) {
      const started = performance.now();
      rendered = await renderReportFigures(report);
      logger.debug({ runId: record.runId, durationMs: Math.round(performance.now() - started) }, 'report figures rendered');
      if (figures.size >= MAX_CACHED_FIGURES) figures.delete(figures.keys().next().value!);
      figures.set(cacheKey, rendered);
    }
    return sendPage(reply, renderRunPage(record, { report, figures: rendered }));
  });

  app.get('/assets/run-page.js', { schema: { hide: true } }, async (_request, reply) =>
    reply.header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').type('text/javascript; charset=utf-8').send(RUN_PAGE_SCRIPT),
  );
}
