// Bad input on every endpoint that takes one (API.md "Conventions"): malformed JSON, bodies
// that are JSON but not objects, wrong types, invalid pipeline documents, bad path ids and
// query values. Each is a 400 (404 for ids, 413 for size) in the one error shape, naming the
// field, never a 500 or a stack trace, and nothing in the database changes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_TOKEN, startHarness, type Harness, type Response } from './support/harness.ts';
import {
  FULL_SECURITY_SCAN, TestAgent, createAsset, createPipeline, createTenant, startRun, step, type Tenant,
} from './support/fixtures.ts';

type Who = 'admin' | 'tenant' | 'agent';
type Case = { method: string; path: string; as: Who; body?: unknown; raw?: string; field?: string | RegExp; status?: number; label?: string };

const TABLES = [
  'instance_settings', 'tenants', 'api_tokens', 'assets', 'agents', 'pipeline_templates', 'pipeline_versions', 'pipeline_steps',
  'pipeline_runs', 'step_runs', 'commands', 'events',
];
const NOT_OBJECTS = ['{"name":', '{"name": "x",}', '[]', '"x"', '42', 'null', 'true'];

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let assetId: string;
let pipelineId: string;
let runId: string;
let singleId: string;
/** A running command held by `agent`; each test that needs one gets a fresh one (see holdCommand). */
let commandId: string;

/** Every row of every table of ours, as one string: equal before and after means nothing changed. */
async function snapshot(): Promise<string> {
  const parts = TABLES.map((table) => `(SELECT coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM ${table} x)`);
  const { rows } = await h.pool.query<{ s: string }>(`SELECT concat_ws(E'\\n--\\n', ${parts.join(', ')}) AS s`);
  return rows[0].s;
}

function credential(who: Who): { token?: string; apiKey?: string } {
  if (who === 'admin') return { token: ADMIN_TOKEN };
  if (who === 'tenant') return { token: t.token };
  return { apiKey: agent.apiKey };
}

