import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { Command, InvalidArgumentError, Option } from 'commander';

import { CachefleetError, DEFAULT_QUERY_BLOCK_SIZE, DEFAULT_QUERY_SLICE_SIZE, QUEUE_NAMES, createLogger, openObjectStore, type EvaluationRequest, type Logger, type ObjectStore } from '@cachefleet/core';

import { FleetClient } from '../fleet/fleet-client.js';
import { runFleetPaper } from '../fleet/paper.js';
import { BuildResolver } from '../fleet/resolve-build.js';
import { submitCacheBuild, submitEvaluation, waitForEvaluation } from '../fleet/submit.js';
import { FleetRunFailedError, waitForJob } from '../fleet/wait-for-job.js';
import { defaultStoreDir } from './evaluate-command.js';
import { parseGrid, parseKeyLayers, parseNumber, parsePositiveInteger } from './parse-options.js';
import { formatResultTable } from './result-table.js';

interface ConnectionFlags {
  redis: string;
  prefix: string;
}

/** Writes a file through a temporary name, so a reader never sees half a report. */
async function writeReport(reportPath: string, text: string): Promise<void> {
  await mkdir(path.dirname(path.resolve(reportPath)), { recursive: true });
  const temporaryPath = `${reportPath}.partial-${process.pid}`;
  await writeFile(temporaryPath, text);
  await rename(temporaryPath, reportPath);
}

function defaultStorageUrl(): string {
  const cacheHome = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return process.env.CACHEFLEET_STORAGE_URL ?? path.join(cacheHome, 'cachefleet', 'fleet-objects');
}

function parseRange(value: string): { start: number; end: number } {
  const match = /^(\d+):(\d+)$/.exec(value);
  if (match === null) throw new InvalidArgumentError(`"${value}" is not a record range: give START:END (half-open), such as 0:45000.`);
  return { start: Number(match[1]), end: Number(match[2]) };
}

function parseList(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter((item) => item !== '');
}

function parseStatisticsSplits(value: string): Array<'train' | 'test'> {
  const splits = parseList(value);
  for (const split of splits) {
    if (split !== 'train' && split !== 'test') throw new InvalidArgumentError(`--stats-from "${value}" is invalid: list train and/or test, separated by commas.`);
  }
  return splits as Array<'train' | 'test'>;
}

