import {
  CachefleetError,
  cacheBuildRequestSchema,
  cancellationKey,
  evaluationRequestSchema,
  invalidRequestError,
  type Logger,
  type ObjectStore,
} from '@cachefleet/core';

import type { z } from 'zod';

import type { FleetClient } from '../../fleet/fleet-client.js';
import { BuildResolver } from '../../fleet/resolve-build.js';
import { submitEvaluation, submitResolvedBuild } from '../../fleet/submit.js';
import type { CacheBuildSubmission, EvaluationSubmission } from './api-schemas.js';
import { markCancelled, removeQueuedJobs } from './cancel-run.js';
import { observeRun } from './run-observer.js';
import { isFinalState, type RunKind, type RunRecord, type RunState } from './run-record.js';
import { RunStore } from './run-store.js';

export interface RunServiceOptions {
  client: FleetClient;
  /** The server's object storage: run records, and the only storage that runs may use. */
  store: ObjectStore;
  storageUrl: string;
  /** Folder of the local statistics cache, shared with `cachefleet evaluate`. */
  statisticsDir: string;
  /** Absolute folders that requests may name datasets and models in (CACHEFLEET_FILE_ROOTS); undefined allows every path. */
  fileRoots?: readonly string[];
  logger: Logger;
  /**
   * Milliseconds for which a status read may return the last observation of a live run instead
   * of reading its jobs from Redis again. Default 250. Under many reads of the same run this
   * bounds the Redis work per run to a few observations per second.
   */
  statusMaxAgeMs?: number;
}

export interface SubmitOutcome {
  record: RunRecord;
  /** True when the same run was already queued, running or complete, so nothing new was added. */
  joined: boolean;
}

export interface ListFilter {
  state?: RunState;
  kind?: RunKind;
  limit: number;
}

/**
 * Submits, follows and cancels runs. A run's id is its build id (cache build) or evaluation id,
 * both derived from the request unless given, so submitting the same request twice joins the
 * first run. Records live in object storage; live runs are refreshed from Redis on every read
 * and by `refreshLiveRuns`, which the server calls periodically.
 */
