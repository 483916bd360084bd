import type { ExtractJobData, MergeJobData } from './build-schemas.js';
import type { PlanEvaluationJobData } from './evaluation-schemas.js';
import type { EvaluationPlan } from './evaluation-plan.js';
import { fleetChildJobOptions, fleetJobOptions, type FleetJobOptions, type FleetSettings } from './fleet-config.js';
import { QUEUE_NAMES, jobIds } from './names.js';

/**
 * One node of a job flow as plain data, in the shape of BullMQ's FlowJob, so that the flow's
 * shape is decided (and tested) here and the apps only hand it to a FlowProducer.
 */
export interface FlowNodeSpec {
  name: string;
  queueName: string;
  data: unknown;
  opts: FleetJobOptions;
  children?: FlowNodeSpec[];
}

/** The jobs of one cache build: an extract job per shard and their merge parent. */
export interface BuildJobs {
  buildId: string;
  merge: MergeJobData;
  extracts: Array<{ jobId: string; data: ExtractJobData }>;
}

/**
 * Flow of a cache build: `merge` with one `extract` child per shard. Every child fails its
 * parent when it fails for good. `asChild` gives the merge itself that option, for a build
 * that is part of an evaluation's plan.
 */
export function buildFlowSpec(build: BuildJobs, settings: FleetSettings, asChild = false): FlowNodeSpec {
  const mergeId = jobIds.merge(build.buildId);
  return {
    name: QUEUE_NAMES.merge,
    queueName: QUEUE_NAMES.merge,
    data: build.merge,
    opts: asChild ? fleetChildJobOptions(settings, mergeId) : fleetJobOptions(settings, mergeId),
    children: build.extracts.map((extract) => ({
      name: QUEUE_NAMES.extract,
      queueName: QUEUE_NAMES.extract,
      data: extract.data,
      opts: fleetChildJobOptions(settings, extract.jobId),
    })),
  };
}

/**
 * Flow of an evaluation: `aggregate` with, when θ is tuned, one `tune` child whose children are
 * the validation `evaluate` jobs (the tune job adds the test `evaluate` jobs to the aggregate
 * job itself), or otherwise one test `evaluate` child per (query slice, shard group).
 */
export function evaluationFlowSpec(plan: EvaluationPlan, settings: FleetSettings): FlowNodeSpec {
  const evaluates: FlowNodeSpec[] = plan.evaluates.map((evaluate) => ({
    name: QUEUE_NAMES.evaluate,
    queueName: QUEUE_NAMES.evaluate,
    data: evaluate.data,
    opts: fleetChildJobOptions(settings, evaluate.jobId),
  }));
  const children: FlowNodeSpec[] =
    plan.tune === undefined
      ? evaluates
      : [{ name: QUEUE_NAMES.tune, queueName: QUEUE_NAMES.tune, data: plan.tune.data, opts: fleetChildJobOptions(settings, plan.tune.jobId), children: evaluates }];

  return {
    name: QUEUE_NAMES.aggregate,
    queueName: QUEUE_NAMES.aggregate,
    data: plan.aggregate.data,
    opts: fleetJobOptions(settings, plan.aggregate.jobId),
    children,
  };
}

/**
 * Flow that builds the key stores an evaluation still lacks and then plans it: a
 * `plan-evaluation` parent whose children are the builds' merge jobs. When every build is
 * complete, the plan-evaluation job reads the manifests and adds the evaluation's flow.
 */
export function planEvaluationFlowSpec(data: PlanEvaluationJobData, builds: readonly BuildJobs[], settings: FleetSettings): FlowNodeSpec {
  return {
    name: QUEUE_NAMES.planEvaluation,
    queueName: QUEUE_NAMES.planEvaluation,
    data,
    opts: fleetJobOptions(settings, jobIds.planEvaluation(data.evaluation.evaluationId)),
    children: builds.map((build) => buildFlowSpec(build, settings, true)),
  };
}
