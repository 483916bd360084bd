import { z } from 'zod';

/**
 * The evaluation report, shared by the local run and the fleet. Errors are fractions of the
 * test set (0.0775, not 7.75). Field names are a public contract: scripts read
 * `baseline.testError`, `cache.testError`, `cache.theta`, `cache.lambda`,
 * `cacheOnly.testError`, `cacheOnly.theta`, `manifest` and `predictions`.
 */
export const REPORT_SCHEMA_VERSION = 1;

const gridSchema = z.object({
  thetas: z.array(z.number()),
  lambdas: z.array(z.number()),
  /** Validation accuracy of the cache model, [theta index][lambda index]. */
  accuracy: z.array(z.array(z.number())),
  /** Validation accuracy of the cache-only model (lambda = 1), one per theta. */
  cacheOnlyAccuracy: z.array(z.number()),
  baselineAccuracy: z.number(),
  queries: z.number().int(),
});

export const reportSegmentSchema = z.object({
  role: z.string(),
  storeId: z.string(),
  dataset: z.string(),
  split: z.string(),
  recordRange: z.object({ start: z.number().int(), end: z.number().int() }),
  includesMirrors: z.boolean(),
  shards: z.number().int(),
  keys: z.number().int(),
  zeroKeys: z.number().int(),
  reused: z.boolean(),
});

export const reportSchema = z.object({
  schemaVersion: z.literal(REPORT_SCHEMA_VERSION),
  createdAt: z.string(),
  baseline: z.object({ testError: z.number(), validationAccuracy: z.number().nullable() }),
  cache: z.object({
    testError: z.number(),
    theta: z.number(),
    lambda: z.number(),
    tuned: z.boolean(),
    validationAccuracy: z.number().nullable(),
  }),
  cacheOnly: z.object({
    testError: z.number(),
    theta: z.number(),
    tuned: z.boolean(),
    validationAccuracy: z.number().nullable(),
  }),
  grid: gridSchema.nullable(),
  perClassAccuracy: z.object({
    classNames: z.array(z.string()),
    baseline: z.array(z.number()),
    cache: z.array(z.number()),
    cacheOnly: z.array(z.number()),
  }),
  manifest: z.object({
    model: z.object({ source: z.string(), format: z.string(), fingerprint: z.string(), fileSha256: z.string(), numClasses: z.number().int() }),
    keyLayers: z.array(z.object({ index: z.number().int(), name: z.string(), shape: z.array(z.number().int()) })),
    keyDim: z.number().int(),
    preprocessing: z.object({ hash: z.string(), description: z.string() }),
    dataset: z.object({ name: z.string(), dir: z.string(), trainFingerprint: z.string(), testFingerprint: z.string() }),
    limit: z.number().int().nullable(),
    cacheComposition: z.object({
      validation: z.object({ keys: z.number().int(), queries: z.number().int() }).nullable(),
      test: z.object({ keys: z.number().int(), queries: z.number().int() }),
      segments: z.array(reportSegmentSchema),
    }),
    backend: z.string(),
    extractionEngine: z.string(),
    scoringEngine: z.string(),
    versions: z.record(z.string(), z.string()),
    timingsMs: z.record(z.string(), z.number()),
  }),
  predictions: z.object({
    labels: z.array(z.number().int()),
    baseline: z.array(z.number().int()),
    cache: z.array(z.number().int()),
    cacheOnly: z.array(z.number().int()),
  }),
});

export type EvaluationReport = z.infer<typeof reportSchema>;
export type ReportSegment = z.infer<typeof reportSegmentSchema>;
