import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { assertInsideFileRoots, parseFileRoots } from './file-roots.js';

describe('parseFileRoots', () => {
  it('returns undefined when unset', () => {
    expect(parseFileRoots(undefined, 'ROOTS')).toBeUndefined();
    expect(parseFileRoots(' ', 'ROOTS')).toBeUndefined();
  });

  it('splits absolute folders', () => {
    expect(parseFileRoots('/data, /models/', 'ROOTS')).toEqual(['/data', '/models']);
  });

  it('rejects relative folders', () => {
    expect(() => parseFileRoots('/data,models', 'ROOTS')).toThrow(/ROOTS lists "models", which is not an absolute path/);
  });
});

describe('assertInsideFileRoots', () => {
  let dir: string;
  let root: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-roots-'));
    root = path.join(dir, 'root');
    await mkdir(path.join(root, 'data'), { recursive: true });
    await mkdir(path.join(dir, 'elsewhere'));
    await symlink(path.join(dir, 'elsewhere'), path.join(root, 'link-out'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('allows paths inside a root', async () => {
    await expect(assertInsideFileRoots(path.join(root, 'data'), [root], 'Dataset folder', 'ROOTS')).resolves.toBeUndefined();
    await expect(assertInsideFileRoots(root, [root], 'Dataset folder', 'ROOTS')).resolves.toBeUndefined();
  });

  it('allows names starting with two dots', async () => {
    await expect(assertInsideFileRoots(path.join(root, '..data'), [root], 'Model file', 'ROOTS')).resolves.toBeUndefined();
  });

  it('rejects a .. escape', async () => {
    await expect(assertInsideFileRoots(path.join(root, 'data', '..', '..', 'elsewhere'), [root], 'Dataset folder', 'ROOTS')).rejects.toThrow(/is outside the folders this process may read \(ROOTS=/);
  });

  it('rejects a symbolic link out', async () => {
    await expect(assertInsideFileRoots(path.join(root, 'link-out'), [root], 'Model file', 'ROOTS')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('allows everything without roots', async () => {
    await expect(assertInsideFileRoots('/anywhere', undefined, 'Model file', 'ROOTS')).resolves.toBeUndefined();
  });
});
