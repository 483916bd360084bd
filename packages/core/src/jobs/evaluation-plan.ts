import { createHash } from 'node:crypto';

import { canonicalJson } from '../canonical-json.js';
import { DEFAULT_LAMBDAS, DEFAULT_QUERY_BLOCK_SIZE, DEFAULT_THETAS } from '../cache/index.js';
import type { RecordRange } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import { parsePreprocessingSpec } from '../preprocessing/index.js';
import type { KeyStoreManifest } from '../store/key-store-manifest.js';
import type { ObjectStore } from '../storage/index.js';
import type {
  AggregateJobData,
  CountedShardRef,
  EvaluateJobData,
  EvaluateJobTemplate,
  EvaluationRole,
  ReportContext,
  ResolvedEvaluation,
  ResolvedStore,
  RolePlanSummary,
  TuneJobData,
} from './evaluation-schemas.js';
import { readManifest } from './merge-job.js';
import { jobIds, objectKeys } from './names.js';
import { describePreprocessing } from './preprocessing-object.js';

export interface PlannedEvaluateJob {
  jobId: string;
  data: EvaluateJobData;
}

/**
 * The jobs of one evaluation. When θ, λ or the cache-only θ is tuned, the flow is the aggregate
 * job, its tune child and the tune job's validation evaluate children. The tune job adds the test
 * evaluate jobs to the aggregate job once it has chosen θ. Otherwise the test evaluate jobs are
 * the aggregate job's children from the start.
 */
export interface EvaluationPlan {
  evaluationId: string;
  aggregate: { jobId: string; data: AggregateJobData };
  tune: { jobId: string; data: TuneJobData } | undefined;
  /** Evaluate jobs of the flow as added: the validation jobs when tuning, otherwise the test jobs. */
  evaluates: PlannedEvaluateJob[];
  /** Evaluate jobs of both roles, the test jobs that the tune job adds included. */
  evaluateJobCount: number;
}

/** Derives an evaluation id from everything that determines its results (not from `reused`). */
export function deriveEvaluationId(evaluation: Omit<ResolvedEvaluation, 'evaluationId'>): string {
  const strip = (store: ResolvedStore) => store.manifest;
  const identity = {
    ...evaluation,
    test: { queries: strip(evaluation.test.queries), cache: evaluation.test.cache.map(strip) },
    validation: evaluation.validation === undefined ? undefined : { queries: strip(evaluation.validation.queries), cache: evaluation.validation.cache.map(strip) },
  };
  return `eval-${createHash('sha256').update(canonicalJson(identity)).digest('hex').slice(0, 32)}`;
}

/**
 * Plans an evaluation from its manifests. Checks that every key store was built with the same
 * model, key layers and preprocessing, and that queries are not cache items. Then cuts each
 * role's queries into slices of at most `querySliceSize` rows and its cache into groups of
 * consecutive shards within `shardGroupBytes`, and lists one evaluate job per (slice, group).
 */
export async function planEvaluation(store: ObjectStore, evaluation: ResolvedEvaluation): Promise<EvaluationPlan> {
  const tuning = validateParameters(evaluation);
  const manifests = await loadManifests(store, evaluation);
  const reference = manifests.get(evaluation.test.queries.manifest)!;
  assertCompatible(manifests, reference);
  if (!evaluation.allowOverlap) {
    if (tuning.fixedTestThetas === undefined) assertDisjoint(evaluation.validation!, manifests, 'Validation');
    assertDisjoint(evaluation.test, manifests, 'Test');
  }

  const test = planRole(evaluation, manifests, 'test', evaluation.test, reference);
  const evaluationId = evaluation.evaluationId;
  const aggregateJobId = jobIds.aggregate(evaluationId);
  const fixed = { theta: evaluation.theta, lambda: evaluation.lambda, thetaCacheOnly: evaluation.thetaCacheOnly };
  const aggregateData: AggregateJobData = {
    evaluationId,
    storageUrl: evaluation.storageUrl,
    reportKey: objectKeys.report(evaluationId),
    thetas: tuning.gridThetas,
    lambdas: tuning.lambdas,
    fixed,
    test: test.summary,
    ...(tuning.fixedTestThetas === undefined ? { tuneJobId: jobIds.tune(evaluationId) } : { testThetas: tuning.fixedTestThetas }),
    context: reportContext(evaluation, manifests, reference),
  };
  const aggregate = { jobId: aggregateJobId, data: aggregateData };

  if (tuning.fixedTestThetas !== undefined) {
    const evaluates = test.jobs.map((job) => withThetas(job, tuning.fixedTestThetas!));
    return { evaluationId, aggregate, tune: undefined, evaluates, evaluateJobCount: evaluates.length };
  }

  const validation = planRole(evaluation, manifests, 'validation', evaluation.validation!, reference);
  const tuneData: TuneJobData = {
    evaluationId,
    storageUrl: evaluation.storageUrl,
    thetas: tuning.gridThetas,
    lambdas: tuning.lambdas,
    fixed,
    validation: validation.summary,
    aggregateJobId,
    testJobs: test.jobs,
  };
  return {
    evaluationId,
    aggregate,
    tune: { jobId: jobIds.tune(evaluationId), data: tuneData },
    evaluates: validation.jobs.map((job) => withThetas(job, tuning.gridThetas)),
    evaluateJobCount: validation.jobs.length + test.jobs.length,
  };
}

