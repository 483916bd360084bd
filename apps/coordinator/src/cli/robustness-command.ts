import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { Command, InvalidArgumentError, Option } from 'commander';
import { z } from 'zod';

import { CachefleetError, createLogger, robustnessReportSchema, runLocalRobustness, type CacheParameters, type RobustnessReport, type RobustnessSettingsInput } from '@cachefleet/core';

import { defaultStoreDir } from './evaluate-command.js';
import { parseKeyLayers, parseNumber, parsePositiveInteger } from './parse-options.js';
import { createProgressBars } from './progress-bars.js';
import { submitRobustnessToFleet, type FleetRobustnessFlags } from './robustness-fleet.js';
import { formatRobustnessTables, renderRobustnessSvg } from './robustness-output.js';
import { writeFileAtomically } from './write-file-atomically.js';

export interface RobustnessFlags extends Omit<FleetRobustnessFlags, 'data' | 'model' | 'keyLayers'> {
  data?: string;
  model?: string;
  keyLayers?: Array<string | number>;
  fromReport?: string;
  theta: number;
  lambda: number;
  thetaCacheOnly: number;
  images: number;
  singlePixelImages: number;
  whiteBoxImages: number;
  sweepImages: number;
  seed: number;
  sliceSize: number;
  fgsmMaxEpsilon: number;
  ifgsmMaxEpsilon: number;
  ifgsmSteps: number;
  gridSize: number;
  maxPixels: number;
  blurMax: number;
  gradientEngine: 'onnx' | 'tfjs';
  gradientCheck: number;
  store: string;
  validationSize?: number;
  limit?: number;
  shardRecords?: number;
  statsFrom: string;
  threads?: number;
  backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu';
  report?: string;
  plot?: string;
  json: boolean;
  progress: boolean;
  fleet: boolean;
}

function parseCount(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) throw new InvalidArgumentError(`"${value}" is not a whole number of images (0 or more).`);
  return parsed;
}

function parseSeed(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > 0xffffffff) throw new InvalidArgumentError(`"${value}" is not a seed: give a whole number from 0 to 4294967295.`);
  return parsed;
}

/** Returns the settings and cache parameters that the flags describe, in the shape of the core schemas. */
export function settingsFromFlags(flags: RobustnessFlags): { settings: RobustnessSettingsInput; parameters: CacheParameters } {
  return {
    settings: {
      seed: flags.seed,
      images: flags.images,
      singlePixelImages: Math.min(flags.singlePixelImages, flags.images),
      whiteBoxImages: Math.min(flags.whiteBoxImages, flags.images),
      sweepImages: Math.min(flags.sweepImages, flags.images),
      sliceSize: flags.sliceSize,
      fgsm: { maxEpsilon: flags.fgsmMaxEpsilon, count: flags.gridSize },
      iterativeFgsm: { maxEpsilon: flags.ifgsmMaxEpsilon, count: flags.gridSize, steps: flags.ifgsmSteps },
      singlePixel: { maxPixels: flags.maxPixels },
      blur: { maxStrength: flags.blurMax, count: flags.gridSize },
    },
    parameters: { theta: flags.theta, lambda: flags.lambda, thetaCacheOnly: flags.thetaCacheOnly },
  };
}

/** Returns --data, --model and --key-layers, which every run needs, or raises INVALID_ARGUMENT naming the missing ones. */
function requireInputs(flags: RobustnessFlags): { data: string; model: string; keyLayers: Array<string | number> } {
  const missing = [
    ['--data', flags.data],
    ['--model', flags.model],
    ['--key-layers', flags.keyLayers],
  ]
    .filter(([, value]) => value === undefined)
    .map(([name]) => name);
  if (missing.length > 0) {
    throw new CachefleetError('INVALID_ARGUMENT', `Missing ${missing.join(', ')}: a robustness run needs the dataset folder, the model file and the key layers (or --from-report FILE to redraw an earlier report).`, { missing });
  }
  return { data: flags.data!, model: flags.model!, keyLayers: flags.keyLayers! };
}

