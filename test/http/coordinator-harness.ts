import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { openObjectStore, type ObjectStore } from '@cachefleet/core';

import { startLocalWorkers, type LocalWorkers } from '../../apps/coordinator/src/fleet/local-workers.js';
import { removePrefix } from '../../apps/coordinator/src/fleet/remove-prefix.js';
import { startS3TestServer, type S3TestServer } from '../support/s3-server.js';

const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The built command line; tests that spawn processes use `dist/`, built by `npx turbo run build`. */
export const CLI_PATH = path.join(repositoryRoot, 'apps/coordinator/dist/cli.js');
export const SHARED_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Returns a random API token of 64 hex digits, as `openssl rand -hex 32` would. */
export function randomToken(): string {
  return randomBytes(32).toString('hex');
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** A coordinator started as `cachefleet serve`, with its log lines. */
export interface CoordinatorProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Stops it with SIGTERM and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Everything one test file needs to run the coordinator as users do: s3rver with a fresh
 * bucket, Redis (the shared one under a unique prefix, or a private server), the coordinator
 * process, worker processes from the built worker, and a runner for the built CLI.
 */
export interface CoordinatorFleet {
  readonly label: string;
  readonly prefix: string;
  readonly redisUrl: string;
  readonly token: string;
  readonly storageUrl: string;
  readonly tmpDir: string;
  readonly s3: S3TestServer;
  coordinator: CoordinatorProcess;
  workers: LocalWorkers | undefined;
  /** Starts `cachefleet serve` on a free port and waits until it listens. */
  startCoordinator(extraArgs?: string[]): Promise<CoordinatorProcess>;
  startWorkers(count: number): LocalWorkers;
  /** Runs the built CLI with the coordinator's URL and token in its environment. */
  cli(args: string[], env?: NodeJS.ProcessEnv): Promise<CliResult>;
  /** Opens the fleet's storage with the test server's endpoint and credentials. */
  open(): Promise<ObjectStore>;
  /** Coordinator and worker stderr (pino JSON lines). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

export interface CoordinatorFleetOptions {
  label: string;
  /** Redis of the fleet. Default: the shared Redis under a unique prefix. */
  redisUrl?: string;
  /** Environment of the coordinator and the workers on top of the defaults. */
  env?: NodeJS.ProcessEnv;
}

export async function startCoordinatorFleet(options: CoordinatorFleetOptions): Promise<CoordinatorFleet> {
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), `cachefleet-${options.label}-`));
  const prefix = `test-${options.label}-${randomUUID().slice(0, 8)}`;
  const redisUrl = options.redisUrl ?? SHARED_REDIS_URL;
  const token = randomToken();
  const s3 = await startS3TestServer();
  const storageUrl = `s3://${await s3.createBucket(options.label)}/fleet`;
  const logPath = path.join(tmpDir, 'processes.log');
  const logStream = createWriteStream(logPath);

  const baseEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    S3_ENDPOINT: s3.endpoint,
    S3_REGION: s3.region,
    S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    CACHEFLEET_LOG_LEVEL: 'info',
    CACHEFLEET_BACKOFF_DELAY_MS: '200',
    ...options.env,
  };
  const startedWorkers: LocalWorkers[] = [];
  let coordinator: CoordinatorProcess | undefined;

  const fleet: CoordinatorFleet = {
    label: options.label,
    prefix,
    redisUrl,
    token,
    storageUrl,
    tmpDir,
    s3,
    get coordinator() {
      if (coordinator === undefined) throw new Error('The coordinator has not been started.');
      return coordinator;
    },
    workers: undefined,
    async startCoordinator(extraArgs = []) {
      const args = [CLI_PATH, 'serve', '--port', '0', '--redis', redisUrl, '--prefix', prefix, '--storage', storageUrl, '--store', path.join(tmpDir, 'coordinator-store'), '--monitor-interval', '500', ...extraArgs];
      coordinator = await startCoordinatorProcess(args, { ...baseEnv, CACHEFLEET_API_TOKEN: token }, logStream);
      return coordinator;
    },
    startWorkers(count) {
      const workers = startLocalWorkers({
        count,
        stderr: 'pipe',
        env: { ...baseEnv, REDIS_URL: redisUrl, CACHEFLEET_QUEUE_PREFIX: prefix, CACHEFLEET_EXTRACT_THREADS: '1', CACHEFLEET_SCORING_THREADS: '1' },
      });
      for (const child of workers.processes) child.stderr?.pipe(logStream, { end: false });
      startedWorkers.push(workers);
      fleet.workers = workers;
      return workers;
    },
    cli(args, env = {}) {
      return runCli(args, { ...baseEnv, CACHEFLEET_API_URL: fleet.coordinator.url, CACHEFLEET_API_TOKEN: token, CACHEFLEET_LOG_LEVEL: 'warn', ...env });
    },
    open() {
      return openObjectStore(storageUrl, { env: baseEnv });
    },
    log() {
      return readFile(logPath, 'utf8').catch(() => '');
    },
    async stop() {
      await Promise.allSettled(startedWorkers.map((workers) => workers.stop(30_000)));
      await coordinator?.stop();
      if (redisUrl === SHARED_REDIS_URL) await removePrefix(redisUrl, prefix);
      logStream.end();
      await s3.stop();
      if (process.env.CACHEFLEET_TEST_KEEP_TMP === undefined) await rm(tmpDir, { recursive: true, force: true });
    },
  };
  return fleet;
}

/**
 * Starts `node cli.js serve …` and waits for its "coordinator API listening" log line, which
 * carries the URL (the port is chosen by the system). Its stderr is copied to `log`.
 */
async function startCoordinatorProcess(args: string[], env: NodeJS.ProcessEnv, log: WriteStream): Promise<CoordinatorProcess> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = createInterface({ input: child.stderr! });
  const exited = once(child, 'exit');

  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('The coordinator did not log "coordinator API listening" within 30 s.')), 30_000);
    const earlyExit = ([code]: unknown[]) => reject(new Error(`The coordinator exited with code ${String(code)} before listening.`));
    void exited.then(earlyExit);
    lines.on('line', (line) => {
      log.write(`${line}\n`);
      let entry: { msg?: string; url?: string };
      try {
        entry = JSON.parse(line) as { msg?: string; url?: string };
      } catch {
        return;
      }
      if (entry.msg === 'coordinator API listening' && entry.url !== undefined) {
        clearTimeout(timer);
        resolve(entry.url);
      }
    });
  });

  return {
    url,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Runs the built CLI and collects its output; never throws on a non-zero exit code. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return runNode(CLI_PATH, args, env);
}

/** Runs a Node.js script to its end and collects its output. */
export async function runNode(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  const started = performance.now();
  const child = spawn(process.execPath, [script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr, durationMs: Math.round(performance.now() - started) };
}