/** Problems with an error response: wrong status, wrong shape, a stack trace. */
function errorProblems(res: Response, expectedStatus: number, field: string | RegExp | undefined): string[] {
  const problems: string[] = [];
  if (res.status !== expectedStatus) problems.push(`status ${res.status}, expected ${expectedStatus}`);
  const body = res.body as any;
  const error = body && typeof body === 'object' ? body.error : undefined;
  if (!error || typeof error.code !== 'string' || typeof error.message !== 'string' || error.message === '') {
    problems.push('not the {error:{code,message,details}} shape');
  } else if (expectedStatus === 400) {
    const details = error.details;
    if (!Array.isArray(details) || details.length === 0) problems.push('no details');
    else {
      if (!details.every((d: any) => typeof d?.path === 'string' && typeof d?.message === 'string' && d.message !== '')) {
        problems.push('details without path/message');
      }
      if (field !== undefined && !details.some((d: any) => (typeof field === 'string' ? d.path === field : field.test(d.path)))) {
        problems.push(`no detail for ${field}`);
      }
    }
  }
  const text = typeof res.body === 'string' ? res.body : JSON.stringify(res.body);
  if (/\n\s+at\s|\bat\s+\S+\s+\(|\.ts:\d+|node_modules|\/work\//.test(text)) problems.push('stack trace or file path in the body');
  return problems;
}

/** Sends each case; returns one line per case that went wrong (so a table reports every failure). */
async function runCases(cases: Case[]): Promise<string[]> {
  const failures: string[] = [];
  for (const c of cases) {
    // Settle on both sides: a follow-up job of an earlier (wrongly accepted) case must not
    // be blamed on this one, and a job this case wrongly enqueued must show up here.
    await h.settle();
    const before = await snapshot();
    const res = await h.request(c.method, c.path, { ...credential(c.as), body: c.body, raw: c.raw });
    const problems = errorProblems(res, c.status ?? 400, c.field);
    await h.settle();
    if ((await snapshot()) !== before) problems.push('the database changed');
    if (problems.length) {
      const input = c.raw !== undefined ? c.raw : JSON.stringify(c.body);
      failures.push(`${c.label ?? ''}${c.method} ${c.path} ${input?.slice(0, 120) ?? ''}: ${problems.join('; ')} — ${JSON.stringify(res.body).slice(0, 400)}`);
    }
  }
  return failures;
}

/** Every endpoint that takes a JSON body, with a body that would be accepted. */
function bodyEndpoints(): { method: string; path: string; as: Who }[] {
  const p = `/api/v1/pipelines/${pipelineId}`;
  return [
    { method: 'POST', path: '/api/v1/tenants', as: 'admin' },
    { method: 'POST', path: `/api/v1/tenants/${t.id}/tokens`, as: 'admin' },
    { method: 'POST', path: '/api/v1/assets', as: 'tenant' },
    { method: 'PUT', path: `/api/v1/assets/${assetId}`, as: 'tenant' },
    { method: 'POST', path: '/api/v1/agents', as: 'tenant' },
    { method: 'PUT', path: `/api/v1/agents/${agent.id}`, as: 'tenant' },
    { method: 'POST', path: '/api/v1/pipelines', as: 'tenant' },
    { method: 'PUT', path: p, as: 'tenant' },
    { method: 'POST', path: `${p}/clone`, as: 'tenant' },
    { method: 'POST', path: `${p}/steps`, as: 'tenant' },
    { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant' },
    { method: 'POST', path: `${p}/steps/reorder`, as: 'tenant' },
    { method: 'POST', path: `${p}/run`, as: 'tenant' },
    { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent' },
    { method: 'POST', path: `/api/v1/agent/commands/${commandId}/complete`, as: 'agent' },
    { method: 'POST', path: `/api/v1/agent/commands/${commandId}/fail`, as: 'agent' },
  ];
}

/** Starts a run of the one-step pipeline; the agent claims, acks and starts its command. */
async function holdCommand(): Promise<string> {
  runId = (await startRun(h, t, singleId, { asset_id: assetId })).id;
  await h.settle();
  const [cmd] = await agent.poll({ limit: 1 });
  assert.ok(cmd, 'no command to hold');
  assert.equal(cmd.payload.pipeline_run_id, runId);
  assert.equal((await agent.ack(cmd.id)).status, 200);
  assert.equal((await agent.start(cmd.id)).status, 200);
  await h.settle();
  commandId = cmd.id;
  return cmd.id;
}

before(async () => {
  // Every case compares the whole database before and after: the agent must not go offline
  // (45 s without contact by default) while tenant-only cases run, as they can take longer
  // than that on a loaded machine.
  h = await startHarness({ orchestration: { agentOfflineAfterSeconds: 3600 } });
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['tool-x'], max_concurrent_jobs: 50 });
  assetId = (await createAsset(h, t, { type: 'server', name: 'srv' })).id;
  pipelineId = (await createPipeline(h, t, FULL_SECURITY_SCAN)).id;
  singleId = (await createPipeline(h, t, { name: 'single', steps: [step('x', { tool: 'tool-x' })] })).id;
  await holdCommand();
});
after(() => h.close());

describe('bodies that are not JSON objects', () => {
  it('malformed JSON and JSON non-objects are a 400 on every endpoint that takes a body, and change nothing', async () => {
    await holdCommand();
    const cases: Case[] = [];
    // The body as a whole is wrong, so no field is required in details (only that there are details).
    for (const e of bodyEndpoints()) {
      for (const raw of NOT_OBJECTS) cases.push({ ...e, raw });
    }
    assert.deepEqual(await runCases(cases), []);
  });

  it('a body over 1 MiB is a 413 and changes nothing', async () => {
    await holdCommand();
    const big = 'x'.repeat(1024 * 1024 + 10);
    const cases: Case[] = [
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { type: 'server', name: 'big', metadata: { blob: big } }, status: 413 },
      { method: 'POST', path: '/api/v1/pipelines', as: 'tenant', body: { ...FULL_SECURITY_SCAN, name: 'big', description: big }, status: 413 },
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: { name: 'big', pad: big }, status: 413 },
      { method: 'POST', path: `/api/v1/agent/commands/${commandId}/complete`, as: 'agent', body: { findings_count: 1, output: { blob: big } }, status: 413 },
    ];
    assert.deepEqual(await runCases(cases), []);
    // Just under the body limit is not refused for its size, nor a free-form field just
    // under its own limit (256 KiB: test/deep-input.test.ts has the refusals).
    const res = await h.request('POST', '/api/v1/pipelines', { token: t.token, body: { ...FULL_SECURITY_SCAN, name: 'almost', description: 'x'.repeat(1000 * 1024) } });
    assert.equal(res.status, 201, JSON.stringify(res.body).slice(0, 300));
    const asset = await h.request('POST', '/api/v1/assets', { token: t.token, body: { type: 'server', name: 'almost', metadata: { blob: 'x'.repeat(250 * 1024) } } });
    assert.equal(asset.status, 201, JSON.stringify(asset.body).slice(0, 300));
  });
});

