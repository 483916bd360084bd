import { setTimeout as sleep } from 'node:timers/promises';

import fastifyCookie from '@fastify/cookie';
import fastifyFormbody from '@fastify/formbody';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';

import type { Logger, ObjectStore } from '@cachefleet/core';

import type { FleetClient } from '../fleet/fleet-client.js';
import { registerAuthentication } from './auth/authentication.js';
import { registerDashboard } from './dashboard/bull-board.js';
import { handleApiError, sendError } from './errors.js';
import { FleetMetrics } from './metrics/fleet-metrics.js';
import { registerPageRoutes } from './pages/page-routes.js';
import { registerRunRoutes } from './runs/run-routes.js';
import { RunService } from './runs/run-service.js';
import { validateServerSettings, type ServerSettings } from './server-config.js';

const API_VERSION = '1.0.0';
// Time /health waits for Redis to respond to PING, in milliseconds.
const HEALTH_TIMEOUT_MS = 2_000;

export interface CoordinatorServerOptions {
  settings: ServerSettings;
  /** Connected fleet client; the caller closes it after the server. */
  client: FleetClient;
  /** Store of `storageUrl`; the caller closes it after the server. */
  store: ObjectStore;
  storageUrl: string;
  /** Folder of the local statistics cache, shared with `cachefleet evaluate`. */
  statisticsDir: string;
  /** Absolute folders that requests may name datasets and models in; undefined allows every path. */
  fileRoots?: readonly string[];
  logger: Logger;
  /** Milliseconds between refreshes of live runs from Redis. Default 2,000. */
  monitorIntervalMs?: number;
}

export interface CoordinatorServer {
  app: FastifyInstance;
  runs: RunService;
  /** Base URL the server listens on, such as `http://127.0.0.1:8470`. */
  url: string;
  /** Stops accepting requests, then stops the run monitor and the metrics' event streams. */
  close(): Promise<void>;
}

/**
 * Builds the coordinator's HTTP application without listening: the run API under /api/v1, its
 * OpenAPI description at /openapi.json (and a viewer at /docs), the login, the run pages,
 * bull-board at /queues, Prometheus metrics at /metrics and /health.
 */
export async function buildCoordinatorApp(options: CoordinatorServerOptions): Promise<{ app: FastifyInstance; runs: RunService; metrics: FleetMetrics }> {
  const settings = validateServerSettings(options.settings);
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast only drops pino's extra members from the type.
    loggerInstance: options.logger as FastifyBaseLogger,
    bodyLimit: settings.bodyLimit,
    trustProxy: settings.trustProxy,
    // Pages poll every few seconds; each request is logged at debug level below instead.
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleApiError);
  app.setNotFoundHandler((request, reply) => sendError(reply, 'ROUTE_NOT_FOUND', `No endpoint ${request.method} ${request.url.split('?')[0]}. GET /openapi.json lists the endpoints.`));
  app.addHook('onResponse', async (request, reply) => {
    const entry = { method: request.method, route: request.routeOptions.url, statusCode: reply.statusCode, durationMs: Math.round(reply.elapsedTime) };
    if (reply.statusCode >= 500) request.log.warn(entry, 'request failed with a server error');
    else request.log.debug(entry, 'request completed');
  });

  await app.register(fastifyCookie);
  await app.register(fastifyFormbody);
  await app.register(fastifySwagger, {
    openapi: {
      info: { title: 'cachefleet coordinator API', version: API_VERSION, description: 'Submit, follow and cancel cache builds and evaluations of the cachefleet fleet.' },
      components: {
        securitySchemes: {
          bearerToken: { type: 'http', scheme: 'bearer', description: 'The value of CACHEFLEET_API_TOKEN on the coordinator' },
          session: { type: 'apiKey', in: 'cookie', name: 'cachefleet_session', description: 'HttpOnly cookie set by POST /login' },
        },
      },
      security: [{ bearerToken: [] }, { session: [] }],
    },
    transform: jsonSchemaTransform,
  });
  // validatorUrl null: the viewer would otherwise send the document to an outside validator service.
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { validatorUrl: null } });

  registerAuthentication(app, settings);

  const runs = new RunService({ client: options.client, store: options.store, storageUrl: options.storageUrl, statisticsDir: options.statisticsDir, fileRoots: options.fileRoots, logger: options.logger });
  const metrics = new FleetMetrics(options.client, options.logger);
  const typed = app.withTypeProvider<ZodTypeProvider>();

  typed.get(
    '/health',
    { schema: { summary: 'Health check', description: 'Needs no token. Returns 503 when Redis does not respond to PING.', tags: ['service'], security: [], response: { 200: z.object({ status: z.literal('ok') }), 503: z.object({ status: z.literal('unavailable'), reason: z.string() }) } } },
    async (_request, reply) => {
      try {
        // ioredis queues commands while disconnected, so without a time limit the check would wait for Redis.
        await Promise.race([options.client.redis.ping(), sleep(HEALTH_TIMEOUT_MS).then(() => Promise.reject(new Error(`no PONG within ${HEALTH_TIMEOUT_MS} ms`)))]);
        return reply.send({ status: 'ok' as const });
      } catch (error) {
        // The route needs no token, so the response leaves out the Redis address that the error names.
        options.logger.warn({ err: error }, 'health check failed: Redis did not respond');
        return reply.code(503).send({ status: 'unavailable' as const, reason: 'Redis did not respond. The coordinator log has the error.' });
      }
    },
  );
  typed.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  typed.get('/metrics', { schema: { summary: 'Prometheus metrics', description: `Text exposition format. Needs the token unless the server runs with --metrics-auth none (now: ${settings.metricsAuth}).`, tags: ['service'] } }, async (_request, reply) => {
    const { contentType, body } = await metrics.metricsText();
    return reply.type(contentType).send(body);
  });

  registerRunRoutes(app, runs);
  registerPageRoutes(app, runs, options.logger);
  await registerDashboard(app, options.client, settings.dashboardActions);
  return { app, runs, metrics };
}

/** Builds the application, follows the runs left unfinished by an earlier server, and listens. */
export async function startCoordinatorServer(options: CoordinatorServerOptions): Promise<CoordinatorServer> {
  const { app, runs, metrics } = await buildCoordinatorApp(options);
  const settings = options.settings;
  const liveRuns = await runs.loadLiveRuns();
  metrics.start();

  let monitoring: Promise<void> | undefined;
  const timer = setInterval(() => {
    // A pass that takes longer than the interval is not overlapped by the next one.
    monitoring ??= runs.refreshLiveRuns().finally(() => {
      monitoring = undefined;
    });
  }, options.monitorIntervalMs ?? 2_000);

  let url: string;
  try {
    url = await app.listen({ host: settings.host, port: settings.port });
  } catch (error) {
    clearInterval(timer);
    await metrics.close();
    throw error;
  }
  options.logger.info(
    { url, storage: options.storageUrl, prefix: options.client.prefix, fileRoots: options.fileRoots ?? 'any path', authentication: settings.token === undefined ? 'off (loopback only)' : 'token', metricsAuth: settings.metricsAuth, dashboardActions: settings.dashboardActions, liveRuns },
    'coordinator API listening',
  );
  if (settings.token === undefined) options.logger.warn({ host: settings.host }, 'CACHEFLEET_API_TOKEN is not set: every process on this machine can use the API without a token');

  return {
    app,
    runs,
    url,
    async close() {
      clearInterval(timer);
      await app.close();
      await monitoring;
      await metrics.close();
      options.logger.info({ url }, 'coordinator API stopped');
    },
  };
}
