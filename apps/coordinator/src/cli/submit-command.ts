import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { Command, Option } from 'commander';
import YAML from 'yaml';
import { z } from 'zod';

import { CachefleetError, DEFAULT_QUERY_BLOCK_SIZE, DEFAULT_QUERY_SLICE_SIZE } from '@cachefleet/core';

import type { SubmitResponse } from '../http/client/api-client.js';
import { cacheBuildSubmissionSchema, evaluationSubmissionSchema, type CacheBuildSubmission, type EvaluationSubmission } from '../http/runs/api-schemas.js';
import { addApiOptions, apiClientOf, type ApiFlags } from './api-options.js';
import { writeFileAtomically } from './write-file-atomically.js';
import { parseGrid, parseKeyLayers, parseList, parseNumber, parsePositiveInteger, parseRange, parseStatisticsSplits } from './parse-options.js';
import { formatRun, watchRun } from './run-progress.js';

/**
 * Reads a YAML or JSON request file (JSON is valid YAML) and validates it with the API's
 * schema, so that a bad field is named before anything is sent. Relative dataset and model
 * paths are resolved against the file's folder, because the server and the workers need
 * absolute paths.
 */
async function readSpecFile<T extends z.ZodType>(file: string, schema: T, absolutize: (request: z.input<T>, base: string) => z.input<T>): Promise<z.input<T>> {
  let raw: unknown;
  try {
    raw = YAML.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new CachefleetError('INVALID_ARGUMENT', `--spec ${file} cannot be read as YAML or JSON: ${error instanceof Error ? error.message : String(error)}. Fix the file and submit again.`, { file }, { cause: error });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new CachefleetError('INVALID_ARGUMENT', `--spec ${file} is not a valid request: ${z.prettifyError(parsed.error)}. Fix these fields; \`cachefleet serve\` serves the schema at /openapi.json.`, { file });
  }
  return absolutize(raw as z.input<T>, path.dirname(path.resolve(file)));
}

/** Rejects request flags given together with --spec, because it is unclear which should win. */
function assertNoRequestFlags(command: Command, requestFlags: readonly string[]): void {
  const given = requestFlags.filter((name) => command.getOptionValueSource(name) === 'cli');
  if (given.length > 0) {
    const names = given.map((name) => `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`);
    throw new CachefleetError('INVALID_ARGUMENT', `--spec cannot be combined with ${names.join(', ')}. Put these fields into the spec file, or leave out --spec.`, { flags: names });
  }
}

function absolutizeBuild<T extends { dataDir?: string; modelPath?: string }>(build: T, base: string): T {
  return {
    ...build,
    ...(build.dataDir === undefined ? {} : { dataDir: path.resolve(base, build.dataDir) }),
    ...(build.modelPath === undefined ? {} : { modelPath: path.resolve(base, build.modelPath) }),
  };
}

function absolutizeEvaluation(request: EvaluationSubmission, base: string): EvaluationSubmission {
  type Source = EvaluationSubmission['test']['queries'];
  const source = (item: Source): Source => ('build' in item ? { ...item, build: absolutizeBuild(item.build, base) } : item);
  const part = (item: EvaluationSubmission['test']) => ({ queries: source(item.queries), cache: item.cache.map(source) });
  return {
    ...request,
    test: part(request.test),
    validation: request.validation === undefined ? undefined : part(request.validation),
    datasetDir: request.datasetDir === undefined ? undefined : path.resolve(base, request.datasetDir),
  };
}

interface SubmitFlags extends ApiFlags {
  spec?: string;
  storage?: string;
  wait: boolean;
  interval: number;
}

/** Prints the submitted run and, with --wait, follows it to the end and sets exit code 1 unless it completed. */
async function reportSubmission(flags: SubmitFlags, submitted: SubmitResponse, followReport?: (runId: string) => Promise<void>): Promise<void> {
  const client = apiClientOf(flags);
  const verb = submitted.joined ? 'Joined the existing run' : 'Submitted run';
  if (!flags.wait) {
    if (flags.json) process.stdout.write(`${JSON.stringify(submitted, null, 2)}\n`);
    else process.stdout.write(`${verb} ${submitted.runId} (${submitted.kind}, ${submitted.state}). Follow it with: cachefleet status ${submitted.runId} --watch\n`);
    return;
  }

  process.stderr.write(`${verb} ${submitted.runId} (${submitted.kind}); waiting for it to finish.\n`);
  const run = await watchRun(client, submitted.runId, flags.interval);
  if (run.state === 'completed' && followReport !== undefined) await followReport(run.runId);
  process.stdout.write(flags.json ? `${JSON.stringify(run, null, 2)}\n` : `${formatRun(run)}\n`);
  if (run.state !== 'completed') process.exitCode = 1;
}

function addSubmitOptions(command: Command): Command {
  return addApiOptions(
    command
      .option('--spec <file>', 'YAML or JSON request file instead of the request flags; relative paths in it are resolved against its folder')
      .option('--storage <url>', "object storage of the run (default: the server's; another value is rejected)")
      .option('--wait', 'follow the run with progress bars until it finishes; the exit code is 1 unless it completed', false)
      .option('--interval <ms>', 'milliseconds between two polls with --wait', parsePositiveInteger, 2000),
  );
}

const BUILD_FLAGS = ['data', 'dataset', 'split', 'labelMode', 'range', 'shardRecords', 'model', 'keyLayers', 'statsFrom', 'mirrors', 'buildId', 'storage'] as const;

