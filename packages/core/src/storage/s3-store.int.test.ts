import { createCipheriv, createHash } from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';

import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { startS3TestServer, type S3TestServer } from '../../../../test/support/s3-server.js';
import { startTcpProxy, type TcpProxy } from '../../../../test/support/tcp-proxy.js';
import { isCachefleetError } from '../errors.js';
import type { Logger } from '../log.js';
import { openObjectStore } from './open-object-store.js';
import { S3ObjectStore, type S3StoreOptions } from './s3-store.js';
import { isObjectNotFound } from './storage-errors.js';

const MiB = 1024 * 1024;

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** Creates a pino logger that keeps its lines in memory, so tests can read what was logged. */
function captureLogs(): { logger: Logger; lines: LogLine[]; text: () => string } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') {
          lines.push(JSON.parse(line) as LogLine);
        }
      }
      callback();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines, text: () => JSON.stringify(lines) };
}

/**
 * Yields deterministic pseudo-random bytes (the AES-128-CTR keystream of `seed`) in chunks of
 * `chunkBytes`. `onPull` receives the running total after each chunk is handed out.
 */
async function* pseudoRandomChunks(seed: number, totalBytes: number, chunkBytes: number, onPull: (pulledBytes: number) => void = () => undefined): AsyncGenerator<Uint8Array> {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, seed), Buffer.alloc(16, 0));
  let pulled = 0;
  while (pulled < totalBytes) {
    const length = Math.min(chunkBytes, totalBytes - pulled);
    const chunk = cipher.update(Buffer.alloc(length));
    pulled += length;
    onPull(pulled);
    yield chunk;
  }
}