/** Completes a planned evaluate job with the thetas it scores. */
export function withThetas(template: EvaluateJobTemplate, thetas: number[]): PlannedEvaluateJob {
  return { jobId: template.jobId, data: { ...template.data, thetas } };
}

/**
 * Returns the θ values the test queries are scored with, as in the local run: θ of the cache
 * model, then the cache-only θ when it differs.
 */
export function testThetasFor(theta: number, thetaCacheOnly: number): number[] {
  return theta === thetaCacheOnly ? [theta] : [theta, thetaCacheOnly];
}

interface Tuning {
  gridThetas: number[];
  lambdas: number[];
  /** θ values of the test jobs when θ, λ and the cache-only θ are all fixed; undefined when the tune job chooses them. */
  fixedTestThetas: number[] | undefined;
}

/** Applies the local run's rules for fixed and tuned parameters. */
function validateParameters(evaluation: ResolvedEvaluation): Tuning {
  const { theta, lambda, thetaCacheOnly } = evaluation;
  if ((theta === undefined) !== (lambda === undefined)) {
    throw new CachefleetError('INVALID_ARGUMENT', `Only one of θ (${theta}) and λ (${lambda}) was given. Give both to skip tuning, or neither to tune them on the validation part.`, { theta, lambda });
  }

  const gridThetas = [...(evaluation.thetas ?? DEFAULT_THETAS)];
  const lambdas = [...(evaluation.lambdas ?? DEFAULT_LAMBDAS)];
  const tunes = theta === undefined || thetaCacheOnly === undefined;
  if (tunes && evaluation.validation === undefined) {
    throw new CachefleetError('INVALID_ARGUMENT', 'The evaluation tunes θ, λ or the cache-only θ but has no validation part. Add validation queries and cache, or fix theta, lambda and thetaCacheOnly.', {});
  }
  return { gridThetas, lambdas, fixedTestThetas: tunes ? undefined : testThetasFor(theta!, thetaCacheOnly!) };
}

async function loadManifests(store: ObjectStore, evaluation: ResolvedEvaluation): Promise<Map<string, KeyStoreManifest>> {
  const keys = [evaluation.test, ...(evaluation.validation === undefined ? [] : [evaluation.validation])].flatMap((part) => [part.queries.manifest, ...part.cache.map((source) => source.manifest)]);
  const manifests = new Map<string, KeyStoreManifest>();
  for (const key of keys) {
    if (!manifests.has(key)) manifests.set(key, (await readManifest(store, key)).manifest);
  }
  return manifests;
}

function assertCompatible(manifests: Map<string, KeyStoreManifest>, reference: KeyStoreManifest): void {
  for (const [key, manifest] of manifests) {
    const differences: string[] = [];
    if (manifest.identity.modelFingerprint !== reference.identity.modelFingerprint) differences.push(`model fingerprint ${manifest.identity.modelFingerprint}`);
    if (manifest.identity.keyLayers.join(',') !== reference.identity.keyLayers.join(',')) differences.push(`key layers ${manifest.identity.keyLayers.join(',')}`);
    if (manifest.identity.preprocessingHash !== reference.identity.preprocessingHash) differences.push(`preprocessing ${manifest.identity.preprocessingHash}`);
    if (manifest.dim !== reference.dim) differences.push(`dim ${manifest.dim}`);
    if (manifest.numClasses !== reference.numClasses) differences.push(`${manifest.numClasses} classes`);
    if (differences.length > 0) {
      throw new CachefleetError(
        'KEY_STORE_MISMATCH',
        `Key store ${key} differs from the test queries' store: ${differences.join('; ')}. Build every store of an evaluation with the same model, key layers and preprocessing.`,
        { key, differences },
      );
    }
  }
}

