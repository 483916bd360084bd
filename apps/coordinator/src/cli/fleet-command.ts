import os from 'node:os';
import path from 'node:path';

import { Command, Option } from 'commander';

import { DEFAULT_QUERY_BLOCK_SIZE, DEFAULT_QUERY_SLICE_SIZE, createLogger, openObjectStore, type Logger, type ObjectStore } from '@cachefleet/core';

import { FleetClient } from '../fleet/fleet-client.js';
import { runFleetPaper } from '../fleet/paper.js';
import { FleetRunFailedError } from '../fleet/wait-for-job.js';
import { defaultStoreDir } from './evaluate-command.js';
import { parseCount, parseGrid, parseKeyLayers, parseNumber, parsePositiveInteger, parseStatisticsSplits } from './parse-options.js';
import { formatResultTable } from './result-table.js';
import { writeFileAtomically } from './write-file-atomically.js';

interface ConnectionFlags {
  redis: string;
  prefix: string;
}

/** Storage of the fleet when --storage is not given: CACHEFLEET_STORAGE_URL, else a folder in the user's cache. */
export function defaultStorageUrl(): string {
  const cacheHome = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return process.env.CACHEFLEET_STORAGE_URL ?? path.join(cacheHome, 'cachefleet', 'fleet-objects');
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
    .option('--workers <n>', 'worker processes to start on this machine for the run (0: use workers already running)', parseCount, 0)
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
    if (flags.report !== undefined) await writeFileAtomically(flags.report, text);
    process.stdout.write(flags.json ? `${text}\n` : `${formatResultTable(report)}\n`);
  }));
}

/** `cachefleet fleet paper`. */
export function fleetCommand(): Command {
  return new Command('fleet').description('Run whole protocols through the fleet.').addCommand(paperCommand());
}
