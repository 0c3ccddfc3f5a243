// The management API of API.md through the real app: tenants and tokens, assets, agents,
// pipelines (versions, clone, step sub-resources, run), runs, commands and health checks.
// Every field API.md lists for runs, step runs and commands is checked for presence.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import {
  FULL_SECURITY_SCAN, TestAgent, createAsset, createPipeline, createTenant, getRun, startRun, step, type Tenant,
} from './support/fixtures.ts';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RFC3339_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

// API.md "Runs": the fields of a run and of a step run.
const RUN_FIELDS = [
  'id', 'pipeline_id', 'pipeline_version', 'tenant_id', 'asset_id', 'scan_id', 'trigger_type', 'triggered_by', 'status',
  'context', 'total_steps', 'completed_steps', 'failed_steps', 'skipped_steps', 'total_findings', 'started_at',
  'completed_at', 'error_message',
];
const STEP_RUN_FIELDS = [
  'step_key', 'name', 'status', 'attempt', 'max_attempts', 'agent_id', 'command_id', 'condition_result', 'skip_reason',
  'findings_count', 'output', 'error_code', 'error_message', 'queued_at', 'started_at', 'completed_at',
];
// API.md "Agent API": a command and its payload.
const COMMAND_FIELDS = ['id', 'type', 'priority', 'created_at', 'expires_at', 'payload'];
const PAYLOAD_FIELDS = [
  'pipeline_run_id', 'step_run_id', 'step_key', 'step_name', 'tool', 'capabilities', 'step_config', 'timeout_seconds',
  'attempt', 'target', 'context', 'steps',
];

function assertFields(obj: Record<string, unknown>, fields: string[], what: string): void {
  const missing = fields.filter((f) => !Object.hasOwn(obj, f));
  assert.deepEqual(missing, [], `${what} lacks ${missing.join(', ')}: ${JSON.stringify(obj)}`);
}