/** Raises CACHE_OVERLAP when a query store and a cache store share records of the same split. */
function assertDisjoint(part: ResolvedEvaluation['test'], manifests: Map<string, KeyStoreManifest>, what: string): void {
  const queries = manifests.get(part.queries.manifest)!.identity;
  for (const source of part.cache) {
    const cache = manifests.get(source.manifest)!.identity;
    const sameSplit = cache.dataset.fingerprint === queries.dataset.fingerprint;
    const overlaps = cache.recordRange.start < queries.recordRange.end && queries.recordRange.start < cache.recordRange.end;
    if (sameSplit && overlaps) {
      throw new CachefleetError(
        'CACHE_OVERLAP',
        `${what}: query records [${queries.recordRange.start}, ${queries.recordRange.end}) of ${queries.dataset.name} ${queries.dataset.split} overlap cache records [${cache.recordRange.start}, ${cache.recordRange.end}) of store ${source.manifest}, so queries would be scored against themselves. Use disjoint records, or set allowOverlap if this is intended.`,
        { queries: queries.recordRange, cache: cache.recordRange, store: source.manifest },
      );
    }
  }
}

/**
 * Query slices of a role's last shard group, unless the role has fewer query blocks or more
 * slices anyway. Workers take jobs in plan order, so the last group's jobs run last, and a worker
 * that finishes early waits for the others before the next step (tuning, or the report) starts.
 * Smaller jobs at the end shorten that wait to about a quarter of a whole-slice job. The cost is
 * that several workers read the last group's shards.
 */
const TAIL_SLICES = 4;

function planRole(
  evaluation: ResolvedEvaluation,
  manifests: Map<string, KeyStoreManifest>,
  role: EvaluationRole,
  part: ResolvedEvaluation['test'],
  reference: KeyStoreManifest,
): { jobs: EvaluateJobTemplate[]; summary: RolePlanSummary } {
  const queryManifest = manifests.get(part.queries.manifest)!;
  const queryShards = queryManifest.shards.map(toCountedRef);
  const numQueries = queryManifest.count;
  if (numQueries === 0) {
    throw new CachefleetError('EMPTY_CACHE', `The ${role} query store ${part.queries.manifest} has no keys (every record's key was all zeros). Build it from other records.`, { manifest: part.queries.manifest });
  }

  const cacheShards = part.cache.flatMap((source) => manifests.get(source.manifest)!.shards.map(toCountedRef)).map((ref, index) => ({ ...ref, index }));
  const cacheKeys = cacheShards.reduce((sum, shard) => sum + shard.count, 0);
  if (cacheKeys === 0) {
    throw new CachefleetError('EMPTY_CACHE', `The ${role} cache has no keys: every shard of its stores is empty. Build the cache from other records.`, {});
  }

  const slices = sliceRows(numQueries, evaluation.querySliceSize);
  const tailSlices = slices.length >= TAIL_SLICES ? slices : sliceRowsInto(numQueries, TAIL_SLICES);
  const groups = groupShards(cacheShards, evaluation.shardGroupBytes);
  const jobs: EvaluateJobTemplate[] = [];
  groups.forEach((group, g) => {
    const shardRange = { start: group[0].index, end: group[group.length - 1].index + 1 };
    for (const rows of g === groups.length - 1 ? tailSlices : slices) {
      jobs.push({
        jobId: jobIds.evaluate(evaluation.evaluationId, role, rows, shardRange),
        data: {
          evaluationId: evaluation.evaluationId,
          storageUrl: evaluation.storageUrl,
          role,
          dim: reference.dim,
          numClasses: reference.numClasses,
          queries: { shards: queryShards, rowRange: rows },
          cache: { shards: group },
          outputKey: objectKeys.partial(evaluation.evaluationId, role, rows, shardRange),
        },
      });
    }
  });

  return {
    jobs,
    summary: {
      role,
      numQueries,
      scoredShards: cacheShards.filter((shard) => shard.count > 0).map((shard) => shard.index),
      shardCount: cacheShards.length,
      cacheKeys,
    },
  };
}

