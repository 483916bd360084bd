import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

import { requireSharedData, sharedDir } from '../support/shared.js';
import { runNode, SHARED_REDIS_URL } from './coordinator-harness.js';

const benchPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../apps/coordinator/dist/bench/api-load.js');

interface BenchSummary {
  prefix: string;
  settings: { runs: number };
  runStatesAfter: Record<string, number>;
  requests: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  latencyMs: { p99: number };
}

// Checks that the load benchmark runs and cleans up after itself. Its latency figures belong in
// docs/benchmarks.md, so this test does not judge them.
describe('API load benchmark', () => {
  it('reads live runs and removes its prefix', async () => {
    requireSharedData();
    const { code, stdout, stderr } = await runNode(benchPath, ['--rate', '20', '--duration', '3', '--builds', '1', '--json', '--redis', SHARED_REDIS_URL, '--shared', sharedDir]);

    expect(stderr).toBe('');
    expect(code).toBe(0);
    const summary = JSON.parse(stdout) as BenchSummary;
    expect(summary.settings.runs).toBe(2);
    expect(summary.runStatesAfter).toEqual({ queued: 2 });
    // 20 requests/s for 3 s, with a margin for the first and last second.
    expect(summary.requests).toBeGreaterThanOrEqual(40);
    expect(summary.errors).toBe(0);
    expect(summary.timeouts).toBe(0);
    expect(summary.non2xx).toBe(0);
    expect(summary.latencyMs.p99).toBeGreaterThan(0);

    const redis = new Redis(SHARED_REDIS_URL);
    try {
      expect(await redis.keys(`${summary.prefix}:*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
  }, 120_000);
});
