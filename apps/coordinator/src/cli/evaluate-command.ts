import os from 'node:os';
import path from 'node:path';

import { Command, Option } from 'commander';

import { createLogger, runLocalEvaluation } from '@cachefleet/core';

import { parseGrid, parseKeyLayers, parseNumber, parsePositiveInteger } from './parse-options.js';
import { createProgressBars } from './progress-bars.js';
import { formatResultTable } from './result-table.js';
import { writeFileAtomically } from './write-file-atomically.js';

export function defaultStoreDir(): string {
  const cacheHome = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return process.env.CACHEFLEET_STORE ?? path.join(cacheHome, 'cachefleet', 'keys');
}

interface EvaluateFlags {
  data: string;
  dataset: 'cifar10' | 'cifar100';
  model: string;
  keyLayers: Array<string | number>;
  theta?: number;
  lambda?: number;
  thetaCacheOnly?: number;
  thetas?: number[];
  lambdas?: number[];
  limit?: number;
  validationSize?: number;
  shardRecords?: number;
  statsFrom: string;
  store: string;
  threads?: number;
  engine: 'auto' | 'onnx' | 'tfjs';
  backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  allowOverlap: boolean;
  report?: string;
  json: boolean;
  progress: boolean;
}

export function evaluateCommand(): Command {
  return new Command('evaluate')
    .description('Run the cache model protocol in one process with local files: extract keys, tune θ and λ on the validation split, evaluate on the test split.')
    .requiredOption('--data <dir>', 'dataset folder in its binary format (for example cifar-10-batches-bin)')
    .addOption(new Option('--dataset <name>', 'dataset format').choices(['cifar10', 'cifar100']).default('cifar10'))
    .requiredOption('--model <file>', 'Keras 2.x .h5 file or TensorFlow.js model.json')
    .requiredOption('--key-layers <list>', 'key layers: names or 0-based Keras layer indices, comma-separated (ResNet32: 82,92,103)', parseKeyLayers)
    .option('--theta <number>', 'θ of the cache model; with --lambda, skips their tuning', parseNumber)
    .option('--lambda <number>', 'λ, the cache weight in [0, 1]; with --theta, skips their tuning', parseNumber)
    .option('--theta-cache-only <number>', 'θ of the cache-only model; skips its tuning', parseNumber)
    .option('--thetas <grid>', 'θ grid as START:STOP:COUNT or a list (default 10:90:33)', parseGrid)
    .option('--lambdas <grid>', 'λ grid as START:STOP:COUNT or a list (default 0.1:0.9:33)', parseGrid)
    .option('--limit <n>', 'use only the first N records of each split (train, validation, test), for a quick run', parsePositiveInteger)
    .option('--validation-size <n>', 'number of last training records used as validation queries (default 5000)', parsePositiveInteger)
    .option('--shard-records <n>', 'records per key shard (default: one shard per split); use the fleet shard size to reproduce its results exactly', parsePositiveInteger)
    .option('--stats-from <splits>', 'splits whose images give the standardisation statistics', 'train,test')
    .option('--store <dir>', 'folder of the key stores, reused across runs (env CACHEFLEET_STORE)', defaultStoreDir())
    .option('--threads <n>', 'model threads and scoring threads (default: one per core)', parsePositiveInteger)
    .addOption(new Option('--engine <name>', 'forward-pass engine: onnxruntime when the model converts (auto), or force one').choices(['auto', 'onnx', 'tfjs']).default('auto'))
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
    .option('--allow-overlap', 'allow evaluation items that are also cache items', false)
    .option('--report <file>', 'write the JSON report to this file')
    .option('--json', 'print the JSON report on stdout instead of the table', false)
    .option('--no-progress', 'do not draw progress bars')
    .action(async (flags: EvaluateFlags) => {
      const logger = createLogger('cachefleet');
      const bars = createProgressBars(flags.progress && process.stderr.isTTY === true);
      const statisticsSplits = flags.statsFrom.split(',').map((item) => item.trim());
      for (const split of statisticsSplits) {
        if (split !== 'train' && split !== 'test') {
          throw new Error(`--stats-from "${flags.statsFrom}" is invalid: list train and/or test, separated by commas.`);
        }
      }

      let report;
      try {
        report = await runLocalEvaluation({
          dataDir: flags.data,
          dataset: flags.dataset,
          modelPath: flags.model,
          keyLayers: flags.keyLayers,
          theta: flags.theta,
          lambda: flags.lambda,
          thetaCacheOnly: flags.thetaCacheOnly,
          thetas: flags.thetas,
          lambdas: flags.lambdas,
          limit: flags.limit,
          validationSize: flags.validationSize,
          shardRecords: flags.shardRecords,
          statisticsSplits: statisticsSplits as Array<'train' | 'test'>,
          storeDir: flags.store,
          allowOverlap: flags.allowOverlap,
          threads: flags.threads,
          engine: flags.engine,
          backend: flags.backend,
          progress: bars,
          logger,
        });
      } finally {
        bars.stop();
      }

      const text = JSON.stringify(report, null, 2);
      if (flags.report !== undefined) {
        await writeFileAtomically(flags.report, text);
        logger.info({ report: path.resolve(flags.report) }, 'report written');
      }
      process.stdout.write(flags.json ? `${text}\n` : `${formatResultTable(report)}\n`);
    });
}
