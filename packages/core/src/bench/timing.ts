/** Wall-clock durations of repeated runs of one operation, in milliseconds. */
export interface Timing {
  bestMs: number;
  medianMs: number;
  runs: number;
}

/**
 * Runs `operation` once to warm up, then `runs` times, and returns the best and median duration.
 * The best run is the figure least disturbed by other processes on a shared machine.
 */
export async function timeRuns(operation: () => Promise<unknown>, runs: number): Promise<Timing> {
  await operation();

  const durations: number[] = [];
  for (let run = 0; run < runs; run += 1) {
    const start = performance.now();
    await operation();
    durations.push(performance.now() - start);
  }

  durations.sort((a, b) => a - b);
  return { bestMs: durations[0], medianMs: durations[Math.floor(durations.length / 2)], runs };
}

/** Returns GFLOP/s of `flops` floating-point operations done in `milliseconds`. */
export function gflopsPerSecond(flops: number, milliseconds: number): number {
  return flops / (milliseconds * 1e6);
}
