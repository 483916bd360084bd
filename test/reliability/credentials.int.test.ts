import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { QUEUE_NAMES, buildFlowSpec, type ObjectStore } from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { submitEvaluation } from '../../apps/coordinator/src/fleet/submit.js';
import { waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { cifar10Dir, requireSharedData, resnet20Path } from '../support/shared.js';
import { hasRedisServer, startPrivateRedis, type PrivateRedis } from './support/private-redis.js';
import { pollUntil, startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';
import { KEY_LAYERS, buildIdsOf, finishSmallRun, runSmall, smallRunRequest, submitSmallRun } from './support/small-run.js';

const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000', CACHEFLEET_LOG_LEVEL: 'debug' };

describe.skipIf(!hasRedisServer)('credentials in logs, reports and errors', () => {
  const redisPassword = `redis-${randomBytes(18).toString('base64url')}`;
  const sessionToken = `session-${randomBytes(18).toString('base64url')}`;
  const coordinatorLog: string[] = [];
  let redis: PrivateRedis;
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let store: ObjectStore;
  let secrets: Record<string, string>;
  const errorMessages: string[] = [];

  beforeAll(async () => {
    requireSharedData();
    redis = await startPrivateRedis({ password: redisPassword, appendOnly: true });
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          coordinatorLog.push(chunk.toString('utf8'));
          done();
        },
      }),
    );
    fleet = await startReliabilityFleet({ label: 'credentials', redisUrl: redis.url, fleetEnv: FLEET_ENV, proxyWorkerStorage: true, s3SessionToken: sessionToken, logger });
    // s3rver accepts one fixed key pair, whose secret is the string S3RVER. A real secret would be random.
    secrets = { redisPassword, sessionToken, s3SecretAccessKey: fleet.s3.credentials.secretAccessKey };
    fleet.startWorkers(2);
    resolver = new BuildResolver((url) => fleet.open(url), path.join(fleet.tmpDir, 'coordinator-store'), logger);
    store = await fleet.open(fleet.storageUrl);

    // A complete run.
    await runSmall(fleet, resolver, 'complete');

    // A run through a 3-second storage outage and a 2-second Redis restart, so that retries
    // and connection errors are logged.
    const submission = await submitSmallRun(fleet, resolver, 'interrupted');
    await pollUntil(async () => fleet.proxy!.requests.find((request) => request.method === 'PUT' && request.target.includes(buildIdsOf('interrupted').cache)), 120_000, 'a shard write', 5);
    await fleet.proxy!.cut();
    await sleep(3_000);
    await fleet.proxy!.restore();
    await redis.stop();
    await sleep(2_000);
    await redis.start();
    await finishSmallRun(fleet, submission);

    // Failures whose messages name S3 locations: a bucket that does not exist, on the coordinator and in a job.
    const missingBucket = `s3://missing-${randomBytes(4).toString('hex')}/fleet`;
    await submitEvaluation(fleet.client, resolver, (url) => fleet.open(url), smallRunRequest(missingBucket, 'missing-bucket')).catch((error: unknown) => errorMessages.push(String(error)));
    const resolved = await resolver.resolve({
      dataDir: cifar10Dir,
      split: 'test',
      recordRange: { start: 2000, end: 2010 },
      shardRecords: 10,
      modelPath: resnet20Path,
      keyLayers: KEY_LAYERS,
      statisticsSplits: ['test'],
      includeMirrors: false,
      storageUrl: fleet.storageUrl,
      buildId: 'tampered',
    });
    resolved.jobs.extracts[0].data.storageUrl = missingBucket;
    await fleet.client.addFlow(buildFlowSpec(resolved.jobs, fleet.client.settings));
    await waitForJob(fleet.client, QUEUE_NAMES.merge, `merge-${resolved.jobs.buildId}`, { timeoutMs: 120_000 }).catch((error: unknown) => errorMessages.push(String(error)));
  }, 400_000);

  afterAll(async () => {
    await fleet?.stop();
    await redis?.dispose();
  });

  it('gave the workers the secrets', () => {
    expect(fleet.redisUrl).toContain(redisPassword);
    expect(errorMessages).toHaveLength(2);
  });

  it('keeps secrets out of worker logs', () => {
    const log = fleet.rawLog();

    expect(log).toContain('"msg":"job completed"');
    expect(log).toContain('"msg":"S3 request failed, retrying"');
    expect(log).toContain('"msg":"Redis connection error"');
    expect(findSecrets(log, secrets)).toEqual([]);
  });

  it('keeps secrets out of coordinator log', () => {
    const log = coordinatorLog.join('');

    expect(log).toContain('"msg":"Redis connection error"');
    expect(findSecrets(log, secrets)).toEqual([]);
  });

  it('keeps secrets out of error messages', () => {
    expect(errorMessages.join('\n')).toMatch(/missing-[0-9a-f]{8}/);
    expect(findSecrets(errorMessages.join('\n'), secrets)).toEqual([]);
  });

  it('keeps secrets out of stored objects', async () => {
    const entries = await store.list('');
    const contents = await Promise.all(entries.map(async (entry) => Buffer.from(await store.getBytes(entry.key, { maxBytes: 1024 ** 3 })).toString('latin1')));

    expect(entries.some((entry) => entry.key.endsWith('report.json'))).toBe(true);
    expect(findSecrets(contents.join('\n'), secrets)).toEqual([]);
  });

  it('keeps secrets out of Redis', async () => {
    const dump = await dumpPrefix(fleet);

    expect(dump).toContain('extract-complete-cache');
    expect(findSecrets(dump, secrets)).toEqual([]);
  });
});

/** Returns the names of the secrets that occur in `text`. */
function findSecrets(text: string, secrets: Record<string, string>): string[] {
  return Object.entries(secrets)
    .filter(([, value]) => text.includes(value))
    .map(([name]) => name);
}

/** Reads every key of the fleet's prefix (job hashes, lists, sets, event streams) into one text. */
async function dumpPrefix(fleet: ReliabilityFleet): Promise<string> {
  const redis = fleet.client.redis;
  const parts: string[] = [];
  for await (const keys of redis.scanStream({ match: `${fleet.prefix}:*`, count: 1000 })) {
    for (const key of keys as string[]) {
      const type = await redis.type(key);
      if (type === 'hash') parts.push(JSON.stringify(await redis.hgetall(key)));
      else if (type === 'string') parts.push(String(await redis.get(key)));
      else if (type === 'list') parts.push(JSON.stringify(await redis.lrange(key, 0, -1)));
      else if (type === 'set') parts.push(JSON.stringify(await redis.smembers(key)));
      else if (type === 'zset') parts.push(JSON.stringify(await redis.zrange(key, 0, -1)));
      else if (type === 'stream') parts.push(JSON.stringify(await redis.xrange(key, '-', '+')));
      parts.push(key);
    }
  }
  return parts.join('\n');
}