async function sha256Of(chunks: AsyncIterable<Uint8Array>): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of chunks) {
    hash.update(chunk);
    bytes += chunk.byteLength;
  }
  return { sha256: hash.digest('hex'), bytes };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe('S3ObjectStore', () => {
  let server: S3TestServer;
  let proxy: TcpProxy;
  let bucket: string;
  let logs: ReturnType<typeof captureLogs>;
  const stores: S3ObjectStore[] = [];

  /** Opens a store that reaches the server through the proxy, with the test's log capture. */
  function openStore(options: Partial<S3StoreOptions> = {}): S3ObjectStore {
    const store = new S3ObjectStore({
      bucket,
      connection: { endpoint: proxy.url, region: server.region, credentials: server.credentials, connectionTimeoutMs: 2_000, socketTimeoutMs: 10_000 },
      logger: logs.logger,
      ...options,
    });
    stores.push(store);
    return store;
  }

  function requestLines(): string[] {
    return proxy.requests.map((request) => request.line);
  }

  beforeAll(async () => {
    server = await startS3TestServer();
  });

  afterAll(async () => {
    await server?.stop();
  });

  beforeEach(async () => {
    bucket = await server.createBucket('store');
    proxy = await startTcpProxy({ targetPort: Number(new URL(server.endpoint).port), targetHost: new URL(server.endpoint).hostname });
    logs = captureLogs();
  });

  afterEach(async () => {
    for (const store of stores.splice(0)) {
      await store.close();
    }
    await proxy.close();
  });

  it('round-trips put, get, head, list and delete', async () => {
    const store = openStore({ prefix: 'runs/r1' });
    const body = Buffer.from('{"shards":3}');

    const written = await store.put('manifest.json', body);

    expect(written).toEqual({ sha256: createHash('sha256').update(body).digest('hex'), bytes: body.byteLength });
    expect(Buffer.from(await store.getBytes('manifest.json')).equals(body)).toBe(true);
    expect((await sha256Of(store.get('manifest.json'))).sha256).toBe(written.sha256);
    expect(await store.head('manifest.json')).toEqual({ bytes: body.byteLength });
    expect(await store.list('')).toEqual([{ key: 'manifest.json', bytes: body.byteLength }]);
    expect(requestLines()).toContain(`PUT /${bucket}/runs/r1/manifest.json?x-id=PutObject HTTP/1.1`);

    await store.delete('manifest.json');

    expect(await store.head('manifest.json')).toBeUndefined();
    expect(await store.list('')).toEqual([]);
  });

  it('keeps prefixes apart', async () => {
    const first = openStore({ prefix: 'runs/r1' });
    const second = openStore({ prefix: 'runs/r10' });

    await first.put('a', Buffer.from('1'));
    await second.put('a', Buffer.from('10'));

    expect(await first.list('')).toEqual([{ key: 'a', bytes: 1 }]);
    expect(Buffer.from(await second.getBytes('a')).toString()).toBe('10');
    expect(first.describe()).toBe(`s3://${bucket}/runs/r1/`);
  });

  it('stores an empty object', async () => {
    const store = openStore();

    const written = await store.put('empty', (async function* () {})());

    expect(written.bytes).toBe(0);
    expect(await store.head('empty')).toEqual({ bytes: 0 });
    expect((await store.getBytes('empty')).byteLength).toBe(0);
  });

  it('streams 40 MB through multipart', async () => {
    const store = openStore();
    const totalBytes = 40 * MiB + 12_345;
    const expected = await sha256Of(pseudoRandomChunks(1, totalBytes, 65_537));

    const written = await store.put('shards/keys-0001.bin', pseudoRandomChunks(1, totalBytes, 65_537));
    const readBack = await sha256Of(store.get('shards/keys-0001.bin'));

    expect(written).toEqual(expected);
    expect(readBack).toEqual(expected);
    expect(await store.head('shards/keys-0001.bin')).toEqual({ bytes: totalBytes });
    const lines = requestLines();
    expect(lines.filter((line) => line.startsWith('POST') && line.includes('?uploads'))).toHaveLength(1);
    expect(lines.filter((line) => line.startsWith('PUT') && line.includes('partNumber='))).toHaveLength(6);
    expect(lines.filter((line) => line.startsWith('POST') && line.includes('uploadId='))).toHaveLength(1);
    expect(lines.filter((line) => line.includes('x-id=PutObject'))).toHaveLength(0);
  });

  it('aborts multipart when the source fails', async () => {
    const store = openStore({ partSize: 5 * MiB });
    async function* failingSource(): AsyncGenerator<Uint8Array> {
      yield* pseudoRandomChunks(2, 12 * MiB, MiB);
      throw new Error('key extractor crashed');
    }

    await expect(store.put('shards/broken.bin', failingSource())).rejects.toThrow('key extractor crashed');

    const abortRequests = proxy.requests.filter((request) => request.method === 'DELETE' && request.target.includes('uploadId='));
    expect(abortRequests).toHaveLength(1);
    expect(abortRequests[0].target).toContain(`/${bucket}/shards/broken.bin?`);
    expect(await store.head('shards/broken.bin')).toBeUndefined();
    // s3rver 3.7 rejects AbortMultipartUpload with 405, so the store logs that failure instead of raising it.
    const abortLog = logs.lines.find((line) => line.msg.startsWith('abort of failed multipart upload failed'));
    if (server.kind === 's3rver') {
      expect(abortLog?.level).toBe(50);
    }
  });

  it('aborts multipart on a length mismatch', async () => {
    const store = openStore({ partSize: 5 * MiB });

    const error = await rejection(store.put('shards/short.bin', pseudoRandomChunks(3, 11 * MiB, MiB), { contentLength: 12 * MiB }));

    expect(isCachefleetError(error, 'INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toContain(`has only ${11 * MiB} bytes, but contentLength is ${12 * MiB}`);
    expect(requestLines().filter((line) => line.startsWith('DELETE') && line.includes('uploadId='))).toHaveLength(1);
    expect(requestLines().filter((line) => line.includes('uploadId=') && line.startsWith('POST'))).toHaveLength(0);
  });

  it('rides out a 3-second cut during a write', async () => {
    const partSize = 5 * MiB;
    const partConcurrency = 2;
    const store = openStore({ partSize, partConcurrency, retry: { budgetMs: 20_000 } });
    const totalBytes = 60 * MiB;
    let pulledBytes = 0;
    let pulledAtCut = -1;
    let pulledAtRestore = -1;
    let restored: Promise<void> | undefined;
    const onPull = (pulled: number) => {
      pulledBytes = pulled;
      if (pulledAtCut === -1 && pulled >= 12 * MiB) {
        pulledAtCut = pulled;
        void proxy.cut();
        restored = new Promise((resolve) => setTimeout(resolve, 3_000)).then(async () => {
          pulledAtRestore = pulledBytes;
          await proxy.restore();
        });
      }
    };

    const startedAt = Date.now();
    const written = await store.put('shards/during-outage.bin', pseudoRandomChunks(4, totalBytes, MiB, onPull));
    await restored;

    const expected = await sha256Of(pseudoRandomChunks(4, totalBytes, MiB));
    expect(written).toEqual(expected);
    expect(await sha256Of(store.get('shards/during-outage.bin'))).toEqual(expected);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(3_000);
    expect(logs.lines.filter((line) => line.msg === 'S3 request failed, retrying').length).toBeGreaterThan(0);
    // While the service was cut, the source was read at most a bounded window ahead:
    // the parts in flight, the part being filled and the two read before multipart began.
    expect(pulledAtRestore - pulledAtCut).toBeLessThanOrEqual((partConcurrency + 3) * partSize);
  });

  it('raises STORAGE_UNAVAILABLE after the budget', async () => {
    const store = openStore({ retry: { budgetMs: 1_500 } });
    await proxy.cut();

    const startedAt = Date.now();
    const error = await rejection(store.put('results/r1.json', Buffer.from('{}')));
    const elapsedMs = Date.now() - startedAt;

    expect(isCachefleetError(error, 'STORAGE_UNAVAILABLE')).toBe(true);
    expect((error as { retryable: boolean }).retryable).toBe(true);
    expect((error as Error).message).toContain(proxy.url);
    expect((error as Error).message).toContain('"results/r1.json"');
    expect((error as Error).message).toContain(bucket);
    expect((error as Error).message).not.toContain(server.credentials.secretAccessKey);
    expect(logs.text()).not.toContain(server.credentials.secretAccessKey);
    expect(elapsedMs).toBeLessThan(1_500 + 2_000);
  });

  it('resumes a read after a dropped connection', async () => {
    const writer = openStore();
    const totalBytes = 24 * MiB;
    const expected = await writer.put('shards/resume.bin', pseudoRandomChunks(5, totalBytes, MiB));
    const reader = openStore({ retry: { budgetMs: 10_000 } });

    const hash = createHash('sha256');
    let bytes = 0;
    let restored: Promise<void> | undefined;
    for await (const chunk of reader.get('shards/resume.bin')) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      if (restored === undefined) {
        await proxy.cut();
        restored = new Promise((resolve) => setTimeout(resolve, 1_000)).then(() => proxy.restore());
      }
    }
    await restored;

    expect({ sha256: hash.digest('hex'), bytes }).toEqual(expected);
    expect(logs.lines.filter((line) => line.msg === 'S3 object read interrupted, resuming').length).toBeGreaterThan(0);
    expect(requestLines().filter((line) => line.startsWith('GET') && line.includes('x-id=GetObject')).length).toBeGreaterThanOrEqual(2);
  });

  it.each(['../escape', 'a/../../escape', '/absolute', 'a\\..\\b', 'nul\u0000byte', 'a//b'])('rejects escaping key %j', async (key) => {
    const store = openStore({ prefix: 'tenant-a' });
    const requestsBefore = proxy.requests.length;

    const error = await rejection(store.put(key, Buffer.from('x')));

    expect(isCachefleetError(error, 'INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toContain(JSON.stringify(key));
    expect((error as Error).message).toContain(`s3://${bucket}/tenant-a/`);
    expect(proxy.requests.length).toBe(requestsBefore);
  });

  it('raises ObjectNotFoundError for missing keys', async () => {
    const store = openStore();

    const fromGetBytes = await rejection(store.getBytes('missing.json'));
    const fromGet = await rejection(sha256Of(store.get('missing.json')));

    expect(isObjectNotFound(fromGetBytes)).toBe(true);
    expect(isObjectNotFound(fromGet)).toBe(true);
    expect(await store.head('missing.json')).toBeUndefined();
    await expect(store.delete('missing.json')).resolves.toBeUndefined();
  });

  it('reports a missing bucket as invalid', async () => {
    const store = openStore({ bucket: 'no-such-bucket-cachefleet' });

    const error = await rejection(store.put('a', Buffer.from('x')));

    expect(isCachefleetError(error, 'INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toContain('no-such-bucket-cachefleet');
    expect((error as Error).message).toContain('HTTP 404');
  });

  it('creates with putIfAbsent', async () => {
    const store = openStore();

    const first = await store.putIfAbsent('locks/merge', Buffer.from('worker-1'));
    const second = await store.putIfAbsent('locks/merge', Buffer.from('worker-2'));

    expect(first).toBe(true);
    // s3rver 3.7 ignores If-None-Match and overwrites; MinIO and AWS S3 return 412.
    expect(second).toBe(server.kind === 's3rver');
    expect(requestLines().filter((line) => line.startsWith('PUT /') && line.includes('locks/merge'))).toHaveLength(2);
  });

  it('lists past one page', async () => {
    const store = openStore({ prefix: 'many' });
    const keys = Array.from({ length: 1_005 }, (_, i) => `results/r${String(i).padStart(4, '0')}.json`);
    for (let start = 0; start < keys.length; start += 25) {
      await Promise.all(keys.slice(start, start + 25).map((key) => store.put(key, Buffer.from(key))));
    }

    const listed = await store.list('results/');

    expect(listed.map((entry) => entry.key)).toEqual(keys);
    expect(requestLines().filter((line) => line.includes('list-type=2')).length).toBeGreaterThanOrEqual(2);
  });
});

describe('openObjectStore for S3', () => {
  let server: S3TestServer;

  beforeAll(async () => {
    server = await startS3TestServer();
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('reads the connection from env', async () => {
    const bucket = await server.createBucket('open');
    const env = {
      S3_ENDPOINT: server.endpoint,
      S3_REGION: server.region,
      S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
    };

    const store = await openObjectStore(`s3://${bucket}/runs/r2`, { env, logger: captureLogs().logger });
    await store.put('partial/0001.json', Buffer.from('{"correct":10}'));
    const listed = await store.list('partial/');
    await store.close();

    expect(store.describe()).toBe(`s3://${bucket}/runs/r2/`);
    expect(listed).toEqual([{ key: 'partial/0001.json', bytes: 14 }]);
  });

  it('rejects an endpoint without credentials', async () => {
    const env = { S3_ENDPOINT: server.endpoint };

    await expect(openObjectStore('s3://some-bucket/x', { env })).rejects.toThrow('has no credentials');
  });
});

describe('S3ObjectStore against a silent server', () => {
  it('times out and raises STORAGE_UNAVAILABLE', async () => {
    // Accepts connections and reads requests, but never responds.
    const silent = net.createServer((socket) => socket.resume());
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const logs = captureLogs();
    const store = new S3ObjectStore({
      bucket: 'silent-bucket',
      connection: { endpoint, credentials: { accessKeyId: 'test-key', secretAccessKey: 'test-secret-value' }, socketTimeoutMs: 300 },
      retry: { budgetMs: 1_500 },
      logger: logs.logger,
    });

    const error = await rejection(store.head('manifest.json'));
    await store.close();
    await new Promise<void>((resolve) => silent.close(() => resolve()));

    expect(isCachefleetError(error, 'STORAGE_UNAVAILABLE')).toBe(true);
    expect((error as Error).message).toContain(endpoint);
    expect((error as Error).message).toContain('timed out');
    expect((error as Error).message).not.toContain('test-secret-value');
    expect(logs.text()).not.toContain('test-secret-value');
  });
});
