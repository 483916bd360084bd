import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts a sibling module as a worker thread. Built code runs the `.js` file directly. When the
 * sources run under a TypeScript loader (tests), the worker first registers tsx's ESM hooks and
 * then imports the `.ts` file, because loader flags given through `execArgv` do not reach worker
 * threads on Node 20.
 */
export function startWorker(fileStem: string, baseUrl: string, options: WorkerOptions): Worker {
  if (!baseUrl.endsWith('.ts')) {
    return new Worker(new URL(`./${fileStem}.js`, baseUrl), options);
  }

  const target = new URL(`./${fileStem}.ts`, baseUrl).href;
  const require = createRequire(baseUrl);
  // The ESM entry of tsx's API, named by path because require.resolve would pick the CommonJS one.
  const tsxApi = pathToFileURL(path.join(path.dirname(require.resolve('tsx/package.json')), 'dist/esm/api/index.mjs')).href;
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(target)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}
