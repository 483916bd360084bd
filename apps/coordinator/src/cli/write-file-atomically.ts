import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes a file through a temporary name in the same folder and renames it into place, so a
 * reader never sees half a report. Creates the folder when it is missing.
 */
export async function writeFileAtomically(filePath: string, text: string): Promise<void> {
  await mkdir(path.dirname(path.resolve(filePath)), { recursive: true });
  const temporaryPath = `${filePath}.partial-${process.pid}`;
  await writeFile(temporaryPath, text);
  await rename(temporaryPath, filePath);
}
