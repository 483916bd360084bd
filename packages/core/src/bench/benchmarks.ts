import { extractionBenchmark } from './extraction.js';
import { scoringBenchmark } from './scoring.js';
import type { Benchmark } from './types.js';

/**
 * Benchmarks that `npm run bench` runs, in this order. To add one, implement Benchmark in its
 * own file of this folder and append it here.
 */
export const BENCHMARKS: readonly Benchmark[] = [extractionBenchmark, scoringBenchmark];
