// The dashboard's session (src/api/session.ts, routes/session.ts): a token exchanged for an
// HttpOnly cookie, accepted by tenant and admin routes; changes through it only from this
// origin with its CSRF token; sessions end (sign-out, expiry, idleness, the token revoked,
// a new admin token); the admin acts in a tenant without a token minted. Header credentials
// work as before and win over a cookie.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ADMIN_TOKEN, startHarness, type Harness, type Response } from './support/harness.ts';
import { createPipeline, createTenant, startRun, step, type Tenant } from './support/fixtures.ts';
import { insertFinding } from './support/findings.ts';

let h: Harness;
let a: Tenant;
let b: Tenant;
let runA: string;

const ORIGIN = 'http://localhost';

before(async () => {
  h = await startHarness({ worker: false });
  a = await createTenant(h, 'session-a');
  b = await createTenant(h, 'session-b');
  const pipeline = await createPipeline(h, a, { name: 'session-pipeline', steps: [step('one')] });
  runA = (await startRun(h, a, pipeline.id)).id;
});
after(() => h.close());

/** The session cookie a sign-in set, as a Cookie header value; and the Set-Cookie line. */
function cookieOf(res: Response): { cookie: string; line: string } {
  const line = res.headers.get('set-cookie') ?? '';
  const m = /^scanflow_session=([^;]*)/.exec(line);
  assert.ok(m, `a session cookie is set: ${line}`);
  return { cookie: `scanflow_session=${m[1]}`, line };
}

async function signIn(token: string): Promise<{ cookie: string; csrf: string; line: string }> {
  const res = await h.request('POST', '/api/v1/session', { body: { token }, headers: { origin: ORIGIN, 'sec-fetch-site': 'same-origin' } });
  assert.equal(res.status, 204, JSON.stringify(res.body));
  const { cookie, line } = cookieOf(res);
  const me = await h.request('GET', '/api/v1/session', { headers: { cookie } });
  assert.equal(me.status, 200, JSON.stringify(me.body));
  return { cookie, csrf: me.body.csrf_token, line };
}

/** A change made by the dashboard's page: the cookie, this origin, the CSRF token. */
const fromPage = (s: { cookie: string; csrf: string }, extra: Record<string, string> = {}) => ({
  cookie: s.cookie, origin: ORIGIN, 'sec-fetch-site': 'same-origin', 'x-csrf-token': s.csrf, ...extra,
});

