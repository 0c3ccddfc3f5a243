// Tenant isolation (API.md: "404 unknown id or an id of another tenant"): tenant B cannot
// read or change anything of tenant A on any endpoint, B's lists never show A's objects, and
// agent keys are bound to their agent's tenant.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import {
  FULL_SECURITY_SCAN, TestAgent, createAsset, createPipeline, createTenant, startRun, step, type Tenant,
} from './support/fixtures.ts';

let h: Harness;
let A: Tenant;
let B: Tenant;
let agentA: TestAgent;
let agentB: TestAgent;
let assetA: Record<string, any>;
let assetB: Record<string, any>;
let pipelineA: Record<string, any>;
let pipelineB: Record<string, any>;
let runA: Record<string, any>;
let commandA: Record<string, any>;

/** Everything of tenant A as stored, to compare before/after B's attempts. */
async function snapshotA(): Promise<Record<string, unknown>> {
  const tables = ['assets', 'agents', 'pipeline_templates', 'pipeline_versions', 'pipeline_steps', 'pipeline_runs', 'step_runs', 'commands', 'events', 'api_tokens'];
  const out: Record<string, unknown> = {};
  for (const table of tables) {
    const { rows } = await h.pool.query(
      `SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') AS dump, count(*)::int AS n FROM ${table} t WHERE tenant_id = $1`,
      [A.id],
    );
    out[table] = rows[0];
  }
  return out;
}

before(async () => {
  h = await startHarness();
  A = await createTenant(h, 'tenant-a');
  B = await createTenant(h, 'tenant-b');
  // Both tenants' agents can run the same tools: only the tenant keeps them apart.
  agentA = await TestAgent.create(h, A, { tools: ['semgrep', 'trivy', 'gitleaks', 'nuclei', 'nmap', 'tool-b1'], max_concurrent_jobs: 10 });
  agentB = await TestAgent.create(h, B, { tools: ['semgrep', 'trivy', 'gitleaks', 'nuclei', 'nmap', 'tool-b1'], max_concurrent_jobs: 10 });
  assetA = await createAsset(h, A, { type: 'web_application', name: 'a-shop', value: 'https://a.example.com' });
  assetB = await createAsset(h, B, { type: 'server', name: 'b-server' });
  pipelineA = await createPipeline(h, A, FULL_SECURITY_SCAN);
  pipelineB = await createPipeline(h, B, { name: 'B pipeline', steps: [step('b1')] });
  runA = await startRun(h, A, pipelineA.id, { asset_id: assetA.id });
  await h.settle();
  // A's agent claims one of A's commands (others stay pending for B's agent to try to poll).
  const claimed = await agentA.poll({ limit: 1 });
  assert.equal(claimed.length, 1);
  commandA = claimed[0];
  assert.equal((await agentA.ack(commandA.id)).status, 200);
});
after(() => h.close());