/** Reads and validates a robustness report written earlier by this command. */
async function readReport(reportPath: string): Promise<RobustnessReport> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(reportPath, 'utf8'));
  } catch (error) {
    throw new CachefleetError('INVALID_ARGUMENT', `Cannot read the robustness report ${reportPath}: ${(error as Error).message}. Give the JSON file that --report wrote.`, { reportPath }, { cause: error });
  }
  const parsed = robustnessReportSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CachefleetError('INVALID_ARGUMENT', `${reportPath} is not a robustness report: ${z.prettifyError(parsed.error)}`, { reportPath });
  }
  return { ...(raw as RobustnessReport), ...parsed.data };
}

/** Writes the report, the SVG plot and the terminal summary the flags ask for. */
async function writeOutputs(flags: RobustnessFlags, report: RobustnessReport): Promise<void> {
  const logger = createLogger('cachefleet');
  const text = JSON.stringify(report, null, 2);
  if (flags.report !== undefined) {
    await writeFileAtomically(flags.report, text);
    logger.info({ report: path.resolve(flags.report) }, 'robustness report written');
  }
  if (flags.plot !== undefined) {
    await writeFileAtomically(flags.plot, await renderRobustnessSvg(report));
    logger.info({ plot: path.resolve(flags.plot) }, 'robustness plot written');
  }
  process.stdout.write(flags.json ? `${text}\n` : `${formatRobustnessTables(report)}\n`);
}

