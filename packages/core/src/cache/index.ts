export { dropRows, normalizeKeys, type KeptRows, type NormalizeKeysResult } from './keys.js';
export {
  cacheLogProbabilities,
  createEmptyPartials,
  logAddExp,
  logSumExpRow,
  mergePartialsInto,
  partialsLength,
  referencePartials,
} from './partials.js';
export { buildScoringModel, buildSimilarityModel, SCORING_GRAPH_NAMES, SIMILARITY_GRAPH_NAMES } from './onnx-graph.js';
export { createScoringEngine, MAX_BLOCK_PAIRS, type ScoringEngine, type ScoringEngineOptions } from './scoring-engine.js';
export {
  DEFAULT_KEY_BLOCK_SIZE,
  DEFAULT_QUERY_BLOCK_SIZE,
  scoreAgainstCache,
  type KeyBlock,
  type ScoreAgainstCacheOptions,
  type ScoreProgress,
} from './score-cache.js';
export {
  DEFAULT_LAMBDAS,
  DEFAULT_THETAS,
  evaluateGrid,
  linspace,
  pickBest,
  predictClasses,
  type EvaluateGridOptions,
  type GridChoice,
  type GridEvaluation,
} from './tuning.js';
export { foldPartials, scoreShardPartials, type ScoreShardsOptions, type ShardKeys } from './shard-partials.js';
