import { z } from 'zod';

import { DEFAULT_QUERY_BLOCK_SIZE } from '../cache/index.js';
import { reportSegmentSchema } from '../local/report.js';
import { keyLayerRefSchema } from '../store/key-store-manifest.js';
import { cacheBuildRequestSchema, recordRangeSchema } from './build-schemas.js';
import { fleetIdSchema } from './names.js';

const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits');

/**
 * Maximum queries per evaluate job by default: 32 query blocks of the scoring engine (16,384
 * queries, 805 MB at dim 12,288). A CIFAR split of 10,000 queries then fits one slice, so each
 * cache shard is read by one evaluate job per role (the last group of a role excepted).
 */
export const DEFAULT_QUERY_SLICE_SIZE = 32 * DEFAULT_QUERY_BLOCK_SIZE;

/** Default maximum of shard bytes one evaluate job loads (1 GiB). */
export const DEFAULT_SHARD_GROUP_BYTES = 1024 ** 3;

/**
 * A key store used by an evaluation: an existing manifest (object key in the evaluation's
 * storage), or a build the coordinator submits first, in the same storage. `role` names the
 * store in the report (default: its split).
 */
export const keyStoreSourceSchema = z.union([
  z.object({ manifest: z.string().min(1), role: z.string().min(1).optional() }).strict(),
  z.object({ build: cacheBuildRequestSchema.omit({ storageUrl: true }), role: z.string().min(1).optional() }).strict(),
]);
export type KeyStoreSource = z.input<typeof keyStoreSourceSchema>;

const evaluationPartSchema = z.strictObject({
  /** Query key store: a build without mirror images for test queries. */
  queries: keyStoreSourceSchema,
  /** Cache key stores, in cache order: their shards, one after the other, are the cache. */
  cache: z.array(keyStoreSourceSchema).min(1),
});

const thetaSchema = z.number({ error: 'θ must be a finite number' }).positive('θ must be greater than 0');
const lambdaSchema = z.number({ error: 'λ must be a finite number' }).min(0, 'λ must be between 0 and 1').max(1, 'λ must be between 0 and 1');
const gridSchema = <T extends z.ZodType>(value: T) => z.array(value).min(1, 'the grid is empty: give at least one value, or leave it out for the default grid');

const commonEvaluationFields = {
  storageUrl: z.string().min(1),
  /** Fixed θ and λ of the cache model (both or neither); without them they are tuned on validation. */
  theta: thetaSchema.optional(),
  lambda: lambdaSchema.optional(),
  /** Fixed θ of the cache-only model; without it, it is tuned on validation. */
  thetaCacheOnly: thetaSchema.optional(),
  /** Tuning grids; default θ ∈ linspace(10, 90, 33), λ ∈ linspace(0.1, 0.9, 33). */
  thetas: gridSchema(thetaSchema).optional(),
  lambdas: gridSchema(lambdaSchema).optional(),
  /**
   * Maximum queries per evaluate job; a role's queries are cut into slices of nearly equal size
   * within it. A multiple of the scoring engine's query block, so that every slice starts on a
   * block of the local run, and the blocks, and therefore every bit of the results, are the same.
   */
  querySliceSize: z
    .number()
    .int()
    .positive()
    .refine((size) => size % DEFAULT_QUERY_BLOCK_SIZE === 0, `must be a multiple of the scoring query block size ${DEFAULT_QUERY_BLOCK_SIZE}`)
    .default(DEFAULT_QUERY_SLICE_SIZE),
  /** Maximum shard bytes one evaluate job loads: a group is the consecutive shards within it, at least one. */
  shardGroupBytes: z.number().int().positive().default(DEFAULT_SHARD_GROUP_BYTES),
  /** Lets queries also be cache items (compared by dataset fingerprint and record range). */
  allowOverlap: z.boolean().default(false),
  /** Report fields: the dataset folder and the `--limit` of the run, if any. */
  datasetDir: z.string().optional(),
  limit: z.number().int().positive().nullable().default(null),
  /** Class names for the report's per-class accuracy; default the class indices. */
  classNames: z.array(z.string()).optional(),
};

/** An evaluation request from a user or from `cachefleet fleet paper`; unknown fields are rejected. */
export const evaluationRequestSchema = z.strictObject({
  ...commonEvaluationFields,
  evaluationId: fleetIdSchema.optional(),
  test: evaluationPartSchema,
  validation: evaluationPartSchema.optional(),
});
export type EvaluationRequest = z.input<typeof evaluationRequestSchema>;
export type ParsedEvaluationRequest = z.output<typeof evaluationRequestSchema>;

