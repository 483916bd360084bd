import { z } from 'zod';

import { CachefleetError, isObjectNotFound, type ObjectStore } from '@cachefleet/core';

import { runRecordSchema, type RunRecord } from './run-record.js';

const RUNS_PREFIX = 'runs/';

/** Object key of a run record. Run ids are fleet ids (no `/`), so every record sits directly below `runs/`. */
export function runRecordKey(runId: string): string {
  return `${RUNS_PREFIX}${runId}.json`;
}

/** Run records in object storage, one JSON object per run at `runs/<runId>.json`. */
export class RunStore {
  constructor(private readonly store: ObjectStore) {}

  async get(runId: string): Promise<RunRecord | undefined> {
    let bytes: Uint8Array;
    try {
      bytes = await this.store.getBytes(runRecordKey(runId));
    } catch (error) {
      if (isObjectNotFound(error)) return undefined;
      throw error;
    }
    return parseRecord(bytes, `${this.store.describe()} ${runRecordKey(runId)}`);
  }

  async put(record: RunRecord): Promise<void> {
    const bytes = Buffer.from(JSON.stringify(record, null, 2), 'utf8');
    await this.store.put(runRecordKey(record.runId), bytes, { contentLength: bytes.length });
  }

  /**
   * Reads every record, newest first.
   *
   * NOTE: this reads one object per run; with many thousands of runs a listing gets slow, and
   * an index object would be needed.
   */
  async list(): Promise<RunRecord[]> {
    const entries = await this.store.list(RUNS_PREFIX);
    const records: RunRecord[] = [];
    for (const entry of entries) {
      if (!entry.key.endsWith('.json')) continue;
      try {
        records.push(parseRecord(await this.store.getBytes(entry.key), `${this.store.describe()} ${entry.key}`));
      } catch (error) {
        // A record deleted between list and read is skipped; any other error reaches the caller.
        if (!isObjectNotFound(error)) throw error;
      }
    }
    return records.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }
}

function parseRecord(bytes: Uint8Array, source: string): RunRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Run record ${source} is not valid JSON. Delete the object; the run's jobs and results are unaffected.`, { source }, { cause: error });
  }
  const parsed = runRecordSchema.safeParse(raw);
  if (!parsed.success) {
    throw new CachefleetError('KEY_STORE_CORRUPT', `Run record ${source} is invalid: ${z.prettifyError(parsed.error)}. Delete the object; the run's jobs and results are unaffected.`, { source });
  }
  return parsed.data;
}
