import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { WorkerOptions } from 'node:worker_threads';

/**
 * Resolves a sibling worker module and the options to start it. Built code runs `.js` files
 * directly; when the sources run under a TypeScript loader (tests), the worker gets the same
 * loader (tsx) through `--import`.
 */
export function workerModule(fileStem: string, baseUrl: string): { url: URL; options: WorkerOptions } {
  const fromSources = baseUrl.endsWith('.ts');
  const url = new URL(`./${fileStem}${fromSources ? '.ts' : '.js'}`, baseUrl);
  if (!fromSources) return { url, options: {} };

  const require = createRequire(baseUrl);
  const loader = pathToFileURL(require.resolve('tsx/esm')).href;
  return { url, options: { execArgv: ['--import', loader] } };
}
