import * as tf from '@tensorflow/tfjs-core';
// Importing these packages registers the `cpu` and `wasm` backends with tfjs-core. The wasm
// backend registers with the higher priority, so no op may run before `initBackend` has
// awaited `tf.setBackend`: tfjs-core would try to start wasm synchronously and throw.
import { version_cpu } from '@tensorflow/tfjs-backend-cpu';
import { version_wasm } from '@tensorflow/tfjs-backend-wasm';

import { CachefleetError } from '../errors.js';
import { createLogger } from '../log.js';

export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

export const BACKEND_PREFERENCES: readonly BackendPreference[] = ['auto', 'tensorflow', 'wasm', 'cpu'];

/** The TensorFlow.js backend that runs every model of this thread. */
export interface BackendInfo {
  /** tfjs backend name: `tensorflow` (libtensorflow through tfjs-node), `wasm` or `cpu`. */
  name: 'tensorflow' | 'wasm' | 'cpu';
  /** npm package that provides the backend. */
  packageName: string;
  version: string;
  /** Whether the wasm backend runs its SIMD build, set for `wasm` only. */
  simd?: boolean;
}

/** Native packages in the order they are tried. Both register the backend `tensorflow`. */
const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

const log = createLogger('cachefleet.models.backend');

let activeBackend: BackendInfo | undefined;
// Serialises calls so that two concurrent callers never race on `tf.setBackend`.
let initQueue: Promise<unknown> = Promise.resolve();

/**
 * Selects and starts the TensorFlow.js backend for this thread, then logs it.
 *
 * `auto` tries `@tensorflow/tfjs-node-gpu`, then `@tensorflow/tfjs-node` (both optional
 * dependencies that are absent where libtensorflow cannot be downloaded), then wasm, then cpu.
 * An explicit preference does not fall back: it rejects with BACKEND_UNAVAILABLE instead.
 * The wasm backend is single-threaded under Node, so callers that want more cores run one
 * model per worker thread.
 *
 * Idempotent: once a backend runs, `auto` and the name of the running backend return it
 * without restarting anything. Asking for another backend by name switches to it.
 */
export function initBackend(preferred: BackendPreference = 'auto'): Promise<BackendInfo> {
  if (!BACKEND_PREFERENCES.includes(preferred)) {
    return Promise.reject(
      new CachefleetError(
        'INVALID_ARGUMENT',
        `Unknown TensorFlow.js backend "${String(preferred)}". Use one of: ${BACKEND_PREFERENCES.join(', ')}.`,
        { preferred },
      ),
    );
  }

  const result = initQueue.then(() => selectBackend(preferred));
  initQueue = result.catch(() => undefined);
  return result;
}

async function selectBackend(preferred: BackendPreference): Promise<BackendInfo> {
  if (activeBackend !== undefined && (preferred === 'auto' || preferred === activeBackend.name)) {
    return activeBackend;
  }

  const startedAt = performance.now();
  const info = await startPreferredBackend(preferred);
  activeBackend = info;

  const { name: backend, ...details } = info;
  log.info({ backend, ...details, preferred, durationMs: Math.round(performance.now() - startedAt) }, 'TensorFlow.js backend ready');
  return info;
}

async function startPreferredBackend(preferred: BackendPreference): Promise<BackendInfo> {
  if (preferred === 'tensorflow') return requireBackend(preferred, await startNativeBackend());
  if (preferred === 'wasm') return requireBackend(preferred, await startWasmBackend());
  if (preferred === 'cpu') return requireBackend(preferred, await startCpuBackend());

  const info = (await startNativeBackend()) ?? (await startWasmBackend()) ?? (await startCpuBackend());
  return requireBackend(preferred, info);
}

function requireBackend(preferred: BackendPreference, info: BackendInfo | undefined): BackendInfo {
  if (info !== undefined) return info;

  const fix =
    preferred === 'tensorflow'
      ? `Install ${NATIVE_PACKAGES.join(' or ')} (its install script downloads libtensorflow), or choose --backend wasm.`
      : 'Choose another backend with --backend, or check the warnings TensorFlow.js printed above.';
  throw new CachefleetError('BACKEND_UNAVAILABLE', `The TensorFlow.js backend "${preferred}" could not start. ${fix}`, { preferred });
}

/** Starts `tensorflow` from the first native package that imports. Returns undefined when none does. */
async function startNativeBackend(): Promise<BackendInfo | undefined> {
  for (const packageName of NATIVE_PACKAGES) {
    let nativeModule: { version?: Record<string, string> };
    try {
      nativeModule = (await import(packageName)) as { version?: Record<string, string> };
    } catch (error) {
      log.debug({ packageName, err: error }, 'native TensorFlow.js package not available');
      continue;
    }

    // NOTE: tfjs-node registers `tensorflow` with the tfjs-core copy it imports itself. If npm
    // installed a second copy of tfjs-core for it, the name is missing from ours and this fails.
    if (await trySetBackend('tensorflow')) {
      const version = nativeModule.version?.['tfjs-node'] ?? tf.version_core;
      return { name: 'tensorflow', packageName, version };
    }
  }
  return undefined;
}

async function startWasmBackend(): Promise<BackendInfo | undefined> {
  if (!(await trySetBackend('wasm'))) return undefined;

  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  return { name: 'wasm', packageName: '@tensorflow/tfjs-backend-wasm', version: version_wasm, simd };
}

async function startCpuBackend(): Promise<BackendInfo | undefined> {
  if (!(await trySetBackend('cpu'))) return undefined;

  return { name: 'cpu', packageName: '@tensorflow/tfjs-backend-cpu', version: version_cpu };
}

/** Returns whether the backend started, catching the error `tf.setBackend` throws for an unknown name. */
async function trySetBackend(name: string): Promise<boolean> {
  try {
    const started = await tf.setBackend(name);
    if (started) await tf.ready();
    return started;
  } catch (error) {
    log.debug({ backend: name, err: error }, 'TensorFlow.js backend failed to start');
    return false;
  }
}

/** Returns the running backend, or undefined before `initBackend` has resolved. */
export function getActiveBackend(): BackendInfo | undefined {
  return activeBackend;
}

/** Returns the number of live TensorFlow.js tensors in this thread; 0 before any backend runs, because asking then would start one. */
export function countTensors(): number {
  return tf.engine().backendName == null ? 0 : tf.memory().numTensors;
}
