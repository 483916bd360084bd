import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';

/** Returns the file's status, or undefined when the path or one of its parent folders does not exist. */
export async function statOrUndefined(file: string): Promise<Stats | undefined> {
  try {
    return await stat(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return undefined;
    }
    throw error;
  }
}
