#!/usr/bin/env node
import { Command } from 'commander';

import { isCachefleetError } from '@cachefleet/core';

import { datasetsCommand } from './cli/datasets-command.js';
import { evaluateCommand } from './cli/evaluate-command.js';
import { fleetCommand } from './cli/fleet-command.js';
import { runCommands } from './cli/run-commands.js';
import { serveCommand } from './cli/serve-command.js';
import { submitCommand } from './cli/submit-command.js';
import { robustnessCommand } from './cli/robustness-command.js';

const program = new Command('cachefleet')
  .description('Test-time key-value cache memory for trained image classifiers (Orhan 2018), run locally or as a fleet.')
  .showHelpAfterError();

program.addCommand(evaluateCommand());
program.addCommand(datasetsCommand());
program.addCommand(submitCommand());
program.addCommand(fleetCommand());
program.addCommand(serveCommand());
for (const command of runCommands()) program.addCommand(command);
program.addCommand(robustnessCommand());

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Expected failures print their message and code only; anything else also prints its stack.
  if (isCachefleetError(error)) {
    process.stderr.write(`cachefleet: error ${error.code}: ${error.message}\n`);
  } else {
    process.stderr.write(`cachefleet: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
  process.exitCode = 1;
}
