import type { RunRecord } from '../runs/run-record.js';
import { escapeHtml, renderPage } from './html.js';

/** Formats stages as `extract 4/4, merge 0/1`: completed jobs of the known total. */
export function summarizeStages(record: RunRecord): string {
  return record.stages.map((stage) => `${stage.name} ${stage.jobs.completed}/${stage.jobs.total}`).join(', ');
}

/** Renders the list of runs, newest first, with links to their pages and to the queue dashboard. */
export function renderRunsPage(records: RunRecord[]): string {
  const rows = records.map((record) => {
    const id = escapeHtml(record.runId);
    const state = escapeHtml(record.state);
    return `<tr data-run-id="${id}">
  <td><a href="/runs/${id}"><code>${id}</code></a></td>
  <td>${escapeHtml(record.kind)}</td>
  <td><span class="state state-${state}">${state}</span></td>
  <td>${escapeHtml(summarizeStages(record))}</td>
  <td>${escapeHtml(record.createdAt)}</td>
  <td>${escapeHtml(record.updatedAt)}</td>
</tr>`;
  });
  const table =
    records.length === 0
      ? '<p>No runs yet. Submit one with <code>cachefleet submit cache-build</code> or <code>cachefleet submit evaluate</code>.</p>'
      : `<table id="runs">
<thead><tr><th>run</th><th>kind</th><th>state</th><th>completed jobs per stage</th><th>submitted</th><th>updated</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`;
  return renderPage({
    title: 'Runs',
    body: `<h1>Runs</h1>
<p>The <a href="/queues">queue dashboard</a> shows every job of the fleet; the <a href="/docs">API reference</a> lists the endpoints.</p>
${table}`,
  });
}
