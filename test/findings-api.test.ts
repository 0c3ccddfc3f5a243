// The tenant findings API (API.md Part 2 "Findings (tenant)"): the list's filters, sorts and
// cursor pages, one finding with its history, triage and its events, summary counts, a run's
// findings; other tenants' findings are 404s. Findings are made with SQL (support/findings.ts).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startHarness, type Harness } from './support/harness.ts';
import { createAsset, createPipeline, createTenant, getRun, startRun, step, type Tenant } from './support/fixtures.ts';
import { insertFinding, insertSighting, type FindingSeed, type StoredFinding } from './support/findings.ts';

let h: Harness;

before(async () => {
  h = await startHarness({ worker: false });
});
after(() => h.close());

const get = (t: Tenant, path: string) => h.request('GET', path, { token: t.token });
const patch = (t: Tenant, id: string, body: unknown) => h.request('PATCH', `/api/v1/findings/${id}`, { token: t.token, body });

/** Every item of a list, following next_cursor with pages of `limit`. */
type Item = Record<string, any> & { id: string };

async function walk(t: Tenant, path: string, limit: number): Promise<Item[]> {
  const items: Item[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 100; pages++) {
    const sep = path.includes('?') ? '&' : '?';
    const res = await get(t, `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(res.body.items.length <= limit);
    items.push(...res.body.items);
    cursor = res.body.next_cursor;
    if (!cursor) return items;
  }
  throw new Error('too many pages');
}

const ids = (items: { id: string }[]) => items.map((i) => i.id);
const minutesAgo = (m: number) => new Date(Date.parse('2026-06-01T12:00:00Z') - m * 60_000).toISOString();

/** A tenant with two assets. */
async function tenantWithAssets(): Promise<{ t: Tenant; a1: string; a2: string }> {
  const t = await createTenant(h);
  const a1 = (await createAsset(h, t, { type: 'repository', name: 'api', value: `https://git.example/${randomUUID()}` })).id;
  const a2 = (await createAsset(h, t, { type: 'repository', name: 'web', value: `https://git.example/${randomUUID()}` })).id;
  return { t, a1, a2 };
}

describe('GET /api/v1/findings', () => {
  let t: Tenant;
  let other: Tenant;
  let a1: string;
  let a2: string;
  let runId: string;
  let scanRunId: string;
  let scanId: string;
  const agentScanId = randomUUID();
  const f: Record<string, StoredFinding> = {};

  before(async () => {
    ({ t, a1, a2 } = await tenantWithAssets());
    other = await createTenant(h);
    const p = await createPipeline(h, t, { name: 'Scan', steps: [step('a')] });
    runId = (await startRun(h, t, p.id)).id;
    scanRunId = (await startRun(h, t, p.id)).id;
    const scan = await h.request('POST', '/api/v1/scans', { token: t.token, body: { name: 'nightly', pipeline_id: p.id } });
    assert.equal(scan.status, 201, JSON.stringify(scan.body));
    scanId = scan.body.id;
    await h.pool.query(`UPDATE pipeline_runs SET scan_id = $1 WHERE id = $2`, [scanId, scanRunId]);

    const seeds: Record<string, FindingSeed> = {
      sqli: { asset_id: a1, tool: 'semgrep', rule_id: 'sql-injection', title: 'SQL injection in login', severity: 'critical',
        location: { path: 'src/auth/login.ts' }, first_seen_at: minutesAgo(10), last_seen_at: minutesAgo(1) },
      xss: { asset_id: a1, tool: 'semgrep', rule_id: 'xss', title: 'Reflected XSS', severity: 'high', status: 'in_progress',
        location: { path: 'src/views/search.tsx' }, first_seen_at: minutesAgo(20), last_seen_at: minutesAgo(2) },
      cve: { asset_id: a2, tool: 'trivy', rule_id: 'CVE-2024-0001', title: 'lodash prototype pollution', severity: 'high',
        location: { path: 'package-lock.json' }, first_seen_at: minutesAgo(30), last_seen_at: minutesAgo(30) },
      key: { asset_id: a2, type: 'secret', tool: 'gitleaks', rule_id: 'aws-key', title: 'AWS access key', severity: 'critical',
        status: 'false_positive', location: { path: 'test/fixtures/keys.txt' }, first_seen_at: minutesAgo(40), last_seen_at: minutesAgo(3) },
      old: { asset_id: a1, tool: 'semgrep', rule_id: 'weak-hash', title: 'MD5 used for passwords', severity: 'medium',
        status: 'resolved', resolution: 'auto_fixed', location: { path: 'src/LEGACY/hash_100%.ts' }, first_seen_at: minutesAgo(50),
        last_seen_at: minutesAgo(45) },
      tls: { asset_id: a2, type: 'misconfiguration', tool: 'sslscan', rule_id: null, title: 'TLS 1.0 enabled', severity: 'low',
        status: 'accepted_risk', location: {}, first_seen_at: minutesAgo(60), last_seen_at: minutesAgo(5) },
      leak: { asset_id: null, tool: 'hibp', rule_id: null, title: 'Credential leaked: ops@example.com', severity: 'info',
        status: 'suppressed', location: {}, first_seen_at: minutesAgo(70), last_seen_at: minutesAgo(70) },
    };
    for (const [name, seed] of Object.entries(seeds)) f[name] = await insertFinding(h, t.id, seed);
    // Another tenant's finding, newer and more severe than all: never in t's answers.
    f.foreign = await insertFinding(h, other.id, { title: 'SQL injection elsewhere', severity: 'critical', first_seen_at: minutesAgo(0) });
    await insertSighting(h, f.sqli, { pipeline_run_id: runId, new: true });
    await insertSighting(h, f.cve, { pipeline_run_id: runId });
    await insertSighting(h, f.cve, { pipeline_run_id: scanRunId });
    await insertSighting(h, f.key, { agent_scan_id: agentScanId, new: true });
  });

  const newestFirst = ['sqli', 'xss', 'cve', 'key', 'old', 'tls', 'leak'];

  it('lists every status, newest first by default, in pages that neither repeat nor skip', async () => {
    for (const limit of [1, 2, 3, 7, 50]) {
      assert.deepEqual(ids(await walk(t, '/api/v1/findings', limit)), newestFirst.map((n) => f[n].id), `limit ${limit}`);
    }
    const page = await get(t, '/api/v1/findings?limit=2');
    assert.equal(page.body.items.length, 2);
    assert.equal(typeof page.body.next_cursor, 'string');
  });

  it('answers each finding in the shape of API.md', async () => {
    const [item] = (await get(t, '/api/v1/findings?limit=1')).body.items;
    assert.deepEqual(Object.keys(item).sort(), [
      'asset_id', 'description', 'fingerprint', 'first_run_id', 'first_seen_at', 'id', 'last_run_id', 'last_seen_at',
      'last_step_key', 'location', 'occurrences', 'references', 'resolution', 'resolved_at', 'rule_id', 'severity', 'status',
      'title', 'tool', 'type', 'vulnerability',
    ]);
    assert.equal(item.id, f.sqli.id);
    assert.equal(item.first_seen_at, minutesAgo(10));
    assert.equal(item.last_seen_at, minutesAgo(1));
    assert.deepEqual(item.location, { path: 'src/auth/login.ts' });
    assert.deepEqual(item.references, []);
  });

  it('sorts by severity (highest first, then newest) and by last_seen, each paged through', async () => {
    const bySeverity = ['sqli', 'key', 'xss', 'cve', 'old', 'tls', 'leak'].map((n) => f[n].id);
    const byLastSeen = ['sqli', 'xss', 'key', 'tls', 'cve', 'old', 'leak'].map((n) => f[n].id);
    for (const limit of [1, 2, 3, 50]) {
      assert.deepEqual(ids(await walk(t, '/api/v1/findings?sort=severity', limit)), bySeverity, `severity, limit ${limit}`);
      assert.deepEqual(ids(await walk(t, '/api/v1/findings?sort=last_seen', limit)), byLastSeen, `last_seen, limit ${limit}`);
      assert.deepEqual(ids(await walk(t, '/api/v1/findings?sort=first_seen', limit)), newestFirst.map((n) => f[n].id));
    }
  });

  it('filters by each field, alone and together', async () => {
    const cases: [string, string[]][] = [
      ['status=open', ['sqli', 'cve']],
      ['status=open,in_progress', ['sqli', 'xss', 'cve']],
      ['status=suppressed', ['leak']],
      ['severity=critical', ['sqli', 'key']],
      ['severity=low,info', ['tls', 'leak']],
      ['min_severity=high', ['sqli', 'xss', 'cve', 'key']],
      ['min_severity=info', newestFirst],
      ['type=secret', ['key']],
      ['type=misconfiguration,credential_leak', ['tls', 'leak']],
      ['tool=semgrep', ['sqli', 'xss', 'old']],
      ['tool=nobody', []],
      ['rule_id=CVE-2024-0001', ['cve']],
      [`asset_id=${a1}`, ['sqli', 'xss', 'old']],
      [`pipeline_run_id=${runId}`, ['sqli', 'cve']],
      [`pipeline_run_id=${randomUUID()}`, []],
      [`scan_id=${scanId}`, ['cve']],
      [`scan_id=${agentScanId}`, ['key']],
      ['q=injection', ['sqli']],
      ['q=INJECTION', ['sqli']],
      ['q=src%2Fviews', ['xss']],
      ['q=legacy%2Fhash_100%25', ['old']],
      ['q=hash_1000', []],
      ['q=100%25', ['old']],
      [`first_seen_after=${encodeURIComponent(minutesAgo(30))}`, ['sqli', 'xss']],
      ['first_seen_after=2026-06-02', []],
      ['first_seen_after=2026-05-31', newestFirst],
      [`status=open&asset_id=${a1}`, ['sqli']],
      ['min_severity=high&tool=semgrep&status=open,in_progress', ['sqli', 'xss']],
      [`severity=critical&pipeline_run_id=${runId}`, ['sqli']],
      ['q=key&type=secret&status=false_positive', ['key']],
    ];
    for (const [query, expected] of cases) {
      for (const sort of ['first_seen', 'severity', 'last_seen']) {
        const got = await walk(t, `/api/v1/findings?${query}&sort=${sort}`, 2);
        assert.deepEqual(new Set(ids(got)), new Set(expected.map((n) => f[n].id)), `${query} sort=${sort}`);
        assert.equal(got.length, expected.length, `${query}: no repeats`);
      }
    }
  });

  it('never shows another tenant\'s findings, whatever the filter', async () => {
    const all = ids(await walk(t, '/api/v1/findings', 50));
    assert.ok(!all.includes(f.foreign.id));
    assert.deepEqual(ids(await walk(other, '/api/v1/findings', 50)), [f.foreign.id]);
    assert.deepEqual(ids(await walk(other, `/api/v1/findings?asset_id=${a1}`, 50)), []);
    assert.deepEqual(ids(await walk(other, `/api/v1/findings?pipeline_run_id=${runId}`, 50)), []);
  });

  it('refuses bad filters with a 400 naming the query field', async () => {
    const cases: [string, string][] = [
      ['status=closed', 'status'],
      ['status=open,nope', 'status'],
      ['severity=urgent', 'severity'],
      ['min_severity=5', 'min_severity'],
      ['type=bug', 'type'],
      ['asset_id=42', 'asset_id'],
      ['pipeline_run_id=x', 'pipeline_run_id'],
      ['scan_id=x', 'scan_id'],
      ['q=ab', 'q'],
      ['q=a.b.c', 'q'],
      ['q=abc%0Adef', 'q'],
      ['tool=', 'tool'],
      ['first_seen_after=yesterday', 'first_seen_after'],
      ['first_seen_after=2026-13-45', 'first_seen_after'],
      ['first_seen_after=2026-01-01T10:00:00', 'first_seen_after'],
      ['sort=random', 'sort'],
      ['limit=0', 'limit'],
      ['limit=201', 'limit'],
      ['cursor=bm90IGEgY3Vyc29y', 'cursor'],
      ['cursor=%%%', 'cursor'],
    ];
    for (const [query, field] of cases) {
      const res = await get(t, `/api/v1/findings?${query}`);
      assert.equal(res.status, 400, `${query}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'invalid_request');
      assert.ok(res.body.error.details.some((d: { path: string }) => d.path === field), `${query}: ${JSON.stringify(res.body.error.details)}`);
    }
  });

  it('refuses a cursor made for another sort', async () => {
    const page = await get(t, '/api/v1/findings?sort=severity&limit=1');
    const res = await get(t, `/api/v1/findings?sort=last_seen&cursor=${page.body.next_cursor}`);
    assert.equal(res.status, 400);
    assert.match(res.body.error.details[0].message, /sort=severity/);
  });
});

describe('GET /api/v1/findings/{id}', () => {
  it('answers the finding with its sightings and status changes, newest first, the rest in pages', async () => {
    const { t, a1 } = await tenantWithAssets();
    const p = await createPipeline(h, t, { name: 'History', steps: [step('sast')] });
    const run = await getRun(h, t, (await startRun(h, t, p.id)).id);
    const stepRunId = run.step_runs[0].id;
    const finding = await insertFinding(h, t.id, { asset_id: a1, title: 'Path traversal' });
    const sightings: number[] = [];
    for (let i = 0; i < 25; i++) {
      sightings.push(await insertSighting(h, finding, {
        pipeline_run_id: run.id, step_run_id: stepRunId, new: i === 0, location: { path: 'src/files.ts', start_line: 10 + i },
        seen_at: minutesAgo(100 - i),
      }));
    }
    // Three triage changes make three events.
    for (const status of ['in_progress', 'resolved', 'open']) assert.equal((await patch(t, finding.id, { status })).status, 200);

    const res = await get(t, `/api/v1/findings/${finding.id}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.id, finding.id);
    assert.equal(res.body.title, 'Path traversal');
    assert.equal(res.body.sightings.items.length, 20);
    assert.deepEqual(res.body.sightings.items.map((s: { id: number }) => s.id), sightings.slice(5).reverse());
    const latest = res.body.sightings.items[0];
    assert.deepEqual(
      { run: latest.pipeline_run_id, step: latest.step_key, step_run: latest.step_run_id, loc: latest.location, new: latest.new, at: latest.seen_at },
      { run: run.id, step: 'sast', step_run: stepRunId, loc: { path: 'src/files.ts', start_line: 34 }, new: false, at: minutesAgo(76) },
    );
    assert.equal(typeof latest.ingest_id, 'string');
    assert.equal(typeof res.body.sightings.next_cursor, 'string');
    const rest = await get(t, `/api/v1/findings/${finding.id}/sightings?cursor=${res.body.sightings.next_cursor}`);
    assert.equal(rest.status, 200);
    assert.deepEqual(rest.body.items.map((s: { id: number }) => s.id), sightings.slice(0, 5).reverse());
    assert.equal(rest.body.items[4].new, true);
    assert.equal(rest.body.next_cursor, null);

    assert.deepEqual(res.body.status_changes.items.map((e: any) => [e.event, e.data.from, e.data.to]), [
      ['finding.status_changed', 'resolved', 'open'],
      ['finding.status_changed', 'in_progress', 'resolved'],
      ['finding.status_changed', 'open', 'in_progress'],
    ]);
    assert.equal(res.body.status_changes.next_cursor, null);
    const paged = await walk(t, `/api/v1/findings/${finding.id}/status-changes`, 1);
    assert.deepEqual(paged.map((e) => e.id), res.body.status_changes.items.map((e: { id: number }) => e.id));
    assert.equal((await get(t, `/api/v1/findings/${finding.id}/sightings?cursor=abc`)).status, 400);
  });

  it('is a 404 for an unknown id, another tenant\'s finding, and anything that is not an id', async () => {
    const { t } = await tenantWithAssets();
    const other = await createTenant(h);
    const theirs = await insertFinding(h, other.id);
    for (const path of [`/api/v1/findings/${randomUUID()}`, `/api/v1/findings/${theirs.id}`, '/api/v1/findings/nope',
      `/api/v1/findings/${theirs.id}/sightings`, `/api/v1/findings/${theirs.id}/status-changes`]) {
      const res = await get(t, path);
      assert.equal(res.status, 404, path);
      assert.equal(res.body.error.code, 'not_found');
    }
    assert.equal((await get(other, `/api/v1/findings/${theirs.id}`)).status, 200);
  });
});

describe('PATCH /api/v1/findings/{id}', () => {
  const eventsOf = async (findingId: string) => (await h.pool.query(
    `SELECT type, data, tenant_id FROM events WHERE finding_id = $1 ORDER BY id`, [findingId])).rows;

  it('resolves by hand (resolution manual or the reason, resolved_at set) and reopens (both cleared), each change an event', async () => {
    const { t } = await tenantWithAssets();
    const finding = await insertFinding(h, t.id);
    const resolved = await patch(t, finding.id, { status: 'resolved' });
    assert.equal(resolved.status, 200);
    assert.equal(resolved.body.status, 'resolved');
    assert.equal(resolved.body.resolution, 'manual');
    assert.ok(Math.abs(Date.parse(resolved.body.resolved_at) - Date.now()) < 60_000);

    const reopened = await patch(t, finding.id, { status: 'open', reason: 'still exploitable' });
    assert.deepEqual([reopened.body.status, reopened.body.resolution, reopened.body.resolved_at], ['open', null, null]);

    const fixed = await patch(t, finding.id, { status: 'resolved', reason: 'fixed in #123' });
    assert.equal(fixed.body.resolution, 'fixed in #123');
    const fp = await patch(t, finding.id, { status: 'false_positive', reason: 'test data' });
    assert.deepEqual([fp.body.status, fp.body.resolution, fp.body.resolved_at], ['false_positive', 'test data', null]);

    const events = await eventsOf(finding.id);
    assert.deepEqual(events.map((e) => [e.type, e.data.from, e.data.to, e.data.reason, e.data.resolution]), [
      ['finding.status_changed', 'open', 'resolved', null, 'manual'],
      ['finding.status_changed', 'resolved', 'open', 'still exploitable', null],
      ['finding.status_changed', 'open', 'resolved', 'fixed in #123', 'fixed in #123'],
      ['finding.status_changed', 'resolved', 'false_positive', 'test data', 'test data'],
    ]);
    assert.equal(events[0].tenant_id, t.id);
    // Who: the tenant token that asked.
    const { rows: [token] } = await h.pool.query(`SELECT id, name, token_prefix FROM api_tokens WHERE tenant_id = $1`, [t.id]);
    assert.deepEqual(events[0].data.by, { type: 'tenant_token', token_id: token.id, token_name: token.name, token_prefix: token.token_prefix });
    assert.ok(t.token.startsWith(token.token_prefix));
    // Stored as answered.
    const stored = (await get(t, `/api/v1/findings/${finding.id}`)).body;
    assert.deepEqual([stored.status, stored.resolution], ['false_positive', 'test data']);
  });

  it('writes nothing when the status does not change', async () => {
    const { t } = await tenantWithAssets();
    const finding = await insertFinding(h, t.id, { status: 'accepted_risk', resolution: 'compensating control' });
    const res = await patch(t, finding.id, { status: 'accepted_risk', reason: 'another reason' });
    assert.equal(res.status, 200);
    assert.equal(res.body.resolution, 'compensating control');
    assert.deepEqual(await eventsOf(finding.id), []);
    const { rows: [row] } = await h.pool.query(`SELECT updated_at FROM findings WHERE id = $1`, [finding.id]);
    assert.equal(row.updated_at.getTime(), finding.updated_at.getTime());
  });

  it('accepts every status and refuses anything else with a 400 naming the field', async () => {
    const { t } = await tenantWithAssets();
    const finding = await insertFinding(h, t.id);
    for (const status of ['in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed', 'open']) {
      const res = await patch(t, finding.id, { status });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.status, status);
    }
    assert.equal((await eventsOf(finding.id)).length, 6);
    for (const [body, field] of [[{ status: 'fixed' }, 'status'], [{}, 'status'], [{ status: 'resolved', reason: 7 }, 'reason'],
      [{ status: 'resolved', reason: 'x'.repeat(1001) }, 'reason'], [{ status: 'resolved', reason: '  ' }, 'reason']] as const) {
      const res = await patch(t, finding.id, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.ok(res.body.error.details.some((d: { path: string }) => d.path === field), JSON.stringify(res.body));
    }
    assert.equal((await eventsOf(finding.id)).length, 6);
  });

  it('is a 404 for another tenant\'s finding, which stays as it was', async () => {
    const { t } = await tenantWithAssets();
    const other = await createTenant(h);
    const theirs = await insertFinding(h, other.id);
    for (const id of [theirs.id, randomUUID(), 'nope']) assert.equal((await patch(t, id, { status: 'resolved' })).status, 404);
    assert.equal((await get(other, `/api/v1/findings/${theirs.id}`)).body.status, 'open');
    assert.deepEqual(await eventsOf(theirs.id), []);
  });

  it('keeps concurrent triage sane: every event moves from the status the one before left', async () => {
    const { t } = await tenantWithAssets();
    const finding = await insertFinding(h, t.id);
    const wanted = ['resolved', 'false_positive', 'in_progress', 'resolved', 'open', 'suppressed', 'accepted_risk', 'resolved'];
    const answers = await Promise.all([...wanted, ...wanted].map((status) => patch(t, finding.id, { status })));
    for (const res of answers) assert.equal(res.status, 200, JSON.stringify(res.body));
    const events = await eventsOf(finding.id);
    let status = 'open';
    for (const e of events) {
      assert.equal(e.data.from, status, JSON.stringify(events.map((x) => x.data)));
      assert.notEqual(e.data.to, e.data.from);
      status = e.data.to;
    }
    assert.ok(events.length >= 1);
    assert.equal((await get(t, `/api/v1/findings/${finding.id}`)).body.status, status);
  });
});

describe('GET /api/v1/findings/summary', () => {
  it('counts by severity, by status and crossed, and per asset, tool or rule, with the list\'s filters', async () => {
    const { t, a1, a2 } = await tenantWithAssets();
    const other = await createTenant(h);
    await insertFinding(h, other.id, { severity: 'critical' });
    const seeds: FindingSeed[] = [
      { asset_id: a1, tool: 'semgrep', rule_id: 'r1', severity: 'critical' },
      { asset_id: a1, tool: 'semgrep', rule_id: 'r1', severity: 'critical', status: 'resolved' },
      { asset_id: a1, tool: 'semgrep', rule_id: 'r2', severity: 'low' },
      { asset_id: a2, tool: 'trivy', rule_id: 'CVE-1', severity: 'high' },
      { asset_id: a2, tool: 'trivy', rule_id: 'CVE-1', severity: 'high', status: 'false_positive' },
      { asset_id: a2, tool: 'trivy', rule_id: 'CVE-2', severity: 'high' },
      { asset_id: a2, tool: 'trivy', rule_id: null, severity: 'info', status: 'suppressed' },
    ];
    for (const s of seeds) await insertFinding(h, t.id, s);

    const res = await get(t, '/api/v1/findings/summary');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.total, 7);
    assert.deepEqual(res.body.by_severity, { critical: 2, high: 3, medium: 0, low: 1, info: 1 });
    assert.deepEqual(res.body.by_status, { open: 4, in_progress: 0, resolved: 1, false_positive: 1, accepted_risk: 0, suppressed: 1 });
    assert.deepEqual(res.body.by_severity_and_status.critical, { open: 1, in_progress: 0, resolved: 1, false_positive: 0, accepted_risk: 0, suppressed: 0 });
    assert.deepEqual(res.body.by_severity_and_status.high, { open: 2, in_progress: 0, resolved: 0, false_positive: 1, accepted_risk: 0, suppressed: 0 });
    assert.equal(res.body.groups, undefined);

    const open = (await get(t, '/api/v1/findings/summary?status=open,in_progress')).body;
    assert.deepEqual([open.total, open.by_severity], [4, { critical: 1, high: 2, medium: 0, low: 1, info: 0 }]);

    const byAsset = (await get(t, '/api/v1/findings/summary?group_by=asset')).body;
    assert.equal(byAsset.group_by, 'asset');
    // a1 first: it has the critical findings.
    assert.deepEqual(byAsset.groups.map((g: any) => [g.asset_id, g.asset_name, g.total, g.by_severity.critical, g.by_status.open]),
      [[a1, 'api', 3, 2, 2], [a2, 'web', 4, 0, 2]]);
    assert.equal(byAsset.total, 7);

    const byTool = (await get(t, '/api/v1/findings/summary?group_by=tool&status=open')).body;
    assert.deepEqual(byTool.groups.map((g: any) => [g.tool, g.total, g.by_severity]), [
      ['semgrep', 2, { critical: 1, high: 0, medium: 0, low: 1, info: 0 }],
      ['trivy', 2, { critical: 0, high: 2, medium: 0, low: 0, info: 0 }],
    ]);
    const byRule = (await get(t, '/api/v1/findings/summary?group_by=rule&limit=3')).body;
    assert.deepEqual(byRule.groups.map((g: any) => [g.tool, g.rule_id, g.total]), [['semgrep', 'r1', 2], ['trivy', 'CVE-1', 2], ['trivy', 'CVE-2', 1]]);

    for (const [query, field] of [['group_by=team', 'group_by'], ['group_by=asset&limit=0', 'limit'], ['severity=bad', 'severity']]) {
      const bad = await get(t, `/api/v1/findings/summary?${query}`);
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.details[0].path, field);
    }
    const empty = (await get(await createTenant(h), '/api/v1/findings/summary?group_by=tool')).body;
    assert.deepEqual([empty.total, empty.by_status.open, empty.groups], [0, 0, []]);
  });
});

describe('GET /api/v1/pipeline-runs/{id}/findings', () => {
  it('lists what the run saw once each, new when the run first saw it, highest severity first, in pages', async () => {
    const { t, a1 } = await tenantWithAssets();
    const p = await createPipeline(h, t, { name: 'Seen', steps: [step('a'), step('b')] });
    const run = await startRun(h, t, p.id);
    const earlier = await startRun(h, t, p.id);
    const known = await insertFinding(h, t.id, { asset_id: a1, severity: 'high', first_seen_at: minutesAgo(100) });
    const fresh = await insertFinding(h, t.id, { asset_id: a1, severity: 'critical', first_seen_at: minutesAgo(1) });
    const fresh2 = await insertFinding(h, t.id, { asset_id: a1, severity: 'high', first_seen_at: minutesAgo(2) });
    const elsewhere = await insertFinding(h, t.id, { asset_id: a1, severity: 'critical' });
    await insertSighting(h, known, { pipeline_run_id: earlier.id, new: true });
    await insertSighting(h, known, { pipeline_run_id: run.id });
    await insertSighting(h, fresh, { pipeline_run_id: run.id, new: true });
    await insertSighting(h, fresh, { pipeline_run_id: run.id }); // seen by both steps
    await insertSighting(h, fresh2, { pipeline_run_id: run.id, new: true });
    await insertSighting(h, elsewhere, { pipeline_run_id: earlier.id, new: true });

    for (const limit of [1, 2, 50]) {
      const items = await walk(t, `/api/v1/pipeline-runs/${run.id}/findings`, limit);
      assert.deepEqual(items.map((i) => [i.id, i.new]), [[fresh.id, true], [fresh2.id, true], [known.id, false]], `limit ${limit}`);
    }
    const [item] = (await get(t, `/api/v1/pipeline-runs/${run.id}/findings`)).body.items;
    assert.equal(item.severity, 'critical');
    assert.equal(item.status, 'open');
    assert.deepEqual(ids(await walk(t, `/api/v1/pipeline-runs/${earlier.id}/findings`, 10)), [elsewhere.id, known.id]);

    const other = await createTenant(h);
    assert.equal((await get(other, `/api/v1/pipeline-runs/${run.id}/findings`)).status, 404);
    assert.equal((await get(t, `/api/v1/pipeline-runs/${randomUUID()}/findings`)).status, 404);
    assert.equal((await get(t, `/api/v1/pipeline-runs/${run.id}/findings?cursor=zzz`)).status, 400);
  });
});
