import type { z } from 'zod';

import { foldPartials } from '../cache/shard-partials.js';
import type { RecordRange } from '../datasets/index.js';
import { CachefleetError } from '../errors.js';
import { sha256Hex } from '../store/shard-format.js';
import type { ObjectStore } from '../storage/index.js';
import type { EvaluateResult, RolePlanSummary, roleCoverageSchema } from './evaluation-schemas.js';
import { decodePartialResult, type PartialResult } from './partial-format.js';

export type RoleCoverage = z.infer<typeof roleCoverageSchema>;

/** Queries of one role with their partials folded over the whole cache, in global shard order. */
export interface FoldedRole {
  labels: Int32Array;
  logProbs: Float32Array;
  /** [T][Q][C] for the role's thetas. */
  partials: Float32Array;
  coverage: RoleCoverage;
}

/** Rows of one shard's partials from one partial-result object: [T][rows][C]. */
interface ShardPiece {
  rows: RecordRange;
  values: Float32Array;
}

/**
 * Reads one role's partial-result objects and checks their SHA-256 and thetas, and that every
 * non-empty shard was scored for every query exactly once. Then folds the per-shard partials
 * from left to right in global shard order with the local run's `foldPartials`, so the folded
 * values are bit-identical to the local run's. The rows of one shard may come from several
 * objects (a role's last shard group is scored in smaller query slices). They are put together
 * first, which changes no bit, because the fold works element by element. `reverse` folds in
 * the opposite order, for tests of the fold's sensitivity to order.
 */
export async function foldRole(
  store: ObjectStore,
  summary: RolePlanSummary,
  thetas: readonly number[],
  results: readonly EvaluateResult[],
  order: 'shard-order' | 'reverse' = 'shard-order',
): Promise<FoldedRole> {
  const { numQueries } = summary;
  const decoded: PartialResult[] = [];
  for (const result of results) decoded.push(await readPartial(store, result));
  if (decoded.length === 0) throw incomplete(summary, 'no evaluate job wrote partial results');

  const numClasses = decoded[0].header.numClasses;
  const labels = new Int32Array(numQueries);
  const logProbs = new Float32Array(numQueries * numClasses);
  const rowsScored = new Uint8Array(numQueries);
  const pieces = new Map<number, ShardPiece[]>();

  for (const piece of decoded) {
    const { rowRange, numClasses: pieceClasses } = piece.header;
    const rows = `rows [${rowRange.start}, ${rowRange.end})`;
    if (piece.header.thetas.join(',') !== thetas.join(',')) throw incomplete(summary, `the partials of ${rows} were scored for θ ${piece.header.thetas.join(', ')} instead of ${thetas.join(', ')}`);
    if (pieceClasses !== numClasses) throw incomplete(summary, `the partials of ${rows} have ${pieceClasses} classes, others ${numClasses}`);
    if (rowRange.end > numQueries) throw incomplete(summary, `${rows} go beyond the role's ${numQueries} queries`);

    labels.set(piece.labels, rowRange.start);
    logProbs.set(piece.logProbs, rowRange.start * numClasses);
    rowsScored.fill(1, rowRange.start, rowRange.end);
    for (const [index, values] of piece.partials) {
      if (!summary.scoredShards.includes(index)) throw incomplete(summary, `${rows} were scored against shard ${index}, which is not a non-empty shard of the role's cache`);
      const list = pieces.get(index) ?? [];
      list.push({ rows: rowRange, values });
      pieces.set(index, list);
    }
  }

  const missing = summary.scoredShards.filter((index) => !pieces.has(index));
  if (missing.length > 0) throw incomplete(summary, `the partials of shards ${missing.join(', ')} are missing`);

  const indices = [...pieces.keys()].sort((a, b) => a - b);
  if (order === 'reverse') indices.reverse();
  const shape = { numThetas: thetas.length, numQueries, numClasses };
  const partials = foldPartials(indices.map((index) => assembleShard(summary, index, pieces.get(index)!, shape)));

  const stages = results.map((result) => result.stagesMs);
  const evaluateStagesMs = stages.every((stage) => stage !== undefined)
    ? { load: sum(stages.map((stage) => stage.load)), score: sum(stages.map((stage) => stage.score)), write: sum(stages.map((stage) => stage.write)) }
    : undefined;
  return {
    labels,
    logProbs,
    partials,
    coverage: {
      queries: numQueries,
      queriesScored: sum(Array.from(rowsScored)),
      shards: summary.shardCount,
      partialObjects: results.length,
      evaluateJobsMs: sum(results.map((result) => result.durationMs)),
      evaluateStagesMs,
    },
  };
}

/**
 * Puts one shard's pieces together into [T][Q][C] partials, checking that they cover every
 * query once. A single piece over all queries is returned as it is.
 */
function assembleShard(summary: RolePlanSummary, index: number, pieces: ShardPiece[], shape: { numThetas: number; numQueries: number; numClasses: number }): Float32Array {
  const { numThetas, numQueries, numClasses } = shape;
  pieces.sort((a, b) => a.rows.start - b.rows.start);
  let next = 0;
  for (const piece of pieces) {
    if (piece.rows.start < next) throw incomplete(summary, `shard ${index} was scored twice for rows [${piece.rows.start}, ${Math.min(next, piece.rows.end)})`);
    if (piece.rows.start > next) throw incomplete(summary, `shard ${index} has no partials for rows [${next}, ${piece.rows.start})`);
    next = piece.rows.end;
  }
  if (next !== numQueries) throw incomplete(summary, `shard ${index} has no partials for rows [${next}, ${numQueries})`);
  if (pieces.length === 1) return pieces[0].values;

  const whole = new Float32Array(numThetas * numQueries * numClasses);
  for (const { rows, values } of pieces) {
    const length = (rows.end - rows.start) * numClasses;
    for (let t = 0; t < numThetas; t += 1) {
      whole.set(values.subarray(t * length, (t + 1) * length), (t * numQueries + rows.start) * numClasses);
    }
  }
  return whole;
}

async function readPartial(store: ObjectStore, result: EvaluateResult): Promise<PartialResult> {
  const bytes = await store.getBytes(result.key);
  const sha256 = sha256Hex(bytes);
  if (sha256 !== result.sha256) {
    throw new CachefleetError('CHECKSUM_MISMATCH', `Partial result ${result.key} has SHA-256 ${sha256}, but its evaluate job wrote ${result.sha256}; the object was changed or damaged. Run the evaluation again.`, { key: result.key });
  }
  return decodePartialResult(bytes, `${store.describe()} ${result.key}`);
}

function incomplete(summary: RolePlanSummary, reason: string): CachefleetError {
  return new CachefleetError('KEY_STORE_CORRUPT', `The ${summary.role} partial results are incomplete: ${reason}. Run the evaluation again.`, { role: summary.role });
}

function sum(values: number[]): number {
  return values.reduce((total, value) => total + value, 0);
}
