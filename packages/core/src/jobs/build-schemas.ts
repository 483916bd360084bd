import { z } from 'zod';

import { DATASET_NAMES, LABEL_MODES, SPLIT_NAMES, type DatasetName, type LabelMode, type SplitName } from '../datasets/index.js';
import { keyLayerRefSchema, keyStoreIdentitySchema } from '../store/key-store-manifest.js';
import { fleetIdSchema } from './names.js';

const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits');

// Strict like the requests that contain it, so that a misspelt bound such as `stop` is rejected.
export const recordRangeSchema = z
  .strictObject({ start: z.number().int().nonnegative(), end: z.number().int().positive() })
  .refine((range) => range.start < range.end, { message: 'start must be less than end (the range is half-open)' });

const datasetNameSchema = z.enum(DATASET_NAMES as [DatasetName, ...DatasetName[]]);
const splitNameSchema = z.enum(SPLIT_NAMES as [SplitName, ...SplitName[]]);
const labelModeSchema = z.enum(LABEL_MODES as [LabelMode, ...LabelMode[]]);

/**
 * A request to build the keys of one record range of a dataset split into shards in object
 * storage. Paths (dataset, model) must be readable under the same names by the coordinator and
 * by every worker. Unknown fields are rejected, so a misspelt option is not silently ignored.
 */
export const cacheBuildRequestSchema = z.strictObject({
  dataDir: z.string().min(1),
  dataset: datasetNameSchema.default('cifar10'),
  split: splitNameSchema,
  labelMode: labelModeSchema.default('fine'),
  /** Records to build, half-open; default the whole split. */
  recordRange: recordRangeSchema.optional(),
  /** Records per shard (the last shard may hold fewer); each shard is one extract job. */
  shardRecords: z.number().int().positive(),
  modelPath: z.string().min(1),
  /** Key layers by name or 0-based Keras layer index. */
  keyLayers: z.array(z.union([z.string().min(1), z.number().int().nonnegative()])).min(1),
  /** Splits whose images give the standardisation statistics. */
  statisticsSplits: z.array(splitNameSchema).min(1).default(['train', 'test']),
  includeMirrors: z.boolean(),
  /** Storage of the shards and the manifest: `s3://bucket/prefix`, `file:///dir` or a folder path. */
  storageUrl: z.string().min(1),
  /** Default: derived from everything that determines the keys, like a local key store id. */
  buildId: fleetIdSchema.optional(),
});

export type CacheBuildRequest = z.input<typeof cacheBuildRequestSchema>;
export type ParsedCacheBuildRequest = z.output<typeof cacheBuildRequestSchema>;

/** Location of the preprocessing spec object that every job of a build reads. */
export const preprocessingRefSchema = z.object({
  key: z.string().min(1),
  sha256: sha256Schema,
  /** preprocessingHash of the spec, written into every shard header. */
  hash: sha256Schema,
});
export type PreprocessingRef = z.infer<typeof preprocessingRefSchema>;

/** Dataset split of a job, with the fingerprint the worker's copy must have. */
export const datasetRefSchema = z.object({
  dir: z.string().min(1),
  name: datasetNameSchema,
  split: splitNameSchema,
  labelMode: labelModeSchema,
  /** DatasetSplit.fingerprint seen by the coordinator; a worker with other files fails the job. */
  fingerprint: sha256Schema,
});
export type DatasetRef = z.infer<typeof datasetRefSchema>;

export const modelRefSchema = z.object({
  path: z.string().min(1),
  /** SHA-256 of the model file seen by the coordinator; a worker with another file fails the job. */
  fileSha256: sha256Schema,
  fingerprint: z.string().min(1),
  /** Resolved key layer names, in the order their features are concatenated. */
  keyLayers: z.array(z.string().min(1)).min(1),
});
export type ModelRef = z.infer<typeof modelRefSchema>;

export const extractJobDataSchema = z.object({
  buildId: fleetIdSchema,
  storageUrl: z.string().min(1),
  dataset: datasetRefSchema,
  recordRange: recordRangeSchema,
  includeMirrors: z.boolean(),
  model: modelRefSchema,
  preprocessing: preprocessingRefSchema,
  /** Object key of the shard, from the build id and the record range only. */
  shardKey: z.string().min(1),
});
export type ExtractJobData = z.infer<typeof extractJobDataSchema>;

/** Result of an extract job: where the shard is and its digest, never the keys themselves. */
export const extractResultSchema = z.object({
  key: z.string().min(1),
  sha256: sha256Schema,
  bytes: z.number().int().positive(),
  count: z.number().int().nonnegative(),
  recordRange: recordRangeSchema,
  zeroKeyCount: z.number().int().nonnegative(),
  /** Extraction engine, such as "tfjs-wasm×2", recorded in the manifest. */
  engine: z.string(),
  durationMs: z.number().nonnegative(),
});
export type ExtractResult = z.infer<typeof extractResultSchema>;

export const mergeJobDataSchema = z.object({
  buildId: fleetIdSchema,
  storageUrl: z.string().min(1),
  manifestKey: z.string().min(1),
  identity: keyStoreIdentitySchema,
  model: z.object({ fingerprint: z.string(), fileSha256: sha256Schema, format: z.string(), source: z.string() }),
  keyLayers: z.array(keyLayerRefSchema).min(1),
  dim: z.number().int().positive(),
  numClasses: z.number().int().positive(),
  preprocessing: preprocessingRefSchema,
  /** Expected shards in record order; every one must be among the children's results. */
  shards: z.array(z.object({ key: z.string().min(1), recordRange: recordRangeSchema })).min(1),
});
export type MergeJobData = z.infer<typeof mergeJobDataSchema>;

export const mergeResultSchema = z.object({
  buildId: fleetIdSchema,
  manifestKey: z.string(),
  manifestSha256: sha256Schema,
  count: z.number().int().nonnegative(),
  shards: z.number().int().positive(),
  /** False when another merge of the same build had already written the manifest. */
  written: z.boolean(),
});
export type MergeResult = z.infer<typeof mergeResultSchema>;