describe('wrong types name the field', () => {
  it('tenants and tokens', async () => {
    const tok = `/api/v1/tenants/${t.id}/tokens`;
    assert.deepEqual(await runCases([
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: {}, field: 'name' },
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: { name: 5 }, field: 'name' },
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: { name: '   ' }, field: 'name' },
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: { name: 'x', modules: 'scans' }, field: 'modules' },
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: { name: 'x', modules: [1] }, field: 'modules[0]' },
      { method: 'POST', path: tok, as: 'admin', body: { name: 5 }, field: 'name' },
      { method: 'POST', path: tok, as: 'admin', body: { name: ['a'] }, field: 'name' },
    ]), []);
  });

  it('assets', async () => {
    const one = `/api/v1/assets/${assetId}`;
    const ok = { type: 'server', name: 'x' };
    assert.deepEqual(await runCases([
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, type: 'spaceship' }, field: 'type' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { name: 'x' }, field: 'type' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { type: 'server' }, field: 'name' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, name: '' }, field: 'name' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, tags: 'prod' }, field: 'tags' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, tags: ['ok', 7] }, field: 'tags[1]' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, criticality: 'bogus' }, field: 'criticality' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, value: 5 }, field: 'value' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, metadata: 'm' }, field: 'metadata' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { ...ok, metadata: [1, 2] }, field: 'metadata' },
      { method: 'PUT', path: one, as: 'tenant', body: { type: 'spaceship' }, field: 'type' },
      { method: 'PUT', path: one, as: 'tenant', body: { tags: 'prod' }, field: 'tags' },
      { method: 'PUT', path: one, as: 'tenant', body: { criticality: 'bogus' }, field: 'criticality' },
      { method: 'PUT', path: one, as: 'tenant', body: { name: null }, field: 'name' },
      { method: 'PUT', path: one, as: 'tenant', body: { metadata: [] }, field: 'metadata' },
    ]), []);
  });

  it('agents', async () => {
    const one = `/api/v1/agents/${agent.id}`;
    const ok = { name: 'g', tools: ['t'] };
    assert.deepEqual(await runCases([
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, max_concurrent_jobs: 0 }, field: 'max_concurrent_jobs' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, max_concurrent_jobs: '5' }, field: 'max_concurrent_jobs' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, max_concurrent_jobs: 1.5 }, field: 'max_concurrent_jobs' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, max_concurrent_jobs: -3 }, field: 'max_concurrent_jobs' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { tools: ['t'] }, field: 'name' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, tools: 'semgrep' }, field: 'tools' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, tools: ['semgrep', 5] }, field: 'tools[1]' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, capabilities: 'sast' }, field: 'capabilities' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, labels: 'x' }, field: 'labels' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { ...ok, labels: ['x'] }, field: 'labels' },
      { method: 'PUT', path: one, as: 'tenant', body: { max_concurrent_jobs: 0 }, field: 'max_concurrent_jobs' },
      { method: 'PUT', path: one, as: 'tenant', body: { max_concurrent_jobs: '5' }, field: 'max_concurrent_jobs' },
      { method: 'PUT', path: one, as: 'tenant', body: { tools: 'x' }, field: 'tools' },
      { method: 'PUT', path: one, as: 'tenant', body: { name: '' }, field: 'name' },
    ]), []);
  });

  it('pipeline step sub-resources, reorder, clone and run', async () => {
    const p = `/api/v1/pipelines/${pipelineId}`;
    assert.deepEqual(await runCases([
      { method: 'POST', path: `${p}/clone`, as: 'tenant', body: { name: 5 }, field: 'name' },
      { method: 'POST', path: `${p}/clone`, as: 'tenant', body: { name: '' }, field: 'name' },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { tool: 't' }, field: /^(id|step_key)$/ },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'bad key!', tool: 't' }, field: 'id' },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n', tool: 5 }, field: 'tool' },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n', tool: 't', timeout: '10x' }, field: 'timeout' },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n', tool: 't', depends_on: 'sast' }, field: 'depends_on' },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n', tool: 't', depends_on: ['nope'] }, field: /depends_on\[0\]$/ },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n' }, field: /^(tool|capabilities|\(body\))$|^steps\[\d+\]$/ },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n', tool: 't', condition: { type: 'expression', value: 'asset.type ==' } }, field: /condition\.value$/ },
      { method: 'POST', path: `${p}/steps`, as: 'tenant', body: { id: 'n', tool: 't', max_retries: '2' }, field: 'max_retries' },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { timeout: '10x' }, field: 'timeout' },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { depends_on: 'sca' }, field: 'depends_on' },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { depends_on: ['nope'] }, field: /depends_on\[0\]$/ },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { depends_on: ['dast'] }, field: /depends_on/, label: 'cycle: ' },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { max_retries: -1 }, field: 'max_retries' },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { condition: { type: 'sometimes' } }, field: /^condition/ },
      { method: 'PUT', path: `${p}/steps/sast`, as: 'tenant', body: { tool: null, capabilities: [] }, field: /^(tool|capabilities|\(body\))$|^steps\[\d+\]$/ },
      { method: 'POST', path: `${p}/steps/reorder`, as: 'tenant', body: {}, field: 'order' },
      { method: 'POST', path: `${p}/steps/reorder`, as: 'tenant', body: { order: 'sast' }, field: 'order' },
      { method: 'POST', path: `${p}/steps/reorder`, as: 'tenant', body: { order: [] }, field: 'order' },
      { method: 'POST', path: `${p}/steps/reorder`, as: 'tenant', body: { order: [1, 'sast'] }, field: 'order[0]' },
      { method: 'POST', path: `${p}/run`, as: 'tenant', body: { asset_id: 'abc' }, field: 'asset_id' },
      { method: 'POST', path: `${p}/run`, as: 'tenant', body: { asset_id: 5 }, field: 'asset_id' },
      { method: 'POST', path: `${p}/run`, as: 'tenant', body: { asset_id: '00000000-0000-4000-8000-00000000000a' }, field: 'asset_id' },
      { method: 'POST', path: `${p}/run`, as: 'tenant', body: { context: 'x' }, field: 'context' },
      { method: 'POST', path: `${p}/run`, as: 'tenant', body: { context: 5 }, field: 'context' },
      { method: 'POST', path: `${p}/run`, as: 'tenant', body: { context: ['a'] }, field: 'context' },
    ]), []);
  });

  it('agent heartbeat, complete and fail', async () => {
    await holdCommand();
    const cmd = `/api/v1/agent/commands/${commandId}`;
    assert.deepEqual(await runCases([
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { active_jobs: '3' }, field: 'active_jobs' },
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { active_jobs: -1 }, field: 'active_jobs' },
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { version: 5 }, field: 'version' },
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { hostname: ['h'] }, field: 'hostname' },
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { command_ids: 'x' }, field: 'command_ids' },
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { command_ids: ['nope'] }, field: 'command_ids[0]' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { findings_count: '3' }, field: 'findings_count' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { findings_count: -1 }, field: 'findings_count' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { findings_count: 1.5 }, field: 'findings_count' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { output: 'x' }, field: 'output' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { output: [1] }, field: 'output' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { result: { findings_count: 'x' } }, field: 'result.findings_count' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { result: 'done' }, field: 'result' },
      { method: 'POST', path: `${cmd}/fail`, as: 'agent', body: {}, field: 'error_message' },
      { method: 'POST', path: `${cmd}/fail`, as: 'agent', body: { error_message: 5 }, field: 'error_message' },
      { method: 'POST', path: `${cmd}/fail`, as: 'agent', body: { error_message: '   ' }, field: 'error_message' },
      { method: 'POST', path: `${cmd}/fail`, as: 'agent', body: { error_message: 'boom', error_code: 'has spaces!' }, field: 'error_code' },
      { method: 'POST', path: `${cmd}/fail`, as: 'agent', body: { error_message: 'boom', error_code: 7 }, field: 'error_code' },
    ]), []);
    // The command is still running after all that.
    const { rows } = await h.pool.query(`SELECT status FROM commands WHERE id = $1`, [commandId]);
    assert.equal(rows[0].status, 'running');
  });
});

