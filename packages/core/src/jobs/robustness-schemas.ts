import { createHash } from 'node:crypto';

import { z } from 'zod';

import { canonicalJson } from '../canonical-json.js';
import { cacheParametersSchema, robustnessSettingsSchema } from '../robustness/schemas.js';
import { datasetRefSchema, modelRefSchema } from './build-schemas.js';
import { fleetChildJobOptions, fleetJobOptions, type FleetSettings } from './fleet-config.js';
import type { FlowNodeSpec } from './flow-specs.js';
import { fleetIdSchema, QUEUE_NAMES } from './names.js';

const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits');
const positionsSchema = z
  .object({ start: z.number().int().nonnegative(), end: z.number().int().positive() })
  .refine((range) => range.start < range.end, { message: 'start must be less than end (the range is half-open)' });

/** Fields every job of a robustness run shares: model, data, cache, parameters and settings. */
const robustnessRunFields = {
  runId: fleetIdSchema,
  storageUrl: z.string().min(1),
  model: modelRefSchema,
  /** The test split the subset is drawn from. */
  dataset: datasetRefSchema,
  /** Manifest object keys of the cache's key stores, in cache order. */
  cache: z.object({ manifests: z.array(z.string().min(1)).min(1) }),
  parameters: cacheParametersSchema,
  settings: robustnessSettingsSchema,
};

/** Data of a `robustness` job: every attack of the run on the subset positions [start, end). */
export const robustnessJobDataSchema = z.object({
  ...robustnessRunFields,
  positions: positionsSchema,
  /** Object key of the slice's result (JSON), from the run id and the positions only. */
  outputKey: z.string().min(1),
});
export type RobustnessJobData = z.infer<typeof robustnessJobDataSchema>;

export const robustnessJobResultSchema = z.object({
  key: z.string().min(1),
  sha256: sha256Schema,
  bytes: z.number().int().positive(),
  positions: positionsSchema,
  durationMs: z.number().nonnegative(),
});
export type RobustnessJobResult = z.infer<typeof robustnessJobResultSchema>;

/** Report fields the coordinator has when it submits the run. */
export const robustnessContextSchema = z.object({
  model: z.object({ source: z.string(), fingerprint: z.string(), fileSha256: z.string(), keyLayers: z.array(z.string()) }),
  cache: z.object({ keys: z.number().int().positive(), stores: z.array(z.string()) }),
  preprocessing: z.object({ hash: z.string(), description: z.string() }),
  dataset: z.object({ name: z.string(), dir: z.string(), testFingerprint: z.string() }),
  runner: z.string(),
});

/** Data of the `robustness-aggregate` parent job, which merges its children's slices into the report. */
export const robustnessAggregateJobDataSchema = z.object({
  runId: fleetIdSchema,
  storageUrl: z.string().min(1),
  reportKey: z.string().min(1),
  parameters: cacheParametersSchema,
  settings: robustnessSettingsSchema,
  context: robustnessContextSchema,
  /** Test split size, to rebuild the subset from the seed. */
  splitSize: z.number().int().positive(),
});
export type RobustnessAggregateJobData = z.infer<typeof robustnessAggregateJobDataSchema>;

export const robustnessAggregateResultSchema = z.object({
  runId: fleetIdSchema,
  reportKey: z.string(),
  reportSha256: sha256Schema,
  images: z.number().int().positive(),
  slices: z.number().int().positive(),
});
export type RobustnessAggregateResult = z.infer<typeof robustnessAggregateResultSchema>;

/** BullMQ job ids and object keys of a robustness run, from the run id and the positions only. */
export const robustnessJobIds = {
  slice: (runId: string, positions: { start: number; end: number }): string => `attack-${runId}-p${positions.start}-${positions.end}`,
  aggregate: (runId: string): string => `report-${runId}`,
};

export const robustnessObjectKeys = {
  slice: (runId: string, positions: { start: number; end: number }): string => `robustness/${runId}/slices/p${positions.start}-${positions.end}.json`,
  report: (runId: string): string => `robustness/${runId}/report.json`,
};

/** Derives a run id from everything that determines the results: model, data, cache, parameters and settings. */
export function deriveRobustnessRunId(fields: Omit<z.input<typeof robustnessJobDataSchema>, 'runId' | 'positions' | 'outputKey'>): string {
  const identity = { ...fields, settings: robustnessSettingsSchema.parse(fields.settings), parameters: cacheParametersSchema.parse(fields.parameters) };
  return `robustness-${createHash('sha256').update(canonicalJson(identity)).digest('hex').slice(0, 32)}`;
}

/** Flow of a robustness run: `robustness-aggregate` with one `robustness` child per slice; a child that fails for good fails the run. */
export function robustnessFlowSpec(aggregate: RobustnessAggregateJobData, slices: RobustnessJobData[], settings: FleetSettings): FlowNodeSpec {
  return {
    name: QUEUE_NAMES.robustnessAggregate,
    queueName: QUEUE_NAMES.robustnessAggregate,
    data: aggregate,
    opts: fleetJobOptions(settings, robustnessJobIds.aggregate(aggregate.runId)),
    children: slices.map((slice) => ({
      name: QUEUE_NAMES.robustness,
      queueName: QUEUE_NAMES.robustness,
      data: slice,
      opts: fleetChildJobOptions(settings, robustnessJobIds.slice(slice.runId, slice.positions)),
    })),
  };
}
