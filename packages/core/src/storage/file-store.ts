import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, mkdir, open, readdir, realpath, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { CachefleetError } from '../errors.js';
import { compareEntryKeys, validateKeyPrefix, validateObjectKey } from './object-key.js';
import { DEFAULT_GET_BYTES_MAX, type GetBytesOptions, type ObjectBody, type ObjectEntry, type ObjectStore, type PutOptions, type PutResult } from './object-store.js';
import { assertChunkIsBytes, checkContentLength, ObjectNotFoundError, tooLargeForGetBytes, validateContentLength } from './storage-errors.js';

// Temporary files live beside their target so that rename() stays on one file system and is
// atomic. Keys may not use this prefix, and list() skips it.
const TEMP_PREFIX = '.cachefleet-tmp-';

// Read chunk size for get(), in bytes.
const READ_CHUNK_BYTES = 1024 * 1024;

// File system errors that may clear on their own; they become STORAGE_UNAVAILABLE (retryable).
const TRANSIENT_FS_CODES = new Set(['EIO', 'EAGAIN', 'EBUSY', 'EMFILE', 'ENFILE', 'ENOSPC', 'ETIMEDOUT', 'ESTALE']);

/**
 * Object store on a local or network file system. Every write goes to a temporary file in the
 * target folder, is flushed with fsync, then renamed over the key, so a reader never sees a
 * half-written object. Keys, including through symbolic links, stay inside the root folder.
 */
export class FileObjectStore implements ObjectStore {
  private constructor(
    /** Real path of the root folder (symbolic links resolved). */
    private readonly root: string,
    private readonly url: string,
  ) {}

  /** Creates the root folder when missing and opens a store on it. */
  static async open(root: string): Promise<FileObjectStore> {
    if (!path.isAbsolute(root)) {
      throw new CachefleetError('INVALID_ARGUMENT', `File store root ${JSON.stringify(root)} is not an absolute path. Resolve it against a base folder first.`, { root });
    }

    await mkdir(root, { recursive: true });
    const realRoot = await realpath(root);
    return new FileObjectStore(realRoot, pathToFileURL(realRoot).href);
  }

  describe(): string {
    return this.url;
  }

  async put(key: string, body: ObjectBody, options: PutOptions = {}): Promise<PutResult> {
    validateContentLength(key, options.contentLength);
    const target = await this.resolveForWrite(key);

    return this.writeAtomically(key, target, body, options.contentLength, (temp) => rename(temp, target));
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    const target = await this.resolveForWrite(key);
    let created = true;

    // link() fails with EEXIST instead of replacing, which makes create-if-absent atomic.
    await this.writeAtomically(key, target, body, undefined, async (temp) => {
      try {
        await link(temp, target);
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') {
          throw error;
        }
        created = false;
      }
    });

