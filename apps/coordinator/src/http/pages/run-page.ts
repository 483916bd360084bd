import type { FleetEvaluationReport } from '@cachefleet/core';

import type { RunRecord, StageStatus } from '../runs/run-record.js';
import { escapeHtml, renderPage } from './html.js';

/** Figures of a completed evaluation, rendered to SVG by `renderReportFigures`. */
export interface ReportFigures {
  heatmapSvg: string | undefined;
  perClassSvg: string;
}

function percent(value: number | null | undefined): string {
  return value === null || value === undefined || !Number.isFinite(value) ? '—' : `${(value * 100).toFixed(2)} %`;
}

function renderStageRow(stage: StageStatus): string {
  const { jobs } = stage;
  const name = escapeHtml(stage.name);
  return `<tr data-stage="${name}">
  <th scope="row">${name}</th>
  <td><progress data-field="progress" max="1" value="${stage.progress.toFixed(4)}"></progress> <span data-field="percent">${(stage.progress * 100).toFixed(0)} %</span></td>
  <td class="number" data-field="total">${jobs.total}</td>
  <td class="number" data-field="waiting">${jobs.waiting}</td>
  <td class="number" data-field="active">${jobs.active}</td>
  <td class="number" data-field="completed">${jobs.completed}</td>
  <td class="number" data-field="failed">${jobs.failed}</td>
</tr>`;
}

function renderStages(record: RunRecord): string {
  if (record.stages.length === 0) return '<p>No job of this run was seen in Redis yet.</p>';
  return `<table id="stages">
<thead><tr><th>stage</th><th>progress</th><th>jobs</th><th>waiting</th><th>active</th><th>completed</th><th>failed</th></tr></thead>
<tbody>
${record.stages.map(renderStageRow).join('\n')}
</tbody>
</table>`;
}

function renderErrors(record: RunRecord): string {
  if (record.errors.length === 0) return '';
  const items = record.errors.map((error) => `<li><strong>${escapeHtml(error.code)}</strong> in job <code>${escapeHtml(error.jobId)}</code> (${escapeHtml(error.queue)}, ${error.attemptsMade} attempts): ${escapeHtml(error.message)}</li>`);
  return `<h2>Errors</h2><ul class="error" id="errors">${items.join('\n')}</ul>`;
}

function renderLocations(record: RunRecord): string {
  const rows = [
    ['storage', record.storageUrl],
    ...record.manifestKeys.map((key) => ['manifest', key]),
    ...(record.reportKey === null ? [] : [['report', record.reportKey]]),
  ];
  const links = [`<a href="/api/v1/runs/${escapeHtml(record.runId)}">run as JSON</a>`];
  if (record.kind === 'evaluation' && record.state === 'completed') links.push(`<a href="/api/v1/runs/${escapeHtml(record.runId)}/report">report as JSON</a>`);
  return `<h2>Locations</h2>
<table><tbody>${rows.map(([what, where]) => `<tr><th scope="row">${escapeHtml(what)}</th><td><code>${escapeHtml(where)}</code></td></tr>`).join('')}</tbody></table>
<p>${links.join(' · ')}</p>`;
}

function renderResultTable(report: FleetEvaluationReport): string {
  const row = (model: string, testError: number, theta: string, lambda: string, validation: number | null) =>
    `<tr><th scope="row">${escapeHtml(model)}</th><td class="number">${percent(testError)}</td><td class="number">${escapeHtml(theta)}</td><td class="number">${escapeHtml(lambda)}</td><td class="number">${percent(validation)}</td></tr>`;
  return `<table id="result">
<thead><tr><th>model</th><th>test error</th><th>θ</th><th>λ</th><th>validation accuracy</th></tr></thead>
<tbody>
${row('baseline (λ = 0)', report.baseline.testError, '—', '0', report.baseline.validationAccuracy)}
${row(`cache${report.cache.tuned ? ' (tuned)' : ' (fixed)'}`, report.cache.testError, String(report.cache.theta), String(report.cache.lambda), report.cache.validationAccuracy)}
${row(`cache-only (λ = 1)${report.cacheOnly.tuned ? ' (tuned)' : ' (fixed)'}`, report.cacheOnly.testError, String(report.cacheOnly.theta), '1', report.cacheOnly.validationAccuracy)}
</tbody>
</table>`;
}

