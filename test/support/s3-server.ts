import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';

/** An S3-compatible server for integration tests. */
export interface S3TestServer {
  /** Server type: s3rver started here, a server named by S3_ENDPOINT, or MinIO in Docker. */
  readonly kind: 's3rver' | 'external' | 'minio';
  /** Base URL, such as `http://127.0.0.1:40123`. */
  readonly endpoint: string;
  readonly region: string;
  readonly credentials: { accessKeyId: string; secretAccessKey: string };
  /** Creates a bucket with a fresh unique name (`<label>-<random>`) and returns the name. */
  createBucket(label?: string): Promise<string>;
  /** Stops the server this helper started (or, for an external server, deletes the buckets it created). */
  stop(): Promise<void>;
}

const REGION = 'us-east-1';
// s3rver 3.7 accepts exactly this key pair (its built-in dummy account).
const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const MINIO_CREDENTIALS = { accessKeyId: 'cachefleet', secretAccessKey: 'cachefleet-test-secret' };
// Image tag of the MinIO release used by the testcontainers MinIO module; override with CACHEFLEET_TEST_MINIO_IMAGE.
const MINIO_IMAGE = 'minio/minio:RELEASE.2024-12-13T22-19-12Z';
const STARTUP_TIMEOUT_MS = 20_000;

/**
 * Provides an S3 server for a test file:
 * - with `S3_ENDPOINT` set, that server, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
 * - with `CACHEFLEET_TEST_S3=minio`, MinIO through testcontainers, if a Docker engine answers;
 * - otherwise s3rver 3.7 as a child process on 127.0.0.1, on a free port the system picks, with
 *   its data in a fresh temporary folder.
 */
export async function startS3TestServer(): Promise<S3TestServer> {
  const external = process.env.S3_ENDPOINT;
  if (external !== undefined && external !== '') {
    return useExternalServer(external);
  }
  if (process.env.CACHEFLEET_TEST_S3 === 'minio') {
    return startMinio();
  }
  return startS3rver();
}

async function startS3rver(): Promise<S3TestServer> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-s3rver-'));
  const require = createRequire(import.meta.url);
  const binary = path.join(path.dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');

  // s3rver encrypts list continuation tokens with DES, which OpenSSL 3 keeps in its legacy provider.
  const child = spawn(process.execPath, ['--openssl-legacy-provider', binary, '--directory', directory, '--address', '127.0.0.1', '--port', '0', '--silent'], {
    env: withoutNodeOptions(process.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stopChild = () => child.kill('SIGKILL');
  process.once('exit', stopChild);

  let port: number;
  try {
    port = await waitForListeningPort(child);
  } catch (error) {
    child.kill('SIGKILL');
    process.off('exit', stopChild);
    await rm(directory, { recursive: true, force: true });
    throw error;
  }

  const endpoint = `http://127.0.0.1:${port}`;
  return createHandle('s3rver', endpoint, S3RVER_CREDENTIALS, async () => {
    process.off('exit', stopChild);
    await stopProcess(child);
    await rm(directory, { recursive: true, force: true });
  });
}

async function useExternalServer(endpoint: string): Promise<S3TestServer> {
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw new Error(`S3_ENDPOINT is set to ${endpoint} but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is missing. Set both for the test server.`);
  }
  return createHandle('external', endpoint.replace(/\/$/, ''), { accessKeyId, secretAccessKey }, async () => undefined);
}

async function startMinio(): Promise<S3TestServer> {
  if (!(await dockerEngineAnswers())) {
    throw new Error('CACHEFLEET_TEST_S3=minio needs a Docker engine, but none answered on its local socket. Unset CACHEFLEET_TEST_S3 to use s3rver.');
  }

  // NOTE: this path has not run on a machine with Docker; the s3rver path is the tested one.
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer(process.env.CACHEFLEET_TEST_MINIO_IMAGE ?? MINIO_IMAGE)
    .withEnvironment({ MINIO_ROOT_USER: MINIO_CREDENTIALS.accessKeyId, MINIO_ROOT_PASSWORD: MINIO_CREDENTIALS.secretAccessKey })
    .withCommand(['server', '/data'])
    .withExposedPorts(9000)
    .withWaitStrategy(Wait.forHttp('/minio/health/live', 9000))
    .start();

  const endpoint = `http://${container.getHost()}:${container.getMappedPort(9000)}`;
  return createHandle('minio', endpoint, MINIO_CREDENTIALS, async () => {
    await container.stop();
  });
}

function createHandle(
  kind: S3TestServer['kind'],
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  stopServer: () => Promise<void>,
): S3TestServer {
  const client = new S3Client({
    endpoint,
    region: REGION,
    credentials,
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const buckets: string[] = [];

  return {
    kind,
    endpoint,
    region: REGION,
    credentials,
    async createBucket(label = 'test') {
      const bucket = `${label}-${randomUUID().slice(0, 8)}`.toLowerCase();
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      buckets.push(bucket);
      return bucket;
    },
    async stop() {
      // Servers started here vanish with their data; an external server keeps data, so it is emptied.
      if (kind === 'external') {
        for (const bucket of buckets) {
          await emptyAndDeleteBucket(client, bucket);
        }
      }
      client.destroy();
      await stopServer();
    },
  };
}

async function emptyAndDeleteBucket(client: S3Client, bucket: string): Promise<void> {
  // s3rver and some other servers do not implement ListMultipartUploads; skip that step there.
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket })).catch(() => undefined);
  for (const upload of uploads?.Uploads ?? []) {
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }));
  }

  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const object of page.Contents ?? []) {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: object.Key }));
    }
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);

  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Waits for s3rver's "S3rver listening on 127.0.0.1:<port>" line and returns the port. */
function waitForListeningPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => fail(new Error(`s3rver did not start within ${STARTUP_TIMEOUT_MS} ms. Output: ${output}`)), STARTUP_TIMEOUT_MS);

    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const match = /listening on [\d.]+:(\d+)/.exec(output);
      if (match !== null) {
        cleanup();
        resolve(Number(match[1]));
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      fail(new Error(`s3rver exited during start-up (code ${code}, signal ${signal}). Output: ${output}`));
    };
    const fail = (error: Error) => {
      cleanup();
      reject(error);
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // Keep draining the pipes, or a chatty child would block on a full pipe.
      child.stdout?.resume();
      child.stderr?.resume();
    };

    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Tells whether a Docker engine responds to `GET /_ping` on the local Unix socket (DOCKER_HOST when it
 * is a unix:// URL, else /var/run/docker.sock). TCP Docker hosts are not probed.
 */
async function dockerEngineAnswers(): Promise<boolean> {
  const dockerHost = process.env.DOCKER_HOST ?? '';
  const socketPath = dockerHost.startsWith('unix://') ? dockerHost.slice('unix://'.length) : '/var/run/docker.sock';
  if (!existsSync(socketPath)) {
    return false;
  }

  return new Promise((resolve) => {
    const request = http.get({ socketPath, path: '/_ping', timeout: 2_000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
  });
}

/** Copies the environment without NODE_OPTIONS, so the child does not load the test runner's hooks. */
function withoutNodeOptions(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  delete copy.NODE_OPTIONS;
  return copy;
}
