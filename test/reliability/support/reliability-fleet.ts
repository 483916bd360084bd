import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { pino } from 'pino';

import { FLEET_QUEUE_NAMES, openObjectStore, readFleetSettings, type Logger, type ObjectStore } from '@cachefleet/core';

import { FleetClient } from '../../../apps/coordinator/src/fleet/fleet-client.js';
import { startLocalWorkers } from '../../../apps/coordinator/src/fleet/local-workers.js';
import { startS3TestServer, type S3TestServer } from '../../support/s3-server.js';
import { startTcpProxy, type TcpProxy } from '../../support/tcp-proxy.js';

export const SHARED_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** One pino line of a worker's stderr, parsed, with the fields the tests read. */
export interface WorkerLogLine {
  pid: number;
  time: number;
  level: number;
  msg: string;
  jobId?: string;
  queue?: string;
  [field: string]: unknown;
}

/** A worker process started by the fleet, with its parsed log lines. */
export interface FleetWorker {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly lines: WorkerLogLine[];
  /** Resolves with the exit code (null after a signal) and the signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ReliabilityFleetOptions {
  /** Short name used in the queue prefix, bucket and temporary folder. */
  label: string;
  /** Redis of the fleet. Default: the shared Redis with a unique prefix. */
  redisUrl?: string;
  /** Fleet settings (CACHEFLEET_LOCK_DURATION_MS, …) for the workers and the coordinator's job options. */
  fleetEnv?: NodeJS.ProcessEnv;
  /** Puts a cuttable TCP proxy between the workers and the S3 server. The coordinator connects directly. */
  proxyWorkerStorage?: boolean;
  /** AWS_SESSION_TOKEN for every S3 client of the fleet. s3rver ignores it, but clients sign it into every request. */
  s3SessionToken?: string;
  /** Logger of the coordinator side. Default: silent, or CACHEFLEET_TEST_LOG_LEVEL. */
  logger?: Logger;
}

/**
 * A fleet for one reliability test file: s3rver with a fresh bucket, Redis (shared with a unique
 * prefix, or a private server), a coordinator client and worker processes from the built
 * worker. Every worker's stderr is parsed line by line, so a test can see which process runs
 * which job while it runs. Redis is never flushed: the prefix's queues are obliterated at the end.
 */
export interface ReliabilityFleet {
  readonly prefix: string;
  readonly redisUrl: string;
  readonly storageUrl: string;
  readonly s3: S3TestServer;
  readonly proxy: TcpProxy | undefined;
  readonly client: FleetClient;
  readonly logger: Logger;
  readonly tmpDir: string;
  /** Every worker started so far, in start order. */
  readonly workers: FleetWorker[];
  /** Environment of the S3 connection as the coordinator uses it (direct, never through the proxy). */
  readonly s3Env: NodeJS.ProcessEnv;
  /** Opens (once) the store of a URL with the direct S3 endpoint. */
  open(url: string): Promise<ObjectStore>;
  startWorkers(count: number, env?: NodeJS.ProcessEnv): FleetWorker[];
  /** Returns the workers that have not exited. */
  liveWorkers(): FleetWorker[];
  /** Returns every log line of every worker, in arrival order. */
  allLines(): WorkerLogLine[];
  /** Returns everything the workers wrote to stderr so far, JSON or not. */
  rawLog(): string;
  /** Waits for a worker log line that matches, looking at lines already seen first. */
  waitForLine(match: (line: WorkerLogLine) => boolean, timeoutMs: number): Promise<WorkerLogLine>;
  /** Returns the worker whose latest `job started` line names this job id, if it is still running. */
  workerRunning(jobId: string): FleetWorker | undefined;
  stop(): Promise<void>;
}

