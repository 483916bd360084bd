import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { z } from 'zod';

import type { DatasetSplit } from '../datasets/split.js';
import { createLogger, type Logger } from '../log.js';
import { StatisticsSourceSchema } from './spec.js';
import { computeStatistics, type PixelStatistics } from './statistics.js';

/** File format of one cached statistics entry. */
const StatisticsFileSchema = z.object({
  version: z.literal(1),
  height: z.number().int().positive(),
  width: z.number().int().positive(),
  channels: z.number().int().positive(),
  source: StatisticsSourceSchema,
  mean: z.array(z.number().finite()),
  std: z.array(z.number().finite().positive()),
});

export interface StatisticsCacheOptions {
  /** Folder for the cache files, created when missing. */
  cacheDir: string;
  logger?: Logger;
}

/**
 * Returns the statistics of `splits` from `cacheDir` when a file for exactly these splits
 * (dataset and fingerprints, in order) exists there, and otherwise computes them and writes that
 * file. An unreadable or mismatching file is logged and replaced.
 */
export async function loadOrComputeStatistics(splits: DatasetSplit[], options: StatisticsCacheOptions): Promise<PixelStatistics> {
  const logger = options.logger ?? createLogger('preprocessing.statistics');
  const file = path.join(options.cacheDir, `pixel-statistics-${statisticsCacheKey(splits)}.json`);

  const cached = await readStatisticsFile(file, splits, logger);
  if (cached !== undefined) {
    logger.debug({ file }, 'pixel statistics loaded from cache');
    return cached;
  }

  const startedAt = Date.now();
  const statistics = await computeStatistics(splits);
  await writeStatisticsFile(file, statistics);
  logger.info({ file, recordCount: statistics.source.recordCount, durationMs: Date.now() - startedAt }, 'pixel statistics computed and cached');
  return statistics;
}

/** Returns the SHA-256 (hex) identifying a list of splits: their dataset and fingerprints, in order. */
export function statisticsCacheKey(splits: DatasetSplit[]): string {
  const hash = createHash('sha256');
  for (const split of splits) {
    hash.update(`${split.dataset}:${split.split}:${split.fingerprint}\n`);
  }
  return hash.digest('hex');
}

async function readStatisticsFile(file: string, splits: DatasetSplit[], logger: Logger): Promise<PixelStatistics | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined;
    }
    throw error;
  }

  let parsed: z.infer<typeof StatisticsFileSchema>;
  try {
    parsed = StatisticsFileSchema.parse(JSON.parse(text));
  } catch (error) {
    logger.warn({ file, err: error }, 'pixel statistics cache file is invalid, recomputing');
    return undefined;
  }

  const imageSize = parsed.height * parsed.width * parsed.channels;
  const sourceMatches = parsed.source.splits.length === splits.length &&
    parsed.source.splits.every((entry, i) => entry.fingerprint === splits[i].fingerprint && parsed.source.dataset === splits[i].dataset);
  if (!sourceMatches || parsed.mean.length !== imageSize || parsed.std.length !== imageSize) {
    logger.warn({ file }, 'pixel statistics cache file does not match the requested splits, recomputing');
    return undefined;
  }

  return {
    height: parsed.height,
    width: parsed.width,
    channels: parsed.channels,
    mean: Float32Array.from(parsed.mean),
    std: Float32Array.from(parsed.std),
    source: parsed.source,
  };
}

/** Writes through a temporary file and a rename, so readers never see a half-written file. */
async function writeStatisticsFile(file: string, statistics: PixelStatistics): Promise<void> {
  const content: z.infer<typeof StatisticsFileSchema> = {
    version: 1,
    height: statistics.height,
    width: statistics.width,
    channels: statistics.channels,
    source: statistics.source,
    mean: Array.from(statistics.mean),
    std: Array.from(statistics.std),
  };

  await mkdir(path.dirname(file), { recursive: true });
  const tempFile = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeFile(tempFile, `${JSON.stringify(content)}\n`);
    await rename(tempFile, file);
  } finally {
    await rm(tempFile, { force: true });
  }
}