function renderComposition(report: FleetEvaluationReport): string {
  const composition = report.manifest.cacheComposition;
  const segments = composition.segments.map(
    (segment) =>
      `<tr><td>${escapeHtml(segment.role)}</td><td>${escapeHtml(segment.dataset)} ${escapeHtml(segment.split)}</td><td class="number">${segment.recordRange.start}–${segment.recordRange.end}</td><td>${segment.includesMirrors ? 'yes' : 'no'}</td><td class="number">${segment.shards}</td><td class="number">${segment.keys}</td><td class="number">${segment.zeroKeys}</td><td>${segment.reused ? 'yes' : 'no'}</td></tr>`,
  );
  const parts = [`test: ${composition.test.queries} queries against ${composition.test.keys} keys`];
  if (composition.validation !== null) parts.unshift(`validation: ${composition.validation.queries} queries against ${composition.validation.keys} keys`);
  return `<h2>Cache composition</h2>
<p>${escapeHtml(parts.join('; '))}. Key dimension ${report.manifest.keyDim} from layers ${escapeHtml(report.manifest.keyLayers.map((layer) => layer.name).join(', '))}.</p>
<table id="composition">
<thead><tr><th>role</th><th>split</th><th>records</th><th>mirrors</th><th>shards</th><th>keys</th><th>all-zero keys</th><th>reused</th></tr></thead>
<tbody>${segments.join('\n')}</tbody>
</table>`;
}

function renderTimings(report: FleetEvaluationReport): string {
  const rows = Object.entries(report.manifest.timingsMs).map(([stage, ms]) => `<tr><th scope="row">${escapeHtml(stage)}</th><td class="number">${(ms / 1000).toFixed(1)} s</td></tr>`);
  return `<h2>Timings</h2>
<p>Scoring times are the sum over evaluate jobs, which run in parallel on the workers.</p>
<table id="timings"><tbody>${rows.join('\n')}</tbody></table>
<p>Model <code>${escapeHtml(report.manifest.model.source)}</code>, extraction ${escapeHtml(report.manifest.extractionEngine)}, scoring ${escapeHtml(report.manifest.scoringEngine)}.</p>`;
}

function renderReport(report: FleetEvaluationReport, figures: ReportFigures): string {
  const heatmap =
    figures.heatmapSvg === undefined
      ? '<p>No validation grid: θ, λ and the cache-only θ were all fixed.</p>'
      : `<div class="figure" id="heatmap">${figures.heatmapSvg}</div>
<p>Chosen: θ = ${escapeHtml(report.cache.theta)}, λ = ${escapeHtml(report.cache.lambda)} (highest validation accuracy; ties go to the lowest θ, then the lowest λ). Cache-only θ = ${escapeHtml(report.cacheOnly.theta)}.</p>`;
  return `<section id="report">
<h2>Result</h2>
${renderResultTable(report)}
<h2>Validation grid</h2>
${heatmap}
<h2>Per-class accuracy</h2>
<div class="figure" id="per-class">${figures.perClassSvg}</div>
${renderComposition(report)}
${renderTimings(report)}
</section>`;
}

/**
 * Renders the run page: state, a progress bar per stage (refreshed by /assets/run-page.js
 * while the run is live), errors, locations and, for a completed evaluation, the report.
 */
export function renderRunPage(record: RunRecord, report?: { report: FleetEvaluationReport; figures: ReportFigures }): string {
  const state = escapeHtml(record.state);
  const cancel = record.cancelRequestedAt === null ? '' : ` Cancellation requested at ${escapeHtml(record.cancelRequestedAt)}.`;
  return renderPage({
    title: `Run ${record.runId}`,
    scripts: ['/assets/run-page.js'],
    body: `<div id="run" data-run-id="${escapeHtml(record.runId)}" data-state="${state}">
<h1>${escapeHtml(record.kind === 'cache-build' ? 'Cache build' : 'Evaluation')} <code>${escapeHtml(record.runId)}</code></h1>
<p>State: <span id="run-state" class="state state-${state}">${state}</span>. Submitted ${escapeHtml(record.createdAt)}${record.submissions > 1 ? ` (${record.submissions} submissions)` : ''}; updated <span id="run-updated">${escapeHtml(record.updatedAt)}</span>.${cancel}</p>
<h2>Stages</h2>
${renderStages(record)}
${renderErrors(record)}
${report === undefined ? '' : renderReport(report.report, report.figures)}
${renderLocations(record)}
</div>`,
  });
}
