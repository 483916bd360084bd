import type { Job } from 'bullmq';

import {
  loadRobustnessModels,
  robustnessAggregateJobDataSchema,
  robustnessJobDataSchema,
  robustnessJobResultSchema,
  runRobustnessAggregateJob,
  runRobustnessJob,
  type Logger,
  type ObjectStore,
  type RobustnessAggregateResult,
  type RobustnessJobData,
  type RobustnessJobResult,
  type RobustnessModels,
} from '@cachefleet/core';

import { readWorkerConfig } from './config.js';
import type { JobProcessor, ProcessorContext } from './processors.js';

/**
 * Keeps the models of the last robustness run a worker served: the gradient graph and about
 * 5 GB of cache keys for ResNet32, loaded once and reused by every slice of that run. A job of
 * another run (other model, cache or parameters) replaces them.
 */
// NOTE: the worker's shutdown does not release these sessions and keys; they go when the process exits.
class RobustnessModelHolder {
  private current: { id: string; models: Promise<RobustnessModels> } | undefined;

  async get(store: ObjectStore, data: RobustnessJobData, threads: number, logger: Logger): Promise<RobustnessModels> {
    const id = JSON.stringify([store.describe(), data.model, data.cache, data.parameters]);
    if (this.current?.id !== id) {
      const previous = this.current;
      const models = loadRobustnessModels(store, data, { threads, logger });
      this.current = { id, models };
      models.catch(() => {
        if (this.current?.id === id) this.current = undefined;
      });
      if (previous !== undefined) await previous.models.then((loaded) => loaded.dispose(), () => undefined);
    }
    return this.current!.models;
  }
}

/** Returns the children's return values sorted by child key, so every attempt gets the same list. */
async function childResults(job: Job): Promise<unknown[]> {
  const values = await job.getChildrenValues();
  return Object.keys(values)
    .sort()
    .map((key) => values[key]);
}

/**
 * Creates the processors of the `robustness` queue (the attacks on one slice of the subset)
 * and of `robustness-aggregate` (the report). The slices use the worker's scoring threads.
 */
export function createRobustnessProcessors(context: ProcessorContext): { robustness: JobProcessor; robustnessAggregate: JobProcessor } {
  const holder = new RobustnessModelHolder();
  const threads = readWorkerConfig().scoringThreads;

  const robustness = async (job: Job, logger: Logger): Promise<RobustnessJobResult> => {
    const data = robustnessJobDataSchema.parse(job.data);
    const store = await context.resources.store(data.storageUrl);
    const split = await context.resources.split(data.dataset);
    const models = await holder.get(store, data, threads, logger);
    const parts: string[] = [];

    const result = await runRobustnessJob(data, {
      store,
      split,
      models,
      logger,
      onProgress: (part) => {
        parts.push(part);
        void job.updateProgress({ done: parts.length, part }).catch(() => undefined);
      },
    });
    logger.info({ runId: data.runId, key: result.key, positions: result.positions, durationMs: result.durationMs }, 'robustness slice written');
    return result;
  };

  const robustnessAggregate = async (job: Job, logger: Logger): Promise<RobustnessAggregateResult> => {
    const data = robustnessAggregateJobDataSchema.parse(job.data);
    const results = (await childResults(job)).map((value) => robustnessJobResultSchema.parse(value));
    const store = await context.resources.store(data.storageUrl);

    const { result } = await runRobustnessAggregateJob(data, results, { store });
    logger.info({ runId: data.runId, reportKey: result.reportKey, images: result.images, slices: result.slices }, 'robustness report written');
    return result;
  };

  return { robustness, robustnessAggregate };
}