export function robustnessCommand(): Command {
  const command = new Command('robustness')
    .description(
      'Attack the baseline network, the cache model and the cache-only model with FGSM, iterative FGSM, single-pixel and Gaussian-blur attacks (transfer and white-box) on a seeded random subset of the test split, and report accuracy and perturbation sizes.',
    )
    .option('--data <dir>', 'dataset folder in its binary format (for example cifar-10-batches-bin); required unless --from-report')
    .option('--model <file>', 'Keras 2.x .h5 file or TensorFlow.js model.json; required unless --from-report')
    .option('--key-layers <list>', 'key layers: names or 0-based Keras layer indices, comma-separated (ResNet32: 82,92,103); required unless --from-report', parseKeyLayers)
    .option('--from-report <file>', 'run nothing: read this JSON report and write its tables, --plot and --report again')
    .option('--theta <number>', 'θ of the cache model', parseNumber, 85.5556)
    .option('--lambda <number>', 'λ of the cache model, the cache weight in [0, 1]', parseNumber, 0.5111)
    .option('--theta-cache-only <number>', 'θ of the cache-only model', parseNumber, 72.2222)
    .option('--images <n>', 'size of the random test subset; each image gets the transfer FGSM, iterative FGSM and blur attacks', parsePositiveInteger, 1000)
    .option('--single-pixel-images <n>', 'first N subset images that also get the single-pixel attack', parseCount, 200)
    .option('--white-box-images <n>', 'first N subset images attacked white-box through the cache and cache-only models', parseCount, 200)
    .option('--sweep-images <n>', 'first N subset images whose transfer accuracy is measured at every ε, for the plot', parseCount, 200)
    .option('--seed <n>', 'seed of the subset and of the single-pixel order', parseSeed, 2018)
    .option('--slice-size <n>', 'subset images per slice (one fleet job each)', parsePositiveInteger, 100)
    .option('--fgsm-max-epsilon <number>', 'largest FGSM ε, as a fraction of the input range', parseNumber, 0.5)
    .option('--ifgsm-max-epsilon <number>', 'largest iterative FGSM ε, as a fraction of the input range', parseNumber, 1)
    .option('--ifgsm-steps <n>', 'steps of the iterative FGSM', parsePositiveInteger, 10)
    .option('--grid-size <n>', 'values of ε (and of blur strength) searched, evenly spaced up to the maximum', parsePositiveInteger, 50)
    .option('--max-pixels <n>', 'pixels the single-pixel attack tries per image', parsePositiveInteger, 1000)
    .option('--blur-max <number>', 'largest blur strength: σ as a fraction of the image side', parseNumber, 0.25)
    .addOption(new Option('--gradient-engine <name>', 'input gradients: hand-built onnxruntime backward graph, or the model rebuilt from plain tfjs ops (about 27 times slower for ResNet32)').choices(['onnx', 'tfjs']).default('onnx'))
    .option('--gradient-check <n>', 'also check each model\'s gradient against finite differences on the first N subset images (local runs only)', parseCount, 0)
    .option('--store <dir>', 'folder of the key stores, shared with `cachefleet evaluate` (env CACHEFLEET_STORE)', defaultStoreDir())
    .option('--validation-size <n>', 'number of last training records that form the validation part of the cache (default 5000)', parsePositiveInteger)
    .option('--limit <n>', 'cache only the first N records of the train part and of the validation part, for a quick run (default: all)', parsePositiveInteger)
    .option('--shard-records <n>', 'records per key shard; must match the stored keys to reuse them (default: one shard per split)', parsePositiveInteger)
    .option('--stats-from <splits>', 'splits whose images give the standardisation statistics', 'train,test')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: one per core)', parsePositiveInteger)
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend for model loading and the tfjs gradient engine').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
    .option('--report <file>', 'write the JSON report to this file')
    .option('--plot <file>', 'write the accuracy-against-ε plot as SVG to this file')
    .option('--json', 'print the JSON report on stdout instead of the tables', false)
    .option('--no-progress', 'do not draw progress bars')
    .option('--fleet', 'run the slices as jobs of the fleet instead of in this process (see --storage and --cache)', false)
    .option('--storage <url>', 'fleet: object storage of the key stores and results (env CACHEFLEET_STORAGE_URL)', process.env.CACHEFLEET_STORAGE_URL)
    .option('--cache <keys>', 'fleet: manifest object keys of the cache key stores, in cache order, comma-separated', (value: string) => value.split(',').map((item) => item.trim()).filter((item) => item !== ''))
    .option('--run-id <id>', 'fleet: run id (default: derived from the model, cache, parameters and settings)')
    .option('--redis <url>', 'fleet: Redis URL (env REDIS_URL)', process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
    .option('--prefix <name>', 'fleet: BullMQ key prefix shared with the workers (env CACHEFLEET_QUEUE_PREFIX)', process.env.CACHEFLEET_QUEUE_PREFIX ?? 'cachefleet')
    .option('--no-wait', 'fleet: submit the jobs and exit without waiting for the report');

  return command.action(async (flags: RobustnessFlags) => {
    if (flags.fromReport !== undefined) {
      await writeOutputs(flags, await readReport(flags.fromReport));
      return;
    }
    const inputs = requireInputs(flags);
    const { settings, parameters } = settingsFromFlags(flags);
    if (flags.fleet) {
      const report = await submitRobustnessToFleet({ ...flags, ...inputs }, settings, parameters);
      if (report !== undefined) await writeOutputs(flags, report);
      return;
    }

    const statisticsSplits = flags.statsFrom.split(',').map((item) => item.trim());
    for (const split of statisticsSplits) {
      if (split !== 'train' && split !== 'test') {
        throw new CachefleetError('INVALID_ARGUMENT', `--stats-from "${flags.statsFrom}" is invalid: list train and/or test, separated by commas.`, { statsFrom: flags.statsFrom });
      }
    }
    const bars = createProgressBars(flags.progress && process.stderr.isTTY === true);
    let report;
    try {
      bars.start('robustness slices', settings.images ?? 0, 'images');
      report = await runLocalRobustness({
        dataDir: inputs.data,
        modelPath: inputs.model,
        keyLayers: inputs.keyLayers,
        storeDir: flags.store,
        validationSize: flags.validationSize,
        limit: flags.limit,
        shardRecords: flags.shardRecords,
        statisticsSplits: statisticsSplits as Array<'train' | 'test'>,
        threads: flags.threads,
        backend: flags.backend,
        settings,
        parameters,
        gradientEngine: flags.gradientEngine,
        gradientCheckImages: flags.gradientCheck,
        progress: bars,
        onSlice: (done) => bars.update('robustness slices', done),
      });
    } finally {
      bars.stop();
    }
    await writeOutputs(flags, report);
  });
}
