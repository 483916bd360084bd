import type { Command } from 'commander';

import { createLogger } from '@cachefleet/core';

import { ApiClient } from '../http/client/api-client.js';
import { DEFAULT_API_URL } from '../http/server-config.js';

export interface ApiFlags {
  api: string;
  json: boolean;
}

/** Adds --api and --json, the options every command that talks to the coordinator API shares. */
export function addApiOptions(command: Command): Command {
  return command
    .option('--api <url>', 'base URL of the coordinator API (env CACHEFLEET_API_URL); the token comes from CACHEFLEET_API_TOKEN', process.env.CACHEFLEET_API_URL ?? DEFAULT_API_URL)
    .option('--json', 'print JSON on stdout, for scripts', false);
}

/**
 * Creates the API client from --api and CACHEFLEET_API_TOKEN. The token is read from the
 * environment only, so it is not part of the command line, which other users can see in the
 * process list.
 */
export function apiClientOf(flags: ApiFlags): ApiClient {
  const token = process.env.CACHEFLEET_API_TOKEN;
  const client = new ApiClient({ baseUrl: flags.api, token: token === '' ? undefined : token });
  if (client.sendsTokenInClear) {
    createLogger('cachefleet').warn({ api: client.baseUrl.origin }, 'the API token is sent unencrypted over http:// to another machine; use https:// through a TLS proxy');
  }
  return client;
}
