#!/usr/bin/env node
import { Command } from 'commander';

import { isCachefleetError } from '@cachefleet/core';

import { datasetsCommand } from './cli/datasets-command.js';
import { evaluateCommand } from './cli/evaluate-command.js';
import { fleetCommand, submitCommand } from './cli/fleet-command.js';

const program = new Command('cachefleet')
  .description('Test-time key-value cache memory for trained image classifiers (Orhan 2018), run locally or as a fleet.')
  .showHelpAfterError();

program.addCommand(evaluateCommand());
program.addCommand(datasetsCommand());
program.addCommand(submitCommand());
program.addCommand(fleetCommand());

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