describe('strings PostgreSQL cannot store', () => {
  // PostgreSQL text and jsonb cannot hold U+0000; JSON can. Such input is bad input (400
  // naming the field), not a database error surfacing as a 500.
  it('a NUL character in any string is a 400 naming the field, never a 500', async () => {
    await holdCommand();
    const NUL = 'a\u0000b';
    const cmd = `/api/v1/agent/commands/${commandId}`;
    assert.deepEqual(await runCases([
      { method: 'POST', path: '/api/v1/tenants', as: 'admin', body: { name: NUL }, field: 'name' },
      { method: 'POST', path: `/api/v1/tenants/${t.id}/tokens`, as: 'admin', body: { name: NUL }, field: 'name' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { type: 'server', name: NUL }, field: 'name' },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { type: 'server', name: 'ok', metadata: { k: NUL } }, field: /^metadata/ },
      { method: 'POST', path: '/api/v1/assets', as: 'tenant', body: { type: 'server', name: 'ok', tags: [NUL] }, field: /^tags/ },
      { method: 'PUT', path: `/api/v1/assets/${assetId}`, as: 'tenant', body: { value: NUL }, field: 'value' },
      { method: 'POST', path: '/api/v1/agents', as: 'tenant', body: { name: 'g', tools: [NUL] }, field: /^tools/ },
      { method: 'POST', path: '/api/v1/pipelines', as: 'tenant', body: { name: NUL, steps: [step('a')] }, field: 'name' },
      { method: 'POST', path: '/api/v1/pipelines', as: 'tenant', body: { name: 'nul', steps: [step('a', { config: { x: NUL } })] }, field: /^steps\[0\]\.config/ },
      { method: 'POST', path: `/api/v1/pipelines/${pipelineId}/run`, as: 'tenant', body: { context: { k: NUL } }, field: /^context/ },
      { method: 'GET', path: `/api/v1/assets?tag=${encodeURIComponent(NUL)}`, as: 'tenant', field: 'tag' },
      { method: 'POST', path: '/api/v1/agent/heartbeat', as: 'agent', body: { hostname: NUL }, field: 'hostname' },
      { method: 'POST', path: `${cmd}/complete`, as: 'agent', body: { output: { k: NUL } }, field: /^output/ },
      { method: 'POST', path: `${cmd}/fail`, as: 'agent', body: { error_message: NUL }, field: 'error_message' },
    ]), []);
  });
});

