import { DEFAULT_QUERY_BLOCK_SIZE } from '../cache/score-cache.js';
import { scoreShardPartials } from '../cache/shard-partials.js';
import type { ScoringEngine } from '../cache/scoring-engine.js';
import { CachefleetError, isCachefleetError, type ErrorCode } from '../errors.js';
import type { KeyShard } from '../store/shard-io.js';
import type { ObjectStore } from '../storage/index.js';
import { throwIfCancelled, type CancellationCheck } from './cancellation.js';
import type { EvaluateJobData, EvaluateResult } from './evaluation-schemas.js';
import { objectKeys } from './names.js';
import { encodePartialResult, type PartialResult } from './partial-format.js';
import type { ShardObjectRef } from './shard-objects.js';
import type { ShardLoader } from './shard-cache.js';

export interface EvaluateJobResources {
  store: ObjectStore;
  engine: ScoringEngine;
  shards: ShardLoader;
  onProgress?: (keysScored: number, totalKeys: number) => void;
  /** Checked before each shard is loaded and scored; a cancelled run stops the job with RUN_CANCELLED and writes no partials. */
  isCancelled?: CancellationCheck;
}

interface QuerySlice {
  keys: Float32Array;
  logProbs: Float32Array;
  labels: Int32Array;
  count: number;
}

/**
 * Scores one slice of queries against one group of cache shards for every θ of the job, with
 * `scoreShardPartials` as the local run does. Writes the per-shard partials, with the queries'
 * model log-probabilities and labels, as one partial-result object.
 */
export async function runEvaluateJob(data: EvaluateJobData, resources: EvaluateJobResources): Promise<EvaluateResult> {
  assertBlockAligned(data);
  const started = performance.now();
  const { store, engine } = resources;
  const queries = await loadQuerySlice(data, resources);

  const jobName = `Evaluate job of evaluation ${data.evaluationId}`;
  const group: KeyShard[] = [];
  for (const ref of data.cache.shards) {
    await throwIfCancelled(resources.isCancelled, jobName);
    const shard = await loadListedShard(resources, ref);
    assertShardFits(shard, ref.key, data);
    group.push(shard);
  }
  const loaded = performance.now();

  // Shards are scored one call at a time so that the cancellation check runs between them.
  // scoreShardPartials scores every shard on its own, so the partials are the same as from one call.
  const totalKeys = group.reduce((sum, shard) => sum + shard.header.count, 0);
  const scored = data.cache.shards.filter((_, i) => group[i].header.count > 0);
  const partials: Float32Array[] = [];
  let keysBefore = 0;
  for (const shard of group) {
    if (shard.header.count === 0) continue;
    await throwIfCancelled(resources.isCancelled, jobName);
    const offset = keysBefore;
    const [partial] = await scoreShardPartials(engine, [{ keys: shard.keys, labels: shard.labels, count: shard.header.count }], {
      queries: queries.keys,
      numQueries: queries.count,
      dim: data.dim,
      numClasses: data.numClasses,
      thetas: data.thetas,
      onProgress: ({ keysScored }) => resources.onProgress?.(offset + keysScored, totalKeys),
    });
    partials.push(partial);
    keysBefore += shard.header.count;
  }
  await throwIfCancelled(resources.isCancelled, jobName);

  const scoredAt = performance.now();

  const result: PartialResult = {
    header: {
      role: data.role,
      rowRange: data.queries.rowRange,
      numClasses: data.numClasses,
      thetas: data.thetas,
      shards: data.cache.shards.map((ref, i) => ({ index: ref.index, count: group[i].header.count })),
    },
    labels: queries.labels,
    logProbs: queries.logProbs,
    partials: new Map(scored.map((ref, i) => [ref.index, partials[i]])),
  };
  const chunks = encodePartialResult(result);
  const written = await store.put(data.outputKey, chunks.length === 1 ? chunks[0] : iterate(chunks));

  const first = data.cache.shards[0].index;
  return {
    key: data.outputKey,
    sha256: written.sha256,
    bytes: written.bytes,
    role: data.role,
    rowRange: data.queries.rowRange,
    shardRange: { start: first, end: data.cache.shards[data.cache.shards.length - 1].index + 1 },
    durationMs: Math.round(performance.now() - started),
    stagesMs: { load: Math.round(loaded - started), score: Math.round(scoredAt - loaded), write: Math.round(performance.now() - scoredAt) },
  };
}

async function* iterate(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* chunks;
}

/**
 * Copies rows [start, end) of the stacked query shards into one slice, loading only the shards it
 * touches. Rows within one shard are returned as views of the shard's arrays, without a copy.
 */
