// The dashboard's pages as HTML, without a browser (these run where Chromium is missing too):
// every page renders from the API with the session cookie; names are escaped wherever they
// show; other tenants' ids are not found; the sign-in without a session; the admin's picker;
// ?part=live answers the live regions only; the headers that keep injected markup inert; the
// static files and nothing else; the DAG's layout.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, startRun, step, type Tenant } from './support/fixtures.ts';
import { insertFinding } from './support/findings.ts';
import { layoutOf } from '../src/dashboard/dag.ts';

const EVIL = '<script>alert(1)</script>';
const ORIGIN = 'http://localhost';

let h: Harness;
let a: Tenant;
let b: Tenant;
let runA: string;
let runB: string;
let cookieA: string;

async function sessionCookie(token: string): Promise<string> {
  const res = await h.request('POST', '/api/v1/session', { body: { token }, headers: { origin: ORIGIN } });
  assert.equal(res.status, 204, JSON.stringify(res.body));
  return /^(scanflow_session=[^;]+)/.exec(res.headers.get('set-cookie') ?? '')![1];
}

async function pageOf(path: string, cookie: string | null = cookieA) {
  const res = await h.app.request(path, { headers: cookie ? { cookie } : {} });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The page holds `text` only escaped: never as markup. */
function escapedOnly(html: string, text: string): void {
  assert.ok(!html.includes(text), `raw ${text} in the page`);
  assert.ok(html.includes(text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')), `${text} shown escaped`);
}

before(async () => {
  h = await startHarness({ worker: false });
  a = await createTenant(h, `A ${EVIL}`);
  b = await createTenant(h, 'Tenant B');
  const asset = await createAsset(h, a, { type: 'repository', name: `repo ${EVIL}` });
  const pipeline = await createPipeline(h, a, {
    name: `pipe ${EVIL}`,
    steps: [step('one', { name: `step ${EVIL}` }), step('two', { depends_on: ['one'] })],
  });
  runA = (await startRun(h, a, pipeline.id, { asset_id: asset.id, triggered_by: `who ${EVIL}` })).id;
  await TestAgent.create(h, a, { name: `agent ${EVIL}`, tools: [`tool ${EVIL}`] });
  await insertFinding(h, a.id, { title: `finding ${EVIL}`, asset_id: asset.id, tool: `tool ${EVIL}`, last_run_id: runA, last_step_key: 'one' });
  const scan = await h.request('POST', '/api/v1/scans', {
    token: a.token, body: { name: `scan ${EVIL}`, pipeline_id: pipeline.id, targets: { asset_id: asset.id }, schedule_type: 'daily', timezone: 'Asia/Tokyo' },
  });
  assert.equal(scan.status, 201, JSON.stringify(scan.body));
  const pb = await createPipeline(h, b, { name: 'B pipeline', steps: [step('x')] });
  runB = (await startRun(h, b, pb.id)).id;
  cookieA = await sessionCookie(a.token);
});
after(() => h.close());

describe('the pages, signed in', () => {
  it('every page renders and escapes what tenants name (pipelines, steps, assets, agents, tools, findings, scans, tenants, triggers)', async () => {
    for (const path of ['/', `/runs/${runA}`, '/agents', '/scans', '/findings']) {
      const page = await pageOf(path);
      assert.equal(page.status, 200, `${path}: ${page.text.slice(0, 300)}`);
      assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
      escapedOnly(page.text, EVIL);
      assert.match(page.text, /<meta name="csrf-token" content="[A-Za-z0-9_-]{43}">/);
      assert.match(page.text, /data-stream="/, `${path} follows the event stream`);
    }
    const run = await pageOf(`/runs/${runA}`);
    assert.match(run.text, /id="node-one"[^>]*data-state="(pending|queued)"/);
    assert.match(run.text, /step &lt;script&gt;/);
  });

  it('keeps injected markup inert: a CSP with no inline script or style, no framing', async () => {
    const page = await pageOf('/');
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(page.text, /<script>(?!alert)|style="/, 'no inline script or style attribute of ours');
    assert.equal(page.headers.get('cache-control'), 'no-store');
  });

  it('?part=live answers the live regions alone, each with its version', async () => {
    const live = await pageOf(`/runs/${runA}?part=live`);
    assert.equal(live.status, 200);
    assert.doesNotMatch(live.text, /<header|<nav/);
    const ids = [...live.text.matchAll(/<\w+ id="([\w-]+)" data-live-region data-v="([\w-]+)"/g)].map((m) => m[1]);
    assert.deepEqual(ids, ['run-summary', 'run-dag', 'step-detail', 'run-waterfall', 'run-findings']);
    const runs = await pageOf('/?part=live');
    assert.match(runs.text, /id="runs-table" data-live-region/);
    // The same state, the same version: a page that already has it changes nothing. (The
    // timeline's scale of a run in progress runs up to now, so it may differ by a second
    // between two reads; its version then differs with it.)
    const regions = (text: string) => new Map([...text.matchAll(/<\w+ id="([\w-]+)" data-live-region data-v="([\w-]+)"([\s\S]*?)(?=<\w+ id="[\w-]+" data-live-region|$)/g)]
      .map((m) => [m[1], { v: m[2], body: m[3] }]));
    const before = regions(live.text);
    const again = regions((await pageOf(`/runs/${runA}?part=live`)).text);
    assert.deepEqual([...again.keys()], ids);
    for (const id of ids) {
      const [a, b] = [before.get(id)!, again.get(id)!];
      if (id !== 'run-waterfall') assert.equal(b.body, a.body, id);
      assert.equal(b.v === a.v, b.body === a.body, `${id}: the version changes exactly when the region does`);
    }
  });

  it('another tenant\'s run is not found; nor is an id that is no id', async () => {
    for (const path of [`/runs/${runB}`, '/runs/not-a-uuid', '/runs/00000000-0000-4000-8000-000000000000']) {
      const page = await pageOf(path);
      assert.equal(page.status, 404, path);
      assert.match(page.text, /Not found/);
      assert.doesNotMatch(page.text, /B pipeline/);
    }
    const list = await pageOf('/');
    assert.ok(list.text.includes(runA) && !list.text.includes(runB));
  });

  it('filters it cannot use are dropped, not passed on; a bad cursor says so', async () => {
    const page = await pageOf('/?status=nonsense&pipeline_id=1%27%20OR%201=1&asset_id=x');
    assert.equal(page.status, 200);
    assert.ok(page.text.includes(runA));
    const cursor = await pageOf('/?cursor=bm90LWEtY3Vyc29y');
    assert.equal(cursor.status, 200);
    assert.match(cursor.text, /not a cursor returned by this API/);
    const findings = await pageOf('/findings?q=ab');
    assert.equal(findings.status, 200);
    assert.match(findings.text, /3 letters or digits/);
  });

  it('shows a scan\'s next fire in its own time zone, and its last fires with what they skipped and why', async () => {
    const page = await pageOf('/scans');
    assert.match(page.text, /<time class="in-zone" datetime="[^"]+">[^<]*GMT\+9<\/time>/);
    const pipeline = await createPipeline(h, a, { name: 'fired', steps: [step('one')] });
    const kept = await createAsset(h, a, { type: 'domain', name: 'kept.example' });
    const gone = await createAsset(h, a, { type: 'domain', name: 'gone.example' });
    const scan = await h.request('POST', '/api/v1/scans', {
      token: a.token, body: { name: 'fires', pipeline_id: pipeline.id, targets: { asset_ids: [kept.id, gone.id] }, schedule_type: 'manual' },
    });
    assert.equal(scan.status, 201, JSON.stringify(scan.body));
    assert.equal((await h.request('DELETE', `/api/v1/assets/${gone.id}`, { token: a.token })).status, 204);
    const fired = await h.request('POST', `/api/v1/scans/${scan.body.id}/trigger`, { token: a.token, body: {} });
    assert.equal(fired.status, 201, JSON.stringify(fired.body));
    const after = await pageOf('/scans');
    const row = after.text.slice(after.text.indexOf(`data-scan-id="${scan.body.id}"`));
    assert.match(row, /1 run<\/a>, <span class="warn">1 skipped<\/span>/);
    assert.match(row, new RegExp(`${gone.id.slice(0, 8)}: the asset does not exist`));
  });
});

describe('without a session, and the admin', () => {
  it('every page is the sign-in form (200), with no data, and the token field is a password field', async () => {
    for (const path of ['/', `/runs/${runA}`, '/agents', '/scans', '/findings']) {
      const page = await pageOf(path, null);
      assert.equal(page.status, 200);
      assert.match(page.text, /data-api-path="\/api\/v1\/session"/);
      assert.match(page.text, /<input id="token" name="token" type="password"/);
      assert.doesNotMatch(page.text, /csrf-token|pipe &lt;/);
    }
    const live = await pageOf(`/runs/${runA}?part=live`, null);
    assert.equal(live.status, 401, 'a live refresh of an ended session asks the page to reload');
    const ended = await pageOf('/', 'scanflow_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    assert.match(ended.text, /Sign in/);
  });

  it('the admin is sent to the tenant picker, which lists tenants escaped; then sees the tenant chosen', async () => {
    const admin = await sessionCookie(ADMIN_TOKEN);
    const home = await pageOf('/', admin);
    assert.equal(home.status, 303);
    assert.equal(home.headers.get('location'), '/tenants');
    const picker = await pageOf('/tenants', admin);
    assert.equal(picker.status, 200);
    escapedOnly(picker.text, EVIL);
    assert.match(picker.text, /Tenant B/);
    const me = await h.request('GET', '/api/v1/session', { headers: { cookie: admin } });
    const chosen = await h.request('POST', '/api/v1/session/tenant', {
      body: { tenant_id: b.id }, headers: { cookie: admin, origin: ORIGIN, 'x-csrf-token': me.body.csrf_token },
    });
    assert.equal(chosen.status, 204);
    const inB = /^(scanflow_session=[^;]+)/.exec(chosen.headers.get('set-cookie') ?? '')![1];
    const page = await pageOf('/', inB);
    assert.ok(page.text.includes(runB) && !page.text.includes(runA));
    assert.match(page.text, /class="badge"[^>]*>admin</);
    // A tenant session has no picker.
    assert.equal((await pageOf('/tenants')).status, 303);
  });
});

describe('the static files', () => {
  it('serves the script modules, stylesheet and icon, and nothing else', async () => {
    for (const [file, type] of [['app.js', 'text/javascript'], ['live.js', 'text/javascript'], ['style.css', 'text/css'], ['favicon.svg', 'image/svg+xml']]) {
      const res = await h.app.request(`/ui/${file}`);
      assert.equal(res.status, 200, file);
      assert.ok((res.headers.get('content-type') ?? '').startsWith(type), file);
    }
    for (const file of ['../routes.ts', '..%2Froutes.ts', 'routes.ts', 'app.js.map', '']) {
      assert.equal((await h.app.request(`/ui/${file}`)).status, 404, file);
    }
  });
});

describe('the DAG layout', () => {
  it('ranks steps left to right by dependency and keeps a layout per shape', () => {
    const steps = [
      { step_key: 'a', depends_on: [] }, { step_key: 'b', depends_on: ['a'] }, { step_key: 'c', depends_on: ['a'] },
      { step_key: 'd', depends_on: ['b', 'c'] }, { step_key: 'e', depends_on: ['gone'] },
    ];
    const l = layoutOf(steps);
    const x = (k: string) => l.nodes.get(k)!.x;
    assert.ok(x('a') < x('b') && x('b') < x('d') && x('c') < x('d'));
    assert.equal(x('b'), x('c'), 'siblings share a rank');
    assert.equal(l.edges.length, 4, 'an unknown dependency draws no edge');
    assert.equal(layoutOf(steps.map((s) => ({ ...s }))), l, 'the same shape, the same layout');
  });
});
