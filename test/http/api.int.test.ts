import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';

import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FLEET_QUEUE_NAMES, openObjectStore, type ObjectStore } from '@cachefleet/core';

import { FleetClient } from '../../apps/coordinator/src/fleet/fleet-client.js';
import { removePrefix } from '../../apps/coordinator/src/fleet/remove-prefix.js';
import type { ServerSettings } from '../../apps/coordinator/src/http/server-config.js';
import { buildCoordinatorApp } from '../../apps/coordinator/src/http/server.js';
import { startS3TestServer, type S3TestServer } from '../support/s3-server.js';
import { cifar10Dir, requireSharedData, resnet20Path, sharedDir } from '../support/shared.js';
import { randomToken, SHARED_REDIS_URL } from './coordinator-harness.js';

const TOKEN = randomToken();
const WRONG_TOKEN = randomToken();

interface Apps {
  main: FastifyInstance;
  openMetrics: FastifyInstance;
  behindProxy: FastifyInstance;
  smallBodies: FastifyInstance;
}

describe('coordinator HTTP API', () => {
  const prefix = `test-api-${randomUUID().slice(0, 8)}`;
  const logLines: string[] = [];
  let s3: S3TestServer;
  let store: ObjectStore;
  let client: FleetClient;
  let tmpDir: string;
  let apps: Apps;

  const settings = (overrides: Partial<ServerSettings> = {}): ServerSettings => ({
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    metricsAuth: 'token',
    sessionTtlSeconds: 3600,
    bodyLimit: 1024 * 1024,
    trustProxy: false,
    dashboardActions: false,
    ...overrides,
  });

  beforeAll(async () => {
    requireSharedData();
    tmpDir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-api-'));
    s3 = await startS3TestServer();
    const storageUrl = `s3://${await s3.createBucket('api')}/fleet`;
    store = await openObjectStore(storageUrl, { env: { S3_ENDPOINT: s3.endpoint, S3_REGION: s3.region, S3_FORCE_PATH_STYLE: 'true', AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey } });
    // Every log line of the apps is kept, to check that no token reaches the log.
    const logger = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (logLines.push(chunk.toString('utf8')), done()) }));
    client = await FleetClient.connect({ redisUrl: SHARED_REDIS_URL, prefix, logger });

    const build = async (overrides: Partial<ServerSettings>, fileRoots?: string[]) =>
      (await buildCoordinatorApp({ settings: settings(overrides), client, store, storageUrl, statisticsDir: path.join(tmpDir, 'statistics'), fileRoots, logger })).app;
    apps = {
      main: await build({}, [sharedDir]),
      openMetrics: await build({ metricsAuth: 'none' }),
      behindProxy: await build({ trustProxy: true }),
      smallBodies: await build({ bodyLimit: 4096 }),
    };
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled(Object.values(apps ?? {}).map((app) => app.close()));
    await client?.close();
    await removePrefix(SHARED_REDIS_URL, prefix);
    await store?.close();
    await s3?.stop();
    if (tmpDir !== undefined) await rm(tmpDir, { recursive: true, force: true });
  });

  const bearer = { authorization: `Bearer ${TOKEN}` };
  const validBuild = { dataDir: cifar10Dir, split: 'train', recordRange: { start: 0, end: 100 }, shardRecords: 100, modelPath: resnet20Path, keyLayers: [49, 57, 64], includeMirrors: false };

  async function jobCount(): Promise<number> {
    let total = 0;
    for (const name of FLEET_QUEUE_NAMES) {
      const counts = await client.queue(name).getJobCounts();
      total += Object.values(counts).reduce((sum, count) => sum + count, 0);
    }
    return total;
  }

  describe('authentication', () => {
    it('leaves /health open', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/health' });

      expect(response.statusCode).toBe(200);
      expect(response.json()).toEqual({ status: 'ok' });
    });

    it.each([
      ['GET', '/api/v1/runs'],
      ['GET', '/api/v1/runs/some-run'],
      ['POST', '/api/v1/runs/cache-builds'],
      ['POST', '/api/v1/runs/some-run/cancel'],
      ['GET', '/metrics'],
      ['GET', '/queues'],
      ['GET', '/queues/api/queues'],
      ['GET', '/runs/some-run'],
      ['GET', '/'],
      ['GET', '/no-such-route'],
    ] as const)('answers %s %s with 401 without credentials', async (method, url) => {
      const response = await apps.main.inject({ method, url, payload: method === 'POST' ? validBuild : undefined });

      expect(response.statusCode).toBe(401);
      expect(response.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    });

    it('sends browsers a login link', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/runs/some-run', headers: { accept: 'text/html' } });

      expect(response.statusCode).toBe(401);
      expect(response.headers['content-type']).toMatch(/^text\/html/);
      expect(response.body).toContain('href="/login?next=%2Fruns%2Fsome-run"');
    });

    it('ignores a token in the URL', async () => {
      for (const query of [`token=${TOKEN}`, `access_token=${TOKEN}`, `api_token=${TOKEN}`]) {
        const response = await apps.main.inject({ method: 'GET', url: `/api/v1/runs?${query}` });

        expect(response.statusCode, query).toBe(401);
      }
    });

    it('rejects a wrong bearer token', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/api/v1/runs', headers: { authorization: `Bearer ${WRONG_TOKEN}` } });

      expect(response.statusCode).toBe(401);
      expect(response.body).not.toContain(WRONG_TOKEN);
    });

    it('accepts the bearer token', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/api/v1/runs', headers: bearer });

      expect(response.statusCode).toBe(200);
      expect(response.json()).toEqual({ runs: [] });
    });

    it('logs in with an HttpOnly SameSite=Strict cookie', async () => {
      const login = await apps.main.inject({ method: 'POST', url: '/login', payload: `token=${TOKEN}&next=%2Fruns%2Fsome-run`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      const cookie = String(login.headers['set-cookie']);
      const session = cookie.split(';')[0];

      expect(login.statusCode).toBe(303);
      expect(login.headers.location).toBe('/runs/some-run');
      expect(cookie).toMatch(/^cachefleet_session=/);
      expect(cookie).toMatch(/; HttpOnly/);
      expect(cookie).toMatch(/; SameSite=Strict/);
      expect(cookie).toMatch(/; Path=\//);
      expect(cookie).not.toMatch(/; Secure/);
      expect(cookie).not.toContain(TOKEN);
      expect((await apps.main.inject({ method: 'GET', url: '/api/v1/runs', headers: { cookie: session } })).statusCode).toBe(200);
      expect((await apps.main.inject({ method: 'GET', url: '/queues', headers: { cookie: session } })).statusCode).toBe(200);
    });

    it('marks the cookie Secure behind a TLS proxy', async () => {
      const login = await apps.behindProxy.inject({ method: 'POST', url: '/login', payload: { token: TOKEN }, headers: { 'x-forwarded-proto': 'https' } });

      expect(login.statusCode).toBe(204);
      expect(String(login.headers['set-cookie'])).toMatch(/; Secure/);
    });

    it('rejects a login with a wrong token', async () => {
      const login = await apps.main.inject({ method: 'POST', url: '/login', payload: `token=${WRONG_TOKEN}&next=%2F`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });

      expect(login.statusCode).toBe(401);
      expect(login.headers['set-cookie']).toBeUndefined();
      expect(login.body).toContain('The token is invalid');
      expect(login.body).not.toContain(WRONG_TOKEN);
    });

    it('rejects a forged session cookie', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/api/v1/runs', headers: { cookie: `cachefleet_session=9999999999.abc.${'A'.repeat(43)}` } });

      expect(response.statusCode).toBe(401);
    });

    it('redirects only to pages of this server', async () => {
      const login = await apps.main.inject({ method: 'POST', url: '/login', payload: `token=${TOKEN}&next=%2F%2Fother.example%2Fpage`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });

      expect(login.headers.location).toBe('/');
    });

    it('opens /metrics with metricsAuth none', async () => {
      const metrics = await apps.openMetrics.inject({ method: 'GET', url: '/metrics' });
      const api = await apps.openMetrics.inject({ method: 'GET', url: '/api/v1/runs' });

      expect(metrics.statusCode).toBe(200);
      expect(api.statusCode).toBe(401);
    });

    it('refuses to listen beyond loopback without a token', async () => {
      const building = buildCoordinatorApp({ settings: settings({ host: '0.0.0.0', token: undefined }), client, store, storageUrl: 's3://unused/fleet', statisticsDir: tmpDir, logger: pino({ level: 'silent' }) });

      await expect(building).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/beyond loopback, without an API token/) });
    });
  });

  describe('validation', () => {
    it('names the invalid fields', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: bearer, payload: { ...validBuild, shardRecords: 'many', split: 'dev' } });
      const body = response.json<{ error: { code: string; message: string } }>();

      expect(response.statusCode).toBe(400);
      expect(body.error.code).toBe('INVALID_ARGUMENT');
      expect(body.error.message).toMatch(/body\.shardRecords: Invalid input: expected number/);
      expect(body.error.message).toMatch(/body\.split: Invalid option/);
      expect(body.error.message).toMatch(/Correct these fields/);
    });

    it('names an invalid evaluation field', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/evaluations', headers: bearer, payload: { test: { queries: { manifest: 'a' }, cache: [] } } });

      expect(response.statusCode).toBe(400);
      expect(response.json<{ error: { message: string } }>().error.message).toMatch(/body\.test\.cache: Too small/);
    });

    it('rejects another storage', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: bearer, payload: { ...validBuild, storageUrl: 'file:///tmp/elsewhere' } });

      expect(response.statusCode).toBe(400);
      expect(response.json<{ error: { message: string } }>().error.message).toMatch(/body\.storageUrl "file:\/\/\/tmp\/elsewhere" differs from this server's storage/);
    });

    it('rejects an oversized body with 413', async () => {
      const response = await apps.smallBodies.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: bearer, payload: { ...validBuild, keyLayers: Array.from({ length: 2000 }, (_, i) => i) } });

      expect(response.statusCode).toBe(413);
      expect(response.json()).toMatchObject({ error: { code: 'REQUEST_TOO_LARGE', message: expect.stringMatching(/limit of 4096 bytes/) } });
    });

    it('rejects malformed JSON', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: { ...bearer, 'content-type': 'application/json' }, payload: '{"dataDir": ' });

      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/not valid JSON/) } });
    });

    it('names a missing dataset folder', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: bearer, payload: { ...validBuild, dataDir: path.join(sharedDir, 'no-such-folder') } });

      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: { code: 'DATASET_NOT_FOUND', message: expect.stringContaining('no-such-folder') } });
    });

    it('names a missing key layer', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: bearer, payload: { ...validBuild, keyLayers: ['no_such_layer'] } });

      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: { code: 'KEY_LAYER_NOT_FOUND', message: expect.stringContaining('no_such_layer') } });
    });

    it('rejects a model outside the file roots', async () => {
      const response = await apps.main.inject({ method: 'POST', url: '/api/v1/runs/cache-builds', headers: bearer, payload: { ...validBuild, modelPath: '/etc/hostname' } });

      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/Model file \/etc\/hostname is outside the folders/) } });
    });

    it('creates no job or record for rejected requests', async () => {
      expect(await jobCount()).toBe(0);
      expect(await store.list('runs/')).toEqual([]);
    });

    it('answers 404 for an unknown run', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/api/v1/runs/no-such-run', headers: bearer });

      expect(response.statusCode).toBe(404);
      expect(response.json()).toMatchObject({ error: { code: 'RUN_NOT_FOUND' } });
    });

    it('answers 404 for an unknown route', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/api/v1/nothing', headers: bearer });

      expect(response.statusCode).toBe(404);
      expect(response.json()).toMatchObject({ error: { code: 'ROUTE_NOT_FOUND' } });
    });
  });

  describe('documents and metrics', () => {
    it('serves the OpenAPI document without a token', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/openapi.json' });
      const document = response.json<{ paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, unknown> } }> } }>> }>();

      expect(response.statusCode).toBe(200);
      expect(Object.keys(document.paths).sort()).toEqual(['/api/v1/runs', '/api/v1/runs/cache-builds', '/api/v1/runs/evaluations', '/api/v1/runs/{runId}', '/api/v1/runs/{runId}/cancel', '/api/v1/runs/{runId}/report', '/health', '/metrics']);
      expect(Object.keys(document.paths['/api/v1/runs/cache-builds'].post.requestBody!.content['application/json'].schema.properties)).toContain('shardRecords');
    });

    it('exports fleet metrics', async () => {
      const response = await apps.main.inject({ method: 'GET', url: '/metrics', headers: bearer });

      expect(response.statusCode).toBe(200);
      expect(response.body).toContain('cachefleet_queue_jobs{queue="extract",state="waiting"} 0');
      expect(response.body).toMatch(/^cachefleet_redis_used_memory_bytes [1-9]\d*$/m);
      expect(response.body).toContain('# TYPE cachefleet_job_duration_seconds histogram');
      expect(response.body).toContain('# TYPE cachefleet_job_failures_total counter');
      expect(response.body).toContain('# TYPE cachefleet_extract_images_per_second gauge');
      expect(response.body).toContain('# TYPE cachefleet_score_queries_per_second gauge');
    });
  });

  it('never logs a token', () => {
    const log = logLines.join('');

    expect(log.length).toBeGreaterThan(0);
    expect(log).not.toContain(TOKEN);
    expect(log).not.toContain(WRONG_TOKEN);
  });
});