/** Every item of a list endpoint, following next_cursor with the given page size. */
async function listAll(h: Harness, t: Tenant, path: string, limit: number): Promise<{ pages: number; items: Record<string, any>[] }> {
  const items: Record<string, any>[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const url: string = `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const res = await h.request('GET', url, { token: t.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(Array.isArray(res.body.items));
    assert.ok(res.body.items.length <= limit, `page of ${res.body.items.length} > limit ${limit}`);
    assert.ok(Object.hasOwn(res.body, 'next_cursor'));
    items.push(...res.body.items);
    cursor = res.body.next_cursor;
    pages++;
    assert.ok(pages < 50, 'pagination does not end');
  } while (cursor);
  return { pages, items };
}

const ids = (items: Record<string, any>[]): string[] => items.map((i) => i.id as string);

let h: Harness;
before(async () => {
  h = await startHarness();
});
after(() => h.close());

describe('tenants and tokens (admin)', () => {
  it('POST /tenants creates a tenant with modules ["scans"] by default and returns its token once', async () => {
    const res = await h.request('POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name: 'Acme' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.match(res.body.tenant.id, UUID_RE);
    assert.equal(res.body.tenant.name, 'Acme');
    assert.deepEqual(res.body.tenant.modules, ['scans']);
    assert.equal(typeof res.body.token, 'string');
    assert.ok(res.body.token.length >= 32);
    // The token works for the tenant's management API.
    const assets = await h.request('GET', '/api/v1/assets', { token: res.body.token });
    assert.equal(assets.status, 200, JSON.stringify(assets.body));
    // Only the hash is stored.
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE t::text LIKE '%' || $2 || '%')::int AS plain
      FROM api_tokens t WHERE tenant_id = $1`, [res.body.tenant.id, res.body.token]);
    assert.deepEqual(rows[0], { n: 1, plain: 0 });
  });

  it('POST /tenants keeps the modules it is given', async () => {
    const res = await h.request('POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name: 'Modular', modules: ['scans', 'dast'] } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.deepEqual([...res.body.tenant.modules].sort(), ['dast', 'scans']);
  });

  it('POST /tenants/{id}/tokens makes a second token that works; the first one keeps working', async () => {
    const t = await createTenant(h);
    const res = await h.request('POST', `/api/v1/tenants/${t.id}/tokens`, { token: ADMIN_TOKEN, body: { name: 'ci' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(typeof res.body.token, 'string');
    assert.notEqual(res.body.token, t.token);
    const created = await h.request('POST', '/api/v1/assets', { token: res.body.token, body: { type: 'domain', name: 'example.com' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.tenant_id, t.id);
    const viaOld = await h.request('GET', `/api/v1/assets/${created.body.id}`, { token: t.token });
    assert.equal(viaOld.status, 200);
    // A bodiless POST works too (the name is optional).
    const bare = await h.request('POST', `/api/v1/tenants/${t.id}/tokens`, { token: ADMIN_TOKEN });
    assert.equal(bare.status, 201, JSON.stringify(bare.body));
    // X-API-Key is accepted as well as Bearer.
    const viaHeader = await h.request('GET', '/api/v1/assets', { apiKey: bare.body.token });
    assert.equal(viaHeader.status, 200, JSON.stringify(viaHeader.body));
  });

  it('POST /tenants/{id}/tokens on an unknown tenant is a 404', async () => {
    const res = await h.request('POST', `/api/v1/tenants/00000000-0000-4000-8000-000000000000/tokens`, { token: ADMIN_TOKEN, body: {} });
    assert.equal(res.status, 404, JSON.stringify(res.body));
  });

  it('a tenant token on the tenant endpoints is a 403; a bad or missing token is a 401', async () => {
    const t = await createTenant(h);
    const before = (await h.pool.query(`SELECT count(*)::int AS n FROM tenants`)).rows[0].n;
    const forbidden = await h.request('POST', '/api/v1/tenants', { token: t.token, body: { name: 'sneaky' } });
    assert.equal(forbidden.status, 403, JSON.stringify(forbidden.body));
    assert.equal(forbidden.body.error.code, 'forbidden');
    const forbiddenToken = await h.request('POST', `/api/v1/tenants/${t.id}/tokens`, { token: t.token, body: {} });
    assert.equal(forbiddenToken.status, 403, JSON.stringify(forbiddenToken.body));
    const bad = await h.request('POST', '/api/v1/tenants', { token: 'not-the-admin-token', body: { name: 'x' } });
    assert.equal(bad.status, 401, JSON.stringify(bad.body));
    const none = await h.request('POST', '/api/v1/tenants', { body: { name: 'x' } });
    assert.equal(none.status, 401, JSON.stringify(none.body));
    const badTenant = await h.request('GET', '/api/v1/assets', { token: 'sft_nope' });
    assert.equal(badTenant.status, 401);
    assert.equal((await h.pool.query(`SELECT count(*)::int AS n FROM tenants`)).rows[0].n, before);
  });

  it('credentials in the query string are refused', async () => {
    const t = await createTenant(h);
    const res = await h.request('GET', `/api/v1/assets?token=${encodeURIComponent(t.token)}`);
    assert.equal(res.status, 401, JSON.stringify(res.body));
    const res2 = await h.request('GET', `/api/v1/assets?api_key=${encodeURIComponent(t.token)}`, { token: t.token });
    assert.equal(res2.status, 401, JSON.stringify(res2.body));
  });
});

describe('assets', () => {
  let t: Tenant;
  before(async () => {
    t = await createTenant(h);
  });

  it('POST → 201 with the asset and its defaults; GET returns it', async () => {
    const res = await h.request('POST', '/api/v1/assets', {
      token: t.token, body: { type: 'web_application', name: 'shop', value: 'https://shop.example.com', tags: ['prod'], metadata: { owner: 'team-a' } },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const a = res.body;
    assert.match(a.id, UUID_RE);
    assert.equal(a.tenant_id, t.id);
    assert.deepEqual([a.type, a.name, a.value, a.tags, a.metadata], ['web_application', 'shop', 'https://shop.example.com', ['prod'], { owner: 'team-a' }]);
    assert.equal(a.criticality, 'medium');
    assert.match(a.created_at, RFC3339_UTC);
    const got = await h.request('GET', `/api/v1/assets/${a.id}`, { token: t.token });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, a);
  });

  it('list pages through more than `limit` assets with no duplicates or gaps', async () => {
    const own = await createTenant(h);
    const created: string[] = [];
    for (let i = 0; i < 7; i++) created.push((await createAsset(h, own, { type: 'domain', name: `d${i}.example.com` })).id);
    const { pages, items } = await listAll(h, own, '/api/v1/assets', 3);
    assert.equal(pages, 3);
    assert.equal(items.length, 7);
    assert.equal(new Set(ids(items)).size, 7, 'duplicates across pages');
    assert.deepEqual([...ids(items)].sort(), [...created].sort());
    // One page with room for all has next_cursor null.
    const all = await h.request('GET', '/api/v1/assets?limit=50', { token: own.token });
    assert.equal(all.body.items.length, 7);
    assert.equal(all.body.next_cursor, null);
  });

  it('list filters by type (and tag)', async () => {
    const own = await createTenant(h);
    const server = await createAsset(h, own, { type: 'server', name: 'db-1', tags: ['prod'] });
    await createAsset(h, own, { type: 'repository', name: 'repo', tags: ['prod'] });
    await createAsset(h, own, { type: 'server', name: 'db-2', tags: ['dev'] });
    const servers = await h.request('GET', '/api/v1/assets?type=server', { token: own.token });
    assert.equal(servers.status, 200);
    assert.deepEqual(servers.body.items.map((a: any) => a.type), ['server', 'server']);
    const prodServers = await h.request('GET', '/api/v1/assets?type=server&tag=prod', { token: own.token });
    assert.deepEqual(ids(prodServers.body.items), [server.id]);
  });

  it('PUT merges: fields left out keep their values', async () => {
    const a = await createAsset(h, t, { type: 'server', name: 'web-1', value: '10.0.0.1', tags: ['a'], criticality: 'high', metadata: { rack: 4 } });
    const res = await h.request('PUT', `/api/v1/assets/${a.id}`, { token: t.token, body: { tags: ['a', 'b'], metadata: { rack: 5 } } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      [res.body.type, res.body.name, res.body.value, res.body.tags, res.body.criticality, res.body.metadata],
      ['server', 'web-1', '10.0.0.1', ['a', 'b'], 'high', { rack: 5 }],
    );
    const got = await h.request('GET', `/api/v1/assets/${a.id}`, { token: t.token });
    assert.deepEqual(got.body.tags, ['a', 'b']);
    assert.equal(got.body.name, 'web-1');
    const renamed = await h.request('PUT', `/api/v1/assets/${a.id}`, { token: t.token, body: { name: 'web-01' } });
    assert.deepEqual([renamed.body.name, renamed.body.tags], ['web-01', ['a', 'b']]);
  });

  it('DELETE → 204, then GET, PUT and DELETE are 404', async () => {
    const a = await createAsset(h, t, { type: 'domain', name: 'gone.example.com' });
    const del = await h.request('DELETE', `/api/v1/assets/${a.id}`, { token: t.token });
    assert.equal(del.status, 204);
    assert.equal((await h.request('GET', `/api/v1/assets/${a.id}`, { token: t.token })).status, 404);
    assert.equal((await h.request('PUT', `/api/v1/assets/${a.id}`, { token: t.token, body: { name: 'x' } })).status, 404);
    assert.equal((await h.request('DELETE', `/api/v1/assets/${a.id}`, { token: t.token })).status, 404);
    const list = await h.request('GET', '/api/v1/assets?limit=200', { token: t.token });
    assert.ok(!ids(list.body.items).includes(a.id));
  });
});

describe('agents', () => {
  let t: Tenant;
  before(async () => {
    t = await createTenant(h);
  });

  it('POST → 201 {agent, api_key}; the key never appears again in GET or list', async () => {
    const res = await h.request('POST', '/api/v1/agents', {
      token: t.token, body: { name: 'runner-1', tools: ['semgrep', 'trivy'], capabilities: ['sast'], max_concurrent_jobs: 3, labels: { zone: 'eu' } },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const { agent, api_key } = res.body;
    assert.equal(typeof api_key, 'string');
    assert.ok(api_key.length >= 32);
    assert.match(agent.id, UUID_RE);
    assert.equal(agent.tenant_id, t.id);
    assert.deepEqual(
      [agent.name, agent.tools, agent.capabilities, agent.max_concurrent_jobs, agent.labels, agent.status],
      ['runner-1', ['semgrep', 'trivy'], ['sast'], 3, { zone: 'eu' }, 'active'],
    );
    assert.ok(!JSON.stringify(agent).includes(api_key));
    const got = await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token });
    assert.equal(got.status, 200);
    assert.equal(got.body.id, agent.id);
    assert.ok(!JSON.stringify(got.body).includes(api_key), 'GET shows the api key');
    const list = await h.request('GET', '/api/v1/agents', { token: t.token });
    assert.ok(ids(list.body.items).includes(agent.id));
    assert.ok(!JSON.stringify(list.body).includes(api_key), 'list shows the api key');
    // The key works on the agent API.
    const hb = await h.request('POST', '/api/v1/agent/heartbeat', { apiKey: api_key, body: {} });
    assert.equal(hb.status, 200, JSON.stringify(hb.body));
    assert.equal(hb.body.agent_id, agent.id);
    assert.equal(hb.body.tenant_id, t.id);
  });

  it('max_concurrent_jobs defaults to a positive number', async () => {
    const res = await h.request('POST', '/api/v1/agents', { token: t.token, body: { name: 'defaults', tools: ['x'], capabilities: [] } });
    assert.equal(res.status, 201);
    assert.ok(Number.isInteger(res.body.agent.max_concurrent_jobs) && res.body.agent.max_concurrent_jobs >= 1);
  });

  it('PUT merges: fields left out keep their values', async () => {
    const a = await TestAgent.create(h, t, { tools: ['nmap'], capabilities: ['infra'], max_concurrent_jobs: 2 });
    const res = await h.request('PUT', `/api/v1/agents/${a.id}`, { token: t.token, body: { max_concurrent_jobs: 8, labels: { gpu: true } } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual([res.body.tools, res.body.capabilities, res.body.max_concurrent_jobs, res.body.labels], [['nmap'], ['infra'], 8, { gpu: true }]);
    const renamed = await h.request('PUT', `/api/v1/agents/${a.id}`, { token: t.token, body: { name: 'renamed' } });
    assert.deepEqual([renamed.body.name, renamed.body.max_concurrent_jobs, renamed.body.tools], ['renamed', 8, ['nmap']]);
  });

  it('deactivate → disabled (the key gets 403); activate → active again', async () => {
    const a = await TestAgent.create(h, t, { tools: ['x'] });
    const off = await h.request('POST', `/api/v1/agents/${a.id}/deactivate`, { token: t.token });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    assert.equal(off.body.status, 'disabled');
    assert.equal((await a.heartbeat()).status, 403);
    const on = await h.request('POST', `/api/v1/agents/${a.id}/activate`, { token: t.token });
    assert.equal(on.status, 200, JSON.stringify(on.body));
    assert.equal(on.body.status, 'active');
    assert.equal((await a.heartbeat()).status, 200);
  });

  it('regenerate-key: a new key that works; the old one stops working', async () => {
    const a = await TestAgent.create(h, t, { tools: ['x'] });
    const res = await h.request('POST', `/api/v1/agents/${a.id}/regenerate-key`, { token: t.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(typeof res.body.api_key, 'string');
    assert.notEqual(res.body.api_key, a.apiKey);
    assert.equal((await a.heartbeat()).status, 401);
    const hb = await h.request('POST', '/api/v1/agent/heartbeat', { apiKey: res.body.api_key, body: {} });
    assert.equal(hb.status, 200);
    const got = await h.request('GET', `/api/v1/agents/${a.id}`, { token: t.token });
    assert.ok(!JSON.stringify(got.body).includes(res.body.api_key));
  });

  it('DELETE revokes: status revoked, the key is refused, it cannot be re-activated', async () => {
    const a = await TestAgent.create(h, t, { tools: ['x'] });
    const del = await h.request('DELETE', `/api/v1/agents/${a.id}`, { token: t.token });
    assert.ok(del.status === 200 || del.status === 204, `DELETE answered ${del.status}`);
    const got = await h.request('GET', `/api/v1/agents/${a.id}`, { token: t.token });
    assert.equal(got.status, 200);
    assert.equal(got.body.status, 'revoked');
    assert.equal((await a.heartbeat()).status, 401);
    const again = await h.request('POST', `/api/v1/agents/${a.id}/activate`, { token: t.token });
    assert.equal(again.status, 409, JSON.stringify(again.body));
    assert.equal((await h.request('GET', `/api/v1/agents/${a.id}`, { token: t.token })).body.status, 'revoked');
  });

  it('unknown agent ids are 404 on every agent endpoint', async () => {
    const id = '00000000-0000-4000-8000-000000000001';
    for (const [method, path] of [
      ['GET', `/api/v1/agents/${id}`], ['PUT', `/api/v1/agents/${id}`], ['DELETE', `/api/v1/agents/${id}`],
      ['POST', `/api/v1/agents/${id}/activate`], ['POST', `/api/v1/agents/${id}/deactivate`], ['POST', `/api/v1/agents/${id}/regenerate-key`],
    ]) {
      const res = await h.request(method, path, { token: t.token, body: method === 'PUT' ? { name: 'x' } : undefined });
      assert.equal(res.status, 404, `${method} ${path}: ${JSON.stringify(res.body)}`);
    }
  });
});

describe('pipelines', () => {
  let t: Tenant;
  before(async () => {
    t = await createTenant(h);
  });

  it('POST the seed 001 Full Security Scan → 201 with id, version 1 and its steps', async () => {
    const res = await h.request('POST', '/api/v1/pipelines', { token: t.token, body: FULL_SECURITY_SCAN });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const p = res.body;
    assert.match(p.id, UUID_RE);
    assert.equal(p.version, 1);
    assert.equal(p.name, 'Full Security Scan');
    assert.equal(p.description, 'Complete security assessment pipeline');
    assert.equal(p.steps.length, 5);
    for (const s of p.steps) assert.equal(s.step_key, s.id);
    const byKey = Object.fromEntries(p.steps.map((s: any) => [s.step_key, s]));
    assert.deepEqual(Object.keys(byKey).sort(), ['dast', 'infra', 'sast', 'sca', 'secrets']);
    assert.equal(byKey.sast.timeout, '30m');
    assert.equal(byKey.sca.timeout, '15m');
    assert.equal(byKey.secrets.timeout, '10m');
    assert.equal(byKey.dast.timeout, '1h'); // "60m"
    assert.equal(byKey.sast.name, 'Static Analysis');
    assert.equal(byKey.sast.tool, 'semgrep');
    assert.deepEqual(byKey.sast.capabilities, ['sast']);
    assert.deepEqual(byKey.sast.config, { rules: ['p/security-audit', 'p/owasp-top-ten'], severity_threshold: 'medium' });
    assert.deepEqual([...byKey.dast.depends_on].sort(), ['sast', 'sca', 'secrets']);
    assert.deepEqual(byKey.dast.condition, { type: 'expression', value: "asset.type == 'web_application' && asset.has_url" });
    assert.deepEqual(byKey.infra.depends_on, ['sast']);
    assert.equal(p.settings.max_parallel_steps, 3);
    assert.equal(p.settings.fail_fast, false);
    assert.equal(p.settings.retry_failed_steps, 2);
    // retry_failed_steps is the default max_retries of each step.
    assert.equal(byKey.sast.max_retries, 2);

    const got = await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, p);
    const list = await h.request('GET', '/api/v1/pipelines', { token: t.token });
    assert.equal(list.status, 200);
    assert.ok(ids(list.body.items).includes(p.id));
    assert.ok(Object.hasOwn(list.body, 'next_cursor'));
  });

  it('PUT makes version 2; GET ?version=1 still returns the old document; runs keep their version', async () => {
    const p = await createPipeline(h, t, { ...FULL_SECURITY_SCAN, name: 'Versioned' });
    const asset = await createAsset(h, t, { type: 'repository', name: 'repo-v' });
    const runV1 = await startRun(h, t, p.id, { asset_id: asset.id });
    assert.equal(runV1.pipeline_version, 1);

    const doc2 = {
      ...FULL_SECURITY_SCAN, name: 'Versioned', description: 'second version',
      steps: [...FULL_SECURITY_SCAN.steps, { id: 'report', name: 'Report', tool: 'reporter', depends_on: ['dast', 'infra'], timeout: '5m' }],
    };
    const put = await h.request('PUT', `/api/v1/pipelines/${p.id}`, { token: t.token, body: doc2 });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.id, p.id);
    assert.equal(put.body.version, 2);
    assert.equal(put.body.description, 'second version');
    assert.equal(put.body.steps.length, 6);

    const current = await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token });
    assert.equal(current.body.version, 2);
    assert.equal(current.body.steps.length, 6);
    const v1 = await h.request('GET', `/api/v1/pipelines/${p.id}?version=1`, { token: t.token });
    assert.equal(v1.status, 200, JSON.stringify(v1.body));
    assert.equal(v1.body.version, 1);
    assert.equal(v1.body.description, 'Complete security assessment pipeline');
    assert.deepEqual(v1.body.steps.map((s: any) => s.step_key).sort(), ['dast', 'infra', 'sast', 'sca', 'secrets']);
    const v9 = await h.request('GET', `/api/v1/pipelines/${p.id}?version=9`, { token: t.token });
    assert.equal(v9.status, 404);

    await h.settle();
    const oldRun = await getRun(h, t, runV1.id);
    assert.equal(oldRun.pipeline_version, 1);
    assert.equal(oldRun.step_runs.length, 5);
    const runV2 = await startRun(h, t, p.id, { asset_id: asset.id });
    assert.equal(runV2.pipeline_version, 2);
    assert.equal(runV2.total_steps, 6);
  });

  it('a PUT or step edit that changes nothing makes no new version', async () => {
    const p = await createPipeline(h, t, { name: 'Steady', steps: [step('a'), step('b', { depends_on: ['a'] })] });
    const same = await h.request('PUT', `/api/v1/pipelines/${p.id}`, { token: t.token, body: { name: 'Steady', steps: p.steps } });
    assert.equal(same.status, 200, JSON.stringify(same.body));
    assert.equal(same.body.version, 1);
    const noop = await h.request('PUT', `/api/v1/pipelines/${p.id}/steps/a`, { token: t.token, body: {} });
    assert.equal(noop.status, 200, JSON.stringify(noop.body));
    assert.equal(noop.body.pipeline_version, 1);
    const changed = await h.request('PUT', `/api/v1/pipelines/${p.id}/steps/a`, { token: t.token, body: { timeout: '5m' } });
    assert.equal(changed.body.pipeline_version, 2);
    assert.equal(changed.body.timeout_seconds, 300);
  });

  it('settings.priority sets the priority of the run\'s commands; an unknown priority is a 400', async () => {
    const bad = await h.request('POST', '/api/v1/pipelines', { token: t.token, body: { name: 'Loud', steps: [step('a')], settings: { priority: 'urgent' } } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.details[0].path, 'settings.priority');
    const calm = await createPipeline(h, t, { name: 'Calm', steps: [step('a', { tool: 'prio-tool' })] });
    const p = await createPipeline(h, t, { name: 'Urgent', steps: [step('a', { tool: 'prio-tool' })], settings: { priority: 'critical' } });
    const first = await startRun(h, t, calm.id);
    await h.settle();
    const run = await startRun(h, t, p.id);
    await h.settle();
    const cmds = await h.request('GET', `/api/v1/commands?pipeline_run_id=${run.id}`, { token: t.token });
    assert.equal(cmds.body.items.length, 1);
    assert.equal(cmds.body.items[0].priority, 'critical');
    // The critical command was created later but is handed out first.
    const agent = await TestAgent.create(h, t, { tools: ['prio-tool'] });
    const [got] = await agent.poll({ limit: 1 });
    assert.equal(got.payload.pipeline_run_id, run.id);
    const [next] = await agent.poll({ limit: 1 });
    assert.equal(next.payload.pipeline_run_id, first.id);
    assert.equal(next.priority, 'normal');
  });

  it('DELETE → 204, then 404 and gone from the list', async () => {
    const p = await createPipeline(h, t, { name: 'Doomed', steps: [step('a')] });
    const del = await h.request('DELETE', `/api/v1/pipelines/${p.id}`, { token: t.token });
    assert.equal(del.status, 204);
    assert.equal((await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).status, 404);
    assert.equal((await h.request('DELETE', `/api/v1/pipelines/${p.id}`, { token: t.token })).status, 404);
    assert.equal((await h.request('POST', `/api/v1/pipelines/${p.id}/run`, { token: t.token, body: {} })).status, 404);
    const list = await h.request('GET', '/api/v1/pipelines?limit=200', { token: t.token });
    assert.ok(!ids(list.body.items).includes(p.id));
  });

  it('clone → 201: a new id, "<name> (copy)", version 1, the same steps; {name} names it', async () => {
    const p = await createPipeline(h, t, { ...FULL_SECURITY_SCAN, name: 'Original' });
    const res = await h.request('POST', `/api/v1/pipelines/${p.id}/clone`, { token: t.token });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.notEqual(res.body.id, p.id);
    assert.match(res.body.id, UUID_RE);
    assert.equal(res.body.name, 'Original (copy)');
    assert.equal(res.body.version, 1);
    const shape = (steps: any[]) => steps.map(({ step_key, name, order, tool, capabilities, config, timeout, depends_on, condition, max_retries, retry_delay_seconds }) => ({
      step_key, name, order, tool, capabilities, config, timeout, depends_on, condition, max_retries, retry_delay_seconds,
    }));
    assert.deepEqual(shape(res.body.steps), shape(p.steps));
    assert.deepEqual(res.body.settings, p.settings);
    const named = await h.request('POST', `/api/v1/pipelines/${p.id}/clone`, { token: t.token, body: { name: 'Renamed clone' } });
    assert.equal(named.status, 201, JSON.stringify(named.body));
    assert.equal(named.body.name, 'Renamed clone');
    // The original is untouched.
    const orig = await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token });
    assert.deepEqual(orig.body, p);
  });

  it('steps sub-resources: GET, POST (new version), PUT (merge), DELETE (409 when depended on)', async () => {
    const p = await createPipeline(h, t, { ...FULL_SECURITY_SCAN, name: 'Stepwise' });
    const list = await h.request('GET', `/api/v1/pipelines/${p.id}/steps`, { token: t.token });
    assert.equal(list.status, 200, JSON.stringify(list.body));
    assert.deepEqual(list.body.items.map((s: any) => s.step_key), ['sast', 'sca', 'secrets', 'dast', 'infra']);

    const added = await h.request('POST', `/api/v1/pipelines/${p.id}/steps`, {
      token: t.token, body: { id: 'report', name: 'Report', tool: 'reporter', depends_on: ['dast', 'infra'], timeout: '5m' },
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    assert.equal(added.body.step_key, 'report');
    assert.equal(added.body.timeout, '5m');
    let current = (await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).body;
    assert.equal(current.version, 2);
    assert.equal(current.steps.length, 6);
    const dup = await h.request('POST', `/api/v1/pipelines/${p.id}/steps`, { token: t.token, body: { id: 'report', tool: 'reporter' } });
    assert.equal(dup.status, 409, JSON.stringify(dup.body));

    const put = await h.request('PUT', `/api/v1/pipelines/${p.id}/steps/sast`, { token: t.token, body: { timeout: '45m' } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.timeout, '45m');
    assert.equal(put.body.tool, 'semgrep');
    assert.equal(put.body.name, 'Static Analysis');
    assert.deepEqual(put.body.config, { rules: ['p/security-audit', 'p/owasp-top-ten'], severity_threshold: 'medium' });
    current = (await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).body;
    assert.equal(current.version, 3);
    const sast = current.steps.find((s: any) => s.step_key === 'sast');
    assert.equal(sast.timeout, '45m');
    assert.equal(sast.tool, 'semgrep');
    const putUnknown = await h.request('PUT', `/api/v1/pipelines/${p.id}/steps/nope`, { token: t.token, body: { timeout: '45m' } });
    assert.equal(putUnknown.status, 404);

    const inUse = await h.request('DELETE', `/api/v1/pipelines/${p.id}/steps/sast`, { token: t.token });
    assert.equal(inUse.status, 409, JSON.stringify(inUse.body));
    assert.match(inUse.body.error.message, /dast|infra/);
    assert.equal((await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).body.version, 3);

    const del = await h.request('DELETE', `/api/v1/pipelines/${p.id}/steps/report`, { token: t.token });
    assert.ok(del.status === 200 || del.status === 204, `DELETE step answered ${del.status}`);
    current = (await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).body;
    assert.equal(current.version, 4);
    assert.deepEqual(current.steps.map((s: any) => s.step_key).sort(), ['dast', 'infra', 'sast', 'sca', 'secrets']);
    assert.equal((await h.request('DELETE', `/api/v1/pipelines/${p.id}/steps/report`, { token: t.token })).status, 404);
  });

  it('reorder {order:[...]} sets the order; a missing, unknown or duplicated key is a 400', async () => {
    const p = await createPipeline(h, t, { ...FULL_SECURITY_SCAN, name: 'Reordered' });
    const order = ['infra', 'dast', 'secrets', 'sca', 'sast'];
    const res = await h.request('POST', `/api/v1/pipelines/${p.id}/steps/reorder`, { token: t.token, body: { order } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const steps = (await h.request('GET', `/api/v1/pipelines/${p.id}/steps`, { token: t.token })).body.items;
    assert.deepEqual([...steps].sort((a: any, b: any) => a.order - b.order).map((s: any) => s.step_key), order);
    const version = (await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).body.version;

    const cases: [string[], RegExp][] = [
      [['infra', 'dast', 'secrets', 'sca'], /^order/], // sast missing
      [['infra', 'dast', 'secrets', 'sca', 'sast', 'bogus'], /^order/], // unknown
      [['infra', 'infra', 'dast', 'secrets', 'sca', 'sast'], /^order/], // duplicated
    ];
    for (const [bad, path] of cases) {
      const r = await h.request('POST', `/api/v1/pipelines/${p.id}/steps/reorder`, { token: t.token, body: { order: bad } });
      assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${JSON.stringify(r.body)}`);
      assert.ok(r.body.error.details.some((d: any) => path.test(d.path)), JSON.stringify(r.body));
    }
    const unknown = await h.request('POST', `/api/v1/pipelines/${p.id}/steps/reorder`, {
      token: t.token, body: { order: ['infra', 'dast', 'secrets', 'sca', 'sast', 'bogus'] },
    });
    assert.ok(unknown.body.error.details.some((d: any) => d.path === 'order[5]' && /bogus/.test(d.message)), JSON.stringify(unknown.body));
    const missing = await h.request('POST', `/api/v1/pipelines/${p.id}/steps/reorder`, { token: t.token, body: { order: ['infra', 'dast', 'secrets', 'sca'] } });
    assert.ok(missing.body.error.details.some((d: any) => /sast/.test(d.message)), JSON.stringify(missing.body));
    assert.equal((await h.request('GET', `/api/v1/pipelines/${p.id}`, { token: t.token })).body.version, version);
  });

  it('POST /pipelines/{id}/run {asset_id, context} → 201 with every run field of API.md', async () => {
    const p = await createPipeline(h, t, { ...FULL_SECURITY_SCAN, name: 'Runnable' });
    const asset = await createAsset(h, t, { type: 'repository', name: 'runnable-repo' });
    const res = await h.request('POST', `/api/v1/pipelines/${p.id}/run`, { token: t.token, body: { asset_id: asset.id, context: { branch: 'main' } } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const run = res.body;
    assertFields(run, RUN_FIELDS, 'run');
    assert.match(run.id, UUID_RE);
    assert.equal(run.pipeline_id, p.id);
    assert.equal(run.pipeline_version, 1);
    assert.equal(run.tenant_id, t.id);
    assert.equal(run.asset_id, asset.id);
    assert.equal(run.scan_id, null);
    assert.equal(run.trigger_type, 'manual');
    assert.deepEqual(run.context, { branch: 'main' });
    assert.equal(run.total_steps, 5);
    assert.ok(['pending', 'running'].includes(run.status));
    // Without an asset.
    const bare = await h.request('POST', `/api/v1/pipelines/${p.id}/run`, { token: t.token });
    assert.equal(bare.status, 201, JSON.stringify(bare.body));
    assert.equal(bare.body.asset_id, null);
    assert.deepEqual(bare.body.context, {});
    // An unknown pipeline.
    const unknown = await h.request('POST', `/api/v1/pipelines/00000000-0000-4000-8000-000000000002/run`, { token: t.token, body: {} });
    assert.equal(unknown.status, 404);
  });
});

describe('runs and commands', () => {
  let t: Tenant;
  let agent: TestAgent;
  let p1: Record<string, any>;
  let p2: Record<string, any>;
  let a1: Record<string, any>;
  let a2: Record<string, any>;
  before(async () => {
    t = await createTenant(h);
    agent = await TestAgent.create(h, t, { tools: ['tool-one', 'tool-two', 'tool-after'], max_concurrent_jobs: 10 });
    p1 = await createPipeline(h, t, { name: 'P1', steps: [step('one', { tool: 'tool-one' }), step('after', { tool: 'tool-after', depends_on: ['one'] })] });
    p2 = await createPipeline(h, t, { name: 'P2', steps: [step('two', { tool: 'tool-two' })] });
    a1 = await createAsset(h, t, { type: 'server', name: 'a1' });
    a2 = await createAsset(h, t, { type: 'server', name: 'a2' });
  });

  it('GET /pipeline-runs filters by status, pipeline_id and asset_id; an unknown status is a 400', async () => {
    const r11 = await startRun(h, t, p1.id, { asset_id: a1.id });
    const r12 = await startRun(h, t, p1.id, { asset_id: a2.id });
    const r21 = await startRun(h, t, p2.id, { asset_id: a1.id });
    await h.settle();
    const list = async (q: string) => {
      const res = await h.request('GET', `/api/v1/pipeline-runs?limit=200&${q}`, { token: t.token });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return ids(res.body.items).filter((id) => [r11.id, r12.id, r21.id].includes(id)).sort();
    };
    assert.deepEqual(await list(`pipeline_id=${p1.id}`), [r11.id, r12.id].sort());
    assert.deepEqual(await list(`asset_id=${a1.id}`), [r11.id, r21.id].sort());
    assert.deepEqual(await list(`pipeline_id=${p2.id}&asset_id=${a1.id}`), [r21.id]);
    assert.deepEqual(await list('status=running'), [r11.id, r12.id, r21.id].sort());
    assert.deepEqual(await list('status=completed'), []);
    const all = await h.request('GET', `/api/v1/pipeline-runs?pipeline_id=${p1.id}`, { token: t.token });
    for (const run of all.body.items) {
      assert.equal(run.pipeline_id, p1.id);
      assertFields(run, RUN_FIELDS.filter((f) => f !== 'step_runs'), 'listed run');
    }

    const cancel = await h.request('POST', `/api/v1/pipeline-runs/${r12.id}/cancel`, { token: t.token });
    assert.equal(cancel.status, 200, JSON.stringify(cancel.body));
    assert.equal(cancel.body.status, 'cancelled');
    await h.settle();
    assert.deepEqual(await list('status=cancelled'), [r12.id]);
    assert.deepEqual(await list('status=running'), [r11.id, r21.id].sort());

    const bad = await h.request('GET', '/api/v1/pipeline-runs?status=bogus', { token: t.token });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.ok(bad.body.error.details.some((d: any) => d.path === 'status'), JSON.stringify(bad.body));
    // Clean up: do not leave commands for the next test.
    for (const r of [r11, r21]) await h.request('POST', `/api/v1/pipeline-runs/${r.id}/cancel`, { token: t.token });
    await h.settle();
  });

  it('a run, its step runs, one step, its logs, and the commands list with filters', async () => {
    const run = await startRun(h, t, p1.id, { asset_id: a1.id, context: { ticket: 'SEC-1' } });
    await h.settle();

    // The queued command is visible, pending and unclaimed.
    const pending = await h.request('GET', `/api/v1/commands?status=pending&pipeline_run_id=${run.id}`, { token: t.token });
    assert.equal(pending.status, 200, JSON.stringify(pending.body));
    assert.equal(pending.body.items.length, 1);
    const queued = pending.body.items[0];
    assert.equal(queued.status, 'pending');
    assert.equal(queued.agent_id, null);

    const [cmd] = await agent.poll();
    assert.ok(cmd, 'the agent got no command');
    assert.equal(cmd.id, queued.id);
    assertFields(cmd, COMMAND_FIELDS, 'polled command');
    assertFields(cmd.payload, PAYLOAD_FIELDS, 'polled command payload');
    assert.equal(cmd.type, 'scan');
    assert.equal(cmd.payload.pipeline_run_id, run.id);
    assert.equal(cmd.payload.step_key, 'one');
    assert.equal(cmd.payload.tool, 'tool-one');
    assert.equal(cmd.payload.target.id, a1.id);
    assert.deepEqual(cmd.payload.context, { ticket: 'SEC-1' });

    const byAgent = await h.request('GET', `/api/v1/commands?agent_id=${agent.id}&limit=200`, { token: t.token });
    assert.equal(byAgent.status, 200);
    assert.ok(ids(byAgent.body.items).includes(cmd.id));
    for (const c of byAgent.body.items) assert.equal(c.agent_id, agent.id);
    const otherAgent = await h.request('GET', `/api/v1/commands?agent_id=00000000-0000-4000-8000-000000000003`, { token: t.token });
    assert.deepEqual(otherAgent.body.items, []);

    assert.equal((await agent.ack(cmd.id)).status, 200);
    const acked = await h.request('GET', '/api/v1/commands?status=acknowledged', { token: t.token });
    assert.deepEqual(ids(acked.body.items), [cmd.id]);
    const stillPending = await h.request('GET', `/api/v1/commands?status=pending&pipeline_run_id=${run.id}`, { token: t.token });
    assert.deepEqual(stillPending.body.items, []);

    const one = await h.request('GET', `/api/v1/commands/${cmd.id}`, { token: t.token });
    assert.equal(one.status, 200, JSON.stringify(one.body));
    assertFields(one.body, [...COMMAND_FIELDS, 'status', 'agent_id'], 'command');
    assertFields(one.body.payload, PAYLOAD_FIELDS, 'command payload');
    assert.equal(one.body.status, 'acknowledged');
    assert.equal(one.body.agent_id, agent.id);
    assert.match(one.body.created_at, RFC3339_UTC);
    assert.match(one.body.expires_at, RFC3339_UTC);
    assert.equal((await h.request('GET', '/api/v1/commands/00000000-0000-4000-8000-000000000004', { token: t.token })).status, 404);
    const badStatus = await h.request('GET', '/api/v1/commands?status=bogus', { token: t.token });
    assert.equal(badStatus.status, 400);
    assert.ok(badStatus.body.error.details.some((d: any) => d.path === 'status'));

    assert.equal((await agent.start(cmd.id)).status, 200);
    assert.equal((await agent.complete(cmd.id, { findings_count: 4, output: { ok: true } })).status, 200);
    await h.settle();

    const full = await getRun(h, t, run.id);
    assertFields(full, [...RUN_FIELDS, 'step_runs'], 'run');
    assert.equal(full.step_runs.length, 2);
    for (const s of full.step_runs) assertFields(s, STEP_RUN_FIELDS, `step run ${s.step_key}`);
    const one1 = full.step_runs.find((s: any) => s.step_key === 'one');
    assert.deepEqual([one1.status, one1.attempt, one1.agent_id, one1.command_id, one1.findings_count, one1.output], ['completed', 1, agent.id, cmd.id, 4, { ok: true }]);
    assert.match(one1.completed_at, RFC3339_UTC);
    const afterStep = full.step_runs.find((s: any) => s.step_key === 'after');
    assert.equal(afterStep.status, 'queued');

    const steps = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps`, { token: t.token });
    assert.equal(steps.status, 200, JSON.stringify(steps.body));
    assert.deepEqual(steps.body.items.map((s: any) => s.step_key).sort(), ['after', 'one']);
    for (const s of steps.body.items) assertFields(s, STEP_RUN_FIELDS, `listed step run ${s.step_key}`);

    const single = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps/one`, { token: t.token });
    assert.equal(single.status, 200, JSON.stringify(single.body));
    assertFields(single.body, STEP_RUN_FIELDS, 'step run');
    assert.equal(single.body.step_key, 'one');
    assert.equal(single.body.status, 'completed');
    assert.equal((await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps/nope`, { token: t.token })).status, 404);

    const logs = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps/one/logs`, { token: t.token });
    assert.equal(logs.status, 200, JSON.stringify(logs.body));
    assert.equal(logs.body.step_key, 'one');
    assert.equal(logs.body.attempt, 1);
    assert.deepEqual(logs.body.output, { text: '', offset: 0, next_offset: 0, truncated: false }, 'no output was uploaded');
    assert.ok(Array.isArray(logs.body.events) && logs.body.events.length >= 2, JSON.stringify(logs.body));
    assert.ok(logs.body.events.some((l: any) => l.event === 'pipeline.step.completed'), JSON.stringify(logs.body.events));
    assert.equal((await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps/nope/logs`, { token: t.token })).status, 404);

    assert.equal((await h.request('GET', `/api/v1/pipeline-runs/00000000-0000-4000-8000-000000000005`, { token: t.token })).status, 404);
    await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: t.token });
    await h.settle();
  });

  it('a run lists as a page with next_cursor and pages without duplicates', async () => {
    const own = await createTenant(h);
    const p = await createPipeline(h, own, { name: 'paged', steps: [step('x')] });
    const created: string[] = [];
    for (let i = 0; i < 5; i++) created.push((await startRun(h, own, p.id)).id);
    const { items, pages } = await listAll(h, own, '/api/v1/pipeline-runs', 2);
    assert.equal(pages, 3);
    assert.deepEqual([...ids(items)].sort(), [...created].sort());
    await h.settle();
  });
});

describe('operations', () => {
  it('GET /healthz and /readyz answer 200 without a credential', async () => {
    const health = await h.request('GET', '/healthz');
    assert.equal(health.status, 200, JSON.stringify(health.body));
    const ready = await h.request('GET', '/readyz');
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
  });
});
