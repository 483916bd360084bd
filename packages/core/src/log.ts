import { pino, type Logger } from 'pino';

/**
 * Creates the pino logger every package of cachefleet uses. The level comes from
 * CACHEFLEET_LOG_LEVEL (default `info`); logs go to stderr so that `--json` output on stdout
 * stays machine-readable.
 */
export function createLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      name,
      level: process.env.CACHEFLEET_LOG_LEVEL ?? 'info',
      base: { pid: process.pid, ...bindings },
      redact: { paths: ['*.token', '*.secretAccessKey', '*.password', 'token', 'secretAccessKey', 'password'], censor: '[redacted]' },
    },
    pino.destination(2),
  );
}

export type { Logger };

/**
 * Limits an error log that can repeat many times a second, such as one line per reconnection
 * attempt while Redis is down. `log` runs for the first error of a key, then at most once per
 * `intervalMs` while the errors keep coming. An error that follows `quietMs` without one is a new
 * incident and is logged at once. `log` receives the number of repeats not logged since its last call.
 */
export function limitRepeatedErrors(intervalMs = 10_000, quietMs = 3_000): (key: string, log: (suppressedRepeats: number) => void) => void {
  const seen = new Map<string, { loggedAt: number; lastAt: number; suppressed: number }>();
  return (key, log) => {
    const now = Date.now();
    const entry = seen.get(key);
    if (entry !== undefined && now - entry.loggedAt < intervalMs && now - entry.lastAt < quietMs) {
      entry.lastAt = now;
      entry.suppressed += 1;
      return;
    }

    // Keys can carry job ids, so old entries are dropped to keep the map small.
    if (seen.size >= 1_000) {
      for (const [oldKey, oldEntry] of seen) {
        if (now - oldEntry.lastAt >= intervalMs) seen.delete(oldKey);
      }
    }
    seen.set(key, { loggedAt: now, lastAt: now, suppressed: 0 });
    log(entry?.suppressed ?? 0);
  };
}
