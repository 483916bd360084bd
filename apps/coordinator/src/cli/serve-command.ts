import { once } from 'node:events';

import { Command, InvalidArgumentError, Option } from 'commander';

import { createLogger, openObjectStore, parseFileRoots, redactRedisUrl } from '@cachefleet/core';

import { FleetClient } from '../fleet/fleet-client.js';
import { DEFAULT_API_HOST, DEFAULT_API_PORT } from '../http/server-config.js';
import { startCoordinatorServer } from '../http/server.js';
import { defaultStoreDir } from './evaluate-command.js';
import { defaultStorageUrl } from './fleet-command.js';
import { parsePositiveInteger } from './parse-options.js';

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new InvalidArgumentError(`"${value}" is not a port: give a whole number from 0 (any free port) to 65535.`);
  return port;
}

interface ServeFlags {
  host: string;
  port: number;
  redis: string;
  prefix: string;
  storage: string;
  store: string;
  bodyLimit: number;
  metricsAuth: 'token' | 'none';
  sessionTtl: number;
  trustProxy: boolean;
  dashboardActions: boolean;
  monitorInterval: number;
  fileRoots?: string;
}

/** `cachefleet serve`: the coordinator's HTTP API, run pages, queue dashboard and metrics. */
export function serveCommand(): Command {
  return new Command('serve')
    .description(
      'Run the coordinator HTTP server: the run API (/api/v1, described at /openapi.json and /docs), run pages, the queue dashboard (/queues) and Prometheus metrics (/metrics). Set CACHEFLEET_API_TOKEN; it is required unless the server listens on loopback only.',
    )
    .option('--host <address>', 'address to listen on; anything but loopback requires CACHEFLEET_API_TOKEN', DEFAULT_API_HOST)
    .option('--port <n>', 'TCP port (0: any free port, printed in the log)', parsePort, DEFAULT_API_PORT)
    .option('--redis <url>', 'Redis URL of the fleet (env REDIS_URL)', process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
    .option('--prefix <name>', 'BullMQ key prefix shared with the workers (env CACHEFLEET_QUEUE_PREFIX)', process.env.CACHEFLEET_QUEUE_PREFIX ?? 'cachefleet')
    .option('--storage <url>', 'object storage of runs, shards and reports: s3://bucket/prefix or a folder (env CACHEFLEET_STORAGE_URL); requests may not name another', defaultStorageUrl())
    .option('--store <dir>', 'folder of the local statistics cache, shared with `cachefleet evaluate` (env CACHEFLEET_STORE)', defaultStoreDir())
    .option('--file-roots <dirs>', 'comma-separated absolute folders that requests may name datasets and models in (env CACHEFLEET_FILE_ROOTS; default: any path)', process.env.CACHEFLEET_FILE_ROOTS)
    .option('--body-limit <bytes>', 'largest request body; larger ones get 413', parsePositiveInteger, 1024 * 1024)
    .addOption(new Option('--metrics-auth <mode>', 'whether GET /metrics needs the token').choices(['token', 'none']).default(process.env.CACHEFLEET_METRICS_AUTH ?? 'token', 'token (env CACHEFLEET_METRICS_AUTH)'))
    .option('--session-ttl <seconds>', 'lifetime of a browser session after login', parsePositiveInteger, 12 * 3600)
    .option('--trust-proxy', 'read the client protocol from X-Forwarded-Proto (behind a TLS proxy), so session cookies get the Secure flag', false)
    .option('--dashboard-actions', 'let the queue dashboard retry, promote, clean and remove jobs; without it the dashboard only shows them', false)
    .option('--monitor-interval <ms>', 'milliseconds between refreshes of live runs from Redis', parsePositiveInteger, 2000)
    .action(async (flags: ServeFlags) => {
      const logger = createLogger('cachefleet-coordinator');
      const fileRoots = parseFileRoots(flags.fileRoots, 'CACHEFLEET_FILE_ROOTS');
      const client = await FleetClient.connect({ redisUrl: flags.redis, prefix: flags.prefix, logger });
      const store = await openObjectStore(flags.storage, { logger }).catch(async (error: unknown) => {
        await client.close();
        throw error;
      });

      let server;
      try {
        server = await startCoordinatorServer({
          settings: {
            host: flags.host,
            port: flags.port,
            token: process.env.CACHEFLEET_API_TOKEN,
            metricsAuth: flags.metricsAuth,
            sessionTtlSeconds: flags.sessionTtl,
            bodyLimit: flags.bodyLimit,
            trustProxy: flags.trustProxy,
            dashboardActions: flags.dashboardActions,
          },
          client,
          store,
          storageUrl: flags.storage,
          statisticsDir: flags.store,
          fileRoots,
          logger,
          monitorIntervalMs: flags.monitorInterval,
        });
      } catch (error) {
        await store.close();
        await client.close();
        throw error;
      }

      const signal = await Promise.race([once(process, 'SIGTERM'), once(process, 'SIGINT')]);
      logger.info({ signal: signal[0] ?? 'signal', redis: redactRedisUrl(flags.redis) }, 'stopping the coordinator API');
      await server.close();
      await store.close();
      await client.close();
    });
}
