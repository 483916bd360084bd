import { createRequire } from 'node:module';

import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it, vi } from 'vitest';

import { getActiveBackend, initBackend, type BackendPreference } from './backend.js';

/** Returns whether an optional native package is installed. Machines without libtensorflow lack it. */
function isInstalled(packageName: string): boolean {
  try {
    createRequire(import.meta.url).resolve(packageName);
    return true;
  } catch {
    return false;
  }
}

const nativeInstalled = isInstalled('@tensorflow/tfjs-node') || isInstalled('@tensorflow/tfjs-node-gpu');

describe('initBackend', () => {
  it('starts wasm with SIMD', async () => {
    const info = await initBackend('wasm');

    expect(info.name).toBe('wasm');
    expect(info.packageName).toBe('@tensorflow/tfjs-backend-wasm');
    expect(info.version).toBe('4.22.0');
    expect(info.simd).toBe(true);
    expect(tf.getBackend()).toBe('wasm');
  });

  it('returns the running backend again', async () => {
    const first = await initBackend('wasm');
    const [second, third] = await Promise.all([initBackend('auto'), initBackend('wasm')]);

    expect(second).toBe(first);
    expect(third).toBe(first);
    expect(getActiveBackend()).toBe(first);
  });

  it('switches to cpu and back', async () => {
    const cpu = await initBackend('cpu');
    expect(cpu.name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');

    const wasm = await initBackend('wasm');
    expect(wasm.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
  });

  it('auto falls back without native packages', async () => {
    // A fresh copy of the module has no running backend yet, so `auto` walks the whole chain.
    vi.resetModules();
    const fresh = await import('./backend.js');

    const info = await fresh.initBackend('auto');

    expect(info.name).toBe(nativeInstalled ? 'tensorflow' : 'wasm');
  });

  it.skipIf(nativeInstalled)('rejects tensorflow when not installed', async () => {
    const start = initBackend('tensorflow');

    await expect(start).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    await expect(start).rejects.toThrow(/Install @tensorflow\/tfjs-node-gpu or @tensorflow\/tfjs-node/);
    expect(tf.getBackend()).toBe('wasm');
  });

  it('rejects an unknown backend name', async () => {
    const start = initBackend('webgl' as BackendPreference);

    await expect(start).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(start).rejects.toThrow(/Unknown TensorFlow.js backend "webgl"/);
  });
});
