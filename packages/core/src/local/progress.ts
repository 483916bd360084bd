/** Receives per-stage progress of a run; the CLI draws one bar per stage from it. */
export interface ProgressSink {
  start(stage: string, total: number, unit: string): void;
  update(stage: string, done: number): void;
  finish(stage: string): void;
}

export const silentProgress: ProgressSink = {
  start: () => undefined,
  update: () => undefined,
  finish: () => undefined,
};

/** Times stages in milliseconds, for the report. */
export class StageTimer {
  readonly timingsMs: Record<string, number> = {};

  async time<T>(stage: string, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await work();
    } finally {
      this.timingsMs[stage] = Math.round(performance.now() - started);
    }
  }
}
