import { Command } from 'commander';

import { createLogger, fetchDataset } from '@cachefleet/core';

export function datasetsCommand(): Command {
  const datasets = new Command('datasets').description('Download and check datasets.');

  datasets
    .command('fetch')
    .description('Download the official CIFAR archive, verify its SHA-256 and unpack it into DIR.')
    .argument('<name>', 'cifar10 or cifar100')
    .argument('<dir>', 'folder to unpack into (created if missing)')
    .option('--url <url>', 'download from this address instead of the official one (a mirror)')
    .option('--sha256 <digest>', 'expected SHA-256 of the archive, required with a mirror that serves another file')
    .action(async (name: string, dir: string, flags: { url?: string; sha256?: string }) => {
      if (name !== 'cifar10' && name !== 'cifar100') {
        throw new Error(`Unknown dataset "${name}": choose cifar10 or cifar100.`);
      }
      const logger = createLogger('cachefleet');
      const result = await fetchDataset(name, dir, { url: flags.url, sha256: flags.sha256, logger });
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });

  return datasets;
}
