import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';

import { sendError } from '../errors.js';
import { sendPage } from '../pages/html.js';
import { renderLoginPage, renderLoginRequiredPage } from '../pages/login-page.js';
import { SESSION_COOKIE, SessionSigner, tokensEqual } from './session.js';

export interface AuthSettings {
  /** API token (CACHEFLEET_API_TOKEN). Undefined only on a loopback address, where authentication is then off. */
  token: string | undefined;
  /** `token`: GET /metrics needs the token like the API; `none`: it is open, for scrapers without credentials. */
  metricsAuth: 'token' | 'none';
  /** Lifetime of a browser session in seconds. */
  sessionTtlSeconds: number;
}

// Routes open without a token: the health check, the login form, the API description and the
// scripts of the pages (they contain no data). Matched on the route pattern, not the raw URL, so
// a path such as `/docs/../api/v1/runs` cannot borrow a public prefix.
const PUBLIC_ROUTES = new Set(['/health', '/login', '/logout', '/openapi.json', '/assets/run-page.js']);
const PUBLIC_ROUTE_PREFIXES = ['/docs'];

function isPublicRoute(pattern: string | undefined, settings: AuthSettings): boolean {
  if (pattern === undefined) return false;
  if (pattern === '/metrics') return settings.metricsAuth === 'none';
  return PUBLIC_ROUTES.has(pattern) || PUBLIC_ROUTE_PREFIXES.some((prefix) => pattern === prefix || pattern.startsWith(`${prefix}/`));
}

/** Returns a same-site path to go to after login; anything else (another host, `//host`) becomes `/`. */
export function safeNextPath(next: string | undefined): string {
  if (next === undefined || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return '/';
  return next;
}

function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match === null ? undefined : match[1];
}

function wantsHtml(request: FastifyRequest): boolean {
  return request.method === 'GET' && (request.headers.accept ?? '').includes('text/html');
}

const loginBodySchema = z.object({
  token: z.string().min(1).max(4096),
  next: z.string().max(2048).optional(),
});

/**
 * Adds authentication to every route: a bearer token in the Authorization header, or the
 * HttpOnly session cookie that POST /login issues in exchange for the token. The token is never
 * read from a URL. Requests without either get 401: an HTML page with a login link for browsers,
 * the JSON error body for everything else.
 */
export function registerAuthentication(app: FastifyInstance, settings: AuthSettings): void {
  const signer = settings.token === undefined ? undefined : new SessionSigner(settings.token, settings.sessionTtlSeconds);

  const isAuthenticated = (request: FastifyRequest): boolean => {
    if (settings.token === undefined || signer === undefined) return true;
    const presented = bearerToken(request);
    if (presented !== undefined) return tokensEqual(presented, settings.token);
    return signer.verify(request.cookies[SESSION_COOKIE]);
  };

  app.addHook('onRequest', async (request, reply) => {
    if (isPublicRoute(request.routeOptions.url, settings) || isAuthenticated(request)) return;

    request.log.info({ url: request.routeOptions.url ?? 'unknown route', method: request.method, hasAuthorization: request.headers.authorization !== undefined }, 'request without valid credentials');
    if (wantsHtml(request)) return sendPage(reply, renderLoginRequiredPage(request.url), 401);
    return sendError(reply, 'UNAUTHORIZED', 'This endpoint needs the API token. Send it as "Authorization: Bearer <token>" (the value of CACHEFLEET_API_TOKEN), or log in at /login for a browser session.');
  });

  const typed = app.withTypeProvider<ZodTypeProvider>();

  typed.get('/login', { schema: { hide: true, querystring: z.object({ next: z.string().max(2048).optional() }) } }, async (request, reply) => {
    const next = safeNextPath(request.query.next);
    if (signer === undefined) return reply.redirect(next, 303);
    return sendPage(reply, renderLoginPage(next, settings.sessionTtlSeconds));
  });

  typed.post('/login', { schema: { hide: true, body: loginBodySchema } }, async (request, reply) => {
    const next = safeNextPath(request.body.next);
    const isForm = (request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
    if (settings.token === undefined || signer === undefined) return isForm ? reply.redirect(next, 303) : reply.code(204).send();

    if (!tokensEqual(request.body.token, settings.token)) {
      request.log.info('login with an invalid token');
      if (isForm) return sendPage(reply, renderLoginPage(next, settings.sessionTtlSeconds, 'The token is invalid. Enter the value of CACHEFLEET_API_TOKEN set on the coordinator.'), 401);
      return sendError(reply, 'UNAUTHORIZED', 'The token is invalid. Send the value of CACHEFLEET_API_TOKEN set on the coordinator.');
    }

    setSessionCookie(request, reply, signer.issue(), settings.sessionTtlSeconds);
    request.log.info('browser session started');
    return isForm ? reply.redirect(next, 303) : reply.code(204).send();
  });

  app.post('/logout', { schema: { hide: true } }, async (request, reply) => {
    reply.clearCookie(SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https' });
    return reply.redirect('/login', 303);
  });
}

/**
 * Sets the session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's page
 * sends it), Secure when the request came over HTTPS (directly, or through a proxy trusted with
 * --trust-proxy).
 */
function setSessionCookie(request: FastifyRequest, reply: FastifyReply, value: string, ttlSeconds: number): void {
  reply.setCookie(SESSION_COOKIE, value, { path: '/', httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', maxAge: ttlSeconds });
}
