// The dashboard's sign-in (API.md Part 2 "The dashboard"; the design is in ../session.ts):
//   POST   /api/v1/session         {token} → 204 + Set-Cookie: a tenant token opens a session in
//                                   its tenant; the admin token opens an admin session, which
//                                   has no tenant until it chooses one;
//   POST   /api/v1/session/tenant  {tenant_id} → 204 + Set-Cookie: the admin acts in a tenant;
//   GET    /api/v1/session         → who the session is, when it ends, its CSRF token;
//   DELETE /api/v1/session         → 204: signed out (and the cookie cleared).
//
// An admin acts in a tenant through the session alone: no tenant token is minted for it (a
// token would outlive the session, show up in the tenant's token list and be one more secret
// to revoke). The session records that it is the admin's, the choice is logged at info with
// the tenant, the dashboard says "admin" beside the tenant's name on every page, and a
// triage made through it is recorded as by the admin, not by a tenant token.
import { Hono } from 'hono';
import type { AppDeps } from '../app.ts';
import { hashToken, requireAdmin, type AppEnv } from '../auth.ts';
import { endpoints } from '../contract.ts';
import { ApiError, notFound } from '../errors.ts';
import { readBody } from '../input.ts';
import { presentTenant } from '../present.ts';
import {
  SESSION_IDLE_SECONDS, SESSION_MAX_SECONDS, clearSessionCookie, csrfTokenOf, findSession, fromThisOrigin,
  newSessionId, refuseCrossSite, sessionCookieOf, sessionHash, setSessionCookie,
} from '../session.ts';
import { timingSafeEqual } from 'node:crypto';
import { withTransaction } from '../../db/transaction.ts';
import { exec, one } from '../../store/query.ts';
import { sessionsSql, tenantsSql } from '../../store/queries.ts';
import type { TenantRow } from '../../store/rows.ts';
import { currentLog } from '../../observability/context.ts';

type Stored = { created_at: Date; expires_at: Date };

export function sessionRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();

  r.post('/', async (c) => {
    // Signing a victim's browser in to the attacker's tenant is a cross-site attack too.
    if (!fromThisOrigin(c)) throw new ApiError(403, 'cross_site_request', 'Signing in from another site is refused');
    const { token } = await readBody(c, endpoints.signIn);
    const hash = hashToken(token);
    const admin = deps.adminTokenHash();
    const isAdmin = admin !== null && timingSafeEqual(admin, hash);
    const tenantToken = isAdmin ? null : await one<{ api_token_id: string; tenant_id: string }>(deps.pool, sessionsSql.FindTokenForSession, [hash]);
    if (!isAdmin && !tenantToken) throw new ApiError(401, 'unauthorized', 'The token is not valid');
    const session = newSessionId();
    const previous = sessionCookieOf(c);
    const stored = await withTransaction(deps.pool, async (tx) => {
      await exec(tx, sessionsSql.DeleteEndedSessions, [SESSION_IDLE_SECONDS]);
      // Signing in again replaces the browser's session rather than leaving it behind.
      if (previous) await exec(tx, sessionsSql.DeleteSession, [sessionHash(previous)]);
      return (await one<Stored>(tx, sessionsSql.InsertSession, [
        session.hash, tenantToken?.tenant_id ?? null, tenantToken?.api_token_id ?? null, isAdmin ? hash : null, SESSION_MAX_SECONDS,
      ]))!;
    });
    currentLog(deps.logger).info({ tenant_id: tenantToken?.tenant_id ?? null, admin: isAdmin }, 'dashboard signed in');
    setSessionCookie(c, session.id, stored.expires_at);
    return c.body(null, 204);
  });

  r.post('/tenant', requireAdmin(deps), async (c) => {
    const { tenant_id: tenantId } = await readBody(c, endpoints.chooseTenant);
    const tenant = await one<TenantRow>(deps.pool, tenantsSql.GetTenant, [tenantId.toLowerCase()]);
    if (!tenant) throw notFound('tenant');
    const session = newSessionId();
    // From an admin session: that session, with a new id, now acting in the tenant (the same
    // expiry). From the admin token itself (a client that is not a browser): a new session.
    const previous = sessionCookieOf(c);
    const usesSession = previous !== undefined && c.req.header('authorization') === undefined && !c.req.header('x-api-key')?.trim();
    const stored = usesSession
      ? await one<Stored>(deps.pool, sessionsSql.RotateSession, [sessionHash(previous), session.hash, tenant.id])
      : await one<Stored>(deps.pool, sessionsSql.InsertSession, [session.hash, tenant.id, null, deps.adminTokenHash(), SESSION_MAX_SECONDS]);
    if (!stored) throw new ApiError(401, 'session_ended', 'The dashboard session has ended (signed out or expired); sign in again');
    currentLog(deps.logger).info({ tenant_id: tenant.id }, 'admin acts in a tenant through a dashboard session');
    setSessionCookie(c, session.id, stored.expires_at);
    return c.body(null, 204);
  });

  r.get('/', async (c) => {
    const id = sessionCookieOf(c);
    const session = id ? await findSession(deps.pool, id, deps.adminTokenHash()) : null;
    if (!id || !session) throw new ApiError(401, 'no_session', 'No dashboard session: sign in with POST /api/v1/session');
    return c.json({
      tenant: session.tenant ? presentTenant(session.tenant) : null,
      admin: session.admin,
      created_at: session.createdAt.toISOString(),
      expires_at: session.expiresAt.toISOString(),
      idle_expires_at: session.idleExpiresAt.toISOString(),
      csrf_token: csrfTokenOf(id),
    });
  });

  // Signing out is idempotent: without a live session there is nothing to end, and the
  // cookie is cleared all the same.
  r.delete('/', async (c) => {
    const id = sessionCookieOf(c);
    if (id && (await findSession(deps.pool, id, deps.adminTokenHash()))) {
      refuseCrossSite(c, id);
      await exec(deps.pool, sessionsSql.DeleteSession, [sessionHash(id)]);
      currentLog(deps.logger).info('dashboard signed out');
    }
    clearSessionCookie(c);
    return c.body(null, 204);
  });

  return r;
}
