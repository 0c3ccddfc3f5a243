// Every request: its id (x-request-id in and out), the logger its work logs with, and its
// duration by route pattern (http_request_duration_seconds).
import { randomUUID } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { Logger } from 'pino';
import { withLog } from './context.ts';
import { httpRequestDuration } from './metrics.ts';

/**
 * A caller's x-request-id is kept when it is a plain token of at most 128 characters (a
 * UUID, a ULID, a trace id); anything else (too long, spaces, control characters that
 * would forge log lines) is replaced by a new UUID, as is a missing one.
 */
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

export function requestIdOf(given: string | undefined): string {
  return given !== undefined && REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * The route pattern that answered ('/api/v1/pipeline-runs/:id'), never the raw path, so a
 * label has as many values as there are routes: the first matched route that is a handler
 * (middleware is registered for every method, 'ALL'); 'unmatched' for a 404 of no route.
 */
export function routeOf(c: Context): string {
  return matchedRoutes(c).find((r) => r.method !== 'ALL')?.path ?? 'unmatched';
}

/**
 * Outermost middleware: the request's id (x-request-id, answered in the response's header
 * too) and a pino child carrying it as request_id, which everything the request does logs
 * with (currentLog()); the jobs it enqueues log with their own ids, and the lines that
 * bridge them (a run created, with its ids) carry the request's. One debug line per
 * request: at info, requests are not facts an operator acts on (agents poll all day).
 */
export function requestScope(logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    const requestId = requestIdOf(c.req.header('x-request-id'));
    const log = logger.child({ request_id: requestId });
    const started = performance.now();
    await withLog(log, () => next(), requestId);
    c.res.headers.set('X-Request-Id', requestId);
    const seconds = (performance.now() - started) / 1000;
    const route = routeOf(c);
    httpRequestDuration.observe({ method: c.req.method, route, status: String(c.res.status) }, seconds);
    log.debug({ method: c.req.method, route, status: c.res.status, ms: Math.round(seconds * 1000) }, 'request');
  };
}