describe('invalid pipeline documents', () => {
  const post = (body: unknown): Case => ({ method: 'POST', path: '/api/v1/pipelines', as: 'tenant', body });

  it('one document with a cycle, an unknown dependency, a duplicate key, a bad expression and a bad duration: one 400 listing all', async () => {
    const doc = {
      name: 'Broken',
      steps: [
        { id: 'a', tool: 't', depends_on: ['c'] },
        { id: 'b', tool: 't', depends_on: ['a'] },
        { id: 'c', tool: 't', depends_on: ['fo', 'b'] },
        { id: 'a', tool: 't' },
        { id: 'd', tool: 't', condition: { type: 'expression', value: 'asset.type ==' } },
        { id: 'e', tool: 't', timeout: '10x' },
      ],
    };
    for (const method of ['POST', 'PUT']) {
      const path = method === 'POST' ? '/api/v1/pipelines' : `/api/v1/pipelines/${pipelineId}`;
      const before = await snapshot();
      const res = await h.request(method, path, { token: t.token, body: doc });
      assert.deepEqual(errorProblems(res, 400, undefined), [], `${method}: ${JSON.stringify(res.body)}`);
      const details: { path: string; message: string }[] = res.body.error.details;
      const has = (path: RegExp, message: RegExp) => details.some((d) => path.test(d.path) && message.test(d.message));
      const missing = [
        ['cycle', has(/^steps\[[0-2]\]\.depends_on/, /cycle/i)],
        ['unknown dependency steps[2].depends_on[0]', has(/^steps\[2\]\.depends_on\[0\]$/, /fo/)],
        ['duplicate key at steps[3]', has(/^steps\[3\](\.id|\.step_key)?$/, /duplicate|twice|already/i)],
        ['bad expression at steps[4].condition', has(/^steps\[4\]\.condition(\.value)?$/, /./)],
        ['bad duration at steps[5].timeout', has(/^steps\[5\]\.timeout$/, /./)],
      ].filter(([, ok]) => !ok).map(([what]) => what);
      assert.deepEqual(missing, [], `${method} details: ${JSON.stringify(details)}`);
      assert.equal(await snapshot(), before, `${method} changed the database`);
    }
  });

  it('each kind of invalid document is refused with its path', async () => {
    assert.deepEqual(await runCases([
      { ...post({ steps: [step('a')] }), field: 'name' },
      { ...post({ name: '', steps: [step('a')] }), field: 'name' },
      { ...post({ name: 5, steps: [step('a')] }), field: 'name' },
      { ...post({ name: 'x', steps: [] }), field: 'steps' },
      { ...post({ name: 'x' }), field: 'steps' },
      { ...post({ name: 'x', steps: 'a' }), field: 'steps' },
      { ...post({ name: 'x', steps: [5] }), field: 'steps[0]' },
      { ...post({ name: 'x', steps: [{ id: 'a' }] }), field: /^steps\[0\](\.tool|\.capabilities)?$/, label: 'neither tool nor capabilities: ' },
      { ...post({ name: 'x', steps: [{ id: 'a', capabilities: [] }] }), field: /^steps\[0\](\.tool|\.capabilities)?$/ },
      { ...post({ name: 'x', steps: [{ name: 'no key', tool: 't' }] }), field: /^steps\[0\](\.id|\.step_key)?$/ },
      { ...post({ name: 'x', steps: [step('a', { condition: { type: 'sometimes' } })] }), field: /^steps\[0\]\.condition(\.type)?$/, label: 'unknown condition type: ' },
      { ...post({ name: 'x', steps: [step('a', { condition: { type: 'expression' } })] }), field: /^steps\[0\]\.condition(\.value)?$/ },
      {
        ...post({ name: 'x', steps: [step('a'), step('b', { condition: { type: 'step_result', step: 'a', check: 'findings_count > 0' } })] }),
        field: 'steps[1].condition.step', label: 'step_result on a step that is not upstream: ',
      },
      {
        ...post({ name: 'x', steps: [step('a', { condition: { type: 'step_result', step: 'zz', check: 'findings_count > 0' } })] }),
        field: 'steps[0].condition.step',
      },
      {
        ...post({ name: 'x', steps: [step('a'), step('b', { depends_on: ['a'], condition: { type: 'step_result', step: 'a', check: 'findings_count >' } })] }),
        field: /^steps\[1\]\.condition\.check$/,
      },
      { ...post({ name: 'x', steps: [step('a', { condition: { type: 'expression', value: '1 + 2' } })] }), field: 'steps[0].condition.value', label: 'non-boolean expression: ' },
      { ...post({ name: 'x', steps: [step('a', { condition: { type: 'expression', value: "'abc'" } })] }), field: 'steps[0].condition.value', label: 'string expression: ' },
      { ...post({ name: 'x', steps: [step('a', { condition: { type: 'expression', value: '' } })] }), field: 'steps[0].condition.value' },
      { ...post({ name: 'x', steps: [step('a', { condition: { type: 'expression', value: 'undefined_var == 1' } })] }), field: 'steps[0].condition.value', label: 'unknown variable: ' },
      { ...post({ name: 'x', steps: [step('a', { depends_on: ['a'] })] }), field: 'steps[0].depends_on[0]', label: 'self dependency: ' },
      { ...post({ name: 'x', steps: [step('a', { depends_on: 'b' }), step('b')] }), field: 'steps[0].depends_on' },
      { ...post({ name: 'x', steps: [step('a', { timeout: '10x' })] }), field: 'steps[0].timeout' },
      { ...post({ name: 'x', steps: [step('a', { timeout: 0 })] }), field: 'steps[0].timeout' },
      { ...post({ name: 'x', steps: [step('a', { timeout: -5 })] }), field: 'steps[0].timeout' },
      { ...post({ name: 'x', steps: [step('a', { max_retries: -1 })] }), field: 'steps[0].max_retries' },
      { ...post({ name: 'x', steps: [step('a', { max_retries: '2' })] }), field: 'steps[0].max_retries' },
      { ...post({ name: 'x', steps: [step('a', { retry_delay_seconds: 1.5 })] }), field: 'steps[0].retry_delay_seconds' },
      { ...post({ name: 'x', steps: [step('a', { config: 'c' })] }), field: 'steps[0].config' },
      { ...post({ name: 'x', steps: [step('a', { capabilities: 'sast' })] }), field: 'steps[0].capabilities' },
      { ...post({ name: 'x', steps: [step('a')], settings: { max_parallel_steps: 0 } }), field: 'settings.max_parallel_steps' },
      { ...post({ name: 'x', steps: [step('a')], settings: { fail_fast: 'yes' } }), field: 'settings.fail_fast' },
      { ...post({ name: 'x', steps: [step('a')], settings: { timeout: '1y' } }), field: 'settings.timeout' },
      { ...post({ name: 'x', steps: [step('a')], settings: 'fast' }), field: 'settings' },
      { ...post({ name: 'x', steps: [step('a')], triggers: [{ schedule: 'not a cron' }] }), field: /^triggers\[0\]/ },
    ]), []);
  });

  it('an invalid PUT keeps the pipeline at its version', async () => {
    const before = (await h.request('GET', `/api/v1/pipelines/${pipelineId}`, { token: t.token })).body;
    const res = await h.request('PUT', `/api/v1/pipelines/${pipelineId}`, { token: t.token, body: { ...FULL_SECURITY_SCAN, steps: [] } });
    assert.equal(res.status, 400);
    const after = (await h.request('GET', `/api/v1/pipelines/${pipelineId}`, { token: t.token })).body;
    assert.deepEqual(after, before);
  });
});

