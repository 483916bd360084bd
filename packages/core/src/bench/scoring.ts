import { normalizeKeys } from '../cache/keys.js';
import { buildSimilarityModel, SIMILARITY_GRAPH_NAMES } from '../cache/onnx-graph.js';
import { DEFAULT_KEY_BLOCK_SIZE, DEFAULT_QUERY_BLOCK_SIZE, scoreAgainstCache } from '../cache/score-cache.js';
import { createCpuSession, createScoringEngine, loadOnnxRuntime } from '../cache/scoring-engine.js';
import { DEFAULT_THETAS } from '../cache/tuning.js';
import { measureNumpySgemm, NUMPY_PYTHON } from './numpy-sgemm.js';
import { gflopsPerSecond, timeRuns } from './timing.js';
import type { Benchmark, BenchmarkContext, BenchmarkMeasurement, BenchmarkResult } from './types.js';

/** Ratio of exact scoring to numpy's sgemm that the scoring engine aims at. */
export const TARGET_RATIO_TO_NUMPY = 0.7;

interface ScoringShape {
  numQueries: number;
  numKeys: number;
  dim: number;
  numClasses: number;
  runs: number;
}

// Full: the GEMM of the onnxruntime notes (2,000 × 12,288 by 12,288 × 10,000), dim 12,288 being
// three 8×8×64 ResNet activations. Quick: a few seconds in all, to check the harness.
const FULL_SHAPE: ScoringShape = { numQueries: 2000, numKeys: 10000, dim: 12288, numClasses: 10, runs: 3 };
const QUICK_SHAPE: ScoringShape = { numQueries: 256, numKeys: 2048, dim: 12288, numClasses: 10, runs: 2 };

function randomUnitRows(rows: number, dim: number): Float32Array {
  const features = new Float32Array(rows * dim);
  for (let index = 0; index < features.length; index += 1) {
    features[index] = Math.random() - 0.5;
  }
  normalizeKeys(features, rows, dim);
  return features;
}

/**
 * Measures exact scoring (every query against every key) in GFLOP/s of the similarity GEMM,
 * 2·Q·N·D operations, so that it compares with numpy's sgemm of the same product:
 * - onnxruntime's Gemm alone, one call over the whole shape;
 * - scoreAgainstCache with 1 theta and with the 33 thetas of DEFAULT_THETAS, default blocks;
 * - numpy's matmul in a /usr/bin/python3 subprocess with the same thread count.
 */
export const scoringBenchmark: Benchmark = {
  name: 'scoring',
  description: 'Exact cache scoring with onnxruntime against numpy sgemm',
  async run(context: BenchmarkContext): Promise<BenchmarkResult> {
    const shape = context.quick ? QUICK_SHAPE : FULL_SHAPE;
    const { numQueries, numKeys, dim, numClasses, runs } = shape;
    const flops = 2 * numQueries * numKeys * dim;
    const queries = randomUnitRows(numQueries, dim);
    const keys = randomUnitRows(numKeys, dim);
    const labels = Int32Array.from({ length: numKeys }, (_, index) => index % numClasses);
    const measurements: BenchmarkMeasurement[] = [];
    const details = [
      `shape: ${numQueries} queries × ${numKeys} keys, dim ${dim}, ${numClasses} classes; ${flops / 1e9} GFLOP per pass`,
      `blocks: ${DEFAULT_QUERY_BLOCK_SIZE} queries × ${DEFAULT_KEY_BLOCK_SIZE} keys; ${context.threads} threads; best of ${runs} runs after a warm-up run`,
    ];

    const ort = await loadOnnxRuntime();
    const gemmSession = await createCpuSession(ort, buildSimilarityModel(), context.threads);
    const gemmFeeds = {
      [SIMILARITY_GRAPH_NAMES.queries]: new ort.Tensor('float32', queries, [numQueries, dim]),
      [SIMILARITY_GRAPH_NAMES.keys]: new ort.Tensor('float32', keys, [numKeys, dim]),
    };
    const gemm = await timeRuns(() => gemmSession.run(gemmFeeds), runs);
    await gemmSession.release();
    measurements.push({ label: 'onnxruntime Gemm, one call', value: gflopsPerSecond(flops, gemm.bestMs), unit: 'GFLOP/s', note: `${gemm.bestMs.toFixed(0)} ms` });

    const engine = await createScoringEngine({ threads: context.threads });
    try {
      for (const thetas of [DEFAULT_THETAS.slice(0, 1), DEFAULT_THETAS]) {
        const score = () =>
          scoreAgainstCache(engine, { queries, numQueries, dim, numClasses, thetas, keyBlocks: [{ keys, labels, count: numKeys }] });
        const timing = await timeRuns(score, runs);
        measurements.push({
          label: `exact scoring, T = ${thetas.length}`,
          value: gflopsPerSecond(flops, timing.bestMs),
          unit: 'GFLOP/s',
          note: `${timing.bestMs.toFixed(0)} ms; ${((thetas.length * numQueries * numKeys) / (timing.bestMs * 1e6)).toFixed(2)} G exp/s`,
        });
      }
    } finally {
      await engine.dispose();
    }

    await addNumpyComparison(shape, context, measurements, details);
    return { name: this.name, measurements, details };
  },
};

async function addNumpyComparison(shape: ScoringShape, context: BenchmarkContext, measurements: BenchmarkMeasurement[], details: string[]): Promise<void> {
  const flops = 2 * shape.numQueries * shape.numKeys * shape.dim;
  let numpy;
  try {
    numpy = await measureNumpySgemm(shape.numQueries, shape.numKeys, shape.dim, shape.runs, context.threads);
  } catch (error) {
    details.push(
      `numpy comparison skipped: ${NUMPY_PYTHON} with numpy failed (${String(error).split('\n')[0]}). Install it with: apt-get install -y python3-numpy libopenblas0-pthread`,
    );
    return;
  }

  const numpyGflops = gflopsPerSecond(flops, numpy.bestMs);
  details.push(`numpy ${numpy.numpyVersion}, BLAS: ${numpy.blas}; OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for it`);
  if (!numpy.optimisedBlas) {
    details.push('WARNING: numpy does not use OpenBLAS, BLIS or MKL, so the ratios below compare with a slow reference BLAS.');
  }
  measurements.push({ label: 'numpy sgemm (q @ kᵀ)', value: numpyGflops, unit: 'GFLOP/s', note: `${numpy.bestMs.toFixed(0)} ms` });

  const engineMeasurements = measurements.filter((measurement) => measurement.unit === 'GFLOP/s' && !measurement.label.startsWith('numpy'));
  for (const measurement of engineMeasurements) {
    measurements.push({
      label: `ratio: ${measurement.label} / numpy`,
      value: measurement.value / numpyGflops,
      unit: '',
      note: measurement.label.startsWith('exact scoring') ? `target ≥ ${TARGET_RATIO_TO_NUMPY}` : undefined,
    });
  }
}