function toCountedRef(ref: KeyStoreManifest['shards'][number]): CountedShardRef {
  return { key: ref.path, sha256: ref.sha256, bytes: ref.bytes, count: ref.count };
}

/**
 * Cuts rows [0, total) into the fewest slices of at most `maxRows` rows, of nearly equal size
 * (see `sliceRowsInto`). `maxRows` must be a multiple of `blockSize`.
 */
export function sliceRows(total: number, maxRows: number, blockSize = DEFAULT_QUERY_BLOCK_SIZE): RecordRange[] {
  if (maxRows % blockSize !== 0) throw new Error(`Slice size ${maxRows} is not a multiple of the block size ${blockSize}; this is a bug in cachefleet.`);
  const blocks = Math.ceil(total / blockSize);
  return sliceRowsInto(total, Math.ceil(blocks / (maxRows / blockSize)), blockSize);
}

/**
 * Cuts rows [0, total) into `count` slices of whole `blockSize` blocks (the last block may be
 * short), so every slice starts on a block boundary. The first `blocks % count` slices get one
 * block more than the others. A count above the number of blocks gives one slice per block.
 */
export function sliceRowsInto(total: number, count: number, blockSize = DEFAULT_QUERY_BLOCK_SIZE): RecordRange[] {
  const blocks = Math.ceil(total / blockSize);
  const slices = Math.min(count, blocks);
  const ranges: RecordRange[] = [];
  let block = 0;
  for (let i = 0; i < slices; i += 1) {
    const size = Math.floor(blocks / slices) + (i < blocks % slices ? 1 : 0);
    ranges.push({ start: block * blockSize, end: Math.min((block + size) * blockSize, total) });
    block += size;
  }
  return ranges;
}

/** Groups consecutive shards whose bytes add up to at most `budget`; a larger shard forms a group alone. */
export function groupShards<T extends { bytes: number }>(shards: readonly T[], budget: number): T[][] {
  const groups: T[][] = [];
  let current: T[] = [];
  let bytes = 0;
  for (const shard of shards) {
    if (current.length > 0 && bytes + shard.bytes > budget) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(shard);
    bytes += shard.bytes;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

function reportContext(evaluation: ResolvedEvaluation, manifests: Map<string, KeyStoreManifest>, reference: KeyStoreManifest): ReportContext {
  const ordered: ResolvedStore[] = [];
  const parts = [...(evaluation.validation === undefined ? [] : [evaluation.validation]), evaluation.test];
  for (const part of parts) {
    for (const source of [...part.cache, part.queries]) {
      if (!ordered.some((seen) => seen.manifest === source.manifest)) ordered.push(source);
    }
  }

  const all = [...manifests.values()];
  const testQueries = manifests.get(evaluation.test.queries.manifest)!;
  const train = all.find((manifest) => manifest.identity.dataset.split === 'train') ?? manifests.get(evaluation.test.cache[0].manifest)!;
  const engines = [...new Set(all.map((manifest) => manifest.extraction.engine))].sort().join(', ');
  const backends = [...new Set(all.map((manifest) => manifest.extraction.backend))].sort().join(', ');

  return {
    model: { ...reference.model, numClasses: reference.numClasses },
    keyLayers: reference.keyLayers,
    keyDim: reference.dim,
    preprocessing: { hash: reference.identity.preprocessingHash, description: describePreprocessing(parsePreprocessingSpec(reference.preprocessing)) },
    dataset: {
      name: testQueries.identity.dataset.name,
      dir: evaluation.datasetDir ?? '',
      trainFingerprint: train.identity.dataset.fingerprint,
      testFingerprint: testQueries.identity.dataset.fingerprint,
      classNames: evaluation.classNames ?? Array.from({ length: reference.numClasses }, (_, c) => String(c)),
    },
    limit: evaluation.limit,
    segments: ordered.map((source) => {
      const manifest = manifests.get(source.manifest)!;
      return {
        role: source.role ?? manifest.identity.dataset.split,
        storeId: manifest.id,
        dataset: manifest.identity.dataset.name,
        split: manifest.identity.dataset.split,
        recordRange: manifest.identity.recordRange,
        includesMirrors: manifest.identity.includesMirrors,
        shards: manifest.shards.length,
        keys: manifest.count,
        zeroKeys: manifest.zeroKeyCount,
        reused: source.reused,
      };
    }),
    backend: backends,
    extractionEngine: engines,
  };
}
