import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

function readPackageVersion(packageJsonPath: string): string {
  return (JSON.parse(readFileSync(packageJsonPath, 'utf8')) as { version: string }).version;
}

/**
 * Finds an installed package's version by resolving its entry point and walking up to its
 * package.json, because some packages do not export `package.json`.
 */
function versionOf(packageName: string): string | undefined {
  let entry: string;
  try {
    entry = require.resolve(packageName);
  } catch {
    return undefined;
  }
  for (let dir = path.dirname(entry); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'package.json');
    if (!existsSync(candidate)) continue;
    const parsed = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
    if (parsed.name === packageName) return parsed.version;
  }
  return undefined;
}

/** Versions of cachefleet and of the engines it runs on, for reports. */
export function engineVersions(): Record<string, string> {
  // This file sits in src/local or dist/local of the core package.
  const corePackageJson = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../package.json');
  const versions: Record<string, string> = { cachefleet: readPackageVersion(corePackageJson), node: process.versions.node };

  const engines = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-layers', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'onnxruntime-node', 'h5wasm'];
  for (const name of engines) {
    const version = versionOf(name);
    if (version !== undefined) versions[name] = version;
  }
  return versions;
}