export class RunService {
  private readonly runs: RunStore;
  /** Records of runs that are not final, kept to refresh them without reading storage. */
  private readonly live = new Map<string, RunRecord>();
  private readonly refreshing = new Map<string, Promise<RunRecord>>();
  /** When each live run was last observed, in milliseconds since the epoch. */
  private readonly observedAt = new Map<string, number>();
  private submissionQueue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: RunServiceOptions) {
    this.runs = new RunStore(options.store);
  }

  /** Loads the records of unfinished runs, so that the monitor follows runs submitted before a restart. */
  async loadLiveRuns(): Promise<number> {
    for (const record of await this.runs.list()) {
      if (!isFinalState(record.state)) this.live.set(record.runId, record);
    }
    return this.live.size;
  }

  async submitCacheBuild(body: CacheBuildSubmission): Promise<SubmitOutcome> {
    const request = parseRequest('Cache build request', cacheBuildRequestSchema, { ...body, storageUrl: this.checkStorageUrl(body.storageUrl) });
    return this.exclusive(async () => {
      const resolver = this.newResolver();
      const build = await resolver.resolve(request);
      const submission = await submitResolvedBuild(this.options.client, this.options.store, build);

      return this.recordSubmission('cache-build', submission.buildId, request as Record<string, unknown>, {
        builds: [submission],
        planJobId: null,
        aggregateJobId: null,
        manifestKeys: [submission.manifestKey],
        reportKey: null,
      });
    });
  }

  async submitEvaluation(body: EvaluationSubmission): Promise<SubmitOutcome> {
    const request = parseRequest('Evaluation request', evaluationRequestSchema, { ...body, storageUrl: this.checkStorageUrl(body.storageUrl) });
    return this.exclusive(async () => {
      const resolver = this.newResolver();
      const submission = await submitEvaluation(this.options.client, resolver, async () => this.options.store, request, { waitForRunningBuilds: false });
      const evaluation = submission.evaluation;
      const manifestKeys = [...new Set([evaluation.test, ...(evaluation.validation === undefined ? [] : [evaluation.validation])].flatMap((part) => [part.queries.manifest, ...part.cache.map((store) => store.manifest)]))];

      return this.recordSubmission('evaluation', submission.evaluationId, request as Record<string, unknown>, {
        builds: submission.builds,
        planJobId: submission.planJobId ?? null,
        aggregateJobId: submission.aggregateJobId,
        manifestKeys,
        reportKey: submission.reportKey,
      });
    });
  }

  /** Returns a run, refreshed from Redis unless it is final or was observed within `statusMaxAgeMs`. Raises RUN_NOT_FOUND. */
  async get(runId: string): Promise<RunRecord> {
    return this.read(runId, this.options.statusMaxAgeMs ?? 250);
  }

  /** Returns a run, refreshed from Redis unless final or observed less than `maxAgeMs` ago. */
  private async read(runId: string, maxAgeMs: number): Promise<RunRecord> {
    const record = this.live.get(runId) ?? (await this.runs.get(runId));
    if (record === undefined) {
      throw new CachefleetError('RUN_NOT_FOUND', `Run ${runId} does not exist. List the runs with GET /api/v1/runs (or \`cachefleet runs\`).`, { runId });
    }
    if (isFinalState(record.state)) return record;

    const observed = this.observedAt.get(runId);
    if (observed !== undefined && Date.now() - observed < maxAgeMs) return record;
    return this.refresh(record);
  }

  /** Lists runs newest first; live runs show their last refreshed state. */
  async list(filter: ListFilter): Promise<RunRecord[]> {
    const stored = await this.runs.list();
    return stored
      .map((record) => this.live.get(record.runId) ?? record)
      .filter((record) => (filter.state === undefined || record.state === filter.state) && (filter.kind === undefined || record.kind === filter.kind))
      .slice(0, filter.limit);
  }

  /**
   * Cancels a run: marks its ids as cancelled in Redis, removes its queued jobs, and leaves
   * active jobs to stop at their next batch. Raises RUN_STATE_CONFLICT for a finished run.
   */
  async cancel(runId: string): Promise<RunRecord> {
    // A fresh observation, so that a run that has just finished is not marked cancelled.
    const record = await this.read(runId, 0);
    if (isFinalState(record.state)) {
      throw new CachefleetError('RUN_STATE_CONFLICT', `Run ${runId} is already ${record.state}, so there is nothing to cancel.`, { runId, state: record.state });
    }

    const marked: RunRecord = { ...record, cancelRequestedAt: record.cancelRequestedAt ?? new Date().toISOString() };
    await markCancelled(this.options.client, marked);
    await this.runs.put(marked);
    this.live.set(runId, marked);
    this.observedAt.delete(runId);
    this.options.logger.info({ runId, kind: record.kind, previousState: record.state }, 'run cancellation requested');

    await removeQueuedJobs(this.options.client, marked, this.options.logger);
    return this.refresh(marked);
  }

  /** Reads the report of a completed evaluation. */
  async readReport(runId: string): Promise<unknown> {
    const record = await this.get(runId);
    if (record.kind !== 'evaluation' || record.reportKey === null) {
      throw new CachefleetError('RUN_STATE_CONFLICT', `Run ${runId} is a ${record.kind}, which has no report. Its manifest is at ${record.manifestKeys.join(', ')}.`, { runId });
    }
    if (record.state !== 'completed') {
      throw new CachefleetError('RUN_STATE_CONFLICT', `Run ${runId} is ${record.state}; a report exists only for a completed evaluation. Follow it with \`cachefleet status ${runId} --watch\`.`, { runId, state: record.state });
    }
    const bytes = await this.options.store.getBytes(record.reportKey);
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
  }

  /**
   * Refreshes every live run from Redis, stores the records whose state changed, and retries
   * the removal of queued jobs of runs being cancelled. Errors are logged per run.
   */
  async refreshLiveRuns(): Promise<void> {
    for (const record of [...this.live.values()]) {
      try {
        if (record.cancelRequestedAt !== null) await removeQueuedJobs(this.options.client, record, this.options.logger);
        await this.refresh(record);
      } catch (error) {
        this.options.logger.error({ err: error, runId: record.runId }, 'run refresh failed');
      }
    }
  }

  /** Refreshes one run; concurrent calls for the same run share one refresh. */
  private refresh(record: RunRecord): Promise<RunRecord> {
    let pending = this.refreshing.get(record.runId);
    if (pending === undefined) {
      pending = this.refreshOnce(record).finally(() => this.refreshing.delete(record.runId));
      this.refreshing.set(record.runId, pending);
    }
    return pending;
  }

  private async refreshOnce(initial: RunRecord): Promise<RunRecord> {
    // A cancellation or a new submission may replace the record while Redis is read. The
    // observation then belongs to the old record, so it is taken again from the new one.
    let record = initial;
    const started = Date.now();
    let observation = await observeRun(this.options.client, this.options.store, record);
    let latest = this.live.get(record.runId) ?? record;
    while (latest !== record && isNewerRecord(latest, record)) {
      record = latest;
      observation = await observeRun(this.options.client, this.options.store, record);
      latest = this.live.get(record.runId) ?? record;
    }

    const changed = JSON.stringify([observation.state, observation.stages, observation.errors, observation.result]) !== JSON.stringify([record.state, record.stages, record.errors, record.result]);
    if (!changed) {
      if (this.live.get(record.runId) === record) this.observedAt.set(record.runId, started);
      return record;
    }

    const now = new Date().toISOString();
    const updated: RunRecord = { ...record, ...observation, updatedAt: now, finishedAt: isFinalState(observation.state) ? now : null };
    await this.runs.put(updated);
    if (isFinalState(updated.state)) {
      this.live.delete(updated.runId);
      this.observedAt.delete(updated.runId);
      this.options.logger.info({ runId: updated.runId, kind: updated.kind, state: updated.state, errors: updated.errors.map((error) => error.code) }, 'run finished');
    } else {
      this.live.set(updated.runId, updated);
      this.observedAt.set(updated.runId, started);
    }
    return updated;
  }

  /**
   * Stores the record of a submission. A submission that joined a live or completed run keeps
   * its record and returns `joined`. One that joined a run still being cancelled is rejected,
   * because nothing new was added. One that added jobs gets a fresh record with `submissions` + 1.
   */
  private async recordSubmission(kind: RunKind, runId: string, request: Record<string, unknown>, jobs: Pick<RunRecord, 'builds' | 'planJobId' | 'aggregateJobId' | 'manifestKeys' | 'reportKey'>): Promise<SubmitOutcome> {
    const existing = await this.runs.get(runId);
    if (existing !== undefined && existing.kind !== kind) {
      throw new CachefleetError('RUN_STATE_CONFLICT', `Run id ${runId} already belongs to a ${existing.kind}. Choose another ${kind === 'cache-build' ? 'buildId' : 'evaluationId'}.`, { runId });
    }
    // FleetClient.addFlow deletes the cancellation mark whenever it adds new jobs for the id.
    const stillCancelling = existing !== undefined && existing.cancelRequestedAt !== null && (await this.options.client.redis.exists(cancellationKey(this.options.client.prefix, runId))) === 1;
    if (existing !== undefined && stillCancelling && !isFinalState(existing.state)) {
      throw new CachefleetError('RUN_STATE_CONFLICT', `Run ${runId} is still being cancelled: its active jobs stop at their next batch. Submit it again once \`cachefleet status ${runId}\` shows cancelled.`, { runId });
    }

    const now = new Date().toISOString();
    const fresh: RunRecord = {
      schemaVersion: 1,
      runId,
      kind,
      state: 'queued',
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
      finishedAt: null,
      cancelRequestedAt: null,
      submissions: (existing?.submissions ?? 0) + 1,
      storageUrl: this.options.storageUrl,
      request,
      ...jobs,
      stages: [],
      errors: [],
      result: null,
    };
    const observation = await observeRun(this.options.client, this.options.store, fresh);

    const joinedLive = existing !== undefined && !isFinalState(existing.state) && existing.state !== 'lost' && !stillCancelling;
    const joinedFinished = existing !== undefined && isFinalState(existing.state) && observation.state === existing.state;
    if (existing !== undefined && (joinedLive || joinedFinished)) {
      this.options.logger.info({ runId, kind, state: existing.state }, 'submission joined an existing run');
      return { record: joinedFinished ? existing : await this.refresh(existing), joined: true };
    }

    const record: RunRecord = { ...fresh, ...observation, finishedAt: isFinalState(observation.state) ? now : null };
    await this.runs.put(record);
    this.observedAt.delete(runId);
    if (isFinalState(record.state)) this.live.delete(runId);
    else this.live.set(runId, record);
    this.options.logger.info({ runId, kind, state: record.state, submissions: record.submissions, builds: record.builds.map((build) => ({ buildId: build.buildId, status: build.status })) }, 'run submitted');
    return { record, joined: false };
  }

  /** Returns the storage URL of a request, which must be the server's own. */
  private checkStorageUrl(requested: string | undefined): string {
    if (requested === undefined || requested === this.options.storageUrl) return this.options.storageUrl;
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `body.storageUrl ${JSON.stringify(requested)} differs from this server's storage ${this.options.storageUrl}, the only one its runs may use. Omit storageUrl, or send the run to a coordinator started with --storage ${requested}.`,
      { storageUrl: requested },
    );
  }

  /** Creates a resolver per submission, so that a changed dataset or model file is read again. */
  private newResolver(): BuildResolver {
    return new BuildResolver(async () => this.options.store, this.options.statisticsDir, this.options.logger, { fileRoots: this.options.fileRoots, fileRootsSetting: 'CACHEFLEET_FILE_ROOTS' });
  }

  /** Runs submissions one at a time: two identical requests at once must not both add a flow. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.submissionQueue.then(work, work);
    this.submissionQueue = result.catch(() => undefined);
    return result;
  }
}

/** Parses a request with its schema; the routes validate bodies already, so this guards direct callers. */
function parseRequest<T extends z.ZodType>(requestName: string, schema: T, input: unknown): z.output<T> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw invalidRequestError(requestName, parsed.error, input);
  return parsed.data;
}

/** Returns whether `candidate` was written by a cancellation or a submission after `current`. */
function isNewerRecord(candidate: RunRecord, current: RunRecord): boolean {
  return candidate.cancelRequestedAt !== current.cancelRequestedAt || candidate.submissions !== current.submissions;
}
