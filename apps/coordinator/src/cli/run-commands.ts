import { Command, Option } from 'commander';
import Table from 'cli-table3';
import { z } from 'zod';

import { CachefleetError, reportSchema, type EvaluationReport } from '@cachefleet/core';

import type { RunResponse } from '../http/runs/api-schemas.js';
import { RUN_KINDS, RUN_STATES, type RunKind, type RunState } from '../http/runs/run-record.js';
import { addApiOptions, apiClientOf, type ApiFlags } from './api-options.js';
import { writeFileAtomically } from './write-file-atomically.js';
import { parsePositiveInteger } from './parse-options.js';
import { formatResultTable } from './result-table.js';
import { formatRun, watchRun } from './run-progress.js';

/** Sets exit code 1 for a run that did not complete, so scripts can test `cachefleet status RUN --watch`. */
function setExitCodeOf(run: RunResponse): void {
  if (run.state === 'failed' || run.state === 'cancelled' || run.state === 'lost') process.exitCode = 1;
}

function printRun(run: RunResponse, json: boolean): void {
  process.stdout.write(json ? `${JSON.stringify(run, null, 2)}\n` : `${formatRun(run)}\n`);
}

interface StatusFlags extends ApiFlags {
  watch: boolean;
  interval: number;
}

function statusCommand(): Command {
  const command = new Command('status')
    .description('Show a run: state, jobs and progress per stage, errors, and where its results are. With --watch, follow it with a progress bar per stage until it finishes; the exit code is 1 unless it completed.')
    .argument('<run>', 'run id, as printed by `cachefleet submit` or `cachefleet runs`')
    .option('--watch', 'poll until the run has completed, failed or been cancelled', false)
    .option('--interval <ms>', 'milliseconds between two polls with --watch', parsePositiveInteger, 2000);

  return addApiOptions(command).action(async (runId: string, flags: StatusFlags) => {
    const client = apiClientOf(flags);
    const run = flags.watch ? await watchRun(client, runId, flags.interval) : await client.getRun(runId);
    printRun(run, flags.json);
    if (flags.watch) setExitCodeOf(run);
  });
}

interface ReportFlags extends ApiFlags {
  output?: string;
}

function reportCommand(): Command {
  const command = new Command('report')
    .description("Fetch the report of a completed evaluation: the table of test errors, or the whole JSON report (the local run's schema plus `fleet`).")
    .argument('<run>', 'run id of an evaluation')
    .option('--output <file>', 'write the JSON report to this file');

  return addApiOptions(command).action(async (runId: string, flags: ReportFlags) => {
    const report = await apiClientOf(flags).getReport(runId);
    const text = JSON.stringify(report, null, 2);
    if (flags.output !== undefined) await writeFileAtomically(flags.output, text);
    if (flags.json) {
      process.stdout.write(`${text}\n`);
      return;
    }

    // Only the fields of the table are checked: per-class accuracy may be null (NaN in JSON) for a class absent from a small test slice.
    const tableFields = reportSchema.pick({ baseline: true, cache: true, cacheOnly: true }).safeParse(report);
    if (!tableFields.success) {
      throw new CachefleetError('KEY_STORE_CORRUPT', `The report of run ${runId} lacks the fields of the result table: ${z.prettifyError(tableFields.error)}. Fetch it with --json to inspect it.`, { runId });
    }
    process.stdout.write(`${formatResultTable(report as unknown as EvaluationReport)}\n`);
  });
}

interface RunsFlags extends ApiFlags {
  state?: RunState;
  kind?: RunKind;
  limit: number;
}

function runsCommand(): Command {
  const command = new Command('runs')
    .description('List runs, newest first.')
    .addOption(new Option('--state <state>', 'only runs in this state').choices(RUN_STATES))
    .addOption(new Option('--kind <kind>', 'only runs of this kind').choices(RUN_KINDS))
    .option('--limit <n>', 'most runs to list', parsePositiveInteger, 50);

  return addApiOptions(command).action(async (flags: RunsFlags) => {
    const runs = await apiClientOf(flags).listRuns({ state: flags.state, kind: flags.kind, limit: flags.limit });
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(runs, null, 2)}\n`);
      return;
    }
    if (runs.length === 0) {
      process.stdout.write('No runs.\n');
      return;
    }
    const table = new Table({ head: ['run', 'kind', 'state', 'completed jobs per stage', 'submitted'] });
    for (const run of runs) {
      table.push([run.runId, run.kind, run.state, run.stages.map((stage) => `${stage.name} ${stage.jobs.completed}/${stage.jobs.total}`).join(', '), run.createdAt]);
    }
    process.stdout.write(`${table.toString()}\n`);
  });
}

function cancelCommand(): Command {
  const command = new Command('cancel')
    .description('Cancel a run: waiting jobs are removed and active jobs stop at their next batch, so no manifest or report is written. The run is `cancelling` until its last active job has stopped.')
    .argument('<run>', 'run id');

  return addApiOptions(command).action(async (runId: string, flags: ApiFlags) => {
    printRun(await apiClientOf(flags).cancelRun(runId), flags.json);
  });
}

/** `cachefleet status|report|runs|cancel`, the commands that follow runs through the coordinator API. */
export function runCommands(): Command[] {
  return [statusCommand(), reportCommand(), runsCommand(), cancelCommand()];
}
