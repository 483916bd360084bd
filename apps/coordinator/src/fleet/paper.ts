import os from 'node:os';
import path from 'node:path';

import type { Job } from 'bullmq';

import {
  aggregateResultSchema,
  planProtocol,
  type CacheBuildRequest,
  type EvaluationRequest,
  type FleetEvaluationReport,
  type Logger,
  type ObjectStore,
} from '@cachefleet/core';

import type { FleetClient } from './fleet-client.js';
import { startLocalWorkers, type LocalWorkers } from './local-workers.js';
import { BuildResolver } from './resolve-build.js';
import { submitEvaluation, waitForEvaluation } from './submit.js';

export interface FleetPaperOptions {
  dataDir: string;
  dataset?: 'cifar10' | 'cifar100';
  modelPath: string;
  keyLayers: Array<string | number>;
  storageUrl: string;
  /** Folder of the local statistics cache (shared with `cachefleet evaluate`). */
  storeDir: string;
  limit?: number;
  validationSize?: number;
  /** Records per shard of every build. */
  shardRecords: number;
  statisticsSplits?: Array<'train' | 'test'>;
  theta?: number;
  lambda?: number;
  thetaCacheOnly?: number;
  thetas?: number[];
  lambdas?: number[];
  querySliceSize?: number;
  shardGroupBytes?: number;
  /** Worker processes to start on this machine for the run (0: use running workers). */
  workers: number;
  /** Environment of the started workers. */
  workerEnv?: NodeJS.ProcessEnv;
  onProgress?: (job: Job) => void;
}

/**
 * Builds the fleet requests of the protocol of Orhan (2018), with the local run's record ranges
 * (`planProtocol`). A training build and a validation build (the last `validationSize` training
 * records), both with mirror images, tune θ and λ. Test queries, without mirrors, are scored
 * against the cache train + validation.
 */
export async function paperRequests(resolver: BuildResolver, options: FleetPaperOptions): Promise<EvaluationRequest> {
  const dataset = options.dataset ?? 'cifar10';
  const train = await resolver.split(options.dataDir, dataset, 'train', 'fine');
  const test = await resolver.split(options.dataDir, dataset, 'test', 'fine');
  const plan = planProtocol(train.size, test.size, { limit: options.limit, validationSize: options.validationSize });

  const build = (split: 'train' | 'test', range: { start: number; end: number }, includeMirrors: boolean): Omit<CacheBuildRequest, 'storageUrl'> => ({
    dataDir: options.dataDir,
    dataset,
    split,
    recordRange: range,
    shardRecords: options.shardRecords,
    modelPath: options.modelPath,
    keyLayers: options.keyLayers,
    statisticsSplits: options.statisticsSplits ?? ['train', 'test'],
    includeMirrors,
  });
  const trainBuild = { build: build('train', plan.train, true), role: 'train' };
  const validationBuild = { build: build('train', plan.validation, true), role: 'validation' };

  return {
    storageUrl: options.storageUrl,
    validation: { queries: validationBuild, cache: [trainBuild] },
    test: { queries: { build: build('test', plan.test, false), role: 'test' }, cache: [trainBuild, validationBuild] },
    theta: options.theta,
    lambda: options.lambda,
    thetaCacheOnly: options.thetaCacheOnly,
    thetas: options.thetas,
    lambdas: options.lambdas,
    querySliceSize: options.querySliceSize,
    shardGroupBytes: options.shardGroupBytes,
    datasetDir: path.resolve(options.dataDir),
    limit: options.limit ?? null,
    classNames: test.classNames,
  };
}

/** Runs the protocol of Orhan (2018) through the fleet and returns the report of its aggregate job. */
export async function runFleetPaper(client: FleetClient, openStore: (url: string) => Promise<ObjectStore>, options: FleetPaperOptions, logger: Logger): Promise<FleetEvaluationReport> {
  let workers: LocalWorkers | undefined;
  if (options.workers > 0) {
    workers = startLocalWorkers({
      count: options.workers,
      env: {
        ...process.env,
        REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
        CACHEFLEET_QUEUE_PREFIX: client.prefix,
        // The workers share this machine's cores.
        CACHEFLEET_EXTRACT_THREADS: String(Math.max(1, Math.floor(os.availableParallelism() / options.workers))),
        CACHEFLEET_SCORING_THREADS: String(Math.max(1, Math.floor(os.availableParallelism() / options.workers))),
        ...options.workerEnv,
      },
    });
    logger.info({ workers: options.workers }, 'local workers started');
  }

  try {
    const resolver = new BuildResolver(openStore, options.storeDir, logger);
    const request = await paperRequests(resolver, options);
    const submission = await submitEvaluation(client, resolver, openStore, request);
    logger.info({ evaluationId: submission.evaluationId, builds: submission.builds.map((build) => ({ buildId: build.buildId, status: build.status, shards: build.extractJobs })) }, 'paper protocol submitted');

    const result = aggregateResultSchema.parse(await waitForEvaluation(client, submission, options.onProgress));
    const store = await openStore(options.storageUrl);
    const bytes = await store.getBytes(result.reportKey);
    // Not parsed with fleetReportSchema: a class absent from a small test slice has accuracy NaN,
    // which JSON stores as null, as in the local run's reports.
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as FleetEvaluationReport;
  } finally {
    await workers?.stop();
  }
}
