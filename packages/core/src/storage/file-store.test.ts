import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { isCachefleetError } from '../errors.js';
import { FileObjectStore } from './file-store.js';
import { openObjectStore } from './open-object-store.js';
import { isObjectNotFound } from './storage-errors.js';

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function* chunksOf(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let start = 0; start < bytes.length; start += size) {
    yield bytes.subarray(start, start + size);
  }
}

async function readAll(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) {
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

/** Lists every file below `folder`, relative to it, temporary files included. */
async function filesBelow(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.relative(folder, path.join(entry.parentPath, entry.name)));
}

describe('FileObjectStore', () => {
  let base: string;
  let root: string;
  let store: FileObjectStore;

  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-file-store-'));
    root = path.join(base, 'root');
    store = await FileObjectStore.open(root);
  });

  afterEach(async () => {
    await store.close();
    await rm(base, { recursive: true, force: true });
  });

  it('round-trips put, get, head, list and delete', async () => {
    const body = Buffer.from('manifest v1');

    const written = await store.put('runs/r1/manifest.json', body);

    expect(written).toEqual({ sha256: sha256(body), bytes: body.byteLength });
    expect(Buffer.from(await store.getBytes('runs/r1/manifest.json')).equals(body)).toBe(true);
    expect((await readAll(store.get('runs/r1/manifest.json'))).equals(body)).toBe(true);
    expect(await store.head('runs/r1/manifest.json')).toEqual({ bytes: body.byteLength });
    expect(await store.list('runs/')).toEqual([{ key: 'runs/r1/manifest.json', bytes: body.byteLength }]);

    await store.delete('runs/r1/manifest.json');

    expect(await store.head('runs/r1/manifest.json')).toBeUndefined();
    expect(await store.list('')).toEqual([]);
  });

  it('streams a multi-chunk body', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < body.length; i += 1) {
      body[i] = (i * 31) & 0xff;
    }

    const written = await store.put('shards/0001.bin', chunksOf(body, 65_537), { contentLength: body.length });
    const chunks: Uint8Array[] = [];
    for await (const chunk of store.get('shards/0001.bin')) {
      chunks.push(chunk);
    }

    expect(written.sha256).toBe(sha256(body));
    expect(chunks.length).toBeGreaterThan(1);
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
  });

  it('replaces an existing object', async () => {
    await store.put('a', Buffer.from('old'));

    await store.put('a', Buffer.from('new'));

    expect(Buffer.from(await store.getBytes('a')).toString()).toBe('new');
  });

  it('lists by string prefix, sorted', async () => {
    for (const key of ['shards/part-2', 'shards/part-10', 'shards/partial/x', 'shards/other', 'results/r1']) {
      await store.put(key, Buffer.from(key));
    }

    const keys = (await store.list('shards/part')).map((entry) => entry.key);

    expect(keys).toEqual(['shards/part-10', 'shards/part-2', 'shards/partial/x']);
  });

  it('lists nothing under a missing folder', async () => {
    expect(await store.list('missing/')).toEqual([]);
  });

  it('leaves nothing after a failed stream', async () => {
    await store.put('shards/keep', Buffer.from('previous'));
    async function* failingBody(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(1024, 1);
      throw new Error('extractor crashed');
    }

    await expect(store.put('shards/keep', failingBody())).rejects.toThrow('extractor crashed');
    await expect(store.put('shards/new', failingBody())).rejects.toThrow('extractor crashed');

    expect(Buffer.from(await store.getBytes('shards/keep')).toString()).toBe('previous');
    expect(await store.head('shards/new')).toBeUndefined();
    expect(await filesBelow(root)).toEqual(['shards/keep']);
  });

  it('rejects a body of the wrong length', async () => {
    const tooShort = store.put('a', chunksOf(Buffer.alloc(100), 10), { contentLength: 200 });
    const tooLong = store.put('b', chunksOf(Buffer.alloc(300), 10), { contentLength: 200 });

    await expect(tooShort).rejects.toThrow('has only 100 bytes, but contentLength is 200');
    await expect(tooLong).rejects.toThrow('has at least 210 bytes, but contentLength is 200');
    expect(await filesBelow(root)).toEqual([]);
  });

  it('rejects string chunks', async () => {
    async function* textBody(): AsyncGenerator<Uint8Array> {
      yield 'text' as unknown as Uint8Array;
    }

    await expect(store.put('a', textBody())).rejects.toThrow('yielded a string chunk');
  });

  it('creates with putIfAbsent only once', async () => {
    const first = await store.putIfAbsent('locks/merge', Buffer.from('worker-1'));
    const second = await store.putIfAbsent('locks/merge', Buffer.from('worker-2'));

    expect(first).toBe(true);
    expect(second).toBe(false);
    expect(Buffer.from(await store.getBytes('locks/merge')).toString()).toBe('worker-1');
    expect(await filesBelow(root)).toEqual(['locks/merge']);
  });

  it('raises ObjectNotFoundError for missing keys', async () => {
    const fromGetBytes = await rejection(store.getBytes('missing'));
    const fromGet = await rejection(readAll(store.get('missing')));

    expect(isObjectNotFound(fromGetBytes)).toBe(true);
    expect(isObjectNotFound(fromGet)).toBe(true);
    expect((fromGetBytes as Error).message).toContain('"missing"');
  });

  it('treats folders as missing objects', async () => {
    await store.put('folder/object', Buffer.from('x'));

    expect(await store.head('folder')).toBeUndefined();
    expect(isObjectNotFound(await rejection(store.getBytes('folder')))).toBe(true);
  });

  it('deletes missing keys quietly', async () => {
    await expect(store.delete('never/written')).resolves.toBeUndefined();
  });

  it('limits getBytes to maxBytes', async () => {
    await store.put('big', Buffer.alloc(2048));

    await expect(store.getBytes('big', { maxBytes: 1024 })).rejects.toThrow('above the getBytes limit of 1024 bytes');
  });

  it.each([
    '../outside',
    'a/../../outside',
    '/etc/passwd',
    '..\\outside',
    'a\u0000b',
    '.cachefleet-tmp-0011',
  ])('rejects escaping key %j', async (key) => {
    const error = await rejection(store.put(key, Buffer.from('x')));

    expect(isCachefleetError(error, 'INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toContain(JSON.stringify(key));
    expect((error as Error).message).toContain(pathToFileURL(root).href);
    expect(await filesBelow(base)).toEqual([]);
  });

  it('rejects keys through outward symlinks', async () => {
    const outside = path.join(base, 'outside');
    await mkdir(outside);
    await writeFile(path.join(outside, 'secret'), 'do not read');
    await symlink(outside, path.join(root, 'link'));
    await symlink(path.join(outside, 'secret'), path.join(root, 'file-link'));

    await expect(store.put('link/new', Buffer.from('x'))).rejects.toThrow('outside the root');
    await expect(store.put('link/sub/new', Buffer.from('x'))).rejects.toThrow('outside the root');
    await expect(store.getBytes('link/secret')).rejects.toThrow('outside the root');
    await expect(store.getBytes('file-link')).rejects.toThrow('outside the root');
    await expect(store.head('file-link')).rejects.toThrow('outside the root');
    expect(await readdir(outside)).toEqual(['secret']);
  });

  it('reports a key that is also a folder', async () => {
    await store.put('a/b', Buffer.from('x'));

    await expect(store.put('a', Buffer.from('y'))).rejects.toThrow('conflicts with an existing object or folder');
  });

  it('describes itself as a file URL', () => {
    expect(store.describe()).toBe(pathToFileURL(root).href);
  });
});

describe('openObjectStore for files', () => {
  let base: string;

  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'cachefleet-open-store-'));
  });

  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('opens a relative folder', async () => {
    const store = await openObjectStore('stores/one', { cwd: base });

    await store.put('k', Buffer.from('v'));

    expect(store).toBeInstanceOf(FileObjectStore);
    expect(store.describe()).toBe(pathToFileURL(path.join(base, 'stores/one')).href);
    expect(await filesBelow(base)).toEqual(['stores/one/k']);
  });

  it('opens a file URL', async () => {
    const url = pathToFileURL(path.join(base, 'two')).href;

    const store = await openObjectStore(url);

    expect(store.describe()).toBe(url);
  });
});
