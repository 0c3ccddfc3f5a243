// Which database a route reads (src/db/reads.ts): list and detail reads of tenant and admin
// routes through readsOf; everything else (authentication, sessions, the agent protocol,
// transactions, the event feed and stream) keeps deps.pool, the primary.
import type { Context, MiddlewareHandler } from 'hono';
import type { AppDeps } from './app.ts';
import type { AppEnv } from './auth.ts';
import { hasSessionCookie } from './session.ts';
import type { Queryable } from '../db/pool.ts';
import { currentLog } from '../observability/context.ts';

/** The key of a request's writes and reads: its tenant, or 'admin' on the admin's routes. */
function keyOf(c: Context<AppEnv>): string | null {
  if (c.get('tenant')) return c.get('tenant').id;
  return c.get('agent') ? null : 'admin';
}

/** A request the dashboard makes with its session cookie (no header credential: as auth.ts decides). */
function throughSession(c: Context): boolean {
  return c.req.header('authorization') === undefined && !c.req.header('x-api-key')?.trim() && hasSessionCookie(c);
}

/**
 * The database of a route's list and detail reads: the replica when there is one, except
 * where the request must see what it cannot yet see there (its tenant's own recent writes;
 * through the dashboard, everything committed before it began).
 */
export function readsOf(deps: AppDeps, c: Context<AppEnv>): Queryable {
  if (!deps.reads) return deps.pool;
  return deps.reads.reads({ key: keyOf(c), causal: throughSession(c) });
}

/** The /metrics gauges: the replica as it is (a scrape is a sample of a moving state anyway). */
export function gaugeReads(deps: AppDeps): Queryable {
  return deps.reads ? deps.reads.reads({ key: null, causal: false }) : deps.pool;
}

/**
 * After each request that may have written (any method but GET, HEAD and OPTIONS) by a tenant
 * or the admin: the primary's WAL position, so the key's next reads wait for the replica to
 * have it. Agents' writes are not recorded: the agent protocol never reads the replica, and
 * people see what agents did with the replica's lag.
 */
export function recordWrites(deps: AppDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    const reads = deps.reads;
    if (!reads?.replica || c.req.method === 'GET' || c.req.method === 'HEAD' || c.req.method === 'OPTIONS') return;
    const key = keyOf(c);
    if (key === null) return;
    // The answer is ready; a failure here must not turn a done write into an error.
    await reads.wrote(key).catch((err) => currentLog(deps.logger).warn({ err }, 'could not read the WAL position after a write'));
  };
}
