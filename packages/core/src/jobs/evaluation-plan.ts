import { createHash } from 'node:crypto';

import { canonicalJson } from '../canonical-json.js';
import { DEFAULT_LAMBDAS, DEFAULT_THETAS } from '../cache/index.js';
import type { RecordRange } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import { parsePreprocessingSpec } from '../preprocessing/index.js';
import type { KeyStoreManifest } from '../store/key-store-manifest.js';
import type { ObjectStore } from '../storage/index.js';
import type {
  AggregateJobData,
  CountedShardRef,
  EvaluateJobData,
  EvaluationRole,
  ReportContext,
  ResolvedEvaluation,
  ResolvedStore,
  RolePlanSummary,
} from './evaluation-schemas.js';
import { readManifest } from './merge-job.js';
import { jobIds, objectKeys } from './names.js';
import { describePreprocessing } from './preprocessing-object.js';

/** The jobs of one evaluation: evaluate jobs over (query slice × shard group) and their aggregate parent. */
export interface EvaluationPlan {
  evaluationId: string;
  aggregate: { jobId: string; data: AggregateJobData };
  evaluates: Array<{ jobId: string; data: EvaluateJobData }>;
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
 * role's queries into slices of `querySliceSize` rows and its cache into groups of consecutive
 * shards within `shardGroupBytes`, and lists one evaluate job per (slice, group).
 */
export async function planEvaluation(store: ObjectStore, evaluation: ResolvedEvaluation): Promise<EvaluationPlan> {
  const tuning = validateParameters(evaluation);
  const manifests = await loadManifests(store, evaluation);
  const reference = manifests.get(evaluation.test.queries.manifest)!;
  assertCompatible(manifests, reference);
  if (!evaluation.allowOverlap) {
    if (tuning.validationThetas !== undefined) assertDisjoint(evaluation.validation!, manifests, 'Validation');
    assertDisjoint(evaluation.test, manifests, 'Test');
  }

  const roles: Array<{ role: EvaluationRole; part: ResolvedEvaluation['test']; thetas: number[] }> = [];
  if (tuning.validationThetas !== undefined) roles.push({ role: 'validation', part: evaluation.validation!, thetas: tuning.validationThetas });
  roles.push({ role: 'test', part: evaluation.test, thetas: tuning.testThetas });

  const evaluates: EvaluationPlan['evaluates'] = [];
  const summaries: RolePlanSummary[] = [];
  for (const { role, part, thetas } of roles) {
    const planned = planRole(evaluation, manifests, role, part, thetas, reference);
    evaluates.push(...planned.jobs);
    summaries.push(planned.summary);
  }

  const aggregateData: AggregateJobData = {
    evaluationId: evaluation.evaluationId,
    storageUrl: evaluation.storageUrl,
    reportKey: objectKeys.report(evaluation.evaluationId),
    thetas: tuning.gridThetas,
    lambdas: tuning.lambdas,
    fixed: { theta: evaluation.theta, lambda: evaluation.lambda, thetaCacheOnly: evaluation.thetaCacheOnly },
    roles: summaries,
    context: reportContext(evaluation, manifests, reference),
  };
  return { evaluationId: evaluation.evaluationId, aggregate: { jobId: jobIds.aggregate(evaluation.evaluationId), data: aggregateData }, evaluates };
}

interface Tuning {
  gridThetas: number[];
  lambdas: number[];
  /** Thetas scored on validation; undefined when θ, λ and the cache-only θ are all fixed. */
  validationThetas: number[] | undefined;
  testThetas: number[];
}

/** Applies the local run's rules for fixed and tuned parameters, and picks the thetas each role scores. */
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

  // θ is chosen only when the aggregate step runs, so test queries are scored for every θ the
  // choice can return. Each θ's partials do not depend on the other θs scored with it (the
  // scoring graph scans over θ), so this matches the local run's test scoring bit for bit.
  const testThetas = tunes ? unique([...gridThetas, ...(theta === undefined ? [] : [theta]), ...(thetaCacheOnly === undefined ? [] : [thetaCacheOnly])]) : unique([theta!, thetaCacheOnly!]);
  return { gridThetas, lambdas, validationThetas: tunes ? gridThetas : undefined, testThetas };
}

function unique(values: number[]): number[] {
  return values.filter((value, index) => values.indexOf(value) === index);
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

function planRole(
  evaluation: ResolvedEvaluation,
  manifests: Map<string, KeyStoreManifest>,
  role: EvaluationRole,
  part: ResolvedEvaluation['test'],
  thetas: number[],
  reference: KeyStoreManifest,
): { jobs: EvaluationPlan['evaluates']; summary: RolePlanSummary } {
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
  const groups = groupShards(cacheShards, evaluation.shardGroupBytes);
  const jobs: EvaluationPlan['evaluates'] = [];
  // Group-major order: a worker that takes the next job of the queue usually finds the group's
  // shards still loaded.
  for (const group of groups) {
    const shardRange = { start: group[0].index, end: group[group.length - 1].index + 1 };
    for (const rows of slices) {
      jobs.push({
        jobId: jobIds.evaluate(evaluation.evaluationId, role, rows, shardRange),
        data: {
          evaluationId: evaluation.evaluationId,
          storageUrl: evaluation.storageUrl,
          role,
          thetas,
          dim: reference.dim,
          numClasses: reference.numClasses,
          queries: { shards: queryShards, rowRange: rows },
          cache: { shards: group },
          outputKey: objectKeys.partial(evaluation.evaluationId, role, rows, shardRange),
        },
      });
    }
  }

  return {
    jobs,
    summary: {
      role,
      thetas,
      numQueries,
      scoredShards: cacheShards.filter((shard) => shard.count > 0).map((shard) => shard.index),
      shardCount: cacheShards.length,
      cacheKeys,
      slices,
    },
  };
}

function toCountedRef(ref: KeyStoreManifest['shards'][number]): CountedShardRef {
  return { key: ref.path, sha256: ref.sha256, bytes: ref.bytes, count: ref.count };
}

/** Cuts rows [0, total) into slices of `size` rows; the last may be shorter. */
export function sliceRows(total: number, size: number): RecordRange[] {
  const slices: RecordRange[] = [];
  for (let start = 0; start < total; start += size) slices.push({ start, end: Math.min(start + size, total) });
  return slices;
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