export async function startReliabilityFleet(options: ReliabilityFleetOptions): Promise<ReliabilityFleet> {
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), `cachefleet-${options.label}-`));
  const prefix = `test-${options.label}-${randomUUID().slice(0, 8)}`;
  const redisUrl = options.redisUrl ?? SHARED_REDIS_URL;
  const fleetEnv = options.fleetEnv ?? {};
  const logger = options.logger ?? pino({ level: process.env.CACHEFLEET_TEST_LOG_LEVEL ?? 'silent' });

  const s3 = await startS3TestServer();
  const bucket = await s3.createBucket(options.label);
  const storageUrl = `s3://${bucket}/fleet`;
  const proxy = options.proxyWorkerStorage === true ? await startTcpProxy({ targetPort: Number(new URL(s3.endpoint).port) }) : undefined;
  const client = await FleetClient.connect({ redisUrl, prefix, logger, settings: readFleetSettings({ ...process.env, ...fleetEnv }) });

  const s3Env = {
    S3_ENDPOINT: s3.endpoint,
    S3_REGION: s3.region,
    S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    ...(options.s3SessionToken === undefined ? {} : { AWS_SESSION_TOKEN: options.s3SessionToken }),
  };
  const stores = new Map<string, Promise<ObjectStore>>();
  const workers: FleetWorker[] = [];
  const lines: WorkerLogLine[] = [];
  const listeners = new Set<(line: WorkerLogLine) => void>();
  const rawLines: string[] = [];
  const logFile: WriteStream = createWriteStream(path.join(tmpDir, 'workers.log'));

  const attach = (child: ChildProcess): FleetWorker => {
    const worker: FleetWorker = {
      child,
      pid: child.pid ?? -1,
      lines: [],
      exited: once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null })),
    };
    const reader = createInterface({ input: child.stderr! });
    reader.on('line', (text) => {
      logFile.write(`${text}\n`);
      rawLines.push(text);
      let line: WorkerLogLine;
      try {
        line = JSON.parse(text) as WorkerLogLine;
      } catch {
        // Warnings that Node itself prints (such as the AWS SDK's Node 20 notice) are not JSON.
        return;
      }
      worker.lines.push(line);
      lines.push(line);
      for (const listener of listeners) listener(line);
    });
    workers.push(worker);
    return worker;
  };

  const fleet: ReliabilityFleet = {
    prefix,
    redisUrl,
    storageUrl,
    s3,
    proxy,
    client,
    logger,
    tmpDir,
    workers,
    s3Env,
    open(url) {
      let store = stores.get(url);
      if (store === undefined) {
        store = openObjectStore(url, { env: s3Env, logger });
        stores.set(url, store);
      }
      return store;
    },
    startWorkers(count, env = {}) {
      const started = startLocalWorkers({
        count,
        stderr: 'pipe',
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          REDIS_URL: redisUrl,
          CACHEFLEET_QUEUE_PREFIX: prefix,
          CACHEFLEET_EXTRACT_THREADS: '1',
          CACHEFLEET_SCORING_THREADS: '1',
          CACHEFLEET_BACKOFF_DELAY_MS: '200',
          CACHEFLEET_LOG_LEVEL: 'info',
          ...s3Env,
          ...(proxy === undefined ? {} : { S3_ENDPOINT: proxy.url }),
          ...fleetEnv,
          ...env,
        },
      });
      return started.processes.map(attach);
    },
    liveWorkers() {
      return workers.filter((worker) => worker.child.exitCode === null && worker.child.signalCode === null);
    },
    allLines() {
      return lines;
    },
    rawLog() {
      return rawLines.join('\n');
    },
    waitForLine(match, timeoutMs) {
      const seen = lines.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const listener = (line: WorkerLogLine): void => {
          if (!match(line)) return;
          clearTimeout(timer);
          listeners.delete(listener);
          resolve(line);
        };
        const timer = setTimeout(() => {
          listeners.delete(listener);
          reject(new Error(`No matching worker log line within ${timeoutMs} ms.`));
        }, timeoutMs);
        listeners.add(listener);
      });
    },
    workerRunning(jobId) {
      for (let i = lines.length - 1; i >= 0; i -= 1) {
        const line = lines[i];
        if (line.jobId !== jobId) continue;
        if (line.msg !== 'job started') return undefined;
        return fleet.liveWorkers().find((worker) => worker.pid === line.pid);
      }
      return undefined;
    },
    async stop() {
      await Promise.allSettled(fleet.liveWorkers().map((worker) => stopWorker(worker, 30_000)));
      for (const name of FLEET_QUEUE_NAMES) {
        await client.queue(name).obliterate({ force: true }).catch(() => undefined);
      }
      await deleteKeys(client, `${prefix}:cachefleet-lock:*`).catch(() => undefined);
      await Promise.allSettled([...stores.values()].map((store) => store.then((opened) => opened.close())));
      await client.close();
      logFile.end();
      await proxy?.close();
      await s3.stop();
      if (process.env.CACHEFLEET_TEST_KEEP_TMP === undefined) await rm(tmpDir, { recursive: true, force: true });
    },
  };
  return fleet;
}

/** Sends SIGTERM and waits for the exit, with SIGKILL after `killAfterMs`. */
export async function stopWorker(worker: FleetWorker, killAfterMs: number): Promise<void> {
  if (worker.child.exitCode !== null || worker.child.signalCode !== null) return;
  worker.child.kill('SIGTERM');
  const timer = setTimeout(() => worker.child.kill('SIGKILL'), killAfterMs);
  await worker.exited;
  clearTimeout(timer);
}

/** Polls `check` every `pollMs` until it returns a value other than undefined. */
export async function pollUntil<T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string, pollMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
    await sleep(pollMs);
  }
}

/** Deletes the keys matching a pattern under the test's prefix, with SCAN (never KEYS or FLUSH on the shared Redis). */
async function deleteKeys(client: FleetClient, pattern: string): Promise<void> {
  for await (const keys of client.redis.scanStream({ match: pattern, count: 1000 })) {
    if ((keys as string[]).length > 0) await client.redis.del(...(keys as string[]));
  }
}