describe('path ids and query values', () => {
  it('non-UUID path ids are a 404, never a 500', async () => {
    const cases: Case[] = [];
    for (const bad of ['abc', '1', 'not-a-uuid', '00000000-0000-0000-0000-00000000000g', "x'; DROP TABLE assets; --"]) {
      const id = encodeURIComponent(bad);
      cases.push(
        { method: 'GET', path: `/api/v1/assets/${id}`, as: 'tenant', status: 404 },
        { method: 'PUT', path: `/api/v1/assets/${id}`, as: 'tenant', body: { name: 'x' }, status: 404 },
        { method: 'DELETE', path: `/api/v1/assets/${id}`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/agents/${id}`, as: 'tenant', status: 404 },
        { method: 'PUT', path: `/api/v1/agents/${id}`, as: 'tenant', body: { name: 'x' }, status: 404 },
        { method: 'DELETE', path: `/api/v1/agents/${id}`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/agents/${id}/activate`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/agents/${id}/deactivate`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/agents/${id}/regenerate-key`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/pipelines/${id}`, as: 'tenant', status: 404 },
        { method: 'PUT', path: `/api/v1/pipelines/${id}`, as: 'tenant', body: FULL_SECURITY_SCAN, status: 404 },
        { method: 'DELETE', path: `/api/v1/pipelines/${id}`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/pipelines/${id}/clone`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/pipelines/${id}/steps`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/pipelines/${id}/steps`, as: 'tenant', body: { id: 'n', tool: 't' }, status: 404 },
        { method: 'PUT', path: `/api/v1/pipelines/${id}/steps/sast`, as: 'tenant', body: { timeout: '1m' }, status: 404 },
        { method: 'DELETE', path: `/api/v1/pipelines/${id}/steps/sast`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/pipelines/${id}/steps/reorder`, as: 'tenant', body: { order: ['sast'] }, status: 404 },
        { method: 'POST', path: `/api/v1/pipelines/${id}/run`, as: 'tenant', body: {}, status: 404 },
        { method: 'GET', path: `/api/v1/pipeline-runs/${id}`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/pipeline-runs/${id}/steps`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/pipeline-runs/${id}/steps/x`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/pipeline-runs/${id}/steps/x/logs`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/pipeline-runs/${id}/events`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/pipeline-runs/${id}/cancel`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/pipeline-runs/${id}/retry`, as: 'tenant', status: 404 },
        { method: 'GET', path: `/api/v1/commands/${id}`, as: 'tenant', status: 404 },
        { method: 'POST', path: `/api/v1/tenants/${id}/tokens`, as: 'admin', body: {}, status: 404 },
        { method: 'POST', path: `/api/v1/agent/commands/${id}/ack`, as: 'agent', status: 404 },
        { method: 'POST', path: `/api/v1/agent/commands/${id}/start`, as: 'agent', status: 404 },
        { method: 'POST', path: `/api/v1/agent/commands/${id}/complete`, as: 'agent', body: {}, status: 404 },
        { method: 'POST', path: `/api/v1/agent/commands/${id}/fail`, as: 'agent', body: { error_message: 'x' }, status: 404 },
      );
    }
    assert.deepEqual(await runCases(cases), []);
  });

  it('bad limit, cursor and filter values are a 400 naming the parameter', async () => {
    const lists = ['/api/v1/assets', '/api/v1/agents', '/api/v1/pipelines', '/api/v1/pipeline-runs', '/api/v1/commands'];
    const cursorOf = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const cases: Case[] = [];
    for (const list of lists) {
      cases.push(
        { method: 'GET', path: `${list}?limit=0`, as: 'tenant', field: 'limit' },
        { method: 'GET', path: `${list}?limit=abc`, as: 'tenant', field: 'limit' },
        { method: 'GET', path: `${list}?limit=-1`, as: 'tenant', field: 'limit' },
        { method: 'GET', path: `${list}?limit=1.5`, as: 'tenant', field: 'limit' },
        { method: 'GET', path: `${list}?limit=100000`, as: 'tenant', field: 'limit' },
        { method: 'GET', path: `${list}?cursor=garbage`, as: 'tenant', field: 'cursor' },
        { method: 'GET', path: `${list}?cursor=${cursorOf([1, 2])}`, as: 'tenant', field: 'cursor' },
        { method: 'GET', path: `${list}?cursor=${cursorOf(['2024-01-01 00:00:00+00', 'nope'])}`, as: 'tenant', field: 'cursor' },
        { method: 'GET', path: `${list}?cursor=${cursorOf(['yesterday', '00000000-0000-4000-8000-000000000000'])}`, as: 'tenant', field: 'cursor' },
      );
    }
    cases.push(
      { method: 'GET', path: '/api/v1/tenants?limit=0', as: 'admin', field: 'limit' },
      { method: 'GET', path: '/api/v1/tenants?cursor=garbage', as: 'admin', field: 'cursor' },
      { method: 'GET', path: '/api/v1/assets?type=spaceship', as: 'tenant', field: 'type' },
      { method: 'GET', path: '/api/v1/agents?status=sleepy', as: 'tenant', field: 'status' },
      { method: 'GET', path: '/api/v1/agents?health=meh', as: 'tenant', field: 'health' },
      { method: 'GET', path: '/api/v1/pipeline-runs?status=bogus', as: 'tenant', field: 'status' },
      { method: 'GET', path: '/api/v1/pipeline-runs?pipeline_id=abc', as: 'tenant', field: 'pipeline_id' },
      { method: 'GET', path: '/api/v1/pipeline-runs?asset_id=abc', as: 'tenant', field: 'asset_id' },
      { method: 'GET', path: '/api/v1/pipeline-runs?scan_id=abc', as: 'tenant', field: 'scan_id' },
      { method: 'GET', path: '/api/v1/commands?status=bogus', as: 'tenant', field: 'status' },
      { method: 'GET', path: '/api/v1/commands?agent_id=abc', as: 'tenant', field: 'agent_id' },
      { method: 'GET', path: `/api/v1/pipelines/${pipelineId}?version=abc`, as: 'tenant', field: 'version' },
      { method: 'GET', path: `/api/v1/pipelines/${pipelineId}?version=0`, as: 'tenant', field: 'version' },
      { method: 'GET', path: `/api/v1/pipeline-runs/${runId}/events?after=x`, as: 'tenant', field: 'after' },
      { method: 'GET', path: `/api/v1/pipeline-runs/${runId}/events?limit=0`, as: 'tenant', field: 'limit' },
      { method: 'GET', path: '/api/v1/agent/commands?limit=0', as: 'agent', field: 'limit' },
      { method: 'GET', path: '/api/v1/agent/commands?limit=abc', as: 'agent', field: 'limit' },
      { method: 'GET', path: '/api/v1/agent/commands?wait=abc', as: 'agent', field: 'wait' },
      { method: 'GET', path: '/api/v1/agent/commands?wait=61', as: 'agent', field: 'wait' },
      { method: 'GET', path: '/api/v1/agent/commands?wait=-1', as: 'agent', field: 'wait' },
    );
    assert.deepEqual(await runCases(cases), []);
  });
});
