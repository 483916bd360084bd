import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { pino } from 'pino';

import { FLEET_QUEUE_NAMES, openObjectStore, readFleetSettings, type Logger, type ObjectStore } from '@cachefleet/core';

import { FleetClient } from '../../apps/coordinator/src/fleet/fleet-client.js';
import { startLocalWorkers, type LocalWorkers } from '../../apps/coordinator/src/fleet/local-workers.js';
import { startS3TestServer, type S3TestServer } from '../support/s3-server.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A fleet for one test file: s3rver with a fresh bucket, a unique BullMQ prefix on the shared
 * Redis and worker processes started from the built worker, `apps/worker/dist/main.js`. Redis
 * is never flushed: the prefix's queues are obliterated at the end.
 */
export interface FleetHarness {
  prefix: string;
  storageUrl: string;
  s3: S3TestServer;
  client: FleetClient;
  logger: Logger;
  tmpDir: string;
  /** Opens (once) the store of a URL with the test server's endpoint and credentials. */
  open(url: string): Promise<ObjectStore>;
  workers: LocalWorkers | undefined;
  startWorkers(count: number, env?: NodeJS.ProcessEnv): LocalWorkers;
  /** The workers' stderr (pino JSON lines), for failure messages and log assertions. */
  workerLog(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * `fleetEnv` contains fleet settings (see FLEET_SETTINGS_ENV) for both sides: the workers read them,
 * and the coordinator's job options (attempts, backoff) come from them.
 */
export async function startFleetHarness(label: string, fleetEnv: NodeJS.ProcessEnv = {}): Promise<FleetHarness> {
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), `cachefleet-${label}-`));
  const prefix = `test-${label}-${randomUUID().slice(0, 8)}`;
  const logger = pino({ level: process.env.CACHEFLEET_TEST_LOG_LEVEL ?? 'silent' });
  const s3 = await startS3TestServer();
  const bucket = await s3.createBucket(label);
  const storageUrl = `s3://${bucket}/fleet`;
  const client = await FleetClient.connect({ redisUrl: REDIS_URL, prefix, logger, settings: readFleetSettings({ ...process.env, ...fleetEnv }) });

  const s3Env = {
    S3_ENDPOINT: s3.endpoint,
    S3_REGION: s3.region,
    S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
  };
  const stores = new Map<string, Promise<ObjectStore>>();
  const logPath = path.join(tmpDir, 'workers.log');
  const logStream = createWriteStream(logPath);
  const started: LocalWorkers[] = [];

  const harness: FleetHarness = {
    prefix,
    storageUrl,
    s3,
    client,
    logger,
    tmpDir,
    workers: undefined,
    open(url) {
      let store = stores.get(url);
      if (store === undefined) {
        store = openObjectStore(url, { env: s3Env, logger });
        stores.set(url, store);
      }
      return store;
    },
    startWorkers(count, env = {}) {
      const workers = startLocalWorkers({
        count,
        stderr: 'pipe',
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          REDIS_URL,
          CACHEFLEET_QUEUE_PREFIX: prefix,
          CACHEFLEET_EXTRACT_THREADS: '1',
          CACHEFLEET_SCORING_THREADS: '1',
          CACHEFLEET_BACKOFF_DELAY_MS: '200',
          CACHEFLEET_LOG_LEVEL: 'info',
          ...s3Env,
          ...fleetEnv,
          ...env,
        },
      });
      for (const child of workers.processes) child.stderr?.pipe(logStream, { end: false });
      started.push(workers);
      harness.workers = workers;
      return workers;
    },
    async workerLog() {
      return readFile(logPath, 'utf8').catch(() => '');
    },
    async stop() {
      await Promise.allSettled(started.map((workers) => workers.stop(30_000)));
      for (const name of FLEET_QUEUE_NAMES) {
        await client.queue(name).obliterate({ force: true }).catch(() => undefined);
      }
      await deleteKeys(client, `${prefix}:cachefleet-lock:*`).catch(() => undefined);
      await Promise.allSettled([...stores.values()].map((store) => store.then((opened) => opened.close())));
      await client.close();
      logStream.end();
      await s3.stop();
      if (process.env.CACHEFLEET_TEST_KEEP_TMP === undefined) await rm(tmpDir, { recursive: true, force: true });
    },
  };
  return harness;
}

/** Deletes the keys matching a pattern under the test's prefix, with SCAN (never KEYS or FLUSH on the shared Redis). */
async function deleteKeys(client: FleetClient, pattern: string): Promise<void> {
  for await (const keys of client.redis.scanStream({ match: pattern, count: 1000 })) {
    if ((keys as string[]).length > 0) await client.redis.del(...(keys as string[]));
  }
}
