import Table from 'cli-table3';

import type { EvaluationReport } from '@cachefleet/core';

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(2)} %`;
}

/** Formats the test errors of the three models as a terminal table. */
export function formatResultTable(report: EvaluationReport): string {
  const table = new Table({ head: ['model', 'test error', 'θ', 'λ', 'validation accuracy'] });
  const validation = (value: number | null): string => (value === null ? '—' : percent(value));

  table.push(
    ['baseline (λ = 0)', percent(report.baseline.testError), '—', '0', validation(report.baseline.validationAccuracy)],
    [
      `cache${report.cache.tuned ? ' (tuned)' : ''}`,
      percent(report.cache.testError),
      report.cache.theta.toFixed(4),
      report.cache.lambda.toFixed(4),
      validation(report.cache.validationAccuracy),
    ],
    [
      `cache-only (λ = 1)${report.cacheOnly.tuned ? ' (tuned)' : ''}`,
      percent(report.cacheOnly.testError),
      report.cacheOnly.theta.toFixed(4),
      '1',
      validation(report.cacheOnly.validationAccuracy),
    ],
  );

  const composition = report.manifest.cacheComposition;
  const lines = [
    table.toString(),
    `test queries: ${composition.test.queries}, cache keys: ${composition.test.keys}, key dimension: ${report.manifest.keyDim}`,
    `extraction: ${report.manifest.extractionEngine}, scoring: ${report.manifest.scoringEngine}`,
    `time per stage (s): ${Object.entries(report.manifest.timingsMs)
      .map(([stage, ms]) => `${stage} ${(ms / 1000).toFixed(1)}`)
      .join(', ')}`,
  ];
  return lines.join('\n');
}
