import { setTimeout as sleep } from 'node:timers/promises';

import cliProgress from 'cli-progress';

import type { ApiClient } from '../http/client/api-client.js';
import type { RunResponse } from '../http/runs/api-schemas.js';
import type { StageStatus } from '../http/runs/run-record.js';

/** States after which `status --watch` stops. `lost` is included: its jobs are gone, so it cannot move on. */
export const WATCH_END_STATES = new Set(['completed', 'failed', 'cancelled', 'lost']);

function stageLine(stage: StageStatus): string {
  const { jobs } = stage;
  return `${stage.name} ${jobs.completed}/${jobs.total} done, ${jobs.active} active, ${jobs.waiting} waiting, ${jobs.failed} failed`;
}

/** Formats a run for the terminal: id, kind, state, one line per stage, errors and where results are. */
export function formatRun(run: RunResponse): string {
  const lines = [`run ${run.runId} (${run.kind}): ${run.state}`];
  for (const stage of run.stages) lines.push(`  ${stageLine(stage)} (${(stage.progress * 100).toFixed(0)} %)`);
  for (const error of run.errors) lines.push(`  error ${error.code} in ${error.queue} job ${error.jobId}: ${error.message}`);
  if (run.kind === 'cache-build' && run.state === 'completed') lines.push(`  manifest: ${run.manifestKeys[0]} in ${run.storageUrl}`);
  if (run.links.report !== null) lines.push(`  report: cachefleet report ${run.runId}`);
  if (run.state === 'lost') lines.push('  Redis no longer has the jobs of this run; submit it again.');
  return lines.join('\n');
}

/**
 * Shows a run's stages while it is live. On a terminal each stage gets a cli-progress bar of
 * its jobs, counting completed jobs plus the progress of active ones. Elsewhere, such as in CI
 * logs and pipes, a line per stage is printed whenever the counts change.
 */
class RunProgressView {
  private readonly multibar: cliProgress.MultiBar | undefined;
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private lastLines = '';

  constructor(private readonly stream: NodeJS.WriteStream) {
    if (stream.isTTY === true) {
      this.multibar = new cliProgress.MultiBar(
        { format: ' {stage} |{bar}| {percentage}% | {counts}', hideCursor: true, clearOnComplete: false, stream, barsize: 30 },
        cliProgress.Presets.shades_classic,
      );
    }
  }

  update(run: RunResponse): void {
    if (this.multibar === undefined) {
      const lines = [`${run.runId}: ${run.state}`, ...run.stages.map((stage) => `  ${stageLine(stage)}`)].join('\n');
      if (lines !== this.lastLines) this.stream.write(`${lines}\n`);
      this.lastLines = lines;
      return;
    }

    for (const stage of run.stages) {
      // Bars count in thousandths of the stage, because progress includes fractions of active jobs.
      const payload = { stage: stage.name.padEnd(10), counts: `${stage.jobs.completed}/${stage.jobs.total} jobs, ${stage.jobs.active} active, ${stage.jobs.failed} failed` };
      let bar = this.bars.get(stage.name);
      if (bar === undefined) {
        bar = this.multibar.create(1000, 0, payload);
        this.bars.set(stage.name, bar);
      }
      bar.update(Math.round(stage.progress * 1000), payload);
    }
  }

  stop(): void {
    this.multibar?.stop();
  }
}

/** Polls a run every `intervalMs` until it reaches a state of WATCH_END_STATES, showing its progress on `stream`. */
export async function watchRun(client: ApiClient, runId: string, intervalMs: number, stream: NodeJS.WriteStream = process.stderr): Promise<RunResponse> {
  const view = new RunProgressView(stream);
  try {
    for (;;) {
      const run = await client.getRun(runId);
      view.update(run);
      if (WATCH_END_STATES.has(run.state)) return run;
      await sleep(intervalMs);
    }
  } finally {
    view.stop();
  }
}
