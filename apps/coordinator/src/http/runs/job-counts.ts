import type { Job } from 'bullmq';

import type { FleetQueueName } from '@cachefleet/core';

import type { FleetClient } from '../../fleet/fleet-client.js';
import type { JobCounts, StageName, StageStatus } from './run-record.js';

// Most active jobs read per queue to tell active children from waiting ones. A fleet has at most
// a few active jobs per worker, so this is far above any real count.
const MAX_ACTIVE_JOBS_READ = 1000;

/** Active jobs of a queue by Redis key (`<prefix>:<queue>:<id>`), the form in which parents list their children. */
export type ActiveJobIndex = Map<string, Job>;

export async function readActiveJobs(client: FleetClient, queue: FleetQueueName): Promise<ActiveJobIndex> {
  const jobs = await client.queue(queue).getActive(0, MAX_ACTIVE_JOBS_READ - 1);
  return new Map(jobs.filter((job) => job.id !== undefined).map((job) => [`${client.prefix}:${queue}:${job.id}`, job]));
}

/** Returns the fraction of a job done from its progress, `{ done, total }` as the workers report it, or a percentage. */
export function progressFraction(progress: unknown): number {
  if (typeof progress === 'number' && Number.isFinite(progress)) return Math.min(1, Math.max(0, progress / 100));
  if (typeof progress === 'object' && progress !== null) {
    const { done, total } = progress as { done?: unknown; total?: unknown };
    if (typeof done === 'number' && typeof total === 'number' && total > 0) return Math.min(1, Math.max(0, done / total));
  }
  return 0;
}

/** Sums job counts and the progress of active jobs for one stage. */
export class StageCounter {
  private readonly counts: JobCounts = { total: 0, waiting: 0, active: 0, completed: 0, failed: 0 };
  private activeProgress = 0;

  constructor(readonly name: StageName) {}

  /**
   * Adds the children of a parent job that belong to `queue`: completed ones from its processed
   * list, failed ones from its failed lists, and each unprocessed one as active (if in `active`)
   * or waiting. Children are Redis keys `<prefix>:<queue>:<id>`; an aggregate job, for example,
   * has both evaluate and tune children.
   */
  async addChildrenOf(parent: Job, queue: FleetQueueName, active: ActiveJobIndex, prefix: string): Promise<void> {
    const dependencies = await parent.getDependencies();
    const inQueue = (key: string) => key.startsWith(`${prefix}:${queue}:`);
    this.counts.completed += Object.keys(dependencies.processed ?? {}).filter(inQueue).length;
    this.counts.failed += (dependencies.failed ?? []).filter(inQueue).length + Object.keys(dependencies.ignored ?? {}).filter(inQueue).length;
    for (const key of (dependencies.unprocessed ?? []).filter(inQueue)) {
      const job = active.get(key);
      if (job === undefined) {
        this.counts.waiting += 1;
      } else {
        this.counts.active += 1;
        this.activeProgress += progressFraction(job.progress);
      }
    }
  }

  /** Adds one job by its state; a missing job adds nothing. */
  async addJob(job: Job | undefined): Promise<void> {
    if (job === undefined) return;
    const state = await job.getState();
    if (state === 'completed') this.counts.completed += 1;
    else if (state === 'failed') this.counts.failed += 1;
    else if (state === 'active') {
      this.counts.active += 1;
      this.activeProgress += progressFraction(job.progress);
    } else if (state !== 'unknown') this.counts.waiting += 1;
  }

  /** Counts `count` jobs as completed, for a stage whose results exist without live jobs (a manifest found at submission). */
  addCompleted(count: number): void {
    this.counts.completed += count;
  }

  toStatus(): StageStatus {
    const total = this.counts.waiting + this.counts.active + this.counts.completed + this.counts.failed;
    const progress = total === 0 ? 0 : Math.min(1, (this.counts.completed + this.activeProgress) / total);
    return { name: this.name, jobs: { ...this.counts, total }, progress };
  }
}
