import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { CachefleetError } from '@cachefleet/core';

/** Worker processes started by the coordinator on this machine. */
export interface LocalWorkers {
  readonly processes: ChildProcess[];
  /** Sends SIGTERM to every worker and waits for them to exit; SIGKILL after `killAfterMs`. */
  stop(killAfterMs?: number): Promise<void>;
}

export interface StartLocalWorkersOptions {
  count: number;
  /** Environment of the workers (Redis URL, queue prefix, S3 settings, threads). */
  env: NodeJS.ProcessEnv;
  /** `inherit` shows the workers' logs on this process's stderr. Default `inherit`. */
  stderr?: 'inherit' | 'ignore' | 'pipe';
}

/**
 * Finds the built worker entry point. The coordinator and the worker are packages of one
 * workspace, so the worker resolves through the workspace's node_modules.
 */
export function workerEntryPoint(): string {
  const require = createRequire(import.meta.url);
  let packageJson: string;
  try {
    packageJson = require.resolve('@cachefleet/worker/package.json');
  } catch (error) {
    throw new CachefleetError('INVALID_ARGUMENT', 'The @cachefleet/worker package is not installed beside the coordinator, so no local workers can start. Run npm install at the repository root, or start workers yourself.', {}, { cause: error });
  }
  const entry = path.join(path.dirname(packageJson), 'dist', 'main.js');
  if (!existsSync(entry)) {
    throw new CachefleetError('INVALID_ARGUMENT', `The worker is not built (${entry} is missing). Run \`npx turbo run build\` first.`, { entry });
  }
  return entry;
}

/** Starts `count` worker processes from the built worker. */
export function startLocalWorkers(options: StartLocalWorkersOptions): LocalWorkers {
  const entry = workerEntryPoint();
  const processes = Array.from({ length: options.count }, () =>
    spawn(process.execPath, [entry], { env: options.env, stdio: ['ignore', 'ignore', options.stderr ?? 'inherit'] }),
  );

  return {
    processes,
    async stop(killAfterMs = 60_000) {
      await Promise.all(
        processes.map(async (child) => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const exited = once(child, 'exit');
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
          await exited;
          clearTimeout(timer);
        }),
      );
    },
  };
}
