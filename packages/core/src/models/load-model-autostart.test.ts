import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { getActiveBackend } from './backend.js';
import { loadModel } from './load-model.js';
import { buildTinyKerasModel, writeKerasH5 } from './test-fixtures.js';

// This file never calls initBackend, so loadModel meets a process with no backend set.
let tempDir: string;

beforeAll(async () => {
  tempDir = await mkdtemp(path.join(tmpdir(), 'cachefleet-autostart-'));
});

afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true });
});

describe('loadModel without initBackend', () => {
  it('starts the auto backend', async () => {
    const tinyPath = path.join(tempDir, 'tiny.h5');
    await writeKerasH5(tinyPath, buildTinyKerasModel());
    expect(tf.engine().backendName ?? null).toBeNull();

    const loaded = await loadModel(tinyPath);

    expect(getActiveBackend()?.name).toBe(tf.getBackend());
    expect(loaded.numClasses).toBe(3);
    loaded.model.dispose();
  });
});
