#!/usr/bin/env node
/**
 * Load benchmark of the coordinator API. It starts `cachefleet serve` in its own process and
 * submits live runs shaped like the CIFAR-10 protocol of Orhan (2018) through the API. Then
 * autocannon sends run-status reads (`GET /api/v1/runs/RUN`, spread over the runs) at a fixed
 * rate on loopback. It prints the latency percentiles, the achieved rate, errors and non-2xx
 * responses, and the server's memory.
 *
 * Status reads of a live run are the expensive ones: each reads the run's jobs from Redis,
 * while reads of a finished run come from memory. Without workers every run stays queued, so
 * every read is of that kind. With `--workers`, workers run the jobs during the load, as on
 * a coordinator that shares its machine with workers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import autocannon from 'autocannon';
import { Command, InvalidArgumentError } from 'commander';
import { Redis } from 'ioredis';

import { parseCount, parsePositiveInteger } from '../cli/parse-options.js';
import { startLocalWorkers, type LocalWorkers } from '../fleet/local-workers.js';
import { removePrefix } from '../fleet/remove-prefix.js';

interface LoadOptions {
  rate: number;
  duration: number;
  connections: number;
  builds: number;
  workers: number;
  redis: string;
  shared: string;
  json: boolean;
}

const cliPath = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
const DATA_DIR = path.join('data', 'cifar-10-batches-bin');
const MODEL_FILE = path.join('models', 'keras-cifar10', 'cifar10_ResNet32v1_model.150.h5');
/** Maximum of extra builds, because each takes 500 of the 10,000 CIFAR-10 test records. */
const MAX_BUILDS = 20;

function parseBuildCount(value: string): number {
  const count = parseCount(value);
  if (count > MAX_BUILDS) throw new InvalidArgumentError(`${value} is more than ${MAX_BUILDS}, the builds that fit in the CIFAR-10 test split at 500 records each.`);
  return count;
}

/**
 * Waits for the log line of `cachefleet serve` that carries its URL. Lines that are not JSON
 * (such as a configuration error printed before the logger exists) and error lines are copied
 * to this process's stderr.
 */
async function waitForListening(child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stderr! });
  return new Promise<string>((resolve, reject) => {
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    const timer = setTimeout(() => fail(new Error('The coordinator did not log "coordinator API listening" within 60 s. Run `cachefleet serve` by hand to see why.')), 60_000);
    child.once('exit', (code) => fail(new Error(`The coordinator exited with code ${String(code)} before it listened; its output is above.`)));

    lines.on('line', (line) => {
      let entry: { msg?: string; url?: string; level?: number };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        process.stderr.write(`coordinator: ${line}\n`);
        return;
      }
      if (entry.level !== undefined && entry.level >= 50) process.stderr.write(`coordinator: ${line}\n`);
      if (entry.msg === 'coordinator API listening' && entry.url !== undefined) {
        clearTimeout(timer);
        resolve(entry.url);
      }
    });
  });
}

/** Raises an error naming the Redis URL unless a Redis there replies to PING within 5 s. */
async function checkRedis(redisUrl: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  // ioredis rejects with "Connection is closed", so the socket's own error gives the reason.
  let socketError: Error | undefined;
  redis.on('error', (error: Error) => (socketError = error));
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    const reason = socketError?.message ?? (error instanceof Error ? error.message : String(error));
    throw new Error(`Redis at ${redisUrl} did not respond (${reason}). Start Redis, or pass --redis (env REDIS_URL) with the URL of one.`);
  } finally {
    redis.disconnect();
  }
}

/** Raises an error naming `--shared` unless the CIFAR-10 data and the ResNet32 model are in it. */
async function checkShared(shared: string): Promise<void> {
  // The server takes the folder as CACHEFLEET_FILE_ROOTS, a comma-separated list.
  if (shared.includes(',')) throw new Error(`--shared ${shared} contains a comma, which separates the folders of CACHEFLEET_FILE_ROOTS. Pass a path without commas, such as a symbolic link to it.`);
  for (const required of [path.join(shared, DATA_DIR), path.join(shared, MODEL_FILE)]) {
    try {
      await access(required);
    } catch {
      throw new Error(`${required} is missing. Pass --shared (env CACHEFLEET_SHARED) with the folder that holds ${DATA_DIR} and ${MODEL_FILE}.`);
    }
  }
}

