import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';

/** Debian's system interpreter, where `python3-numpy` and `libopenblas0-pthread` install. */
export const NUMPY_PYTHON = '/usr/bin/python3';

/**
 * Variables that tune OpenBLAS for another CPU. A machine may set them globally (for example
 * OPENBLAS_CORETYPE=Haswell, which limits OpenBLAS to AVX2 kernels), so they are removed from the
 * numpy subprocess only: numpy then runs the kernels OpenBLAS picks for this CPU.
 */
const OPENBLAS_OVERRIDES = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;

/** Time allowed for numpy to start and allocate, or for one product, before giving up. */
const RESPONSE_TIMEOUT_MS = 10 * 60 * 1000;

export interface NumpyInfo {
  numpyVersion: string;
  /** BLAS library numpy loaded, as threadpoolctl or numpy.show_config() reports it. */
  blas: string;
  /** True for OpenBLAS, BLIS or MKL. The reference BLAS is many times slower. */
  optimisedBlas: boolean;
}

// Prints one JSON line with the versions, then times q @ kᵀ into a preallocated output once per
// "run" line on stdin and prints the milliseconds, so that runs interleave with other engines.
const SCRIPT = String.raw`
import contextlib, io, json, sys, time
import numpy as np
rows, cols, dim = (int(value) for value in sys.argv[1:4])
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
print(json.dumps({"numpyVersion": np.__version__, "blas": blas}), flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    np.matmul(queries, keys.T, out=out)
    print((time.perf_counter() - start) * 1e3, flush=True)
`;

/**
 * A `/usr/bin/python3` subprocess with random float32 matrices [rows, dim] and [cols, dim] that
 * times numpy's product of the first with the second transposed on request.
 */
export class NumpySgemm {
  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly lines: AsyncIterator<string>,
    private readonly reader: Interface,
    readonly info: NumpyInfo,
  ) {}

  /**
   * Starts the subprocess with `threads` BLAS threads and waits until it has run one warm-up
   * product. Rejects when the interpreter or numpy is missing.
   */
  static async start(rows: number, cols: number, dim: number, threads: number): Promise<NumpySgemm> {
    const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
    for (const name of OPENBLAS_OVERRIDES) {
      delete env[name];
    }

    const child = spawn(NUMPY_PYTHON, ['-c', SCRIPT, String(rows), String(cols), String(dim)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<never>((_, reject) => {
      child.on('error', reject);
      child.on('exit', (code) => reject(new Error(`${NUMPY_PYTHON} exited with code ${code}: ${stderr.trim().split('\n').pop() ?? ''}`)));
    });
    exited.catch(() => undefined);

    const reader = createInterface({ input: child.stdout });
    const lines = reader[Symbol.asyncIterator]();
    const first = await Promise.race([nextLine(lines), exited]);
    const parsed = JSON.parse(first) as Omit<NumpyInfo, 'optimisedBlas'>;

    return new NumpySgemm(child, lines, reader, { ...parsed, optimisedBlas: /openblas|blis|mkl/i.test(parsed.blas) });
  }

  /** Runs one product and returns its duration in milliseconds, timed inside Python. */
  async timeOnce(): Promise<number> {
    this.child.stdin.write('run\n');
    return Number(await nextLine(this.lines));
  }

  /** Ends the subprocess by closing its input. */
  close(): void {
    this.reader.close();
    this.child.stdin.end();
  }
}

async function nextLine(lines: AsyncIterator<string>): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`numpy gave no output within ${RESPONSE_TIMEOUT_MS / 1000} s`)), RESPONSE_TIMEOUT_MS);
  });

  try {
    const result = await Promise.race([lines.next(), timeout]);
    if (result.done === true) {
      throw new Error('numpy closed its output early');
    }
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}
