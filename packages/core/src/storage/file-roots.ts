import { realpath } from 'node:fs/promises';
import path from 'node:path';

import { CachefleetError } from '../errors.js';

/**
 * Parses a comma-separated list of folders that requests may read files from, such as the
 * value of CACHEFLEET_FILE_ROOTS. Every entry must be an absolute path. Returns undefined for an
 * unset or empty value, which means that every path is allowed.
 */
export function parseFileRoots(value: string | undefined, settingName: string): string[] | undefined {
  if (value === undefined || value.trim() === '') return undefined;

  const roots = value.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  for (const root of roots) {
    if (!path.isAbsolute(root)) {
      throw new CachefleetError('INVALID_ARGUMENT', `${settingName} lists ${JSON.stringify(root)}, which is not an absolute path. List absolute folders separated by commas, such as /data,/models.`, { root });
    }
  }
  return roots.map((root) => path.resolve(root));
}

/**
 * Raises INVALID_ARGUMENT unless `filePath` lies inside one of `roots`. Both sides are compared
 * after resolving symbolic links, so neither `..` segments nor a link can lead out of a root.
 * A path that does not exist is compared through its nearest existing folder; opening it then
 * fails with its own not-found error. Does nothing when `roots` is undefined.
 */
export async function assertInsideFileRoots(filePath: string, roots: readonly string[] | undefined, what: string, settingName: string): Promise<void> {
  if (roots === undefined) return;

  const resolved = await realpathOrResolved(filePath);
  for (const root of roots) {
    const realRoot = await realpathOrResolved(root);
    const relative = path.relative(realRoot, resolved);
    const leavesRoot = relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative);
    if (!leavesRoot) return;
  }
  throw new CachefleetError(
    'INVALID_ARGUMENT',
    `${what} ${filePath} is outside the folders this process may read (${settingName}=${roots.join(',')}). Move the file under one of them, or add its folder to ${settingName}.`,
    { path: filePath, resolved, roots },
  );
}

/**
 * Resolves symbolic links in `filePath`. For a path that does not exist yet, the links of its
 * nearest existing ancestor are resolved and the missing part is appended, so a missing file
 * under a linked root still counts as inside that root.
 */
async function realpathOrResolved(filePath: string): Promise<string> {
  const absolute = path.resolve(filePath);
  const missing: string[] = [];
  let existing = absolute;

  for (;;) {
    try {
      return path.join(await realpath(existing), ...missing);
    } catch {
      const parent = path.dirname(existing);
      if (parent === existing) return absolute;
      missing.unshift(path.basename(existing));
      existing = parent;
    }
  }
}