/** Submits a run through the API and returns its id. */
async function submitRun(url: string, token: string, kind: 'cache-builds' | 'evaluations', body: unknown): Promise<string> {
  const response = await fetch(`${url}/api/v1/runs/${kind}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const payload = (await response.json()) as { runId?: string; error?: { message: string } };
  if (!response.ok || payload.runId === undefined) throw new Error(`POST /api/v1/runs/${kind} failed with ${response.status}: ${payload.error?.message ?? 'no error message'}`);
  return payload.runId;
}

/**
 * Submits the runs that the load reads. One is an evaluation with the record ranges of Orhan's
 * (2018) CIFAR-10 protocol on ResNet32: a training cache of 45,000 records with mirrors, plus
 * validation and test builds, for 12 extract jobs and a plan job. The others are `builds` cache
 * builds of 10 shards each.
 */
async function submitRuns(url: string, token: string, options: LoadOptions): Promise<string[]> {
  const dataDir = path.join(options.shared, DATA_DIR);
  const modelPath = path.join(options.shared, MODEL_FILE);
  const build = (split: 'train' | 'test', start: number, end: number, includeMirrors: boolean) => ({ dataDir, split, recordRange: { start, end }, shardRecords: 5000, modelPath, keyLayers: [82, 92, 103], includeMirrors });

  const trainCache = build('train', 0, 45_000, true);
  const runIds = [
    await submitRun(url, token, 'evaluations', {
      validation: { queries: { build: build('train', 45_000, 50_000, true) }, cache: [{ build: trainCache }] },
      test: { queries: { build: build('test', 0, 10_000, false) }, cache: [{ build: trainCache }, { build: build('train', 45_000, 50_000, true) }] },
    }),
  ];
  for (let index = 0; index < options.builds; index += 1) {
    // Ranges of 500 records in shards of 50 keep the builds distinct from the evaluation's.
    runIds.push(await submitRun(url, token, 'cache-builds', { ...build('test', index * 500, (index + 1) * 500, false), shardRecords: 50 }));
  }
  return runIds;
}

/** Reads the coordinator's resident memory in bytes from /proc (Linux), or undefined elsewhere. */
async function residentBytes(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

/** Counts the runs by state, as the API returns them. */
async function countStates(url: string, token: string, runIds: string[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const runId of runIds) {
    const response = await fetch(`${url}/api/v1/runs/${runId}`, { headers: { authorization: `Bearer ${token}` } });
    const { state } = (await response.json()) as { state: string };
    counts[state] = (counts[state] ?? 0) + 1;
  }
  return counts;
}

async function main(): Promise<void> {
  const program = new Command('api-load')
    .description('Load benchmark of the coordinator API: run-status reads at a fixed rate against live runs.')
    .option('--rate <n>', 'requests per second over all connections', parsePositiveInteger, 200)
    .option('--duration <s>', 'seconds of load', parsePositiveInteger, 30)
    .option('--connections <n>', 'concurrent HTTP connections', parsePositiveInteger, 10)
    .option('--builds <n>', `cache-build runs besides the evaluation (0 to ${MAX_BUILDS})`, parseBuildCount, 8)
    .option('--workers <n>', 'worker processes that run the jobs during the load (0: runs stay queued)', parseCount, 0)
    .option('--redis <url>', 'Redis of the fleet; the benchmark uses a prefix of its own and removes it (env REDIS_URL)', process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
    .option('--shared <dir>', 'folder with data/cifar-10-batches-bin and models/keras-cifar10 (env CACHEFLEET_SHARED)', process.env.CACHEFLEET_SHARED ?? '../shared')
    .option('--json', 'print the result as JSON', false);
  const options = program.parse().opts<LoadOptions>();
  options.shared = path.resolve(options.shared);

  await checkShared(options.shared);
  await checkRedis(options.redis);

  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-api-load-'));
  const prefix = `cachefleet-bench-api-${randomBytes(4).toString('hex')}`;
  const token = randomBytes(24).toString('base64url');
  const storage = path.join(tmpDir, 'objects');
  const env = { ...process.env, REDIS_URL: options.redis, CACHEFLEET_QUEUE_PREFIX: prefix, CACHEFLEET_STORAGE_URL: storage, CACHEFLEET_LOG_LEVEL: 'info' };
  const serverArgs = ['serve', '--port', '0', '--redis', options.redis, '--prefix', prefix, '--storage', storage, '--store', path.join(tmpDir, 'store'), '--file-roots', options.shared];
  const server = spawn(process.execPath, [cliPath, ...serverArgs], { env: { ...env, CACHEFLEET_API_TOKEN: token }, stdio: ['ignore', 'ignore', 'pipe'] });
  let workers: LocalWorkers | undefined;

  // Stops the processes and removes the queues and the folder, once, on any way out.
  let cleaning: Promise<void> | undefined;
  const cleanUp = () =>
    (cleaning ??= (async () => {
      await workers?.stop(30_000);
      if (server.exitCode === null && server.signalCode === null) {
        const exited = once(server, 'exit');
        server.kill('SIGTERM');
        await exited;
      }
      try {
        await removePrefix(options.redis, prefix);
      } catch (error) {
        process.stderr.write(`api-load: the keys under ${prefix}: could not be removed (${error instanceof Error ? error.message : String(error)}). Delete them with redis-cli --scan --pattern '${prefix}:*'.\n`);
      } finally {
        await rm(tmpDir, { recursive: true, force: true });
      }
    })());
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`api-load: ${signal} received, removing the benchmark's processes, queues and files\n`);
      void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }

  try {
    const url = await waitForListening(server);
    const runIds = await submitRuns(url, token, options);
    if (options.workers > 0) workers = startLocalWorkers({ count: options.workers, env, stderr: 'ignore' });
    const rssBefore = await residentBytes(server.pid);

    let next = 0;
    const result = await autocannon({
      url,
      connections: options.connections,
      overallRate: options.rate,
      duration: options.duration,
      headers: { authorization: `Bearer ${token}` },
      requests: [{ method: 'GET', setupRequest: (request) => ({ ...request, path: `/api/v1/runs/${runIds[next++ % runIds.length]}` }) }],
    });
    const rssAfter = await residentBytes(server.pid);
    const states = await countStates(url, token, runIds);

    const summary = {
      prefix,
      machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cpus: os.availableParallelism(), node: process.version, loadAverage: os.loadavg().map((load) => Number(load.toFixed(2))) },
      settings: { rate: options.rate, duration: options.duration, connections: options.connections, runs: runIds.length, workers: options.workers },
      runStatesAfter: states,
      requests: result.requests.total,
      requestsPerSecond: result.requests.average,
      latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max },
      errors: result.errors,
      timeouts: result.timeouts,
      non2xx: result.non2xx,
      serverRssBytes: { before: rssBefore, after: rssAfter },
    };
    if (options.json) {
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    } else {
      const mib = (bytes: number | undefined) => (bytes === undefined ? 'n/a' : `${(bytes / 2 ** 20).toFixed(0)} MiB`);
      process.stdout.write(
        [
          `machine: ${summary.machine.cpu}, ${summary.machine.cpus} CPUs, Node ${summary.machine.node}, load average after ${summary.machine.loadAverage.join(' ')}`,
          `load: GET /api/v1/runs/RUN over ${runIds.length} live runs, ${options.rate} requests/s for ${options.duration} s on ${options.connections} connections, ${options.workers} workers`,
          `runs after the load: ${Object.entries(states).map(([state, count]) => `${count} ${state}`).join(', ')}`,
          `requests: ${summary.requests} (${summary.requestsPerSecond.toFixed(1)}/s), errors ${summary.errors}, timeouts ${summary.timeouts}, non-2xx ${summary.non2xx}`,
          `latency (ms): p50 ${summary.latencyMs.p50}, p90 ${summary.latencyMs.p90}, p99 ${summary.latencyMs.p99}, max ${summary.latencyMs.max}`,
          `coordinator RSS: ${mib(rssBefore)} before, ${mib(rssAfter)} after`,
        ].join('\n') + '\n',
      );
    }
    if (summary.errors > 0 || summary.timeouts > 0 || summary.non2xx > 0) process.exitCode = 1;
  } finally {
    await cleanUp();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`api-load: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