async function loadQuerySlice(data: EvaluateJobData, resources: EvaluateJobResources): Promise<QuerySlice> {
  const { start, end } = data.queries.rowRange;
  const { dim, numClasses } = data;
  const count = end - start;

  let shardStart = 0;
  for (const ref of data.queries.shards) {
    const shardEnd = shardStart + ref.count;
    if (shardStart <= start && end <= shardEnd) {
      const shard = await loadListedShard(resources, ref);
      assertShardFits(shard, ref.key, data);
      const from = start - shardStart;
      const to = end - shardStart;
      return { keys: shard.keys.subarray(from * dim, to * dim), logProbs: shard.logProbs.subarray(from * numClasses, to * numClasses), labels: shard.labels.subarray(from, to), count };
    }
    shardStart = shardEnd;
  }

  const slice: QuerySlice = { keys: new Float32Array(count * dim), logProbs: new Float32Array(count * numClasses), labels: new Int32Array(count), count };
  shardStart = 0;
  for (const ref of data.queries.shards) {
    const shardEnd = shardStart + ref.count;
    const first = Math.max(start, shardStart);
    const last = Math.min(end, shardEnd);
    if (first < last) {
      const shard = await loadListedShard(resources, ref);
      assertShardFits(shard, ref.key, data);
      const from = first - shardStart;
      const to = last - shardStart;
      const at = first - start;
      slice.keys.set(shard.keys.subarray(from * dim, to * dim), at * dim);
      slice.logProbs.set(shard.logProbs.subarray(from * numClasses, to * numClasses), at * numClasses);
      slice.labels.set(shard.labels.subarray(from, to), at);
    }
    shardStart = shardEnd;
  }

  if (shardStart < end) {
    throw new CachefleetError('INVALID_ARGUMENT', `Query rows [${start}, ${end}) go beyond the ${shardStart} rows of the query store. Plan the evaluation again from its manifests.`, { start, end, rows: shardStart });
  }
  return slice;
}

// Codes of a shard that is missing or fails its size and SHA-256 checks.
const DAMAGED_SHARD_CODES: readonly ErrorCode[] = ['CHECKSUM_MISMATCH', 'KEY_STORE_CORRUPT', 'OBJECT_NOT_FOUND'];

/**
 * Loads a shard that a manifest lists. A missing or damaged shard stays listed, and a resubmitted
 * build that finds its manifest reuses it, so the error names the manifest to delete first.
 */
async function loadListedShard(resources: EvaluateJobResources, ref: ShardObjectRef): Promise<KeyShard> {
  try {
    return await resources.shards.load(resources.store, ref);
  } catch (error) {
    if (!isCachefleetError(error) || !DAMAGED_SHARD_CODES.includes(error.code)) throw error;
    const buildId = /^builds\/([^/]+)\/shards\//.exec(ref.key)?.[1];
    const manifest = buildId === undefined ? 'the key store manifest that lists it' : objectKeys.manifest(buildId);
    throw new CachefleetError(
      error.code,
      `${error.message} To rebuild it, delete ${manifest} and submit the build again, then run the evaluation again.`,
      { ...error.details, key: ref.key, manifest },
      { cause: error },
    );
  }
}

/**
 * Checks that the slice starts at a multiple of this process's query block size, because only
 * then do its blocks fall on the local run's. A coordinator of another version could plan otherwise.
 */
function assertBlockAligned(data: EvaluateJobData): void {
  if (data.queries.rowRange.start % DEFAULT_QUERY_BLOCK_SIZE === 0) return;
  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `Query rows [${data.queries.rowRange.start}, ${data.queries.rowRange.end}) do not start at a multiple of this worker's scoring block of ${DEFAULT_QUERY_BLOCK_SIZE} queries, so results would not match the local run bit for bit. Run the coordinator and workers of one cachefleet version.`,
    { rowRange: data.queries.rowRange, queryBlockSize: DEFAULT_QUERY_BLOCK_SIZE },
  );
}

function assertShardFits(shard: KeyShard, key: string, data: EvaluateJobData): void {
  if (shard.header.dim !== data.dim || shard.header.numClasses !== data.numClasses) {
    throw new CachefleetError(
      'KEY_STORE_MISMATCH',
      `Shard ${key} has dim ${shard.header.dim} and ${shard.header.numClasses} classes, but evaluation ${data.evaluationId} expects dim ${data.dim} and ${data.numClasses} classes. Use key stores built with the same model and key layers.`,
      { key },
    );
  }
}
