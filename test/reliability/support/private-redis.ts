import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { Redis } from 'ioredis';

/** Whether a `redis-server` binary is on the PATH. Tests that need a private server skip without one. */
export const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;

export interface PrivateRedisOptions {
  /** Turns on the append-only file, so that jobs survive a restart. Default false. */
  appendOnly?: boolean;
  /** Password the server requires (`--requirepass`), which the URL then carries. */
  password?: string;
}

/**
 * A redis-server started by a test on 127.0.0.1, on a free port, with its files in a fresh
 * temporary folder. The shared Redis at REDIS_URL is never stopped or reconfigured: restart and
 * memory tests run against one of these.
 */
export interface PrivateRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`, with the password when one is set. */
  readonly url: string;
  /** Process id of the running server, or undefined while it is stopped. */
  readonly pid: number | undefined;
  /** Stops the server with SIGTERM, which makes Redis flush the append-only file and exit. */
  stop(): Promise<void>;
  /** Starts the server again on the same port and folder, and waits until it replies to PING. */
  start(): Promise<void>;
  /** Reads one numeric field of `INFO`, such as `used_memory`. */
  infoNumber(section: string, field: string): Promise<number>;
  /** Stops the server and deletes its folder. */
  dispose(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;

export async function startPrivateRedis(options: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-redis-'));
  const port = await findFreePort();
  const auth = options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`;
  const url = `redis://${auth}127.0.0.1:${port}`;
  const args = [
    '--bind', '127.0.0.1',
    '--port', String(port),
    '--dir', dir,
    '--save', '',
    '--appendonly', options.appendOnly === true ? 'yes' : 'no',
    '--maxmemory-policy', 'noeviction',
    ...(options.password === undefined ? [] : ['--requirepass', options.password]),
  ];

  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitForPing(url);
  };
  const stop = async (): Promise<void> => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const exited = once(running, 'exit');
    running.kill('SIGTERM');
    await exited;
  };

  await start();
  return {
    port,
    url,
    get pid() {
      return child?.pid;
    },
    stop,
    start,
    async infoNumber(section, field) {
      const redis = new Redis(url, { maxRetriesPerRequest: 1 });
      try {
        const text = await redis.info(section);
        const match = new RegExp(`^${field}:(\\d+)`, 'm').exec(text);
        if (match === null) throw new Error(`INFO ${section} of the private Redis has no numeric field ${field}.`);
        return Number(match[1]);
      } finally {
        redis.disconnect();
      }
    },
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPing(url: string): Promise<void> {
  const probe = new Redis(url, { maxRetriesPerRequest: null, lazyConnect: true, retryStrategy: (times) => (times * 50 > START_TIMEOUT_MS ? null : 50) });
  // Refused connections while the server starts are expected; ping waits for the retry.
  probe.on('error', () => undefined);
  try {
    await probe.connect().catch(() => undefined);
    await probe.ping();
  } finally {
    probe.disconnect();
  }
}

/** Asks the system for a free port on 127.0.0.1. Another process could take it before Redis binds it. */
async function findFreePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}
