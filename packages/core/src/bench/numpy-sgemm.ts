import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Debian's system interpreter, where `python3-numpy` and `libopenblas0-pthread` install. */
export const NUMPY_PYTHON = '/usr/bin/python3';

/**
 * Variables that tune OpenBLAS for another CPU. A machine may set them globally (for example
 * OPENBLAS_CORETYPE=Haswell, which limits OpenBLAS to AVX2 kernels), so they are removed from the
 * numpy subprocess only: numpy then runs the kernels OpenBLAS picks for this CPU.
 */
const OPENBLAS_OVERRIDES = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;

export interface NumpySgemmResult {
  numpyVersion: string;
  /** BLAS library numpy loaded, as threadpoolctl or numpy.show_config() reports it. */
  blas: string;
  /** True when the BLAS is OpenBLAS, BLIS or MKL; the reference BLAS is 10 to 50 times slower. */
  optimisedBlas: boolean;
  bestMs: number;
  medianMs: number;
}

// Times q @ kᵀ into a preallocated output, the same product as the similarity GEMM.
const SCRIPT = String.raw`
import contextlib, io, json, sys, time
import numpy as np
rows, cols, dim, runs = (int(value) for value in sys.argv[1:5])
blas = None
try:
    from threadpoolctl import threadpool_info
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    if pools:
        pool = pools[0]
        blas = "%s %s (%s, architecture %s, %s threads)" % (pool.get("internal_api"), pool.get("version"), pool.get("filepath"), pool.get("architecture"), pool.get("num_threads"))
except ImportError:
    pass
if blas is None:
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        np.show_config()
    names = [name for name in ("openblas", "blis", "mkl") if name in text.getvalue().lower()]
    blas = (names[0] if names else "unknown (not OpenBLAS, BLIS or MKL)") + " (from numpy.show_config)"
rng = np.random.default_rng(0)
queries = rng.standard_normal((rows, dim), dtype=np.float32)
keys = rng.standard_normal((cols, dim), dtype=np.float32)
out = np.empty((rows, cols), dtype=np.float32)
np.matmul(queries, keys.T, out=out)
durations = []
for _ in range(runs):
    start = time.perf_counter()
    np.matmul(queries, keys.T, out=out)
    durations.append((time.perf_counter() - start) * 1e3)
durations.sort()
print(json.dumps({"numpyVersion": np.__version__, "blas": blas, "bestMs": durations[0], "medianMs": durations[len(durations) // 2]}))
`;

/**
 * Times numpy's float32 matrix product [rows, dim] · [cols, dim]ᵀ in a `/usr/bin/python3`
 * subprocess with `threads` BLAS threads, as the reference for onnxruntime's GEMM.
 * Rejects when the interpreter or numpy is missing.
 */
export async function measureNumpySgemm(rows: number, cols: number, dim: number, runs: number, threads: number): Promise<NumpySgemmResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  for (const name of OPENBLAS_OVERRIDES) {
    delete env[name];
  }

  const { stdout } = await execFileAsync(NUMPY_PYTHON, ['-c', SCRIPT, String(rows), String(cols), String(dim), String(runs)], {
    env,
    timeout: 15 * 60 * 1000,
  });
  const parsed = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Omit<NumpySgemmResult, 'optimisedBlas'>;

  return { ...parsed, optimisedBlas: /openblas|blis|mkl/i.test(parsed.blas) };
}