describe('tenant isolation', () => {
  it("every management endpoint answers 404 to B for A's ids, and A's objects are unchanged", async () => {
    const before = await snapshotA();
    const p = `/api/v1/pipelines/${pipelineA.id}`;
    const r = `/api/v1/pipeline-runs/${runA.id}`;
    const table: [string, string, unknown?][] = [
      ['GET', `/api/v1/assets/${assetA.id}`],
      ['PUT', `/api/v1/assets/${assetA.id}`, { name: 'pwned' }],
      ['DELETE', `/api/v1/assets/${assetA.id}`],
      ['GET', `/api/v1/agents/${agentA.id}`],
      ['PUT', `/api/v1/agents/${agentA.id}`, { name: 'pwned', tools: ['x'] }],
      ['POST', `/api/v1/agents/${agentA.id}/deactivate`],
      ['POST', `/api/v1/agents/${agentA.id}/activate`],
      ['POST', `/api/v1/agents/${agentA.id}/regenerate-key`],
      ['DELETE', `/api/v1/agents/${agentA.id}`],
      ['GET', p],
      ['GET', `${p}?version=1`],
      ['PUT', p, { ...FULL_SECURITY_SCAN, name: 'pwned' }],
      ['POST', `${p}/clone`],
      ['POST', `${p}/clone`, { name: 'stolen copy' }],
      ['GET', `${p}/steps`],
      ['POST', `${p}/steps`, { id: 'evil', tool: 'evil' }],
      ['PUT', `${p}/steps/sast`, { timeout: '1m' }],
      ['DELETE', `${p}/steps/dast`],
      ['POST', `${p}/steps/reorder`, { order: ['infra', 'dast', 'secrets', 'sca', 'sast'] }],
      ['POST', `${p}/run`, {}],
      ['POST', `${p}/run`, { asset_id: assetB.id }],
      ['DELETE', p],
      ['GET', r],
      ['GET', `${r}/steps`],
      ['GET', `${r}/steps/sast`],
      ['GET', `${r}/steps/sast/logs`],
      ['GET', `${r}/events`],
      ['POST', `${r}/cancel`],
      ['POST', `${r}/retry`],
      ['GET', `/api/v1/commands/${commandA.id}`],
    ];
    const wrong: string[] = [];
    for (const [method, path, body] of table) {
      const res = await h.request(method, path, { token: B.token, body });
      if (res.status !== 404) wrong.push(`${method} ${path} → ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
      else assert.equal(res.body.error.code, 'not_found', `${method} ${path}: ${JSON.stringify(res.body)}`);
      // The 404 must not leak A's data.
      const text = JSON.stringify(res.body);
      assert.ok(!text.includes('a-shop') && !text.includes('Full Security Scan'), `${method} ${path} leaks: ${text}`);
    }
    assert.deepEqual(wrong, [], 'endpoints that did not answer 404 to another tenant');
    await h.settle();
    assert.deepEqual(await snapshotA(), before, "B's requests changed A's data");

    // A still sees everything as it was.
    assert.equal((await h.request('GET', `/api/v1/assets/${assetA.id}`, { token: A.token })).body.name, 'a-shop');
    const agent = (await h.request('GET', `/api/v1/agents/${agentA.id}`, { token: A.token })).body;
    assert.equal(agent.status, 'active');
    assert.notEqual(agent.name, 'pwned');
    assert.deepEqual(agent.tools, ['semgrep', 'trivy', 'gitleaks', 'nuclei', 'nmap', 'tool-b1']);
    assert.equal((await agentA.heartbeat()).status, 200, "A's agent key stopped working");
    const pipeline = (await h.request('GET', `/api/v1/pipelines/${pipelineA.id}`, { token: A.token })).body;
    assert.deepEqual([pipeline.name, pipeline.version, pipeline.steps.length], ['Full Security Scan', 1, 5]);
    const run = (await h.request('GET', `/api/v1/pipeline-runs/${runA.id}`, { token: A.token })).body;
    assert.equal(run.status, 'running');
    // B made no pipelines, runs or clones of its own out of A's.
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_templates WHERE tenant_id = $1`, [B.id]);
    assert.equal(rows[0].n, 1);
    const bRuns = await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_runs WHERE tenant_id = $1`, [B.id]);
    assert.equal(bRuns.rows[0].n, 0);
  });

  it("B's lists never contain A's objects, with or without filters on A's ids", async () => {
    const aIds = new Set<string>([assetA.id, agentA.id, pipelineA.id, runA.id, commandA.id]);
    const { rows } = await h.pool.query<{ id: string }>(`SELECT id FROM commands WHERE tenant_id = $1`, [A.id]);
    for (const row of rows) aIds.add(row.id);
    const lists = [
      '/api/v1/assets', '/api/v1/agents', '/api/v1/pipelines', '/api/v1/pipeline-runs', '/api/v1/commands',
      `/api/v1/pipeline-runs?pipeline_id=${pipelineA.id}`, `/api/v1/pipeline-runs?asset_id=${assetA.id}`,
      `/api/v1/commands?agent_id=${agentA.id}`, `/api/v1/commands?pipeline_run_id=${runA.id}`,
      '/api/v1/commands?status=acknowledged', '/api/v1/commands?status=pending', '/api/v1/assets?type=web_application',
    ];
    for (const path of lists) {
      const res = await h.request('GET', `${path}${path.includes('?') ? '&' : '?'}limit=200`, { token: B.token });
      assert.equal(res.status, 200, `${path}: ${JSON.stringify(res.body)}`);
      const leaked = res.body.items.filter((i: any) => aIds.has(i.id) || i.tenant_id === A.id);
      assert.deepEqual(leaked, [], `${path} shows tenant A's objects`);
    }
    // B's own objects are there (the lists work, they are not just empty).
    const assets = await h.request('GET', '/api/v1/assets', { token: B.token });
    assert.deepEqual(assets.body.items.map((a: any) => a.id), [assetB.id]);
    const pipelines = await h.request('GET', '/api/v1/pipelines', { token: B.token });
    assert.deepEqual(pipelines.body.items.map((x: any) => x.id), [pipelineB.id]);
    const agents = await h.request('GET', '/api/v1/agents', { token: B.token });
    assert.deepEqual(agents.body.items.map((x: any) => x.id), [agentB.id]);
  });

  it("running B's pipeline on A's asset is a 400 naming asset_id (the asset is unknown to B)", async () => {
    const before = await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_runs`);
    const res = await h.request('POST', `/api/v1/pipelines/${pipelineB.id}/run`, { token: B.token, body: { asset_id: assetA.id } });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.ok(res.body.error.details.some((d: any) => d.path === 'asset_id'), JSON.stringify(res.body));
    assert.ok(!JSON.stringify(res.body).includes('a-shop'));
    assert.equal((await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_runs`)).rows[0].n, before.rows[0].n);
  });

  it("B's agent never receives A's commands and cannot move them", async () => {
    const pendingA = await h.pool.query(`SELECT count(*)::int AS n FROM commands WHERE tenant_id = $1 AND status = 'pending' AND agent_id IS NULL`, [A.id]);
    assert.ok(pendingA.rows[0].n > 0, 'the test needs unclaimed commands of A');
    const got = await agentB.poll({ limit: 10 });
    assert.deepEqual(got, [], "B's agent received commands of another tenant");

    const before = await h.pool.query(`SELECT status, agent_id, updated_at FROM commands WHERE id = $1`, [commandA.id]);
    for (const action of ['ack', 'acknowledge', 'start', 'complete', 'fail']) {
      const body = action === 'fail' ? { error_message: 'nope' } : action === 'complete' ? { findings_count: 1 } : undefined;
      const res = await h.request('POST', `/api/v1/agent/commands/${commandA.id}/${action}`, { apiKey: agentB.apiKey, body });
      assert.equal(res.status, 404, `${action}: ${JSON.stringify(res.body)}`);
    }
    // An unclaimed command of A is not B's to take either.
    const { rows } = await h.pool.query<{ id: string }>(`SELECT id FROM commands WHERE tenant_id = $1 AND status = 'pending' AND agent_id IS NULL LIMIT 1`, [A.id]);
    for (const action of ['ack', 'start', 'complete']) {
      const res = await h.request('POST', `/api/v1/agent/commands/${rows[0].id}/${action}`, { apiKey: agentB.apiKey, body: {} });
      assert.equal(res.status, 404, `${action} on unclaimed: ${JSON.stringify(res.body)}`);
    }
    const afterRow = await h.pool.query(`SELECT status, agent_id, updated_at FROM commands WHERE id = $1`, [commandA.id]);
    assert.deepEqual(afterRow.rows, before.rows);
    assert.deepEqual((await h.pool.query(`SELECT status, agent_id FROM commands WHERE id = $1`, [rows[0].id])).rows, [{ status: 'pending', agent_id: null }]);
  });

  it("B's agent heartbeat naming A's command is not told about it", async () => {
    // A's command is cancelled: A's agent is told to stop it; B's agent, naming it, is not.
    const pa = await createPipeline(h, A, { name: 'A cancel me', steps: [step('c1', { tool: 'tool-b1' })] });
    const run = await startRun(h, A, pa.id);
    await h.settle();
    const { rows } = await h.pool.query<{ id: string }>(`SELECT id FROM commands WHERE pipeline_run_id = $1`, [run.id]);
    assert.equal(rows.length, 1);
    const cmdId = rows[0].id;
    // A's agent claims and starts it.
    let claimed: Record<string, any>[] = [];
    for (let i = 0; i < 5 && !claimed.some((c) => c.id === cmdId); i++) claimed = claimed.concat(await agentA.poll({ limit: 10 }));
    assert.ok(claimed.some((c) => c.id === cmdId), 'A could not claim its command');
    await agentA.ack(cmdId);
    await agentA.start(cmdId);
    assert.equal((await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: A.token })).status, 200);
    await h.settle();
    const hbA = await agentA.heartbeat({ command_ids: [cmdId] });
    assert.ok(hbA.body.cancel_command_ids.includes(cmdId), `A's own agent should be told: ${JSON.stringify(hbA.body)}`);
    const hbB = await agentB.heartbeat({ command_ids: [cmdId] });
    assert.equal(hbB.status, 200);
    assert.deepEqual(hbB.body.cancel_command_ids, []);
    assert.equal(hbB.body.tenant_id, B.id);
  });

  it('agent keys and tenant tokens are not interchangeable, and neither crosses tenants', async () => {
    // An agent key is not a management credential.
    for (const path of ['/api/v1/assets', `/api/v1/assets/${assetA.id}`, '/api/v1/agents', '/api/v1/pipelines']) {
      const res = await h.request('GET', path, { token: agentA.apiKey });
      assert.equal(res.status, 401, `${path} with an agent key: ${JSON.stringify(res.body)}`);
    }
    // A tenant token is not an agent key.
    const hb = await h.request('POST', '/api/v1/agent/heartbeat', { token: A.token, body: {} });
    assert.equal(hb.status, 401);
    const poll = await h.request('GET', '/api/v1/agent/commands', { apiKey: B.token });
    assert.equal(poll.status, 401);
    // A's agent key acts as A's agent, whoever sends it: its heartbeat names A.
    const own = await agentA.heartbeat();
    assert.deepEqual([own.body.agent_id, own.body.tenant_id], [agentA.id, A.id]);
  });

  it("B's step sub-resource and events endpoints on B's own pipeline work (the 404s above are about ownership)", async () => {
    const steps = await h.request('GET', `/api/v1/pipelines/${pipelineB.id}/steps`, { token: B.token });
    assert.equal(steps.status, 200);
    assert.deepEqual(steps.body.items.map((s: any) => s.step_key), ['b1']);
    const run = await startRun(h, B, pipelineB.id, { asset_id: assetB.id });
    const events = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/events`, { token: B.token });
    assert.equal(events.status, 200);
    // And A cannot see B's run either.
    assert.equal((await h.request('GET', `/api/v1/pipeline-runs/${run.id}`, { token: A.token })).status, 404);
    assert.equal((await h.request('GET', `/api/v1/assets/${assetB.id}`, { token: A.token })).status, 404);
    await h.settle();
  });
});
