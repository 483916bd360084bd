import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';

import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { checkRedisEvictionPolicy } from '@cachefleet/core';

import { FleetClient } from '../../apps/coordinator/src/fleet/fleet-client.js';
import { workerEntryPoint } from '../../apps/coordinator/src/fleet/local-workers.js';
import { REDIS_URL } from './fleet-harness.js';

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

// The evicting Redis is a private redis-server. Where none is installed (Redis only as a
// service), these tests are skipped, and the parser's unit tests still run.
const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;

describe.skipIf(!hasRedisServer)('Redis eviction policy check', () => {
  let evictingRedis: ChildProcess;
  let evictingUrl: string;

  beforeAll(async () => {
    // A private Redis that evicts, on a free local port; the shared Redis is never reconfigured.
    const port = await freePort();
    evictingUrl = `redis://127.0.0.1:${port}`;
    evictingRedis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru'], { stdio: 'ignore' });
    const probe = new Redis(evictingUrl, { maxRetriesPerRequest: null, retryStrategy: (times) => (times > 50 ? null : 100) });
    // Refused connections while the server starts are expected; ping waits for the retry.
    probe.on('error', () => undefined);
    await probe.ping();
    probe.disconnect();
  });

  afterAll(async () => {
    if (evictingRedis !== undefined && evictingRedis.exitCode === null) {
      const exited = once(evictingRedis, 'exit');
      evictingRedis.kill('SIGTERM');
      await exited;
    }
  });

  it('accepts the test Redis', async () => {
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    try {
      await expect(checkRedisEvictionPolicy(redis, REDIS_URL)).resolves.toBe('noeviction');
    } finally {
      redis.disconnect();
    }
  });

  it('rejects an evicting Redis in the coordinator', async () => {
    await expect(FleetClient.connect({ redisUrl: evictingUrl, prefix: 'never-used', logger: pino({ level: 'silent' }) })).rejects.toThrow(/has maxmemory-policy allkeys-lru, but the fleet needs noeviction/);
  });

  it('stops a worker on an evicting Redis', async () => {
    const worker = spawn(process.execPath, [workerEntryPoint()], { env: { PATH: process.env.PATH, REDIS_URL: evictingUrl, CACHEFLEET_QUEUE_PREFIX: 'never-used' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    worker.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const [code] = (await once(worker, 'exit')) as [number | null];

    expect(code).toBe(1);
    expect(stderr).toMatch(/"msg":"worker could not start"/);
    expect(stderr).toMatch(/maxmemory-policy allkeys-lru, but the fleet needs noeviction/);
  });
});
