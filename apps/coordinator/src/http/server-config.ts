import { isIP } from 'node:net';

import { CachefleetError } from '@cachefleet/core';

import type { AuthSettings } from './auth/authentication.js';

/** Port of `cachefleet serve` and the default of the CLI's --api URL. */
export const DEFAULT_API_PORT = 8470;
export const DEFAULT_API_HOST = '127.0.0.1';
export const DEFAULT_API_URL = `http://${DEFAULT_API_HOST}:${DEFAULT_API_PORT}`;

// A token shorter than this is rejected at start: 16 random characters are beyond guessing over
// HTTP, and shorter values are usually placeholders.
const MIN_TOKEN_LENGTH = 16;

export interface ServerSettings extends AuthSettings {
  host: string;
  port: number;
  /** Largest request body in bytes; larger bodies get 413. */
  bodyLimit: number;
  /** Read the client protocol and address from X-Forwarded-* headers (behind a TLS proxy). */
  trustProxy: boolean;
  /** Let bull-board retry, promote, clean and remove jobs; otherwise it only shows them. */
  dashboardActions: boolean;
}

/** Returns whether a host name or address only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1';
  return false;
}

/**
 * Checks the server settings before anything listens. The token is required whenever the
 * server listens beyond loopback, because every request could then come from another machine.
 * Error messages never contain the token.
 */
export function validateServerSettings(settings: ServerSettings): ServerSettings {
  const token = settings.token === '' ? undefined : settings.token;
  if (token === undefined && !isLoopbackHost(settings.host)) {
    throw new CachefleetError(
      'INVALID_ARGUMENT',
      `The server would listen on ${settings.host}, beyond loopback, without an API token. Set CACHEFLEET_API_TOKEN to a random secret of at least ${MIN_TOKEN_LENGTH} characters (for example \`openssl rand -hex 32\`), or listen on 127.0.0.1.`,
      { host: settings.host },
    );
  }
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw new CachefleetError('INVALID_ARGUMENT', `CACHEFLEET_API_TOKEN has ${token.length} characters; it needs at least ${MIN_TOKEN_LENGTH}. Generate one with \`openssl rand -hex 32\`.`, { length: token.length });
  }
  if (token !== undefined && /\s/.test(token)) {
    throw new CachefleetError('INVALID_ARGUMENT', 'CACHEFLEET_API_TOKEN contains whitespace, which an Authorization header cannot carry. Use letters, digits and punctuation only.', {});
  }
  if (settings.metricsAuth !== 'token' && settings.metricsAuth !== 'none') {
    throw new CachefleetError('INVALID_ARGUMENT', `Metrics authentication ${JSON.stringify(settings.metricsAuth)} is invalid. Use token or none (--metrics-auth, env CACHEFLEET_METRICS_AUTH).`, { metricsAuth: settings.metricsAuth });
  }
  if (!Number.isInteger(settings.port) || settings.port < 0 || settings.port > 65_535) {
    throw new CachefleetError('INVALID_ARGUMENT', `Port ${settings.port} is invalid. Give a whole number from 0 (any free port) to 65535.`, { port: settings.port });
  }
  return { ...settings, token };
}
