// Dashboard sessions (API.md Part 2 "The dashboard"): a tenant token, or the admin token,
// exchanged for a random session id in an HttpOnly, SameSite=Lax cookie. Only the SHA-256 of
// the id is stored (sql/dashboard_sessions.sql).
//
// Cross-site requests: SameSite=Lax keeps the cookie off cross-site subrequests and forms
// that POST (Lax, not Strict, so a run's link in a Slack message or an email opens signed in;
// those are top-level GETs, which change nothing). A request authenticated by the cookie
// that changes something must also (1) come from this origin by what the browser says
// (Sec-Fetch-Site, Origin) and (2) carry X-CSRF-Token: an HMAC of the session id, which
// only pages of this origin can read (GET /api/v1/session answers it; no CORS is served).
// Bearer and X-API-Key requests are not touched by any of this: a header credential always
// wins over a cookie, and cross-site pages cannot set one.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context } from 'hono';
import { getCookie, setCookie, deleteCookie } from 'hono/cookie';
import { ApiError } from './errors.ts';
import type { Queryable } from '../db/pool.ts';
import { one } from '../store/query.ts';
import { sessionsSql } from '../store/queries.ts';
import type { TenantRow } from '../store/rows.ts';

export const SESSION_COOKIE = 'scanflow_session';
/** A session lives at most this long after sign-in: a working day and then some. */
export const SESSION_MAX_SECONDS = 12 * 3600;
/** ... and ends sooner when no request used it for this long (a dashboard left open with only its event stream counts as unused). */
export const SESSION_IDLE_SECONDS = 2 * 3600;

/** 32 random bytes as base64url: the only form a session id takes. */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export type Session = {
  /** The tenant it acts in; null for an admin session that has not chosen one. */
  tenant: TenantRow | null;
  /** Signed in with the admin token (and still that token). */
  admin: boolean;
  /** The tenant token it came from (its SHA-256): who triages through it. Null for an admin's. */
  apiTokenHash: Buffer | null;
  createdAt: Date;
  expiresAt: Date;
  /** When it ends if unused from now on. */
  idleExpiresAt: Date;
};

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export function newSessionId(): { id: string; hash: Buffer } {
  const id = randomBytes(32).toString('base64url');
  return { id, hash: sha256(id) };
}

/** The CSRF token of a session: derived from its id, so nothing more is stored or looked up. */
export function csrfTokenOf(sessionId: string): string {
  return createHmac('sha256', sessionId).update('scanflow dashboard csrf v1').digest('base64url');
}

/** The session cookie's value as sent, when it has the form of one. */
export function sessionCookieOf(c: Context): string | undefined {
  const value = getCookie(c, SESSION_COOKIE);
  return value !== undefined && SESSION_ID.test(value) ? value : undefined;
}

/** Whether a cookie named like ours was sent at all (a malformed one still means a browser that had a session). */
export function hasSessionCookie(c: Context): boolean {
  return getCookie(c, SESSION_COOKIE) !== undefined;
}

type SessionRow = TenantRow & {
  api_token_id: string | null;
  api_token_hash: Buffer | null;
  admin_token_sha256: Buffer | null;
  session_created_at: Date;
  session_expires_at: Date;
  session_used_at: Date;
};

/** A tenant session (no admin token), or an admin session whose admin token is still the instance's. */
function adminTokenStill(signedInWith: Buffer | null, current: Buffer | null): boolean {
  return signedInWith === null || (current !== null && current.length === signedInWith.length && timingSafeEqual(current, signedInWith));
}

/**
 * The live session a cookie value names, or null. An admin session counts only while the
 * admin token is still the one it was signed in with.
 */
export async function findSession(db: Queryable, sessionId: string, adminTokenHash: Buffer | null): Promise<Session | null> {
  const row = await one<SessionRow>(db, sessionsSql.FindSession, [sha256(sessionId), SESSION_IDLE_SECONDS]);
  if (!row) return null;
  const admin = row.admin_token_sha256 !== null;
  if (!adminTokenStill(row.admin_token_sha256, adminTokenHash)) return null;
  const { api_token_id: _a, api_token_hash, admin_token_sha256: _b, session_created_at, session_expires_at, session_used_at, ...tenant } = row;
  const idle = new Date(session_used_at.getTime() + SESSION_IDLE_SECONDS * 1000);
  return {
    tenant: tenant.id ? (tenant as TenantRow) : null,
    admin,
    apiTokenHash: api_token_hash,
    createdAt: session_created_at,
    expiresAt: session_expires_at,
    idleExpiresAt: idle < session_expires_at ? idle : session_expires_at,
  };
}

/**
 * The tenant a live session acts in (null: ended, or an admin session that has not chosen
 * one, or whose admin token changed), without marking it used (see SessionTenant).
 */
export async function sessionTenantId(db: Queryable, sessionId: string, adminTokenHash: Buffer | null): Promise<string | null> {
  const row = await one<{ tenant_id: string | null; admin_token_sha256: Buffer | null }>(
    db, sessionsSql.SessionTenant, [sha256(sessionId), SESSION_IDLE_SECONDS]);
  if (!row) return null;
  return adminTokenStill(row.admin_token_sha256, adminTokenHash) ? row.tenant_id : null;
}

/** Is this request's own origin what the browser says it came from? Requests no browser sent (no Origin, no Sec-Fetch-Site) pass. */
export function fromThisOrigin(c: Context): boolean {
  const site = c.req.header('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
  const origin = c.req.header('origin');
  if (origin === undefined) return true;
  // The host the client addressed: a reverse proxy passes it on as X-Forwarded-Host or keeps Host.
  const host = (c.req.header('x-forwarded-host') ?? c.req.header('host') ?? new URL(c.req.url).host).split(',')[0].trim().toLowerCase();
  try {
    return origin !== 'null' && new URL(origin).host.toLowerCase() === host;
  } catch {
    return false;
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * A request that the session cookie authenticates and that changes something: from this
 * origin, with the session's CSRF token. Anything else is a 403 and changes nothing.
 */
export function refuseCrossSite(c: Context, sessionId: string): void {
  if (SAFE_METHODS.has(c.req.method)) return;
  if (!fromThisOrigin(c)) {
    throw new ApiError(403, 'cross_site_request', 'A request from another site may not use the dashboard session');
  }
  const sent = Buffer.from(c.req.header('x-csrf-token') ?? '', 'utf8');
  const wanted = Buffer.from(csrfTokenOf(sessionId), 'utf8');
  if (sent.length !== wanted.length || !timingSafeEqual(sent, wanted)) {
    throw new ApiError(403, 'csrf_token_invalid', 'A change made with the dashboard session needs its X-CSRF-Token header (GET /api/v1/session)');
  }
}

/** Is the request on https, by its own URL or by what a TLS-terminating proxy says? */
function overTls(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto')?.split(',')[0].trim() === 'https';
}

export function setSessionCookie(c: Context, sessionId: string, expiresAt: Date): void {
  setCookie(c, SESSION_COOKIE, sessionId, {
    path: '/',
    httpOnly: true,
    sameSite: 'Lax',
    secure: overTls(c),
    maxAge: Math.max(0, Math.floor((expiresAt.getTime() - Date.now()) / 1000)),
  });
}

export function clearSessionCookie(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'Lax', secure: overTls(c) });
}

export { sha256 as sessionHash };
