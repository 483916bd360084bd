import os from 'node:os';

import { z } from 'zod';

import { BACKEND_PREFERENCES, CachefleetError, FLEET_QUEUE_NAMES, parseFileRoots, readFleetSettings, type BackendPreference, type ExtractionEngineName, type FleetQueueName, type FleetSettings } from '@cachefleet/core';

/** Everything a worker process reads from its environment, parsed once at start. */
export interface WorkerConfig {
  redisUrl: string;
  /** BullMQ key prefix: every queue of one fleet shares it, and tests use a unique one each. */
  queuePrefix: string;
  /** Queues this process serves; a GPU worker may serve only `extract`. */
  queues: FleetQueueName[];
  /** Model threads for extract jobs (one model per worker thread). */
  extractThreads: number;
  /** Forward-pass engine, chosen as the local run chooses it: keys match only with the same engine. */
  extractionEngine: ExtractionEngineName;
  backend: BackendPreference;
  /** onnxruntime intra-op threads for evaluate jobs. */
  scoringThreads: number;
  /** Bytes of decoded shards kept between evaluate jobs. */
  shardCacheBytes: number;
  /** When set, jobs whose storage URL differs are rejected. */
  storageUrl: string | undefined;
  /** When set, jobs may read dataset folders and model files only inside these absolute folders. */
  fileRoots: string[] | undefined;
  settings: FleetSettings;
}

const GiB = 1024 ** 3;

const positiveInteger = (name: string) =>
  z
    .string()
    .regex(/^\d+$/, `${name} must be a positive whole number`)
    .transform(Number)
    .refine((value) => value > 0, `${name} must be greater than 0`);

const envSchema = z.object({
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  CACHEFLEET_QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, ".", "_" or "-"').default('cachefleet'),
  CACHEFLEET_QUEUES: z.string().optional(),
  CACHEFLEET_EXTRACT_THREADS: positiveInteger('CACHEFLEET_EXTRACT_THREADS').optional(),
  CACHEFLEET_EXTRACTION_ENGINE: z.enum(['auto', 'onnx', 'tfjs']).default('auto'),
  CACHEFLEET_BACKEND: z.enum(BACKEND_PREFERENCES as [BackendPreference, ...BackendPreference[]]).default('auto'),
  CACHEFLEET_SCORING_THREADS: positiveInteger('CACHEFLEET_SCORING_THREADS').optional(),
  CACHEFLEET_SHARD_CACHE_BYTES: positiveInteger('CACHEFLEET_SHARD_CACHE_BYTES').optional(),
  CACHEFLEET_STORAGE_URL: z.string().min(1).optional(),
  CACHEFLEET_FILE_ROOTS: z.string().optional(),
});

/** Parses the worker's environment; a bad value raises INVALID_ARGUMENT with zod's description. */
export function readWorkerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new CachefleetError('INVALID_ARGUMENT', `Worker environment is invalid: ${z.prettifyError(parsed.error)}`, {});
  }
  const values = parsed.data;

  const queues = values.CACHEFLEET_QUEUES === undefined ? [...FLEET_QUEUE_NAMES] : values.CACHEFLEET_QUEUES.split(',').map((name) => name.trim()).filter((name) => name !== '');
  for (const queue of queues) {
    if (!FLEET_QUEUE_NAMES.includes(queue as FleetQueueName)) {
      throw new CachefleetError('INVALID_ARGUMENT', `CACHEFLEET_QUEUES lists unknown queue "${queue}". Use a comma-separated subset of ${FLEET_QUEUE_NAMES.join(', ')}.`, { queue });
    }
  }
  if (queues.length === 0) {
    throw new CachefleetError('INVALID_ARGUMENT', `CACHEFLEET_QUEUES is empty. List some of ${FLEET_QUEUE_NAMES.join(', ')}, or unset it to serve every queue.`, {});
  }

  return {
    redisUrl: values.REDIS_URL,
    queuePrefix: values.CACHEFLEET_QUEUE_PREFIX,
    queues: queues as FleetQueueName[],
    extractThreads: values.CACHEFLEET_EXTRACT_THREADS ?? os.availableParallelism(),
    extractionEngine: values.CACHEFLEET_EXTRACTION_ENGINE,
    backend: values.CACHEFLEET_BACKEND,
    scoringThreads: values.CACHEFLEET_SCORING_THREADS ?? os.availableParallelism(),
    shardCacheBytes: values.CACHEFLEET_SHARD_CACHE_BYTES ?? 4 * GiB,
    storageUrl: values.CACHEFLEET_STORAGE_URL,
    fileRoots: parseFileRoots(values.CACHEFLEET_FILE_ROOTS, 'CACHEFLEET_FILE_ROOTS'),
    settings: readFleetSettings(env),
  };
}
