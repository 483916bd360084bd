/**
 * Entry point of `npm run bench`: prints the machine, then runs the benchmarks of BENCHMARKS.
 *
 *   node packages/core/dist/bench/run.js [--quick] [--only NAME]... [--threads N] [--json]
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { loadOnnxRuntime } from '../cache/scoring-engine.js';
import { CachefleetError, isCachefleetError } from '../errors.js';
import { createLogger } from '../log.js';
import { BENCHMARKS } from './benchmarks.js';
import type { BenchmarkResult } from './types.js';

const USAGE = `Usage: node packages/core/dist/bench/run.js [options]
  --quick          small shapes, a few seconds in all (checks the harness, not the machine)
  --only NAME      run only this benchmark; repeat for several (${BENCHMARKS.map((benchmark) => benchmark.name).join(', ')})
  --threads N      onnxruntime intra-op threads and numpy BLAS threads (default: all CPUs)
  --json           print the results as JSON instead of text
  --help           print this help`;

async function readCpuModel(): Promise<string> {
  try {
    const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
    const line = cpuinfo.split('\n').find((entry) => entry.startsWith('model name'));
    if (line !== undefined) {
      return line.slice(line.indexOf(':') + 1).trim();
    }
  } catch {
    // Not Linux: os.cpus() below names the CPU too.
  }
  return cpus()[0]?.model ?? 'unknown';
}

async function describeMachine(threads: number): Promise<string[]> {
  const ort = await loadOnnxRuntime();
  return [
    `date: ${new Date().toISOString()}`,
    `cpu: ${await readCpuModel()}; nproc ${availableParallelism()}`,
    `node ${process.versions.node}; onnxruntime-node ${ort.env.versions.node ?? 'unknown'}; threads ${threads}`,
    `load average before: ${loadavg().map((load) => load.toFixed(2)).join(' ')}`,
  ];
}

function formatResult(result: BenchmarkResult): string {
  const lines = [`\n## ${result.name}`, ...result.details.map((detail) => `  ${detail}`)];
  for (const measurement of result.measurements) {
    const digits = measurement.value >= 100 ? measurement.value.toFixed(0) : measurement.value.toPrecision(3);
    const value = measurement.unit === '' ? measurement.value.toFixed(2) : `${digits} ${measurement.unit}`;
    const note = measurement.note === undefined ? '' : `  (${measurement.note})`;
    lines.push(`  ${measurement.label}: ${value}${note}`);
  }
  return lines.join('\n');
}

function parseThreads(value: string | undefined): number {
  const threads = value === undefined ? availableParallelism() : Number(value);
  if (!Number.isInteger(threads) || threads < 1) {
    throw new CachefleetError('INVALID_ARGUMENT', `--threads must be a whole number of at least 1, got ${value}. For example --threads 2.`, { threads: value });
  }
  return threads;
}

function parseOptions(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string', multiple: true },
        threads: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }).values;
  } catch (error) {
    // parseArgs raises a TypeError for unknown options and missing values.
    throw new CachefleetError('INVALID_ARGUMENT', `Invalid command line: ${(error as Error).message}`, { args }, { cause: error });
  }
}

async function main(): Promise<void> {
  const values = parseOptions(process.argv.slice(2));
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }

  const threads = parseThreads(values.threads);
  const selected = values.only === undefined ? BENCHMARKS : BENCHMARKS.filter((benchmark) => values.only?.includes(benchmark.name));
  const unknown = (values.only ?? []).filter((name) => !BENCHMARKS.some((benchmark) => benchmark.name === name));
  if (unknown.length > 0) {
    throw new CachefleetError('INVALID_ARGUMENT', `Unknown benchmark ${unknown.join(', ')}. Choose from: ${BENCHMARKS.map((benchmark) => benchmark.name).join(', ')}.`, { unknown });
  }

  const machine = await describeMachine(threads);
  if (!values.json) {
    process.stdout.write(`# cachefleet benchmarks${values.quick ? ' (quick)' : ''}\n${machine.join('\n')}\n`);
  }

  const results: BenchmarkResult[] = [];
  for (const benchmark of selected) {
    const result = await benchmark.run({ quick: values.quick, threads });
    results.push(result);
    if (!values.json) {
      process.stdout.write(`${formatResult(result)}\n`);
    }
  }

  const loadAfter = `load average after: ${loadavg().map((load) => load.toFixed(2)).join(' ')}`;
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ machine: [...machine, loadAfter], quick: values.quick, results }, null, 2)}\n`);
  } else {
    process.stdout.write(`\n${loadAfter}\n`);
  }
}

main().catch((error: unknown) => {
  if (isCachefleetError(error, 'INVALID_ARGUMENT')) {
    process.stderr.write(`${error.message}\n\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }

  createLogger('bench').error({ err: error }, 'benchmark failed');
  process.exitCode = 1;
});
