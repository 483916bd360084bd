import { CachefleetError } from '../errors.js';
import type { FlowNodeSpec } from './flow-specs.js';

/**
 * Returns true once the run a job belongs to has been cancelled. Job functions call it between
 * batches (extraction), shards (scoring) and before writing a manifest, a report or a flow.
 */
export type CancellationCheck = () => Promise<boolean>;

/** Lifetime of a cancellation mark in seconds: a week, like the finished jobs it applies to. */
export const CANCELLATION_TTL_SECONDS = 7 * 24 * 3600;

/**
 * Redis key that marks a build or an evaluation as cancelled, below the fleet's BullMQ prefix.
 * Build and evaluation ids are deterministic, so the key is deleted again whenever a flow with
 * that id is added anew (see `runIdsOfFlow`).
 */
export function cancellationKey(prefix: string, id: string): string {
  return `${prefix}:cachefleet-cancel:${id}`;
}

/** Raises RUN_CANCELLED when `check` reports the run as cancelled; `jobName` names the job in the message. */
export async function throwIfCancelled(check: CancellationCheck | undefined, jobName: string): Promise<void> {
  if (check === undefined || !(await check())) return;
  throw new CachefleetError('RUN_CANCELLED', `${jobName} stopped because its run was cancelled. Submit the run again to restart it.`, {});
}

/**
 * Lists the build and evaluation ids of every job in a flow (`buildId` and `evaluationId` fields
 * of the job data, and a plan's `evaluation.evaluationId`), so that a submitter can clear stale
 * cancellation marks before adding the flow.
 */
export function runIdsOfFlow(spec: FlowNodeSpec): string[] {
  const ids = new Set<string>();
  const visit = (node: FlowNodeSpec): void => {
    const data = node.data as { buildId?: unknown; evaluationId?: unknown; evaluation?: { evaluationId?: unknown } } | undefined;
    for (const id of [data?.buildId, data?.evaluationId, data?.evaluation?.evaluationId]) {
      if (typeof id === 'string') ids.add(id);
    }
    for (const child of node.children ?? []) visit(child);
  };
  visit(spec);
  return [...ids];
}
