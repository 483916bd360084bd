export * from './names.js';
export * from './fleet-config.js';
export * from './redis-policy.js';
export * from './build-schemas.js';
export * from './evaluation-schemas.js';
export { CANCELLATION_TTL_SECONDS, cancellationKey, runIdsOfFlow, throwIfCancelled, type CancellationCheck } from './cancellation.js';
export { getPreprocessingSpec, putPreprocessingSpec, describePreprocessing } from './preprocessing-object.js';
export { runExtractJob, type ExtractJobResources } from './extract-job.js';
export { runMergeJob, readManifest, readManifestIfPresent, type MergeJobResources, type NamedLock } from './merge-job.js';
export { loadShardObject, verifyShardObject, type ShardObjectRef } from './shard-objects.js';
export { ShardCache, type ShardLoader } from './shard-cache.js';
export { decodePartialResult, encodePartialResult, PARTIAL_FORMAT_VERSION, type PartialHeader, type PartialResult } from './partial-format.js';
export { runEvaluateJob, type EvaluateJobResources } from './evaluate-job.js';
export { deriveEvaluationId, groupShards, planEvaluation, sliceRows, sliceRowsInto, testThetasFor, withThetas, type EvaluationPlan, type PlannedEvaluateJob } from './evaluation-plan.js';
export { fleetReportSchema, runAggregateJob, type AggregateChildResults, type FleetEvaluationReport } from './aggregate-job.js';
export { foldRole, type FoldedRole, type RoleCoverage } from './fold-role.js';
export { runTuneJob, type TuneJobResources } from './tune-job.js';
export { buildFlowSpec, evaluationFlowSpec, planEvaluationFlowSpec, type BuildJobs, type FlowNodeSpec } from './flow-specs.js';
// Object storage is part of the jobs' interface; it is re-exported here because the package
// entry point does not export the storage module.
export { isObjectNotFound, openObjectStore, readS3ConnectionFromEnv, type ObjectStore, type OpenObjectStoreOptions, type S3ConnectionOptions } from '../storage/index.js';
export { invalidRequestError, listRequestIssues, type RequestIssue } from './request-issues.js';
export * from './robustness-schemas.js';
export { loadRobustnessModels, runRobustnessAggregateJob, runRobustnessJob, type RobustnessJobResources, type RobustnessModels } from './robustness-job.js';
