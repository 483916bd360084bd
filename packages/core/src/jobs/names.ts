import { z } from 'zod';

import type { RecordRange } from '../datasets/index.js';
import { shardFileName } from '../store/local-key-store.js';

/**
 * Queue names of the fleet, one queue per job type, so that each kind of worker (for example a
 * GPU worker that only extracts) can listen to the queues it serves.
 */
export const QUEUE_NAMES = {
  extract: 'extract',
  merge: 'merge',
  evaluate: 'evaluate',
  aggregate: 'aggregate',
  tune: 'tune',
  planEvaluation: 'plan-evaluation',
  robustness: 'robustness',
  robustnessAggregate: 'robustness-aggregate',
} as const;

export type FleetQueueKey = keyof typeof QUEUE_NAMES;
export type FleetQueueName = (typeof QUEUE_NAMES)[FleetQueueKey];
export const FLEET_QUEUE_NAMES: readonly FleetQueueName[] = Object.values(QUEUE_NAMES);

/**
 * Build and evaluation ids. BullMQ job ids may not contain `:` or be plain integers, and the id
 * becomes part of object keys. So ids use letters, digits, `.`, `_` and `-`, start with a letter
 * or digit and are not all digits.
 */
export const fleetIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'expected 1 to 128 letters, digits, ".", "_" or "-", starting with a letter or digit')
  .refine((id) => !/^\d+$/.test(id), 'an id may not be a plain integer (BullMQ reserves those)');

function rangePart(range: RecordRange): string {
  return `${range.start}-${range.end}`;
}

/** BullMQ job ids, derived from build or evaluation ids and ranges, never from an attempt. */
export const jobIds = {
  extract: (buildId: string, range: RecordRange): string => `extract-${buildId}-${rangePart(range)}`,
  merge: (buildId: string): string => `merge-${buildId}`,
  evaluate: (evaluationId: string, role: string, rows: RecordRange, shards: RecordRange): string =>
    `evaluate-${evaluationId}-${role}-q${rangePart(rows)}-s${rangePart(shards)}`,
  aggregate: (evaluationId: string): string => `aggregate-${evaluationId}`,
  tune: (evaluationId: string): string => `tune-${evaluationId}`,
  planEvaluation: (evaluationId: string): string => `plan-${evaluationId}`,
};

/**
 * Object keys below the storage root. A key depends on the build or evaluation id and the range
 * only, so a retried job rewrites the same object with the same content.
 */
export const objectKeys = {
  shard: (buildId: string, range: RecordRange): string => `builds/${buildId}/shards/${shardFileName(range)}`,
  manifest: (buildId: string): string => `builds/${buildId}/manifest.json`,
  preprocessing: (hash: string): string => `preprocessing/${hash}.json`,
  /** `shards` is the half-open range of global shard indices scored in the job. */
  partial: (evaluationId: string, role: string, rows: RecordRange, shards: RecordRange): string =>
    `evaluations/${evaluationId}/partials/${role}-q${rangePart(rows)}-s${rangePart(shards)}.cfpart`,
  report: (evaluationId: string): string => `evaluations/${evaluationId}/report.json`,
};
