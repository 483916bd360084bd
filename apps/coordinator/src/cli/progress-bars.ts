import cliProgress from 'cli-progress';

import type { ProgressSink } from '@cachefleet/core';

/**
 * Draws one progress bar per stage on stderr. When stderr is not a terminal (CI logs, pipes),
 * the bars are off and only the log lines remain.
 */
export function createProgressBars(enabled = process.stderr.isTTY === true): ProgressSink & { stop(): void } {
  if (!enabled) {
    return { start: () => undefined, update: () => undefined, finish: () => undefined, stop: () => undefined };
  }

  const multibar = new cliProgress.MultiBar(
    {
      format: ' {stage} |{bar}| {value}/{total} {unit} | {percentage}% | {duration_formatted} elapsed, ETA {eta_formatted}',
      hideCursor: true,
      clearOnComplete: false,
      stream: process.stderr,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, cliProgress.SingleBar>();

  return {
    start(stage, total, unit) {
      bars.set(stage, multibar.create(total, 0, { stage: stage.padEnd(24), unit }));
    },
    update(stage, done) {
      bars.get(stage)?.update(done);
    },
    finish(stage) {
      const bar = bars.get(stage);
      if (bar !== undefined) bar.update(bar.getTotal());
    },
    stop() {
      multibar.stop();
    },
  };
}