/** A key store after its build was submitted or found: the manifest's object key. */
export const resolvedStoreSchema = z.object({
  manifest: z.string().min(1),
  /** Name of the store in the report; default the manifest's split. */
  role: z.string().min(1).optional(),
  /** Whether the manifest existed before this request (the report's `reused`). */
  reused: z.boolean(),
});
export type ResolvedStore = z.infer<typeof resolvedStoreSchema>;

const resolvedPartSchema = z.object({ queries: resolvedStoreSchema, cache: z.array(resolvedStoreSchema).min(1) });

/** An evaluation whose key stores are all named by manifest: the data of a plan-evaluation job. */
export const resolvedEvaluationSchema = z.object({
  ...commonEvaluationFields,
  evaluationId: fleetIdSchema,
  test: resolvedPartSchema,
  validation: resolvedPartSchema.optional(),
});
export type ResolvedEvaluation = z.output<typeof resolvedEvaluationSchema>;

export const planEvaluationJobDataSchema = z.object({ evaluation: resolvedEvaluationSchema });
export type PlanEvaluationJobData = z.infer<typeof planEvaluationJobDataSchema>;

export const planEvaluationResultSchema = z.object({ evaluationId: fleetIdSchema, aggregateJobId: z.string(), evaluateJobs: z.number().int().positive() });
export type PlanEvaluationResult = z.infer<typeof planEvaluationResultSchema>;

export const EVALUATION_ROLES = ['validation', 'test'] as const;
export type EvaluationRole = (typeof EVALUATION_ROLES)[number];

export const shardObjectRefSchema = z.object({
  key: z.string().min(1),
  sha256: sha256Schema,
  bytes: z.number().int().positive(),
  count: z.number().int().nonnegative(),
});
export type CountedShardRef = z.infer<typeof shardObjectRefSchema>;

export const evaluateJobDataSchema = z.object({
  evaluationId: fleetIdSchema,
  storageUrl: z.string().min(1),
  role: z.enum(EVALUATION_ROLES),
  thetas: z.array(thetaSchema).min(1),
  dim: z.number().int().positive(),
  numClasses: z.number().int().positive(),
  /** Every shard of the role's query store in order, and the rows of their stacked queries to score. */
  queries: z.object({ shards: z.array(shardObjectRefSchema).min(1), rowRange: recordRangeSchema }),
  /** The shard group: consecutive cache shards with their global indices. */
  cache: z.object({ shards: z.array(shardObjectRefSchema.extend({ index: z.number().int().nonnegative() })).min(1) }),
  outputKey: z.string().min(1),
});
export type EvaluateJobData = z.infer<typeof evaluateJobDataSchema>;

export const evaluateResultSchema = z.object({
  key: z.string().min(1),
  sha256: sha256Schema,
  bytes: z.number().int().positive(),
  role: z.enum(EVALUATION_ROLES),
  rowRange: recordRangeSchema,
  /** Global shard indices scored, half-open. */
  shardRange: recordRangeSchema,
  durationMs: z.number().nonnegative(),
  /** Parts of `durationMs`: reading and checking queries and shards, scoring, encoding and writing the partials. */
  stagesMs: z.object({ load: z.number().nonnegative(), score: z.number().nonnegative(), write: z.number().nonnegative() }).optional(),
});
export type EvaluateResult = z.infer<typeof evaluateResultSchema>;

/** Report fields that the aggregate step needs besides the partials. */
export const reportContextSchema = z.object({
  model: z.object({ source: z.string(), format: z.string(), fingerprint: z.string(), fileSha256: z.string(), numClasses: z.number().int() }),
  keyLayers: z.array(keyLayerRefSchema),
  keyDim: z.number().int().positive(),
  preprocessing: z.object({ hash: z.string(), description: z.string() }),
  dataset: z.object({ name: z.string(), dir: z.string(), trainFingerprint: z.string(), testFingerprint: z.string(), classNames: z.array(z.string()) }),
  limit: z.number().int().nullable(),
  segments: z.array(reportSegmentSchema),
  backend: z.string(),
  extractionEngine: z.string(),
});
export type ReportContext = z.infer<typeof reportContextSchema>;

/** What the aggregate and tune jobs need to know about one role's evaluate jobs to check and fold their partials. */
export const rolePlanSummarySchema = z.object({
  role: z.enum(EVALUATION_ROLES),
  numQueries: z.number().int().positive(),
  /** Global indices of the cache shards that contain keys: each must be scored for every query. */
  scoredShards: z.array(z.number().int().nonnegative()).min(1),
  shardCount: z.number().int().positive(),
  cacheKeys: z.number().int().positive(),
});
export type RolePlanSummary = z.infer<typeof rolePlanSummarySchema>;

