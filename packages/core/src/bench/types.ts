/** Settings shared by every benchmark of one `npm run bench` invocation. */
export interface BenchmarkContext {
  /** Small shapes that finish in seconds, for checking the harness rather than the machine. */
  quick: boolean;
  /** Intra-op threads for onnxruntime and BLAS threads for numpy. */
  threads: number;
}

/** One measured figure, printed as `label: value unit`. */
export interface BenchmarkMeasurement {
  label: string;
  value: number;
  unit: string;
  /** Context for the figure: its duration, its method or what it is compared with. */
  note?: string;
}

export interface BenchmarkResult {
  name: string;
  measurements: BenchmarkMeasurement[];
  /** Facts needed to read the figures: shapes, library versions, skipped parts. */
  details: string[];
}

/** A benchmark that `bench/run.ts` runs when its name is selected. */
export interface Benchmark {
  /** Short name to select it with `--only`. */
  name: string;
  description: string;
  run(context: BenchmarkContext): Promise<BenchmarkResult>;
}
