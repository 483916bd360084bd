import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  FLEET_QUEUE_NAMES,
  QUEUE_NAMES,
  buildFlowSpec,
  isCachefleetError,
  objectKeys,
  readManifest,
  writeSyntheticDataset,
  type CacheBuildRequest,
  type EvaluationRequest,
  type ObjectStore,
} from '@cachefleet/core';

import { BuildResolver } from '../../apps/coordinator/src/fleet/resolve-build.js';
import { startCoordinatorServer, type CoordinatorServer } from '../../apps/coordinator/src/http/server.js';
import { submitCacheBuild, submitEvaluation, waitForEvaluation } from '../../apps/coordinator/src/fleet/submit.js';
import { FleetRunFailedError, waitForJob } from '../../apps/coordinator/src/fleet/wait-for-job.js';
import { randomToken } from '../http/coordinator-harness.js';
import { requireSharedData, resnet20Path, sharedDir } from '../support/shared.js';
import { appendBytes, copyDataset, setCifar10Label, truncateFile, writeCifarTinyModel } from './support/bad-input-fixtures.js';
import { startReliabilityFleet, type ReliabilityFleet } from './support/reliability-fleet.js';

/**
 * Where a bad input was caught: the command line's option parser (before any request leaves
 * it), the coordinator's submit functions, a worker's job, or the HTTP API.
 */
type Layer = 'cli' | 'coordinator' | 'worker' | 'http';

/** Result of a case: the layer that rejected it, the error code and the message shown to the user. */
interface Outcome {
  layer: Layer;
  /** Stable code from packages/core/src/errors.ts, or `USAGE` for an option the CLI's parser rejected. */
  code: string;
  message: string;
  /** Attempts of the failed job, for worker cases. */
  attempts?: number;
  /** HTTP status, for HTTP API cases. */
  status?: number;
}

interface BadInputCase {
  name: string;
  layer: Layer;
  code: string;
  /** Text naming the offending value, which the message must contain. */
  value: string;
  /** The fix the message must give. */
  fix: RegExp;
  /** New files a failed run may leave: complete objects of the jobs that succeeded before the failure. */
  leaves?: RegExp;
  /** Expected HTTP status, for HTTP API cases (default 400). */
  status?: number;
  run: () => Promise<Outcome>;
}

