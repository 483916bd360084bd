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
