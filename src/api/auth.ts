// Credentials: the instance admin token, tenant tokens and agent API keys, all compared as
// SHA-256 hashes. `Authorization: Bearer <token>` or `X-API-Key: <token>`; credentials in
// the query string are refused. Admin and tenant routes also take the dashboard's session
// cookie (session.ts) when no header credential is sent.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { ApiError } from './errors.ts';
import { findSession, hasSessionCookie, refuseCrossSite, sessionCookieOf, sessionTenantId, type Session } from './session.ts';
import { one } from '../store/query.ts';
import { agentsSql, tenantsSql } from '../store/queries.ts';
import type { TenantRow } from '../store/rows.ts';
import type { AppDeps } from './app.ts';

export type AuthAgent = {
  id: string;
  tenant_id: string;
  name: string;
  status: string;
  /** As looked up (at most AGENT_AUTH_TTL_MS old), then as this process last recorded its contact. */
  health: string;
  tools: string[];
  capabilities: string[];
  max_concurrent_jobs: number;
  last_seen_at: Date | null;
  modules: string[];
};

/**
 * Who acts on a tenant route: the tenant token (its SHA-256) a request or its session was
 * authenticated with; none for the admin acting in a tenant through a dashboard session.
 */
export type Actor = { tokenHash: Buffer | null; admin: boolean };

export type AppEnv = { Variables: { tenant: TenantRow; agent: AuthAgent; actor: Actor } };

export const hashToken = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