describe('signing in with a tenant token', () => {
  it('sets an HttpOnly, SameSite=Lax cookie whose value is stored only as its SHA-256', async () => {
    const s = await signIn(a.token);
    assert.match(s.line, /HttpOnly/i);
    assert.match(s.line, /SameSite=Lax/i);
    assert.match(s.line, /Path=\//);
    assert.match(s.line, /Max-Age=43\d\d\d/); // 12 hours
    assert.doesNotMatch(s.line, /Secure/, 'plain http: no Secure attribute (the browser would drop the cookie)');
    const value = s.cookie.split('=')[1];
    const { rows } = await h.pool.query(`SELECT id_hash, tenant_id, api_token_id, admin_token_sha256 FROM dashboard_sessions`);
    const mine = rows.find((r) => Buffer.compare(r.id_hash, createHash('sha256').update(value).digest()) === 0);
    assert.ok(mine, 'the row holds the SHA-256 of the cookie value');
    assert.equal(mine.tenant_id, a.id);
    assert.equal(mine.admin_token_sha256, null);
    const { rows: raw } = await h.pool.query(`SELECT count(*)::int AS n FROM dashboard_sessions WHERE encode(id_hash, 'escape') LIKE '%' || $1 || '%'`, [value]);
    assert.equal(raw[0].n, 0);
  });

  it('is Secure behind https (a TLS-terminating proxy says so)', async () => {
    const res = await h.request('POST', '/api/v1/session', { body: { token: a.token }, headers: { 'x-forwarded-proto': 'https' } });
    assert.equal(res.status, 204);
    assert.match(cookieOf(res).line, /Secure/);
  });

  it('answers who the session is and reads the tenant API with the cookie alone', async () => {
    const s = await signIn(a.token);
    const me = await h.request('GET', '/api/v1/session', { headers: { cookie: s.cookie } });
    assert.equal(me.body.tenant.id, a.id);
    assert.equal(me.body.admin, false);
    assert.ok(Date.parse(me.body.idle_expires_at) <= Date.parse(me.body.expires_at));
    const runs = await h.request('GET', '/api/v1/pipeline-runs', { headers: { cookie: s.cookie } });
    assert.equal(runs.status, 200);
    assert.deepEqual(runs.body.items.map((r: any) => r.id), [runA]);
    const events = await h.request('GET', '/api/v1/events', { headers: { cookie: s.cookie } });
    assert.equal(events.status, 200);
  });

  it('refuses a token that is neither a tenant token nor the admin token, and a sign-in from another site', async () => {
    const bad = await h.request('POST', '/api/v1/session', { body: { token: 'sft_nope' } });
    assert.equal(bad.status, 401);
    assert.equal(bad.headers.get('set-cookie'), null);
    const cross = await h.request('POST', '/api/v1/session', { body: { token: a.token }, headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' } });
    assert.equal(cross.status, 403);
    assert.equal(cross.body.error.code, 'cross_site_request');
    assert.equal(cross.headers.get('set-cookie'), null);
    const empty = await h.request('POST', '/api/v1/session', { body: {} });
    assert.equal(empty.status, 400);
    assert.equal(empty.body.error.details[0].path, 'token');
  });

  it('a header credential wins over the cookie: API clients work exactly as before', async () => {
    const s = await signIn(a.token);
    const asB = await h.request('GET', '/api/v1/pipeline-runs', { token: b.token, headers: { cookie: s.cookie } });
    assert.equal(asB.status, 200);
    assert.deepEqual(asB.body.items, []);
    const wrong = await h.request('GET', '/api/v1/pipeline-runs', { token: 'sft_wrong', headers: { cookie: s.cookie } });
    assert.equal(wrong.status, 401, 'a bad bearer is not rescued by a good cookie');
    // Bearer changes need no CSRF token (no browser sends a bearer cross-site).
    const cancel = await h.request('POST', `/api/v1/pipeline-runs/${runA}/retry`, { token: a.token });
    assert.equal(cancel.status, 409, JSON.stringify(cancel.body));
  });

  it('credentials in the query string are refused with the cookie too', async () => {
    const s = await signIn(a.token);
    const res = await h.request('GET', `/api/v1/pipeline-runs?token=${a.token}`, { headers: { cookie: s.cookie } });
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, 'credential_in_query');
  });
});

describe('changes made through the session', () => {
  it('need this origin and the CSRF token; with both they go through', async () => {
    const s = await signIn(a.token);
    const finding = await insertFinding(h, a.id, { title: 'csrf target' });
    const path = `/api/v1/findings/${finding.id}`;
    const body = { status: 'in_progress', reason: 'looking' };

    const noToken = await h.request('PATCH', path, { body, headers: { cookie: s.cookie, origin: ORIGIN } });
    assert.equal(noToken.status, 403);
    assert.equal(noToken.body.error.code, 'csrf_token_invalid');
    const wrongToken = await h.request('PATCH', path, { body, headers: fromPage(s, { 'x-csrf-token': `${s.csrf.slice(0, -2)}xx` }) });
    assert.equal(wrongToken.status, 403);
    const otherOrigin = await h.request('PATCH', path, { body, headers: fromPage(s, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' }) });
    assert.equal(otherOrigin.status, 403);
    assert.equal(otherOrigin.body.error.code, 'cross_site_request');
    const sameSite = await h.request('PATCH', path, { body, headers: fromPage(s, { 'sec-fetch-site': 'same-site' }) });
    assert.equal(sameSite.status, 403, 'a sibling subdomain is another site for us');
    const otherSessionsToken = await signIn(a.token);
    const mixed = await h.request('PATCH', path, { body, headers: fromPage({ cookie: s.cookie, csrf: otherSessionsToken.csrf }) });
    assert.equal(mixed.status, 403, 'a CSRF token belongs to one session');
    const unchanged = await h.request('GET', path, { token: a.token });
    assert.equal(unchanged.body.status, 'open', 'nothing refused changed anything');

    const ok = await h.request('PATCH', path, { body, headers: fromPage(s) });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.status, 'in_progress');
    const history = await h.request('GET', `${path}/status-changes`, { token: a.token });
    assert.equal(history.body.items[0].data.by.type, 'tenant_token', 'the session triages as the token it was signed in with');
    assert.equal(history.body.items[0].data.reason, 'looking');
  });

  it('another tenant\'s ids are not found through a session either', async () => {
    const s = await signIn(b.token);
    const res = await h.request('GET', `/api/v1/pipeline-runs/${runA}`, { headers: { cookie: s.cookie } });
    assert.equal(res.status, 404);
    const cancel = await h.request('POST', `/api/v1/pipeline-runs/${runA}/cancel`, { headers: fromPage(s) });
    assert.equal(cancel.status, 404);
  });

  it('a tenant session is not the admin', async () => {
    const s = await signIn(a.token);
    const res = await h.request('GET', '/api/v1/tenants', { headers: { cookie: s.cookie } });
    assert.equal(res.status, 403);
    const choose = await h.request('POST', '/api/v1/session/tenant', { body: { tenant_id: b.id }, headers: fromPage(s) });
    assert.equal(choose.status, 403);
  });
});

describe('sessions end', () => {
  const alive = async (cookie: string) => (await h.request('GET', '/api/v1/pipeline-runs', { headers: { cookie } })).status;

  it('when signed out: the cookie is cleared and the session is gone', async () => {
    const s = await signIn(a.token);
    const noToken = await h.request('DELETE', '/api/v1/session', { headers: { cookie: s.cookie, origin: ORIGIN } });
    assert.equal(noToken.status, 403, 'signing out is a change too');
    const res = await h.request('DELETE', '/api/v1/session', { headers: fromPage(s) });
    assert.equal(res.status, 204);
    assert.match(res.headers.get('set-cookie') ?? '', /scanflow_session=;.*Max-Age=0/);
    assert.equal(await alive(s.cookie), 401);
    const again = await h.request('DELETE', '/api/v1/session', { headers: fromPage(s) });
    assert.equal(again.status, 204, 'signing out twice is fine');
    const me = await h.request('GET', '/api/v1/session', { headers: { cookie: s.cookie } });
    assert.equal(me.status, 401);
  });

  it('at their expiry, after two idle hours, when their token is revoked', async () => {
    const expired = await signIn(a.token);
    const idle = await signIn(a.token);
    const revoked = await signIn(b.token);
    const hashOf = (s: { cookie: string }) => createHash('sha256').update(s.cookie.split('=')[1]).digest();
    await h.pool.query(`UPDATE dashboard_sessions SET expires_at = now() WHERE id_hash = $1`, [hashOf(expired)]);
    await h.pool.query(`UPDATE dashboard_sessions SET last_used_at = now() - interval '2 hours 1 minute' WHERE id_hash = $1`, [hashOf(idle)]);
    await h.pool.query(`UPDATE api_tokens SET revoked_at = now() WHERE tenant_id = $1`, [b.id]);
    try {
      for (const s of [expired, idle, revoked]) {
        const res = await h.request('GET', '/api/v1/pipeline-runs', { headers: { cookie: s.cookie } });
        assert.equal(res.status, 401);
        assert.equal(res.body.error.code, 'session_ended');
      }
    } finally {
      await h.pool.query(`UPDATE api_tokens SET revoked_at = NULL WHERE tenant_id = $1`, [b.id]);
    }
  });

  it('a use marks it used (at most once a minute), so an active session does not go idle', async () => {
    const s = await signIn(a.token);
    const hash = createHash('sha256').update(s.cookie.split('=')[1]).digest();
    await h.pool.query(`UPDATE dashboard_sessions SET last_used_at = now() - interval '90 minutes' WHERE id_hash = $1`, [hash]);
    assert.equal(await alive(s.cookie), 200);
    const { rows } = await h.pool.query(`SELECT extract(epoch FROM now() - last_used_at)::float AS age FROM dashboard_sessions WHERE id_hash = $1`, [hash]);
    assert.ok(rows[0].age < 5, `touched: ${rows[0].age}`);
  });

  it('a malformed or unknown cookie is a 401, not a tenant', async () => {
    for (const cookie of ['scanflow_session=abc', `scanflow_session=${'A'.repeat(43)}`]) {
      const res = await h.request('GET', '/api/v1/pipeline-runs', { headers: { cookie } });
      assert.equal(res.status, 401, cookie);
    }
  });
});

describe('the admin', () => {
  it('signs in to no tenant, lists tenants, acts in one through a new session, triage recorded as the admin', async () => {
    const admin = await signIn(ADMIN_TOKEN);
    const me = await h.request('GET', '/api/v1/session', { headers: { cookie: admin.cookie } });
    assert.equal(me.body.admin, true);
    assert.equal(me.body.tenant, null);
    const runs = await h.request('GET', '/api/v1/pipeline-runs', { headers: { cookie: admin.cookie } });
    assert.equal(runs.status, 403);
    assert.equal(runs.body.error.code, 'tenant_not_chosen');
    const tenants = await h.request('GET', '/api/v1/tenants?limit=200', { headers: { cookie: admin.cookie } });
    assert.equal(tenants.status, 200);
    assert.ok(tenants.body.items.some((t: any) => t.id === a.id));

    const tokensBefore = (await h.pool.query(`SELECT count(*)::int AS n FROM api_tokens`)).rows[0].n;
    const noToken = await h.request('POST', '/api/v1/session/tenant', { body: { tenant_id: a.id }, headers: { cookie: admin.cookie, origin: ORIGIN } });
    assert.equal(noToken.status, 403);
    const unknown = await h.request('POST', '/api/v1/session/tenant', { body: { tenant_id: '00000000-0000-4000-8000-000000000000' }, headers: fromPage(admin) });
    assert.equal(unknown.status, 404);
    const chosen = await h.request('POST', '/api/v1/session/tenant', { body: { tenant_id: a.id }, headers: fromPage(admin) });
    assert.equal(chosen.status, 204, JSON.stringify(chosen.body));
    const inA = cookieOf(chosen).cookie;
    assert.notEqual(inA, admin.cookie, 'a new session id once its privileges changed');
    assert.equal((await h.request('GET', '/api/v1/session', { headers: { cookie: admin.cookie } })).status, 401, 'the old id is gone');
    assert.equal((await h.pool.query(`SELECT count(*)::int AS n FROM api_tokens`)).rows[0].n, tokensBefore, 'no token minted');

    const meInA = await h.request('GET', '/api/v1/session', { headers: { cookie: inA } });
    assert.equal(meInA.body.tenant.id, a.id);
    assert.equal(meInA.body.admin, true);
    assert.equal(meInA.body.expires_at, me.body.expires_at, 'the same expiry as the admin session');
    const listed = await h.request('GET', '/api/v1/pipeline-runs', { headers: { cookie: inA } });
    assert.deepEqual(listed.body.items.map((r: any) => r.id), [runA]);

    const finding = await insertFinding(h, a.id, { title: 'admin triage' });
    const triaged = await h.request('PATCH', `/api/v1/findings/${finding.id}`, {
      body: { status: 'accepted_risk', reason: 'lab only' }, headers: fromPage({ cookie: inA, csrf: meInA.body.csrf_token }),
    });
    assert.equal(triaged.status, 200, JSON.stringify(triaged.body));
    const history = await h.request('GET', `/api/v1/findings/${finding.id}/status-changes`, { token: a.token });
    assert.deepEqual(history.body.items[0].data.by, { type: 'admin', via: 'dashboard' });

    // Still the admin: it may switch to another tenant.
    const toB = await h.request('POST', '/api/v1/session/tenant', { body: { tenant_id: b.id }, headers: fromPage({ cookie: inA, csrf: meInA.body.csrf_token }) });
    assert.equal(toB.status, 204);
  });

  it('the admin token opens a tenant session directly (a client that is not a browser)', async () => {
    const res = await h.request('POST', '/api/v1/session/tenant', { token: ADMIN_TOKEN, body: { tenant_id: b.id } });
    assert.equal(res.status, 204);
    const me = await h.request('GET', '/api/v1/session', { headers: { cookie: cookieOf(res).cookie } });
    assert.equal(me.body.tenant.id, b.id);
  });

  it('an admin session ends when the admin token changes', async () => {
    const admin = await signIn(ADMIN_TOKEN);
    const hash = createHash('sha256').update(admin.cookie.split('=')[1]).digest();
    await h.pool.query(`UPDATE dashboard_sessions SET admin_token_sha256 = sha256('an older admin token') WHERE id_hash = $1`, [hash]);
    const res = await h.request('GET', '/api/v1/tenants', { headers: { cookie: admin.cookie } });
    assert.equal(res.status, 401);
  });
});