interface BuildFlags extends SubmitFlags {
  data?: string;
  dataset: 'cifar10' | 'cifar100';
  split?: 'train' | 'test';
  labelMode: 'fine' | 'coarse';
  range?: { start: number; end: number };
  shardRecords?: number;
  model?: string;
  keyLayers?: Array<string | number>;
  statsFrom: Array<'train' | 'test'>;
  mirrors: boolean;
  buildId?: string;
}

function buildRequestFromFlags(flags: BuildFlags): CacheBuildSubmission {
  const missing = [
    ['--data', flags.data],
    ['--split', flags.split],
    ['--shard-records', flags.shardRecords],
    ['--model', flags.model],
    ['--key-layers', flags.keyLayers],
  ].filter(([, value]) => value === undefined);
  if (missing.length > 0) {
    throw new CachefleetError('INVALID_ARGUMENT', `Missing ${missing.map(([name]) => name).join(', ')}. Give every request flag, or a request file with --spec FILE.`, {});
  }
  return {
    dataDir: path.resolve(flags.data!),
    dataset: flags.dataset,
    split: flags.split!,
    labelMode: flags.labelMode,
    recordRange: flags.range,
    shardRecords: flags.shardRecords!,
    modelPath: path.resolve(flags.model!),
    keyLayers: flags.keyLayers!,
    statisticsSplits: flags.statsFrom,
    includeMirrors: flags.mirrors,
    storageUrl: flags.storage,
    buildId: flags.buildId,
  };
}

function cacheBuildCommand(): Command {
  const command = new Command('cache-build')
    .description('Submit a cache build to the coordinator: one extract job per shard and a merge job that writes the manifest. The run id is the build id.')
    .option('--data <dir>', 'dataset folder, readable under this path by the coordinator and every worker')
    .addOption(new Option('--dataset <name>', 'dataset format').choices(['cifar10', 'cifar100']).default('cifar10'))
    .addOption(new Option('--split <name>', 'dataset split').choices(['train', 'test']))
    .addOption(new Option('--label-mode <mode>', 'label granularity (coarse: CIFAR-100 only)').choices(['fine', 'coarse']).default('fine'))
    .option('--range <start:end>', 'records to build, half-open (default: the whole split)', parseRange)
    .option('--shard-records <n>', 'records per shard, one extract job each', parsePositiveInteger)
    .option('--model <file>', 'Keras 2.x .h5 file or TensorFlow.js model.json, readable by the coordinator and every worker')
    .option('--key-layers <list>', 'key layers: names or 0-based Keras layer indices, comma-separated', parseKeyLayers)
    .addOption(new Option('--stats-from <splits>', 'splits whose images give the standardisation statistics').argParser(parseStatisticsSplits).default(['train', 'test'], 'train,test'))
    .option('--mirrors', 'add the horizontal mirror image of every record', false)
    .option('--build-id <id>', 'build id and run id (default: derived from model, layers, preprocessing and records)');

  return addSubmitOptions(command).action(async (flags: BuildFlags, self: Command) => {
    let request: CacheBuildSubmission;
    if (flags.spec !== undefined) {
      assertNoRequestFlags(self, BUILD_FLAGS);
      request = await readSpecFile(flags.spec, cacheBuildSubmissionSchema, absolutizeBuild);
    } else {
      request = buildRequestFromFlags(flags);
    }
    await reportSubmission(flags, await apiClientOf(flags).submitCacheBuild(request));
  });
}

const EVALUATION_FLAGS = ['testQueries', 'testCache', 'validationQueries', 'validationCache', 'theta', 'lambda', 'thetaCacheOnly', 'thetas', 'lambdas', 'querySlice', 'shardGroupBytes', 'allowOverlap', 'evaluationId', 'storage'] as const;

interface EvaluateFlags extends SubmitFlags {
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
  report?: string;
}

function evaluationRequestFromFlags(flags: EvaluateFlags): EvaluationSubmission {
  if (flags.testQueries === undefined || flags.testCache === undefined) {
    throw new CachefleetError('INVALID_ARGUMENT', 'Give --spec FILE, or --test-queries and --test-cache (manifest object keys).', {});
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
    .description('Submit an evaluation to the coordinator: evaluate jobs over (query slice × shard group) and an aggregate job that writes the report. A spec file may name builds as key stores; they run first. The run id is the evaluation id.')
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
    .option('--shard-group-bytes <n>', 'maximum shard bytes one evaluate job loads (default 1 GiB)', parsePositiveInteger)
    .option('--allow-overlap', 'allow queries that are also cache items', false)
    .option('--evaluation-id <id>', 'evaluation id and run id (default: derived from the request)')
    .option('--report <file>', 'with --wait, write the JSON report of the completed run to this file');

  return addSubmitOptions(command).action(async (flags: EvaluateFlags, self: Command) => {
    let request: EvaluationSubmission;
    if (flags.spec !== undefined) {
      assertNoRequestFlags(self, EVALUATION_FLAGS);
      request = await readSpecFile(flags.spec, evaluationSubmissionSchema, absolutizeEvaluation);
    } else {
      request = evaluationRequestFromFlags(flags);
    }

    const client = apiClientOf(flags);
    const writeReportFile = flags.report === undefined ? undefined : async (runId: string) => writeFileAtomically(flags.report!, JSON.stringify(await client.getReport(runId), null, 2));
    await reportSubmission(flags, await client.submitEvaluation(request), writeReportFile);
  });
}

/** `cachefleet submit cache-build|evaluate`: submissions through the coordinator API. */
export function submitCommand(): Command {
  return new Command('submit')
    .description('Submit work to the coordinator API (`cachefleet serve`); the token comes from CACHEFLEET_API_TOKEN.')
    .addCommand(cacheBuildCommand())
    .addCommand(evaluateSubmitCommand());
}