    return created;
  }

  get(key: string): AsyncIterable<Uint8Array> {
    return this.readChunks(key);
  }

  async getBytes(key: string, options: GetBytesOptions = {}): Promise<Uint8Array> {
    const maxBytes = options.maxBytes ?? DEFAULT_GET_BYTES_MAX;
    const file = await this.resolveForRead(key);
    const handle = await this.openForRead(key, file);

    try {
      const { size } = await handle.stat();
      if (size > maxBytes) {
        throw tooLargeForGetBytes(key, this.url, size, maxBytes);
      }
      return await handle.readFile();
    } catch (error) {
      throw this.translateError(error, key);
    } finally {
      await handle.close();
    }
  }

  async head(key: string): Promise<{ bytes: number } | undefined> {
    const file = await this.resolveForRead(key);

    try {
      const stats = await stat(file);
      return stats.isFile() ? { bytes: stats.size } : undefined;
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
        return undefined;
      }
      throw this.translateError(error, key);
    }
  }

  async list(prefix: string): Promise<ObjectEntry[]> {
    validateKeyPrefix(prefix, this.url);

    // Only the folder that contains the prefix's last segment needs walking.
    const slash = prefix.lastIndexOf('/');
    const folderKey = slash === -1 ? '' : prefix.slice(0, slash);
    const entries: ObjectEntry[] = [];
    await this.walk(folderKey, prefix, entries);

    return entries.sort(compareEntryKeys);
  }

  async delete(key: string): Promise<void> {
    const file = await this.resolveForRead(key);

    try {
      await unlink(file);
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
        return;
      }
      throw this.translateError(error, key);
    }
  }

  async close(): Promise<void> {
    // Every operation closes its own file handles, so nothing stays open between calls.
  }

  private async writeAtomically(
    key: string,
    target: string,
    body: ObjectBody,
    contentLength: number | undefined,
    publish: (temp: string) => Promise<void>,
  ): Promise<PutResult> {
    const temp = path.join(path.dirname(target), `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const hash = createHash('sha256');
    let bytes = 0;
    let handle: FileHandle | undefined;

    try {
      handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
      for await (const chunk of toChunks(body)) {
        assertChunkIsBytes(key, chunk);
        bytes += chunk.byteLength;
        checkContentLengthNotExceeded(key, this.url, bytes, contentLength);
        hash.update(chunk);
        await writeFully(handle, chunk);
      }
      checkContentLength(key, this.url, bytes, contentLength);

      await handle.sync();
      await handle.close();
      handle = undefined;

      await publish(temp);
      await syncFolder(path.dirname(target));
    } catch (error) {
      await handle?.close().catch(() => undefined);
      throw this.translateError(error, key);
    } finally {
      // After rename() the temporary name is gone (ENOENT); after link() it is a second name.
      await unlink(temp).catch(() => undefined);
    }

    return { sha256: hash.digest('hex'), bytes };
  }

  private async *readChunks(key: string): AsyncGenerator<Uint8Array> {
    const file = await this.resolveForRead(key);
    const handle = await this.openForRead(key, file);

    try {
      for await (const chunk of handle.createReadStream({ highWaterMark: READ_CHUNK_BYTES, autoClose: false })) {
        yield chunk as Buffer;
      }
    } catch (error) {
      throw this.translateError(error, key);
    } finally {
      await handle.close();
    }
  }

  private async openForRead(key: string, file: string): Promise<FileHandle> {
    try {
      const handle = await open(file, 'r');
      const stats = await handle.stat();
      if (!stats.isFile()) {
        await handle.close();
        throw new ObjectNotFoundError(key, this.url);
      }
      return handle;
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR' || errorCode(error) === 'EISDIR') {
        throw new ObjectNotFoundError(key, this.url);
      }
      throw this.translateError(error, key);
    }
  }

  private async walk(folderKey: string, prefix: string, entries: ObjectEntry[]): Promise<void> {
    const folder = folderKey === '' ? this.root : path.join(this.root, ...folderKey.split('/'));
    let children;
    try {
      children = await readdir(folder, { withFileTypes: true });
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
        return;
      }
      throw this.translateError(error, prefix);
    }

    for (const child of children) {
      if (child.name.startsWith(TEMP_PREFIX)) {
        continue;
      }

      // Symbolic links are neither files nor folders here, so listing never follows one out.
      const childKey = folderKey === '' ? child.name : `${folderKey}/${child.name}`;
      if (child.isDirectory() && childKey.startsWith(prefix)) {
        await this.walk(childKey, prefix, entries);
      } else if (child.isFile() && childKey.startsWith(prefix)) {
        const stats = await stat(path.join(folder, child.name)).catch(() => undefined);
        if (stats !== undefined) {
          entries.push({ key: childKey, bytes: stats.size });
        }
      }
    }
  }

  /** Maps a key to a path below the root, creating parent folders, and checks they stay inside. */
  private async resolveForWrite(key: string): Promise<string> {
    const segments = this.validateKey(key);
    const target = path.join(this.root, ...segments);
    const parent = path.dirname(target);

    // The deepest existing folder is checked before mkdir, which would follow a symbolic link
    // and create folders outside the root. The second check covers links made in between.
    this.assertInsideRoot(key, await this.realpathOfDeepestExisting(parent));
    try {
      await mkdir(parent, { recursive: true });
    } catch (error) {
      throw this.translateError(error, key);
    }
    this.assertInsideRoot(key, await realpath(parent));

    return target;
  }

  private async realpathOfDeepestExisting(folder: string): Promise<string> {
    for (let current = folder; ; current = path.dirname(current)) {
      const resolved = await realpathIfExists(current);
      if (resolved !== undefined || current === this.root) {
        return resolved ?? this.root;
      }
    }
  }

  /**
   * Maps a key to a path below the root and checks that the object, or else its folder, resolves
   * inside the root when it exists, so a symbolic link cannot expose a file elsewhere.
   */
  private async resolveForRead(key: string): Promise<string> {
    const segments = this.validateKey(key);
    const target = path.join(this.root, ...segments);

    const resolved = (await realpathIfExists(target)) ?? (await realpathIfExists(path.dirname(target)));
    if (resolved !== undefined) {
      this.assertInsideRoot(key, resolved);
    }
    return target;
  }

  private validateKey(key: string): string[] {
    const segments = validateObjectKey(key, this.url);
    if (segments.some((segment) => segment.startsWith(TEMP_PREFIX))) {
      throw new CachefleetError(
        'INVALID_ARGUMENT',
        `Object key ${JSON.stringify(key)} is invalid for store ${this.url}: names starting with "${TEMP_PREFIX}" are reserved for temporary files. Choose another name.`,
        { key, root: this.url },
      );
    }
    return segments;
  }

  /** Rejects a key whose real path (symbolic links resolved) lies outside the root. */
  private assertInsideRoot(key: string, realPath: string): void {
    const relative = path.relative(this.root, realPath);
    const outside = relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative);
    if (!outside) {
      return;
    }

    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `Object key ${JSON.stringify(key)} is invalid for store ${this.url}: it resolves to ${realPath}, outside the root. ` +
        'Remove the symbolic link that leads out of the store, or choose another key.',
      { key, root: this.url, resolvedPath: realPath },
    );
  }

  private translateError(error: unknown, key: string): unknown {
    if (error instanceof CachefleetError) {
      return error;
    }

    const code = errorCode(error);
    if (code !== undefined && TRANSIENT_FS_CODES.has(code)) {
      return new CachefleetError('STORAGE_UNAVAILABLE', `File store ${this.url} failed on object ${JSON.stringify(key)} with ${code}. Retry later, or free space or file handles.`, { key, store: this.url, fsCode: code }, { cause: error });
    }
    if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST') {
      return new CachefleetError(
        'INVALID_ARGUMENT',
        `Object key ${JSON.stringify(key)} conflicts with an existing object or folder in store ${this.url} (${code}). A key cannot be both an object and a folder of other keys.`,
        { key, store: this.url, fsCode: code },
        { cause: error },
      );
    }
    return error;
  }
}

function toChunks(body: ObjectBody): AsyncIterable<Uint8Array> | Iterable<Uint8Array> {
  return body instanceof Uint8Array ? [body] : body;
}

async function writeFully(handle: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset);
    offset += bytesWritten;
  }
}

/** Flushes a folder's entries, so that a rename survives a crash of the machine. */
async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function checkContentLengthNotExceeded(key: string, store: string, bytes: number, contentLength: number | undefined): void {
  if (contentLength !== undefined && bytes > contentLength) {
    checkContentLength(key, store, bytes, contentLength);
  }
}

async function realpathIfExists(file: string): Promise<string | undefined> {
  try {
    return await realpath(file);
  } catch (error) {
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
      return undefined;
    }
    throw error;
  }
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string' ? (error as { code: string }).code : undefined;
}