/** What one role's partials cover, reported per role in `fleet.coverage`. */
export const roleCoverageSchema = z.object({
  queries: z.number().int(),
  queriesScored: z.number().int(),
  shards: z.number().int(),
  partialObjects: z.number().int(),
  evaluateJobsMs: z.number(),
  /** Sums of the evaluate jobs' `stagesMs`; absent when a job did not report them. */
  evaluateStagesMs: z.object({ load: z.number(), score: z.number(), write: z.number() }).optional(),
});

const fixedParametersSchema = z.object({ theta: thetaSchema.optional(), lambda: lambdaSchema.optional(), thetaCacheOnly: thetaSchema.optional() });

/** A test evaluate job as planned before tuning: its job data without the thetas, which the tune job sets. */
export const evaluateJobTemplateSchema = z.object({ jobId: z.string().min(1), data: evaluateJobDataSchema.omit({ thetas: true }) });
export type EvaluateJobTemplate = z.infer<typeof evaluateJobTemplateSchema>;

/**
 * Data of a tune job: a child of the aggregate job whose children are the validation evaluate
 * jobs. It tunes θ and λ as the local run does, then adds the test evaluate jobs, scored with the
 * chosen θ values only, as further children of the aggregate job.
 */
export const tuneJobDataSchema = z.object({
  evaluationId: fleetIdSchema,
  storageUrl: z.string().min(1),
  /** Tuning grids; the validation queries were scored for every θ of `thetas`. */
  thetas: z.array(thetaSchema).min(1),
  lambdas: z.array(lambdaSchema).min(1),
  fixed: fixedParametersSchema,
  validation: rolePlanSummarySchema,
  aggregateJobId: z.string().min(1),
  testJobs: z.array(evaluateJobTemplateSchema).min(1),
});
export type TuneJobData = z.infer<typeof tuneJobDataSchema>;

/** The report's validation grid (see the local report schema). */
const tuningGridSchema = z.object({
  thetas: z.array(z.number()),
  lambdas: z.array(z.number()),
  accuracy: z.array(z.array(z.number())),
  cacheOnlyAccuracy: z.array(z.number()),
  baselineAccuracy: z.number(),
  queries: z.number().int(),
});

/** Return value of a tune job: the chosen parameters and the validation figures of the report. */
export const tuneResultSchema = z.object({
  evaluationId: fleetIdSchema,
  theta: thetaSchema,
  lambda: lambdaSchema,
  thetaCacheOnly: thetaSchema,
  /** θ values of the test evaluate jobs: θ, then the cache-only θ when it differs, as in the local run. */
  testThetas: z.array(thetaSchema).min(1),
  grid: tuningGridSchema,
  validationAccuracy: z.object({ baseline: z.number(), cache: z.number(), cacheOnly: z.number() }),
  coverage: roleCoverageSchema,
  /** Keys of the validation cache. */
  cacheKeys: z.number().int().positive(),
  /** Time of folding the validation partials and of tuning, in milliseconds. */
  timingsMs: z.object({ fold: z.number(), tune: z.number() }),
  testJobs: z.number().int().positive(),
});
export type TuneResult = z.infer<typeof tuneResultSchema>;

export const aggregateJobDataSchema = z
  .object({
    evaluationId: fleetIdSchema,
    storageUrl: z.string().min(1),
    reportKey: z.string().min(1),
    thetas: z.array(thetaSchema).min(1),
    lambdas: z.array(lambdaSchema).min(1),
    fixed: fixedParametersSchema,
    test: rolePlanSummarySchema,
    /** θ values of the test evaluate jobs when θ and the cache-only θ are both fixed. */
    testThetas: z.array(thetaSchema).min(1).optional(),
    /** Id of the tune child that chooses the test θ values, when they are tuned. */
    tuneJobId: z.string().min(1).optional(),
    context: reportContextSchema,
  })
  .refine((data) => (data.testThetas === undefined) !== (data.tuneJobId === undefined), 'give exactly one of testThetas and tuneJobId');
export type AggregateJobData = z.infer<typeof aggregateJobDataSchema>;

export const aggregateResultSchema = z.object({
  evaluationId: fleetIdSchema,
  reportKey: z.string(),
  reportSha256: sha256Schema,
  testError: z.object({ baseline: z.number(), cache: z.number(), cacheOnly: z.number() }),
  theta: z.number(),
  lambda: z.number(),
  thetaCacheOnly: z.number(),
});
export type AggregateResult = z.infer<typeof aggregateResultSchema>;