/** A new secret with a recognizable prefix; the prefix plus a few characters identify it in lists. */
export function newSecret(prefix: 'sft' | 'sfa' | 'sfadm' | 'sfw'): { token: string; hash: Buffer; display: string } {
  const token = `${prefix}_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashToken(token), display: token.slice(0, prefix.length + 7) };
}

const QUERY_CREDENTIALS = ['token', 'api_key', 'apikey', 'access_token', 'key', 'auth'];

/**
 * The credential of a webhook request: as for the API, or in X-Webhook-Token or
 * X-Gitlab-Token (GitLab sends its webhook secret there). Returns its SHA-256.
 */
export function webhookCredentialHash(c: Context): Buffer {
  const header = c.req.header('x-webhook-token') ?? c.req.header('x-gitlab-token');
  return hashToken(header && header.trim() ? header.trim() : credentialOf(c));
}

/** The tenant a tenant token belongs to, or null. */
export function tenantOfToken(deps: AppDeps, hash: Buffer): Promise<TenantRow | null> {
  return one<TenantRow>(deps.pool, tenantsSql.FindTenantByTokenHash, [hash]);
}

function refuseQueryCredentials(c: Context): void {
  for (const name of QUERY_CREDENTIALS) {
    if (c.req.query(name) !== undefined) {
      throw new ApiError(401, 'credential_in_query', 'Credentials in the query string are refused; send Authorization: Bearer <token> or X-API-Key');
    }
  }
}

export function credentialOf(c: Context): string {
  refuseQueryCredentials(c);
  const header = c.req.header('authorization');
  if (header) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new ApiError(401, 'unauthorized', 'The Authorization header must be "Bearer <token>"');
    return m[1];
  }
  const key = c.req.header('x-api-key');
  if (key && key.trim()) return key.trim();
  throw new ApiError(401, 'unauthorized', 'A credential is required: Authorization: Bearer <token> or X-API-Key');
}

/**
 * The dashboard session of a request that sends no header credential but the session
 * cookie; null when it sends a header credential (which always wins) or no cookie. A cookie
 * that names no live session is a 401; a change made through a session must pass
 * refuseCrossSite (403).
 */
async function sessionCredential(deps: AppDeps, c: Context): Promise<Session | null> {
  if (!bySession(c)) return null;
  refuseQueryCredentials(c);
  const id = sessionCookieOf(c);
  const session = id ? await findSession(deps.pool, id, deps.adminTokenHash()) : null;
  if (!session) throw new ApiError(401, 'session_ended', 'The dashboard session has ended (signed out or expired); sign in again');
  refuseCrossSite(c, id!);
  return session;
}

function isAdmin(deps: AppDeps, hash: Buffer): boolean {
  const admin = deps.adminTokenHash();
  return admin !== null && admin.length === hash.length && timingSafeEqual(admin, hash);
}

export function requireAdmin(deps: AppDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const session = await sessionCredential(deps, c);
    if (session) {
      if (!session.admin) throw new ApiError(403, 'forbidden', 'This endpoint needs the instance admin token; this session was signed in with a tenant token');
      await next();
      return;
    }
    const hash = hashToken(credentialOf(c));
    if (!isAdmin(deps, hash)) {
      const tenant = await one(deps.pool, tenantsSql.FindTenantByTokenHash, [hash]);
      if (tenant) throw new ApiError(403, 'forbidden', 'This endpoint needs the instance admin token');
      throw new ApiError(401, 'unauthorized', 'The credential is not valid');
    }
    await next();
  };
}

export function requireTenant(deps: AppDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const session = await sessionCredential(deps, c);
    if (session) {
      if (!session.tenant) {
        throw new ApiError(403, 'tenant_not_chosen', 'This admin session has not chosen a tenant yet (POST /api/v1/session/tenant)');
      }
      c.set('tenant', session.tenant);
      c.set('actor', { tokenHash: session.apiTokenHash, admin: session.admin });
      await next();
      return;
    }
    const hash = hashToken(credentialOf(c));
    const tenant = await one<TenantRow>(deps.pool, tenantsSql.FindTenantByTokenHash, [hash]);
    if (!tenant) {
      if (isAdmin(deps, hash)) {
        throw new ApiError(403, 'forbidden', 'The admin token manages tenants; use a tenant token (POST /api/v1/tenants/{id}/tokens)');
      }
      throw new ApiError(401, 'unauthorized', 'The credential is not valid');
    }
    c.set('tenant', tenant);
    c.set('actor', { tokenHash: hash, admin: false });
    await next();
  };
}

/** The request authenticates with its session cookie: it sends neither a token nor an API key. */
function bySession(c: Context): boolean {
  return c.req.header('authorization') === undefined && !c.req.header('x-api-key')?.trim() && hasSessionCookie(c);
}

/**
 * For an answer that stays open (the event stream): whether the credential this request was
 * authenticated with (by requireTenant) still names its tenant. A signed-out, expired or idle
 * session, a session switched to another tenant, a revoked token, or the tenant deleted,
 * answer false. Checking does not count as using the session.
 */
export function tenantCredentialCheck(deps: AppDeps, c: Context<AppEnv>): () => Promise<boolean> {
  const tenantId = c.get('tenant').id;
  const viaSession = bySession(c);
  const sessionId = viaSession ? sessionCookieOf(c) ?? null : null;
  const hash = viaSession ? null : hashToken(credentialOf(c));
  return async () => {
    if (sessionId !== null) return (await sessionTenantId(deps.pool, sessionId, deps.adminTokenHash())) === tenantId;
    if (hash === null) return false;
    return (await one<TenantRow>(deps.pool, tenantsSql.FindTenantByTokenHash, [hash]))?.id === tenantId;
  };
}

// Agents call several times per step; their credential is looked up at most every
// AGENT_AUTH_TTL_MS per process. Changing an agent (disable, revoke, new key) through this
// process forgets it at once; another process notices within the TTL.
const AGENT_AUTH_TTL_MS = 2_000;
const agentAuth = new Map<string, { agent: AuthAgent | null; until: number }>();

async function findAgent(deps: AppDeps, hash: Buffer): Promise<AuthAgent | null> {
  const key = hash.toString('base64');
  const cached = agentAuth.get(key);
  const now = Date.now();
  if (cached && cached.until > now) return cached.agent;
  const agent = await one<AuthAgent>(deps.pool, agentsSql.FindAgentByKeyHash, [hash]);
  if (agentAuth.size > 10_000) agentAuth.clear();
  // Unknown keys are not cached: a key created a moment ago must work at once.
  if (agent) agentAuth.set(key, { agent, until: now + AGENT_AUTH_TTL_MS });
  else agentAuth.delete(key);
  return agent;
}

/** Drops an agent's cached credential (after its status or key changed). */
export function forgetAgentCredential(agentId: string): void {
  for (const [key, entry] of agentAuth) if (entry.agent?.id === agentId) agentAuth.delete(key);
}

/**
 * Agent routes; `module` is the tenant module the route needs (seed 002 "Module Gating").
 * `X-Agent-ID` (the seed SDK sends its configured agent id) is checked, never trusted: when
 * given, it must name the agent the key belongs to; without a valid key it counts for nothing.
 */
export function requireAgent(deps: AppDeps, module: string | null): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const agent = await findAgent(deps, hashToken(credentialOf(c)));
    if (!agent || agent.status === 'revoked') throw new ApiError(401, 'unauthorized', 'The agent API key is not valid');
    const claimed = c.req.header('x-agent-id')?.trim();
    if (claimed && claimed.toLowerCase() !== agent.id) {
      throw new ApiError(401, 'agent_id_mismatch', 'X-Agent-ID names another agent than the one this API key belongs to');
    }
    if (agent.status !== 'active') throw new ApiError(403, 'agent_disabled', 'This agent is disabled');
    if (module && !agent.modules.includes(module)) {
      throw new ApiError(403, 'module_not_enabled', `The tenant's '${module}' module is not enabled`);
    }
    c.set('agent', agent);
    await next();
  };
}