const FLEET_ENV = { CACHEFLEET_LOCK_DURATION_MS: '2000', CACHEFLEET_STALLED_INTERVAL_MS: '1000' };
/** Body limit of the test's coordinator API, in bytes: small, so that an oversized body is cheap to send. */
const API_BODY_LIMIT = 8192;
const API_TOKEN = randomToken();
const KEY_LAYERS = [49, 57, 64];
const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('bad input', () => {
  let fleet: ReliabilityFleet;
  let resolver: BuildResolver;
  let fixtures: string;
  let outside: string;
  let objectsDir: string;
  let storeDir: string;
  let storageUrl: string;
  let store: ObjectStore;
  let dataDir: string;
  // Stand-in for the coordinator API that `cachefleet submit` sends requests to. It counts the requests that reach it.
  let apiSink: http.Server;
  let apiSinkUrl: string;
  let apiRequests = 0;
  // The coordinator API on the test's fleet, for the cases the HTTP layer rejects.
  let api: CoordinatorServer;
  const models: Record<string, string> = {};
  const manifests: Record<string, string> = {};
  const table: Array<{ name: string; outcome: Outcome }> = [];

  const build = (overrides: Partial<CacheBuildRequest> & Record<string, unknown> = {}): CacheBuildRequest => ({
    dataDir,
    split: 'train',
    recordRange: { start: 0, end: 40 },
    shardRecords: 40,
    modelPath: resnet20Path,
    keyLayers: KEY_LAYERS,
    includeMirrors: false,
    storageUrl,
    ...overrides,
  });

  /** Builds an evaluation request over built manifests with fixed parameters. `overrides` replaces fields, such as a bad θ. */
  const evaluation = (overrides: Record<string, unknown> = {}): EvaluationRequest =>
    ({
      storageUrl,
      test: { queries: { manifest: manifests.queries }, cache: [{ manifest: manifests.cache }] },
      theta: 50,
      lambda: 0.5,
      thetaCacheOnly: 50,
      ...overrides,
    }) as EvaluationRequest;

  beforeAll(async () => {
    requireSharedData();
    fleet = await startReliabilityFleet({ label: 'bad-input', fleetEnv: FLEET_ENV });
    fixtures = path.join(fleet.tmpDir, 'fixtures');
    objectsDir = path.join(fleet.tmpDir, 'objects');
    storeDir = path.join(fleet.tmpDir, 'coordinator-store');
    storageUrl = pathToFileURL(objectsDir).href;
    // A folder outside the workers' CACHEFLEET_FILE_ROOTS.
    outside = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-outside-'));
    apiSink = http.createServer((request, response) => {
      apiRequests += 1;
      response.writeHead(500).end();
    });
    apiSink.listen(0, '127.0.0.1');
    await once(apiSink, 'listening');
    apiSinkUrl = `http://127.0.0.1:${(apiSink.address() as AddressInfo).port}`;

    // Workers may read files only below the fixtures and the shared data. Jobs keep their default of 3 attempts.
    fleet.startWorkers(2, { CACHEFLEET_FILE_ROOTS: `${fixtures},${sharedDir}` });
    resolver = new BuildResolver((url) => fleet.open(url), storeDir, fleet.logger);
    store = await fleet.open(storageUrl);
    api = await startCoordinatorServer({
      settings: { host: '127.0.0.1', port: 0, token: API_TOKEN, metricsAuth: 'token', sessionTtlSeconds: 3600, bodyLimit: API_BODY_LIMIT, trustProxy: false, dashboardActions: false },
      client: fleet.client,
      store,
      storageUrl,
      statisticsDir: storeDir,
      fileRoots: [fixtures, sharedDir],
      logger: fleet.logger,
    });

    // A small synthetic CIFAR-10 (5 × 20 training and 10 test records) and tiny models.
    dataDir = await writeSyntheticDataset(fixtures, { dataset: 'cifar10' });
    models.tiny = await writeCifarTinyModel(path.join(fixtures, 'tiny.h5'));
    models.fiveClasses = await writeCifarTinyModel(path.join(fixtures, 'five-classes.h5'), { numClasses: 5 });
    models.unsupported = await writeCifarTinyModel(path.join(fixtures, 'noise-layer.h5'), { extraLayerClass: 'GaussianNoise' });
    models.nan = await writeCifarTinyModel(path.join(fixtures, 'nan-kernel.h5'), { nanKernel: true });
    models.notHdf5 = path.join(fixtures, 'not-hdf5.h5');
    await writeFile(models.notHdf5, 'this is a text file, not a Keras model\n');

    // Valid stores for the evaluation cases: a cache, queries, an overlapping store, and stores
    // built with other statistics and with another model.
    const stores: Record<string, CacheBuildRequest> = {
      cache: build({ buildId: 'cache' }),
      queries: build({ buildId: 'queries', split: 'test', recordRange: { start: 0, end: 10 }, shardRecords: 10 }),
      overlapping: build({ buildId: 'overlapping', recordRange: { start: 20, end: 60 } }),
      otherStatistics: build({ buildId: 'other-statistics', recordRange: { start: 60, end: 100 }, statisticsSplits: ['train'] }),
      otherModel: build({ buildId: 'other-model', modelPath: models.tiny, keyLayers: [1] }),
    };
    for (const [name, request] of Object.entries(stores)) {
      const submission = await submitCacheBuild(fleet.client, resolver, (url) => fleet.open(url), request);
      await waitForJob(fleet.client, QUEUE_NAMES.merge, submission.mergeJobId, { timeoutMs: 120_000, pollMs: 100 });
      manifests[name] = submission.manifestKey;
    }

    // A manifest that lists a shard object that does not exist.
    const cache = (await readManifest(store, manifests.cache)).manifest;
    const missing = { ...cache, id: 'missing-shard', shards: cache.shards.map((shard) => ({ ...shard, path: shard.path.replace('builds/cache/', 'builds/missing-shard/') })) };
    manifests.missingShard = objectKeys.manifest('missing-shard');
    const bytes = Buffer.from(JSON.stringify(missing, null, 2));
    await store.put(manifests.missingShard, bytes, { contentLength: bytes.length });
  }, 300_000);

  afterAll(async () => {
    if (table.length > 0) {
      const rows = table.map(({ name, outcome }) => `| ${name} | ${outcome.layer}${outcome.status === undefined ? '' : ` ${outcome.status}`} | ${outcome.code} | ${outcome.attempts ?? ''} | ${outcome.message.replace(/\|/g, '\\|').replace(/\s+/g, ' ').slice(0, 400)} |`);
      process.stderr.write(`bad input table:\n| case | layer | code | attempts | message |\n| --- | --- | --- | --- | --- |\n${rows.join('\n')}\n`);
    }
    await api?.close();
    await fleet?.stop();
    apiSink?.close();
    if (outside !== undefined) await rm(outside, { recursive: true, force: true });
  });

  /** Submits a build and returns where it failed. A build that succeeds makes the case fail. */
  async function viaBuild(request: CacheBuildRequest, buildResolver = resolver): Promise<Outcome> {
    let submission;
    try {
      submission = await submitCacheBuild(fleet.client, buildResolver, (url) => fleet.open(url), request);
    } catch (error) {
      return coordinatorOutcome(error);
    }
    return workerOutcome(() => waitForJob(fleet.client, QUEUE_NAMES.merge, submission.mergeJobId, { timeoutMs: 120_000, pollMs: 100 }));
  }

  async function viaEvaluation(request: EvaluationRequest): Promise<Outcome> {
    let submission;
    try {
      submission = await submitEvaluation(fleet.client, resolver, (url) => fleet.open(url), request);
    } catch (error) {
      return coordinatorOutcome(error);
    }
    return workerOutcome(() => waitForEvaluation(fleet.client, submission));
  }

  /**
   * Runs the `cachefleet` command line (the built dist) against the stand-in API. Only a
   * rejection by the option parser, before any request reaches the API, counts as the CLI layer.
   */
  async function viaCli(args: string[]): Promise<Outcome> {
    const cli = path.join(repositoryRoot, 'apps/coordinator/dist/cli.js');
    const requestsBefore = apiRequests;
    const child = spawn(process.execPath, [cli, ...args, '--api', apiSinkUrl], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH, HOME: process.env.HOME, CACHEFLEET_LOG_LEVEL: 'silent' } });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const [exitCode] = (await once(child, 'exit')) as [number | null];
    if (exitCode === 0) throw new Error(`cachefleet ${args.join(' ')} succeeded, but the case expects a rejection.`);

    const usage = /^error: ([\s\S]*)/m.exec(stderr);
    if (usage === null || apiRequests !== requestsBefore) throw new Error(`cachefleet ${args.join(' ')} was not rejected by its option parser (${apiRequests - requestsBefore} API requests): ${stderr}`);
    return { layer: 'cli', code: 'USAGE', message: usage[1].trim() };
  }

  /**
   * Posts a raw JSON body to the coordinator API's route for new runs of a kind and reads the
   * error response. The API returns errors as `{ "error": { "code", "message" } }`.
   */
  async function viaHttp(kind: 'cache-builds' | 'evaluations', body: string): Promise<Outcome> {
    const response = await fetch(`${api.url}/api/v1/runs/${kind}`, { method: 'POST', headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' }, body });
    if (response.ok) throw new Error(`POST /api/v1/runs/${kind} was accepted (${response.status}), but the case expects a rejection.`);
    const error = ((await response.json()) as { error?: { code?: string; message?: string } }).error;
    return { layer: 'http', status: response.status, code: error?.code ?? '(no code)', message: error?.message ?? '(no message)' };
  }

  /** Adds a flow as given, bypassing the coordinator's checks, as a tampered or foreign queue entry would. */
  async function viaFlow(request: CacheBuildRequest, tamper: (extract: { data: Record<string, unknown> }) => void): Promise<Outcome> {
    const resolved = await resolver.resolve(request);
    tamper(resolved.jobs.extracts[0] as unknown as { data: Record<string, unknown> });
    await fleet.client.addFlow(buildFlowSpec(resolved.jobs, fleet.client.settings));
    return workerOutcome(() => waitForJob(fleet.client, QUEUE_NAMES.merge, `merge-${resolved.jobs.buildId}`, { timeoutMs: 120_000, pollMs: 100 }));
  }

  /** Submits a build whose dataset is damaged by `damage` after the coordinator accepted it and before a worker reads it. */
  async function viaDataChangedAfterSubmit(buildId: string, damage: (dir: string) => Promise<void>): Promise<Outcome> {
    const copy = await copyDataset(dataDir, path.join(fixtures, `data-${buildId}`));
    const extracts = fleet.client.queue(QUEUE_NAMES.extract);
    await extracts.pause();
    try {
      const submission = await submitCacheBuild(fleet.client, resolver, (url) => fleet.open(url), build({ buildId, dataDir: copy }));
      await damage(copy);
      await extracts.resume();
      return await workerOutcome(() => waitForJob(fleet.client, QUEUE_NAMES.merge, submission.mergeJobId, { timeoutMs: 120_000, pollMs: 100 }));
    } finally {
      await extracts.resume();
    }
  }

  async function damagedCopy(name: string, damage: (dir: string) => Promise<void>): Promise<string> {
    const copy = await copyDataset(dataDir, path.join(fixtures, `data-${name}`));
    await damage(copy);
    return copy;
  }

  const cases: BadInputCase[] = [
    // Dataset files.
    {
      name: 'truncated dataset file',
      layer: 'coordinator',
      code: 'DATASET_INVALID',
      value: 'data_batch_1.bin: its size 61360 bytes',
      fix: /download the dataset again|Download the dataset/,
      run: async () => viaBuild(build({ dataDir: await damagedCopy('truncated', (dir) => truncateFile(path.join(dir, 'data_batch_1.bin'), 100)) })),
    },
    {
      name: 'oversized dataset file',
      layer: 'coordinator',
      code: 'DATASET_INVALID',
      value: 'data_batch_2.bin: its size 61560 bytes',
      fix: /download the dataset again|Download the dataset/,
      run: async () => viaBuild(build({ dataDir: await damagedCopy('oversized', (dir) => appendBytes(path.join(dir, 'data_batch_2.bin'), 100)) })),
    },
    {
      name: 'label out of range',
      layer: 'coordinator',
      code: 'DATASET_INVALID',
      value: '(record 3) is 12, outside 0..9',
      fix: /download the dataset again|Download the dataset/,
      run: async () => viaBuild(build({ dataDir: await damagedCopy('label', (dir) => setCifar10Label(path.join(dir, 'data_batch_1.bin'), 3, 12)) })),
    },
    {
      name: 'dataset file truncated after submission',
      layer: 'worker',
      code: 'DATASET_INVALID',
      value: 'data_batch_1.bin: its size 61360 bytes',
      fix: /download the dataset again|Download the dataset/,
      run: () => viaDataChangedAfterSubmit('changed-data', (dir) => truncateFile(path.join(dir, 'data_batch_1.bin'), 100)),
    },
    // Record ranges.
    {
      name: 'empty record range',
      layer: 'coordinator',
      code: 'INVALID_ARGUMENT',
      value: 'recordRange = {"start":5,"end":5}',
      fix: /start must be less than end/,
      run: () => viaBuild(build({ recordRange: { start: 5, end: 5 } })),
    },
    {
      name: 'record range beyond the dataset',
      layer: 'coordinator',
      code: 'INVALID_ARGUMENT',
      value: 'end 200 is beyond the split, which has 100 records',
      fix: /0 <= start < end <= 100|start < end/,
      run: () => viaBuild(build({ recordRange: { start: 0, end: 200 } })),
    },
    {
      name: 'record range without an end on the command line',
      layer: 'cli',
      code: 'USAGE',
      value: '"5" is not a record range',
      fix: /give START:END \(half-open\)/,
      run: () => viaCli(['submit', 'cache-build', '--data', dataDir, '--split', 'train', '--range', '5', '--shard-records', '10', '--model', resnet20Path, '--key-layers', '49,57,64']),
    },
    {
      name: 'zero records per shard on the command line',
      layer: 'cli',
      code: 'USAGE',
      value: "'0'",
      fix: /is not a positive whole number/,
      run: () => viaCli(['submit', 'cache-build', '--data', dataDir, '--split', 'train', '--shard-records', '0', '--model', resnet20Path, '--key-layers', '49,57,64']),
    },
    // Models and key layers.
    {
      name: 'model file that is not HDF5',
      layer: 'coordinator',
      code: 'MODEL_INVALID',
      value: 'not-hdf5.h5 is neither an HDF5 file',
      fix: /Pass a Keras \.h5 file/,
      run: () => viaBuild(build({ modelPath: models.notHdf5 })),
    },
    {
      name: 'Keras model with an unsupported layer',
      layer: 'coordinator',
      code: 'MODEL_UNSUPPORTED_LAYER',
      value: 'GaussianNoise',
      fix: /Replace those layers with supported ones/,
      run: () => viaBuild(build({ modelPath: models.unsupported, keyLayers: [1] })),
    },
    {
      name: 'key-layer index that does not exist',
      layer: 'coordinator',
      code: 'KEY_LAYER_NOT_FOUND',
      value: 'Key layer index 999 does not exist',
      fix: /valid indices are 0 to \d+/,
      run: () => viaBuild(build({ keyLayers: [49, 999] })),
    },
    {
      name: 'key-layer name that does not exist',
      layer: 'coordinator',
      code: 'KEY_LAYER_NOT_FOUND',
      value: 'Key layer "activation_99" not found',
      fix: /Similar names: .*activation_/,
      run: () => viaBuild(build({ keyLayers: ['activation_99'] })),
    },
    {
      name: 'model with other output classes than the dataset',
      layer: 'coordinator',
      code: 'CLASS_COUNT_MISMATCH',
      value: 'outputs 5 classes but cifar10 has 10',
      fix: /Use a model trained on cifar10/,
      run: () => viaBuild(build({ modelPath: models.fiveClasses, keyLayers: [1] })),
    },
    {
      name: 'non-finite activations',
      layer: 'worker',
      code: 'NON_FINITE_ACTIVATION',
      value: 'Record 0 of cifar10 train gives the key-layer activation NaN in key layer conv2d_1',
      fix: /Check the model weights and the preprocessing statistics/,
      run: () => viaBuild(build({ buildId: 'nan-model', modelPath: models.nan, keyLayers: [1] })),
    },
    // Tuning parameters.
    { name: 'θ = 0', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'theta = 0', fix: /θ must be greater than 0/, run: () => viaEvaluation(evaluation({ theta: 0 })) },
    { name: 'θ < 0', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'thetaCacheOnly = -5', fix: /θ must be greater than 0/, run: () => viaEvaluation(evaluation({ thetaCacheOnly: -5 })) },
    { name: 'θ = NaN', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'theta = NaN', fix: /θ must be a finite number/, run: () => viaEvaluation(evaluation({ theta: Number.NaN })) },
    { name: 'θ = Infinity in the grid', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'thetas[1] = Infinity', fix: /θ must be a finite number/, run: () => viaEvaluation(evaluation({ thetas: [10, Number.POSITIVE_INFINITY] })) },
    {
      name: 'θ = NaN on the command line',
      layer: 'cli',
      code: 'USAGE',
      value: "'NaN'",
      fix: /is not a finite number/,
      run: () => viaCli(['submit', 'evaluate', '--test-queries', manifests.queries, '--test-cache', manifests.cache, '--theta', 'NaN', '--lambda', '0.5', '--theta-cache-only', '50']),
    },
    { name: 'λ > 1', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'lambda = 1.5', fix: /λ must be between 0 and 1/, run: () => viaEvaluation(evaluation({ lambda: 1.5 })) },
    { name: 'λ < 0 in the grid', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'lambdas[0] = -0.1', fix: /λ must be between 0 and 1/, run: () => viaEvaluation(evaluation({ lambdas: [-0.1, 0.5] })) },
    {
      name: 'λ that is not a number on the command line',
      layer: 'cli',
      code: 'USAGE',
      value: "'half'",
      fix: /is not a finite number/,
      run: () => viaCli(['submit', 'evaluate', '--test-queries', manifests.queries, '--test-cache', manifests.cache, '--theta', '50', '--lambda', 'half', '--theta-cache-only', '50']),
    },
    { name: 'empty θ grid', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'thetas = []', fix: /the grid is empty/, run: () => viaEvaluation(evaluation({ thetas: [] })) },
    {
      name: 'empty θ grid on the command line',
      layer: 'cli',
      code: 'USAGE',
      value: "'10:90:0'",
      fix: /is not a positive whole number/,
      run: () => viaCli(['submit', 'evaluate', '--test-queries', manifests.queries, '--test-cache', manifests.cache, '--thetas', '10:90:0']),
    },
    // Key stores.
    {
      name: 'cache built with another model',
      layer: 'coordinator',
      code: 'KEY_STORE_MISMATCH',
      value: 'builds/other-model/manifest.json differs',
      fix: /Build every store of an evaluation with the same model/,
      run: () => viaEvaluation(evaluation({ test: { queries: { manifest: manifests.queries }, cache: [{ manifest: manifests.otherModel }] } })),
    },
    {
      name: 'cache built with other preprocessing',
      layer: 'coordinator',
      code: 'KEY_STORE_MISMATCH',
      value: 'builds/other-statistics/manifest.json differs',
      fix: /Build every store of an evaluation with the same model, key layers and preprocessing/,
      run: () => viaEvaluation(evaluation({ test: { queries: { manifest: manifests.queries }, cache: [{ manifest: manifests.otherStatistics }] } })),
    },
    {
      name: 'manifest pointing at a missing shard',
      layer: 'worker',
      code: 'OBJECT_NOT_FOUND',
      value: 'builds/missing-shard/shards/keys-0-40.cfshard',
      fix: /delete builds\/missing-shard\/manifest.json and submit the build again/,
      run: () => viaEvaluation(evaluation({ test: { queries: { manifest: manifests.queries }, cache: [{ manifest: manifests.missingShard }] } })),
    },
    {
      name: 'evaluation set overlapping the cache',
      layer: 'coordinator',
      code: 'CACHE_OVERLAP',
      value: 'query records [20, 60) of cifar10 train overlap cache records [0, 40)',
      fix: /Use disjoint records, or set allowOverlap/,
      run: () => viaEvaluation(evaluation({ test: { queries: { manifest: manifests.overlapping }, cache: [{ manifest: manifests.cache }] } })),
    },
    {
      name: 'overlap between builds that do not exist yet',
      layer: 'worker',
      code: 'CACHE_OVERLAP',
      value: 'query records [10, 30) of cifar10 train overlap cache records [0, 20)',
      fix: /Use disjoint records, or set allowOverlap/,
      leaves: /builds\/overlap-(queries|cache)\/manifest\.json$/,
      run: () =>
        viaEvaluation(
          evaluation({
            evaluationId: 'overlapping-builds',
            test: {
              queries: { build: { ...withoutStorage(build({ buildId: 'overlap-queries', recordRange: { start: 10, end: 30 }, shardRecords: 20 })) } },
              cache: [{ build: { ...withoutStorage(build({ buildId: 'overlap-cache', recordRange: { start: 0, end: 20 }, shardRecords: 20 })) } }],
            },
          }),
        ),
    },
    // Unknown fields.
    { name: 'unknown field in a build request', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'Unrecognized key: "modelFile"', fix: /Remove it, or check its spelling/, run: () => viaBuild(build({ modelFile: resnet20Path })) },
    {
      name: 'unknown field in a record range',
      layer: 'coordinator',
      code: 'INVALID_ARGUMENT',
      value: 'Unrecognized key: "stop"',
      fix: /Remove it, or check its spelling/,
      run: () => viaBuild(build({ recordRange: { start: 0, end: 40, stop: 20 } as CacheBuildRequest['recordRange'] })),
    },
    { name: 'unknown field in an evaluation request', layer: 'coordinator', code: 'INVALID_ARGUMENT', value: 'Unrecognized key: "thetaa"', fix: /Remove it, or check its spelling/, run: () => viaEvaluation(evaluation({ thetaa: 50 })) },
    // Paths and object keys outside their roots.
    {
      name: 'manifest key with ../',
      layer: 'coordinator',
      code: 'INVALID_ARGUMENT',
      value: 'Object key "../outside/manifest.json"',
      fix: /Use a relative key of "\/"-separated names without "\.", "\.\."/,
      run: () => viaEvaluation(evaluation({ test: { queries: { manifest: manifests.queries }, cache: [{ manifest: '../outside/manifest.json' }] } })),
    },
    {
      name: 'build id with ../',
      layer: 'coordinator',
      code: 'INVALID_ARGUMENT',
      value: 'buildId = "../escape"',
      fix: /expected 1 to 128 letters, digits/,
      run: () => viaBuild(build({ buildId: '../escape' })),
    },
    {
      name: 'dataset folder outside the coordinator roots',
      layer: 'coordinator',
      code: 'INVALID_ARGUMENT',
      // The fixtures folder exists only once beforeAll has run, so the test fills it in.
      value: '<fixtures>/../outside',
      fix: /Move the file under one of them, or add its folder to CACHEFLEET_FILE_ROOTS/,
      run: () => viaBuild(build({ dataDir: `${fixtures}/../outside` }), new BuildResolver((url) => fleet.open(url), storeDir, fleet.logger, { fileRoots: [fixtures, sharedDir], fileRootsSetting: 'CACHEFLEET_FILE_ROOTS' })),
    },
    {
      name: 'dataset folder outside the worker roots',
      layer: 'worker',
      code: 'INVALID_ARGUMENT',
      value: 'is outside the folders this process may read (CACHEFLEET_FILE_ROOTS=',
      fix: /Move the file under one of them, or add its folder to CACHEFLEET_FILE_ROOTS/,
      run: async () => viaBuild(build({ buildId: 'outside-roots', dataDir: await copyDataset(dataDir, path.join(outside, 'data')) })),
    },
    {
      name: 'shard key with ../ in job data',
      layer: 'worker',
      code: 'INVALID_ARGUMENT',
      value: 'Object key "../../escape.cfshard"',
      fix: /Use a relative key of "\/"-separated names without "\.", "\.\."/,
      run: () => viaFlow(build({ buildId: 'escaping-key' }), (extract) => (extract.data.shardKey = '../../escape.cfshard')),
    },
    // Requests to the HTTP API. `cachefleet submit` sends requests that pass its option parser
    // to the API, so the coordinator cases above reach CLI users through the API as well. The
    // cases below are the API's own.
    {
      name: 'request body over the size limit',
      layer: 'http',
      status: 413,
      code: 'REQUEST_TOO_LARGE',
      value: `limit of ${API_BODY_LIMIT} bytes`,
      fix: /Send a smaller request, or start the server with a larger --body-limit/,
      run: () => viaHttp('cache-builds', JSON.stringify({ ...withoutStorage(build()), keyLayers: Array.from({ length: 3000 }, (_, index) => index) })),
    },
    {
      name: 'request body that is not JSON',
      layer: 'http',
      code: 'INVALID_ARGUMENT',
      value: 'The request body is not valid JSON',
      fix: /Send a JSON object/,
      run: () => viaHttp('cache-builds', '{"dataDir": '),
    },
    {
      name: 'unknown field in a build request sent to the API',
      layer: 'http',
      code: 'INVALID_ARGUMENT',
      value: 'Unrecognized key: "modelFile"',
      fix: /Correct these fields and send the request again/,
      run: () => viaHttp('cache-builds', JSON.stringify(withoutStorage(build({ modelFile: resnet20Path })))),
    },
    {
      name: 'unknown field in an evaluation request sent to the API',
      layer: 'http',
      code: 'INVALID_ARGUMENT',
      value: 'Unrecognized key: "thetaa"',
      fix: /Correct these fields and send the request again/,
      run: () => viaHttp('evaluations', JSON.stringify(withoutStorage(evaluation({ thetaa: 50 })))),
    },
    {
      name: 'storage of another server in a request sent to the API',
      layer: 'http',
      code: 'INVALID_ARGUMENT',
      value: 'body.storageUrl "file:///tmp/elsewhere"',
      fix: /differs from this server's storage/,
      run: () => viaHttp('cache-builds', JSON.stringify({ ...withoutStorage(build()), storageUrl: 'file:///tmp/elsewhere' })),
    },
    {
      name: 'model path with ../ sent to the API',
      layer: 'http',
      code: 'INVALID_ARGUMENT',
      value: '<fixtures>/../outside/model.h5',
      fix: /Move the file under one of them, or add its folder to CACHEFLEET_FILE_ROOTS/,
      run: () => viaHttp('cache-builds', JSON.stringify(withoutStorage(build({ modelPath: `${fixtures}/../outside/model.h5` })))),
    },
  ];

  for (const testCase of cases) {
    it(`rejects ${testCase.name}`, async () => {
      const before = await snapshot();
      const outcome = await testCase.run();
      table.push({ name: testCase.name, outcome });
      const after = await snapshot();
      const value = testCase.value.replace('<fixtures>', fixtures);

      expect(outcome.layer).toBe(testCase.layer);
      expect(outcome.code).toBe(testCase.code);
      expect(outcome.message).toContain(value);
      expect(outcome.message).toMatch(testCase.fix);
      if (testCase.layer === 'http') expect(outcome.status).toBe(testCase.status ?? 400);
      if (testCase.layer === 'worker') {
        // Bad data fails the job at once, although jobs here have three attempts.
        expect(outcome.attempts).toBe(1);
      } else {
        // Rejected before any job or object exists.
        expect(after.jobs).toBe(before.jobs);
        expect(after.files.filter((file) => !before.files.includes(file))).toEqual([]);
      }
      // Nothing half-written: no temporary files, and no manifest or report of a failed run.
      expect(after.files.filter((file) => /\.cachefleet-tmp-|\.tmp$/.test(file))).toEqual([]);
      const newFiles = after.files.filter((file) => !before.files.includes(file) && testCase.leaves?.test(file) !== true);
      expect(newFiles.filter((file) => /manifest\.json$|report\.json$/.test(file))).toEqual([]);
    });
  }

  /** Lists every file below the object store and the coordinator's statistics folder, and counts the jobs of every queue. */
  async function snapshot(): Promise<{ files: string[]; jobs: number }> {
    const files = [...(await listFiles(objectsDir)), ...(await listFiles(storeDir))];
    let jobs = 0;
    for (const name of FLEET_QUEUE_NAMES) {
      const counts = await fleet.client.queue(name).getJobCounts();
      jobs += Object.values(counts).reduce((sum, count) => sum + count, 0);
    }
    return { files, jobs };
  }
});

function coordinatorOutcome(error: unknown): Outcome {
  if (!isCachefleetError(error)) throw error;
  return { layer: 'coordinator', code: error.code, message: error.message };
}

/** Waits for a submitted run that must fail in a job, and reads the code from the failed job's reason. */
async function workerOutcome(wait: () => Promise<unknown>): Promise<Outcome> {
  try {
    await wait();
  } catch (error) {
    if (!(error instanceof FleetRunFailedError)) throw error;
    const cause = error.chain[error.chain.length - 1];
    const code = /^([A-Z_]+): /.exec(cause.failedReason)?.[1] ?? '(no code)';
    return { layer: 'worker', code, message: error.message, attempts: cause.attemptsMade };
  }
  throw new Error('The run completed, but the case expects a rejection.');
}

/** Returns a request without its storage, as sent to the API (which adds its own) or nested in an evaluation. */
function withoutStorage<Request extends { storageUrl?: string }>(request: Request): Omit<Request, 'storageUrl'> {
  const { storageUrl: _storageUrl, ...rest } = request;
  return rest;
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}