function addConnectionOptions(command: Command): Command {
  return command
    .option('--redis <url>', 'Redis URL of the fleet (env REDIS_URL)', process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
    .option('--prefix <name>', 'BullMQ key prefix shared with the workers (env CACHEFLEET_QUEUE_PREFIX)', process.env.CACHEFLEET_QUEUE_PREFIX ?? 'cachefleet');
}

/** Opens stores by URL once each and closes them all at the end. */
function storeOpener(logger: Logger): { open: (url: string) => Promise<ObjectStore>; closeAll: () => Promise<void> } {
  const stores = new Map<string, Promise<ObjectStore>>();
  return {
    open: (url) => {
      let store = stores.get(url);
      if (store === undefined) {
        store = openObjectStore(url, { logger });
        stores.set(url, store);
      }
      return store;
    },
    closeAll: async () => {
      await Promise.allSettled([...stores.values()].map((store) => store.then((opened) => opened.close())));
    },
  };
}

/** Connects to the fleet, runs `work`, and always closes stores and Redis. */
async function withFleet<T>(flags: ConnectionFlags, work: (client: FleetClient, stores: ReturnType<typeof storeOpener>, logger: Logger) => Promise<T>): Promise<T> {
  const logger = createLogger('cachefleet');
  const client = await FleetClient.connect({ redisUrl: flags.redis, prefix: flags.prefix, logger });
  const stores = storeOpener(logger);
  try {
    return await work(client, stores, logger);
  } finally {
    await stores.closeAll();
    await client.close();
  }
}

/**
 * Wraps a command action so that a failed fleet run, an expected outcome, prints its reason
 * (the error of the job that failed first) without a stack and sets exit code 1.
 */
function reportingRunFailures<T>(action: (flags: T) => Promise<void>): (flags: T) => Promise<void> {
  return async (flags) => {
    try {
      await action(flags);
    } catch (error) {
      if (!(error instanceof FleetRunFailedError)) throw error;
      process.stderr.write(`cachefleet: fleet run failed: ${error.message}\n`);
      process.exitCode = 1;
    }
  };
}

interface BuildFlags extends ConnectionFlags {
  data: string;
  dataset: 'cifar10' | 'cifar100';
  split: 'train' | 'test';
  labelMode: 'fine' | 'coarse';
  range?: { start: number; end: number };
  shardRecords: number;
  model: string;
  keyLayers: Array<string | number>;
  statsFrom: Array<'train' | 'test'>;
  mirrors: boolean;
  storage: string;
  buildId?: string;
  store: string;
  wait: boolean;
}

function cacheBuildCommand(): Command {
  const command = new Command('cache-build')
    .description('Submit a cache build to the fleet: one extract job per shard and a merge job that writes the manifest.')
    .requiredOption('--data <dir>', 'dataset folder, readable under this path by every worker')
    .addOption(new Option('--dataset <name>', 'dataset format').choices(['cifar10', 'cifar100']).default('cifar10'))
    .addOption(new Option('--split <name>', 'dataset split').choices(['train', 'test']).makeOptionMandatory())
    .addOption(new Option('--label-mode <mode>', 'label granularity (coarse: CIFAR-100 only)').choices(['fine', 'coarse']).default('fine'))
    .option('--range <start:end>', 'records to build, half-open (default: the whole split)', parseRange)
    .requiredOption('--shard-records <n>', 'records per shard, one extract job each', parsePositiveInteger)
    .requiredOption('--model <file>', 'Keras 2.x .h5 file or TensorFlow.js model.json, readable by every worker')
    .requiredOption('--key-layers <list>', 'key layers: names or 0-based Keras layer indices, comma-separated', parseKeyLayers)
    .addOption(new Option('--stats-from <splits>', 'splits whose images give the standardisation statistics').argParser(parseStatisticsSplits).default(['train', 'test'], 'train,test'))
    .option('--mirrors', 'add the horizontal mirror image of every record', false)
    .option('--storage <url>', 'object storage for shards and manifest: s3://bucket/prefix or a folder (env CACHEFLEET_STORAGE_URL)', defaultStorageUrl())
    .option('--build-id <id>', 'build id (default: derived from model, layers, preprocessing and records)')
    .option('--store <dir>', 'folder of the local statistics cache (env CACHEFLEET_STORE)', defaultStoreDir())
    .option('--wait', 'wait for the manifest and print it', false);

  return addConnectionOptions(command).action(reportingRunFailures(async (flags: BuildFlags) => {
    const summary = await withFleet(flags, async (client, stores, logger) => {
      const resolver = new BuildResolver(stores.open, flags.store, logger);
      const submission = await submitCacheBuild(client, resolver, stores.open, {
        dataDir: flags.data,
        dataset: flags.dataset,
        split: flags.split,
        labelMode: flags.labelMode,
        recordRange: flags.range,
        shardRecords: flags.shardRecords,
        modelPath: flags.model,
        keyLayers: flags.keyLayers,
        statisticsSplits: flags.statsFrom,
        includeMirrors: flags.mirrors,
        storageUrl: flags.storage,
        buildId: flags.buildId,
      });
      if (!flags.wait || submission.status === 'complete') return submission;
      return { ...submission, merge: await waitForJob(client, QUEUE_NAMES.merge, submission.mergeJobId) };
    });
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  }));
}

interface EvaluateFlags extends ConnectionFlags {
  request?: string;
  storage: string;
  testQueries?: string;
  testCache?: string[];
  validationQueries?: string;
  validationCache?: string[];
  theta?: number;
  lambda?: number;
  thetaCacheOnly?: number;
  thetas?: number[];
  lambdas?: number[];
  querySlice?: number;
  shardGroupBytes?: number;
  allowOverlap: boolean;
  evaluationId?: string;
  store: string;
  wait: boolean;
  report?: string;
}

function evaluationRequestFromFlags(flags: EvaluateFlags): EvaluationRequest {
  if (flags.testQueries === undefined || flags.testCache === undefined) {
    throw new CachefleetError('INVALID_ARGUMENT', 'Give --request FILE, or --test-queries and --test-cache (manifest object keys).', {});
  }
  const hasValidation = flags.validationQueries !== undefined || flags.validationCache !== undefined;
  if (hasValidation && (flags.validationQueries === undefined || flags.validationCache === undefined)) {
    throw new CachefleetError('INVALID_ARGUMENT', 'Give both --validation-queries and --validation-cache, or neither (then fix --theta, --lambda and --theta-cache-only).', {});
  }
  const manifest = (key: string) => ({ manifest: key });
  return {
    storageUrl: flags.storage,
    evaluationId: flags.evaluationId,
    test: { queries: manifest(flags.testQueries), cache: flags.testCache.map(manifest) },
    validation: hasValidation ? { queries: manifest(flags.validationQueries!), cache: flags.validationCache!.map(manifest) } : undefined,
    theta: flags.theta,
    lambda: flags.lambda,
    thetaCacheOnly: flags.thetaCacheOnly,
    thetas: flags.thetas,
    lambdas: flags.lambdas,
    querySliceSize: flags.querySlice,
    shardGroupBytes: flags.shardGroupBytes,
    allowOverlap: flags.allowOverlap,
  };
}

function evaluateSubmitCommand(): Command {
  const command = new Command('evaluate')
    .description('Submit an evaluation to the fleet: evaluate jobs over (query slice × shard group) and an aggregate job that writes the report.')
    .option('--request <file>', 'JSON evaluation request; key stores may be manifests ({"manifest": key}) or builds ({"build": {...}}) run first')
    .option('--storage <url>', 'object storage of the key stores and results (env CACHEFLEET_STORAGE_URL)', defaultStorageUrl())
    .option('--test-queries <key>', 'manifest object key of the test query store')
    .option('--test-cache <keys>', 'manifest object keys of the test cache, in cache order, comma-separated', parseList)
    .option('--validation-queries <key>', 'manifest object key of the validation query store')
    .option('--validation-cache <keys>', 'manifest object keys of the validation cache, comma-separated', parseList)
    .option('--theta <number>', 'fixed θ of the cache model (with --lambda)', parseNumber)
    .option('--lambda <number>', 'fixed λ, the cache weight in [0, 1] (with --theta)', parseNumber)
    .option('--theta-cache-only <number>', 'fixed θ of the cache-only model', parseNumber)
    .option('--thetas <grid>', 'θ grid as START:STOP:COUNT or a list (default 10:90:33)', parseGrid)
    .option('--lambdas <grid>', 'λ grid as START:STOP:COUNT or a list (default 0.1:0.9:33)', parseGrid)
    .option('--query-slice <n>', `queries per evaluate job, a multiple of the scoring block of ${DEFAULT_QUERY_BLOCK_SIZE} queries (default ${DEFAULT_QUERY_SLICE_SIZE})`, parsePositiveInteger)
    .option('--shard-group-bytes <n>', 'most shard bytes one evaluate job loads (default 1 GiB)', parsePositiveInteger)
    .option('--allow-overlap', 'allow queries that are also cache items', false)
    .option('--evaluation-id <id>', 'evaluation id (default: derived from the request)')
    .option('--store <dir>', 'folder of the local statistics cache, for builds (env CACHEFLEET_STORE)', defaultStoreDir())
    .option('--wait', 'wait for the report', false)
    .option('--report <file>', 'with --wait, write the JSON report to this file');

  return addConnectionOptions(command).action(reportingRunFailures(async (flags: EvaluateFlags) => {
    const request: EvaluationRequest = flags.request === undefined ? evaluationRequestFromFlags(flags) : (JSON.parse(await readFile(flags.request, 'utf8')) as EvaluationRequest);
    const output = await withFleet(flags, async (client, stores, logger) => {
      const resolver = new BuildResolver(stores.open, flags.store, logger);
      const submission = await submitEvaluation(client, resolver, stores.open, request);
      const summary = { evaluationId: submission.evaluationId, planJobId: submission.planJobId, aggregateJobId: submission.aggregateJobId, reportKey: submission.reportKey, builds: submission.builds };
      if (!flags.wait) return { summary, report: undefined };

      const result = await waitForEvaluation(client, submission);
      const bytes = await (await stores.open(submission.evaluation.storageUrl)).getBytes(submission.reportKey);
      return { summary: { ...summary, result }, report: Buffer.from(bytes).toString('utf8') };
    });

    if (flags.report !== undefined && output.report !== undefined) await writeReport(flags.report, output.report);
    process.stdout.write(`${JSON.stringify(output.summary, null, 2)}\n`);
  }));
}

/** `cachefleet submit cache-build|evaluate`. */
export function submitCommand(): Command {
  return new Command('submit').description('Submit work to the fleet (Redis queues and object storage).').addCommand(cacheBuildCommand()).addCommand(evaluateSubmitCommand());
}

interface PaperFlags extends ConnectionFlags {
  data: string;
  dataset: 'cifar10' | 'cifar100';
  model: string;
  keyLayers: Array<string | number>;
  workers: number;
  storage: string;
  store: string;
  limit?: number;
  validationSize?: number;
  shardRecords: number;
  statsFrom: Array<'train' | 'test'>;
  theta?: number;
  lambda?: number;
  thetaCacheOnly?: number;
  thetas?: number[];
  lambdas?: number[];
  querySlice?: number;
  shardGroupBytes?: number;
  report?: string;
  json: boolean;
}

function paperCommand(): Command {
  const command = new Command('paper')
    .description('Run the cache model protocol through the fleet: build train, validation and test keys, tune θ and λ on validation, evaluate on test. Results match `cachefleet evaluate` with the same --shard-records.')
    .requiredOption('--data <dir>', 'dataset folder, readable under this path by every worker')
    .addOption(new Option('--dataset <name>', 'dataset format').choices(['cifar10', 'cifar100']).default('cifar10'))
    .requiredOption('--model <file>', 'Keras 2.x .h5 file or TensorFlow.js model.json, readable by every worker')
    .requiredOption('--key-layers <list>', 'key layers: names or 0-based Keras layer indices (ResNet32: 82,92,103)', parseKeyLayers)
    .option('--workers <n>', 'worker processes to start on this machine for the run (0: use workers already running)', (value) => (value === '0' ? 0 : parsePositiveInteger(value)), 0)
    .option('--storage <url>', 'object storage for shards, partials and the report (env CACHEFLEET_STORAGE_URL)', defaultStorageUrl())
    .option('--store <dir>', 'folder of the local statistics cache (env CACHEFLEET_STORE)', defaultStoreDir())
    .option('--limit <n>', 'use only the first N records of each split, as `cachefleet evaluate --limit`', parsePositiveInteger)
    .option('--validation-size <n>', 'number of last training records used as validation queries (default 5000)', parsePositiveInteger)
    .option('--shard-records <n>', 'records per shard of every build', parsePositiveInteger, 5000)
    .addOption(new Option('--stats-from <splits>', 'splits whose images give the standardisation statistics').argParser(parseStatisticsSplits).default(['train', 'test'], 'train,test'))
    .option('--theta <number>', 'θ of the cache model; with --lambda, skips their tuning', parseNumber)
    .option('--lambda <number>', 'λ, the cache weight in [0, 1]; with --theta, skips their tuning', parseNumber)
    .option('--theta-cache-only <number>', 'θ of the cache-only model; skips its tuning', parseNumber)
    .option('--thetas <grid>', 'θ grid as START:STOP:COUNT or a list (default 10:90:33)', parseGrid)
    .option('--lambdas <grid>', 'λ grid as START:STOP:COUNT or a list (default 0.1:0.9:33)', parseGrid)
    .option('--query-slice <n>', `queries per evaluate job, a multiple of the scoring block of ${DEFAULT_QUERY_BLOCK_SIZE} queries (default ${DEFAULT_QUERY_SLICE_SIZE})`, parsePositiveInteger)
    .option('--shard-group-bytes <n>', 'most shard bytes one evaluate job loads (default 1 GiB)', parsePositiveInteger)
    .option('--report <file>', 'write the JSON report to this file')
    .option('--json', 'print the JSON report on stdout instead of the table', false);

  return addConnectionOptions(command).action(reportingRunFailures(async (flags: PaperFlags) => {
    const report = await withFleet(flags, (client, stores, logger) =>
      runFleetPaper(
        client,
        stores.open,
        {
          dataDir: flags.data,
          dataset: flags.dataset,
          modelPath: flags.model,
          keyLayers: flags.keyLayers,
          storageUrl: flags.storage,
          storeDir: flags.store,
          limit: flags.limit,
          validationSize: flags.validationSize,
          shardRecords: flags.shardRecords,
          statisticsSplits: flags.statsFrom,
          theta: flags.theta,
          lambda: flags.lambda,
          thetaCacheOnly: flags.thetaCacheOnly,
          thetas: flags.thetas,
          lambdas: flags.lambdas,
          querySliceSize: flags.querySlice,
          shardGroupBytes: flags.shardGroupBytes,
          workers: flags.workers,
          workerEnv: { REDIS_URL: flags.redis },
        },
        logger,
      ),
    );

    const text = JSON.stringify(report, null, 2);
    if (flags.report !== undefined) await writeReport(flags.report, text);
    process.stdout.write(flags.json ? `${text}\n` : `${formatResultTable(report)}\n`);
  }));
}

/** `cachefleet fleet paper`. */
export function fleetCommand(): Command {
  return new Command('fleet').description('Run whole protocols through the fleet.').addCommand(paperCommand());
}
