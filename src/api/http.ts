// What every response carries at the HTTP level, whichever route (or refusal) produced it:
// the headers that keep secrets out of caches and browsers from sniffing types. (The
// request body, settled so the keep-alive connection can carry the next request, is the
// body layer's: body.ts.)
import type { MiddlewareHandler } from 'hono';

/** Health checks carry nothing secret; whatever probes them may cache as it likes. */
const CACHEABLE_PATHS = new Set(['/healthz', '/readyz']);

/**
 * Every response: `X-Content-Type-Options: nosniff` and no `X-Powered-By`. Every response
 * but the health checks: `Cache-Control: no-store`, since API answers carry tenant data and
 * some carry secrets shown once (tenant tokens, agent keys, webhook tokens); errors and
 * 404s included, so no route can be forgotten.
 */
export function responseHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    // Set on the response's own headers (not c.header(), which copies the response): keeps
    // @hono/node-server's fast path for bodies it has as a string.
    const headers = c.res.headers;
    headers.set('X-Content-Type-Options', 'nosniff');
    headers.delete('X-Powered-By');
    if (!CACHEABLE_PATHS.has(c.req.path)) headers.set('Cache-Control', 'no-store');
  };
}
