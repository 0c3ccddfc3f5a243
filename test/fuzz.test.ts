// Property-based fuzzing of every endpoint that changes something (src/api/contract.ts):
// fast-check generates each body from the endpoint's valibot schema (test/support/
// schema-bodies.ts), each path id from the ids of existing resources, random UUIDs and
// garbage, and sends it through the real app on a real database. For every request:
//   - never a 5xx, and no stack trace or source path in any answer;
//   - every 4xx is the one error shape, {error: {code, message, details?: [{path, message}]}},
//     and a 400 names its problems in details;
//   - a 4xx changed nothing: no row of any table (graphile-worker's jobs included) was
//     written, counted by triggers and read in one query before and after;
//   - a 2xx took a body its contract schema accepts, or listed in details what it skipped
//     (so the contract is no stricter than the handler; readBodyJson handlers validate
//     by themselves).
// At least 10,000 requests; measured on the 2-core machine: about 30 s, setup included
// (FUZZ_SCALE=4: 55,000 requests in under 3 minutes). The seed is fixed (printed;
// FUZZ_SEED=<n> for another), so a failure reproduces, and fast-check shrinks it to the
// smallest request that still fails, named with its endpoint, path and body. The worker is
// stopped once the fixtures exist: nothing changes the database but the requests.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import * as v from 'valibot';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import { AgentContacts } from '../src/api/contacts.ts';
import { TestAgent, createAsset, createPipeline, startRun, step, type Tenant } from './support/fixtures.ts';
import { insertFinding } from './support/findings.ts';
import { bodies, type Body, type Walk } from './support/schema-bodies.ts';
import { endpoints, type Endpoint } from '../src/api/contract.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 20_250_607);
/** Runs per endpoint that reads a body, and per endpoint that reads none (scaled by FUZZ_SCALE). */
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const RUNS_WITH_BODY = Math.round(430 * SCALE);
const RUNS_WITHOUT_BODY = Math.round(90 * SCALE);
const MIN_REQUESTS = Math.round(10_000 * SCALE);

/** What a stack trace or a source path looks like in an answer. */
const STACK = /\n\s+at |\bat (?:async )?[\w.<>[\]]+ \(|node:internal|file:\/\/|\/work\/main\/|\.[cm]?[jt]s:\d+:\d+/;

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let webhookToken: string;
/** The ids a path parameter takes, by the path before it (`/api/v1/assets/:id` → `/api/v1/assets`). */
const ids: Record<string, string[]> = {};
/** Known values of body fields, by field name: references to things that exist. */
const refs: Record<string, string[]> = {};
const walk: Walk = { refs: (field) => refs[field] };

// ---- the database fingerprint --------------------------------------------------------------

/**
 * Every committed row write, counted per table by triggers this file adds to its own
 * database, and read in one small query: a write of any kind shows (an insert, a delete, an
 * update that changes no visible value), a rolled-back one does not. Counting rows and
 * reading their newest version (xmin) per table instead cost 7 ms a request once the
 * tables held a few thousand rows (68 s of a 140 s run, on the loaded 2-core machine);
 * this costs 0.3-0.4 ms. Two writes a refused request makes by
 * design are not counted: an agent's call records that it was seen (last_seen_at, health_check_at and
 * its health check job; "any request counts"), and an Idempotency-Key keeps its answer,
 * refusals included (left out when the request carried the header).
 */
async function prepareFingerprint(): Promise<void> {
  const { rows } = await h.pool.query<{ t: string }>(`SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE schemaname = 'public'`);
  const statements = [
    `CREATE SCHEMA fuzz`,
    `CREATE TABLE fuzz.writes (table_name text PRIMARY KEY, n bigint NOT NULL)`,
    `CREATE FUNCTION fuzz.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       INSERT INTO fuzz.writes AS w VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1) ON CONFLICT (table_name) DO UPDATE SET n = w.n + 1;
       RETURN NULL;
     END $$`,
  ];
  const count = (table: string, events: string, when = '') =>
    statements.push(`CREATE TRIGGER fuzz_count_${statements.length} AFTER ${events} ON ${table} FOR EACH ROW ${when} EXECUTE FUNCTION fuzz.count_write()`);
  for (const { t: table } of rows) {
    if (table === 'public.agents') {
      count(table, 'INSERT OR DELETE');
      // Contact is written in batches that name every column; what counts is a changed value.
      const contact = (row: string) => `to_jsonb(${row}) - 'last_seen_at' - 'health' - 'health_check_at'`;
      count(table, 'UPDATE', `WHEN ((${contact('OLD')}) IS DISTINCT FROM (${contact('NEW')}))`);
    } else count(table, 'INSERT OR UPDATE OR DELETE');
  }
  const notHealth = (row: 'NEW' | 'OLD') => `WHEN (${row}.key IS NULL OR ${row}.key NOT LIKE 'agent\\_health:%')`;
  count('graphile_worker._private_jobs', 'INSERT OR UPDATE', notHealth('NEW'));
  count('graphile_worker._private_jobs', 'DELETE', notHealth('OLD'));
  count('graphile_worker._private_job_queues', 'INSERT OR UPDATE OR DELETE');
  for (const sql of statements) await h.pool.query(sql);
}

async function fingerprint(): Promise<Record<string, string>> {
  const { rows } = await h.pool.query<{ f: Record<string, string> }>(`SELECT coalesce(json_object_agg(table_name, n), '{}') AS f FROM fuzz.writes`);
  return rows[0].f;
}

function changedTables(before: Record<string, string>, after: Record<string, string>, withIdempotencyKey: boolean): string[] {
  return Object.keys(after).filter((table) => before[table] !== after[table] && !(withIdempotencyKey && table === 'public.idempotency_keys'))
    .map((table) => `${table}: ${Number(after[table]) - Number(before[table] ?? 0)} rows written`);
}

// ---- requests ------------------------------------------------------------------------------

type Request = { path: string; body: Body; headers: Record<string, string>; credential: { token?: string; apiKey?: string; headers?: Record<string, string> } };

const GARBAGE_IDS = [
  '', 'x', '..', '.', '%00', '%ZZ', '%', 'null', 'undefined', '0', '-1', '1e999', '%F0%9F%94%A5', '%E2%80%AE', '%20', '%C0%AF',
  '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{id}', ':id', 'x'.repeat(3000),
];

function encodeSegment(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return 'x'; // a lone surrogate has no UTF-8
  }
}

/** Paths whose ids the fixtures do not make: their endpoints are fuzzed with unknown ids only. */
const withoutIds = new Set<string>();

/** Values for a path parameter: ids of existing things (most), random UUIDs, garbage. */
function pathValues(prefix: string): fc.Arbitrary<string> {
  const known = ids[prefix] ?? [];
  if (known.length === 0) withoutIds.add(prefix);
  const unknown = [
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 2, arbitrary: fc.oneof(fc.constantFrom(...GARBAGE_IDS), fc.string({ unit: 'binary', maxLength: 40 }).map(encodeSegment)) },
  ];
  if (known.length === 0) return fc.oneof(...unknown);
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...known) },
    { weight: 1, arbitrary: fc.constantFrom(...known).map((id) => id.toUpperCase()) },
    ...unknown,
  );
}

function paths(e: Endpoint): fc.Arbitrary<string> {
  const segments = e.path.split('/');
  const parts = segments.map((seg, i) => (seg.startsWith(':') ? pathValues(segments.slice(0, i).join('/')) : fc.constant(seg)));
  return fc.tuple(...parts).map((xs) => xs.join('/'));
}

function credentials(e: Endpoint): fc.Arbitrary<Request['credential']> {
  switch (e.auth) {
    case 'admin':
      return fc.constant({ token: ADMIN_TOKEN });
    case 'tenant':
      return fc.constant({ token: t.token });
    case 'agent':
      return fc.constant({ apiKey: agent.apiKey });
    case 'webhook':
      return fc.constantFrom({ headers: { 'x-webhook-token': webhookToken } }, { token: t.token });
    case 'none':
      // The dashboard's sign-in (its token is in the body) and sign-out.
      return fc.constant({});
  }
}

/** Headers: the endpoint's media type (JSON, or what its contract entry takes) mostly, others too; an Idempotency-Key now and then. */
function headerValues(e: Endpoint): fc.Arbitrary<Record<string, string>> {
  const media = e.media?.map((m) => m.replace('/*', '/plain')) ?? ['application/json'];
  return fc.record({
    'content-type': fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(...media) },
      { weight: 1, arbitrary: fc.constantFrom('application/json', 'text/plain', 'application/json; charset=utf-16', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '*/*', '') },
    ),
    'idempotency-key': fc.oneof(
      { weight: 12, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.oneof(fc.uuid(), fc.constantFrom('', ' ', 'k'.repeat(300), 'é', 'same-key-every-time')) },
    ),
  }).map((hs) => Object.fromEntries(Object.entries(hs).filter(([, x]) => x !== undefined)) as Record<string, string>);
}

function requests(e: Endpoint): fc.Arbitrary<Request> {
  return fc.record({
    path: paths(e),
    body: bodies(e.body, walk),
    headers: headerValues(e),
    credential: credentials(e),
  });
}

// ---- checks --------------------------------------------------------------------------------

const excerpt = (s: string, n = 600) => (s.length > n ? `${s.slice(0, n)}… (${s.length} characters)` : s);
const textOf = (b: Body) => ('text' in b ? b.text : new TextDecoder().decode(new Uint8Array(b.bytes)));

/** Problems with an error answer's shape (API.md "Conventions"). */
function shapeProblems(status: number, body: unknown): string[] {
  const problems: string[] = [];
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObject(body) || Object.keys(body).join() !== 'error' || !isObject(body.error)) return ['not {error: {...}}'];
  const { code, message, details, ...fields } = body.error;
  if (typeof code !== 'string' || !/^[a-z][a-z0-9_]*$/.test(code)) problems.push(`code ${JSON.stringify(code)}`);
  if (typeof message !== 'string' || message.trim() === '') problems.push('no message');
  if (details !== undefined) {
    if (!Array.isArray(details) || !details.every((d) => isObject(d) && typeof d.path === 'string' && typeof d.message === 'string' && d.message !== '')) {
      problems.push('details not [{path, message}]');
    }
  }
  if (status === 400 && !(Array.isArray(details) && details.length > 0)) problems.push('a 400 without details naming the problem');
  // Values a client acts on may stand beside code and message (a 416's length): scalars only.
  for (const [k, x] of Object.entries(fields)) if (x !== null && typeof x === 'object') problems.push(`error.${k} is not a scalar`);
  return problems;
}

/** What the contract schema says of a body the endpoint accepted: null when it accepts it too. */
function contractRefusal(e: Endpoint, text: string): string | null {
  if (!e.body) return null;
  let value: unknown;
  const trimmed = text.replace(/^\ufeff/, '');
  try {
    value = trimmed.trim() === '' ? {} : JSON.parse(trimmed);
  } catch {
    return 'not JSON';
  }
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const body = value as Record<string, unknown>;
    for (const [alias, field] of Object.entries(e.aliases ?? {})) {
      if (body[alias] !== undefined && body[field] === undefined) {
        body[field] = body[alias];
        delete body[alias];
      }
    }
  }
  const result = v.safeParse(e.body, value);
  return result.success ? null : result.issues.map((i) => `${v.getDotPath(i) ?? '(body)'}: ${i.message}`).slice(0, 3).join('; ');
}

// ---- the run -------------------------------------------------------------------------------

type Tally = { requests: number; slowest: { ms: number; what: string }[]; requestMs: number; fingerprintMs: number; fuzzMs: number };
const tally: Tally = { requests: 0, slowest: [], requestMs: 0, fingerprintMs: 0, fuzzMs: 0 };
const startedAt = performance.now();
let current: Record<string, string> = {};

/**
 * Sends one request and checks the answer and the database; throws naming the endpoint, the
 * request and every problem. Returns the answer.
 */
async function send(name: string, e: Endpoint, req: Request): Promise<{ status: number; body: any }> {
  const text = textOf(req.body);
  const raw = 'text' in req.body ? req.body.text : new Uint8Array(req.body.bytes);
  const t0 = performance.now();
  const res = await h.request(e.method, req.path, {
    token: req.credential.token, apiKey: req.credential.apiKey, raw, headers: { ...req.headers, ...req.credential.headers },
  });
  const ms = performance.now() - t0;
  tally.requestMs += ms;
  tally.requests++;
  tally.slowest.push({ ms, what: `${name}: ${e.method} ${excerpt(req.path, 120)} ${excerpt(text, 120)}` });
  tally.slowest.sort((a, b) => b.ms - a.ms).splice(5);

  const answer = typeof res.body === 'string' ? res.body : JSON.stringify(res.body);
  const problems: string[] = [];
  if (res.status >= 500) problems.push(`a ${res.status}`);
  if (STACK.test(answer) && !STACK.test(text) && !STACK.test(req.path)) problems.push('a stack trace or a source path in the answer');
  const t1 = performance.now();
  // The agent's contact this request made is written in a batch after the answer: wait for
  // it, so that a late write is not taken for the next request's.
  await AgentContacts.settled();
  const after = await fingerprint();
  tally.fingerprintMs += performance.now() - t1;
  if (res.status >= 400) {
    problems.push(...shapeProblems(res.status, res.body));
    const changed = changedTables(current, after, 'idempotency-key' in req.headers);
    if (changed.length) problems.push(`a ${res.status} changed the database: ${changed.join(', ')}`);
  } else if (res.status < 300) {
    const refusal = contractRefusal(e, text);
    // A 2xx may skip parts of a body its schema refuses only when it lists them (an ingest's details).
    const listed = Array.isArray(res.body?.details) && res.body.details.length > 0;
    if (refusal && !listed) problems.push(`accepted a body its contract schema refuses (${refusal})`);
  }
  current = after;
  if (problems.length) {
    throw new Error(`${name}: ${e.method} ${req.path} answered ${res.status}: ${problems.join('; ')}\n` +
      `  headers: ${JSON.stringify(req.headers)}\n  body: ${excerpt(text)}\n  answer: ${excerpt(answer)}`);
  }
  return res;
}

/** Statuses per endpoint, for the summary. */
const statusesOf = new Map<string, Map<number, number>>();

async function fuzz(name: string, e: Endpoint, numRuns: number): Promise<void> {
  const statuses = new Map<number, number>();
  statusesOf.set(name, statuses);
  current = await fingerprint();
  const property = fc.asyncProperty(requests(e), async (req) => {
    const { status } = await send(name, e, req);
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  });
  // One seed per endpoint, from the run's seed: an endpoint's sequence does not depend on
  // how many runs the others had.
  const seed = (SEED + [...name].reduce((acc, ch) => (acc * 31 + ch.charCodeAt(0)) | 0, 0)) | 0;
  const t0 = performance.now();
  // Bounded: a failure found is shrunk for at most the rest of a minute.
  await fc.assert(property, { seed, numRuns, interruptAfterTimeLimit: 60_000 });
  tally.fuzzMs += performance.now() - t0;
  // The contract's `auth` is right: its credential got past authentication at least once.
  const authenticated = [...statuses].filter(([s]) => s !== 401 && s !== 403).reduce((n, [, k]) => n + k, 0);
  assert.ok(authenticated > 0, `${name}: every request was refused as unauthenticated (${JSON.stringify([...statuses])})`);
}

before(async () => {
  h = await startHarness({ orchestration: { agentOfflineAfterSeconds: 3600 } });
  const tenant = await h.request('POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name: 'fuzz', modules: ['scans', 'credentials'] } });
  assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
  t = { id: tenant.body.tenant.id, token: tenant.body.token };
  agent = await TestAgent.create(h, t, { name: 'fuzz-agent', tools: ['fuzz-tool'], max_concurrent_jobs: 1000 });
  const victims = [await TestAgent.create(h, t, { name: 'victim-1' }), await TestAgent.create(h, t, { name: 'victim-2' })];
  const assets = [
    await createAsset(h, t, { type: 'repository', name: 'repo', tags: ['production'], metadata: { has_url: true } }),
    await createAsset(h, t, { type: 'web_application', name: 'web', value: 'https://example.test' }),
  ];
  const main = await createPipeline(h, t, {
    name: 'fuzz-main',
    triggers: ['manual'],
    steps: [step('build'), step('test', { depends_on: ['build'] }), step('scan', { depends_on: ['test'], condition: { type: 'step_result', step: 'test', check: 'findings_count == 0' } })],
  });
  const single = await createPipeline(h, t, { name: 'fuzz-single', steps: [step('work', { tool: 'fuzz-tool' })] });
  // Webhooks start runs of a pipeline of their own, which no other endpoint changes.
  const hooked = await createPipeline(h, t, { name: 'fuzz-hooked', triggers: [{ type: 'webhook' }], steps: [step('work', { tool: 'fuzz-tool' })] });
  const hook = await h.request('POST', `/api/v1/pipelines/${hooked.id}/webhook-token`, { token: t.token });
  assert.equal(hook.status, 201);
  webhookToken = hook.body.token;
  const scan = await h.request('POST', '/api/v1/scans', { token: t.token, body: { name: 'fuzz-scan', pipeline_id: main.id, targets: { asset_id: assets[0].id } } });
  assert.equal(scan.status, 201, JSON.stringify(scan.body));
  const cron = await h.request('POST', '/api/v1/scans', { token: t.token, body: { name: 'fuzz-cron', pipeline_id: single.id, schedule_type: 'cron', cron_expression: '0 3 * * *' } });
  assert.equal(cron.status, 201, JSON.stringify(cron.body));
  const templates = await h.request('GET', '/api/v1/pipeline-templates', { token: t.token });

  // Commands the agent holds, some acknowledged, some running: what complete and fail act on.
  const runs = [];
  for (let i = 0; i < 40; i++) runs.push((await startRun(h, t, single.id, { asset_id: assets[i % 2].id })).id);
  runs.push((await startRun(h, t, main.id)).id);
  await h.settle();
  const held = await agent.poll({ limit: 100 });
  assert.equal(held.length, 40);
  for (const [i, cmd] of held.entries()) {
    assert.equal((await agent.ack(cmd.id)).status, 200);
    if (i % 2 === 0) assert.equal((await agent.start(cmd.id)).status, 200);
  }
  await agent.heartbeat({ version: '1.0' });
  const findings = [await insertFinding(h, t.id, { asset_id: assets[0].id }), await insertFinding(h, t.id, { status: 'resolved' })];
  const session = await h.request('POST', '/api/v1/agent/scans', { apiKey: agent.apiKey, body: { tool: 'fuzz-tool', asset_id: assets[0].id } });
  assert.equal(session.status, 201, JSON.stringify(session.body));
  const channels = [];
  for (const body of [
    { name: 'fuzz-hook', type: 'webhook', url: 'http://127.0.0.1:9/hook', events: ['pipeline.run.*'] },
    { name: 'fuzz-slack', type: 'slack', url: 'http://127.0.0.1:9/slack', events: [] },
  ]) {
    const res = await h.request('POST', '/api/v1/channels', { token: t.token, body });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    channels.push(res.body.channel.id as string);
  }
  await h.stopWorker();

  const stepKeys = ['build', 'test', 'scan'];
  Object.assign(ids, {
    '/api/v1/tenants': [t.id],
    '/api/v1/assets': assets.map((a) => a.id),
    '/api/v1/agents': victims.map((a) => a.id),
    '/api/v1/pipelines': [main.id, single.id],
    '/api/v1/pipelines/:id/steps': stepKeys,
    '/api/v1/pipeline-templates': templates.body.items.flatMap((x: { id: string; slug: string }) => [x.id, x.slug]),
    '/api/v1/pipeline-runs': runs,
    '/api/v1/scans': [scan.body.id, cron.body.id],
    '/api/v1/webhooks': [hooked.id],
    '/api/v1/agent/scans': [session.body.id],
    '/api/v1/agent/commands': held.map((c) => c.id),
    '/api/v1/findings': findings.map((f) => f.id),
    '/api/v1/channels': channels,
  });
  Object.assign(refs, {
    asset_id: ids['/api/v1/assets'], asset_ids: ids['/api/v1/assets'],
    pipeline_id: ids['/api/v1/pipelines'], pipeline_template_id: ids['/api/v1/pipelines'],
    command_id: ids['/api/v1/agent/commands'], command_ids: ids['/api/v1/agent/commands'], running_command_ids: ids['/api/v1/agent/commands'],
    id: [...stepKeys, 'lint', 'deploy'], step_key: [...stepKeys, 'lint'], step: stepKeys, depends_on: stepKeys, order: stepKeys,
    tool: ['fuzz-tool', 'semgrep'], tools: ['fuzz-tool', 'semgrep'], capabilities: ['sast', 'dast'], modules: ['scans', 'credentials'],
    event: ['push', 'pull_request'], webhook: ['push'],
    pipeline_ids: ids['/api/v1/pipelines'], events: ['pipeline.run.failed', 'finding.*', '*'],
  });
  await prepareFingerprint();
  console.log(`fuzz seed ${SEED} (FUZZ_SEED=<n> for another), ${RUNS_WITH_BODY} runs per endpoint with a body, ${RUNS_WITHOUT_BODY} without`);
});

after(async () => {
  const seconds = (performance.now() - startedAt) / 1000;
  console.log(`fuzz: ${tally.requests} requests in ${seconds.toFixed(1)} s (${(tally.requests / seconds).toFixed(0)}/s, setup included)`);
  for (const [name, statuses] of statusesOf) {
    console.log(`  ${name.padEnd(22)} ${[...statuses].sort(([a], [b]) => a - b).map(([st, n]) => `${st}×${n}`).join(' ')}`);
  }
  console.log(`  of which: fuzzing ${(tally.fuzzMs / 1000).toFixed(1)} s = requests ${(tally.requestMs / 1000).toFixed(1)} s + fingerprints ` +
    `${(tally.fingerprintMs / 1000).toFixed(1)} s + generating and checking ${((tally.fuzzMs - tally.requestMs - tally.fingerprintMs) / 1000).toFixed(1)} s`);
  for (const s of tally.slowest) console.log(`  slowest: ${s.ms.toFixed(0)} ms ${s.what}`);
  if (withoutIds.size) console.log(`  NOTE: no existing ids for ${[...withoutIds].map((p) => `${p}/:id`).join(', ')} (only unknown ones were sent): add fixtures`);
  await h?.close();
});

// Endpoints with a body first; then those without, deletions last (they remove fixtures).
const order = (e: Endpoint) => (e.body ? 0 : e.method === 'DELETE' ? 2 : 1);
const sorted = (Object.entries(endpoints) as [string, Endpoint][]).sort(([, a], [, b]) => order(a) - order(b));

describe('fuzzing every endpoint that changes something, bodies generated from its schema', () => {
  for (const [name, e] of sorted) {
    it(`${name}: ${e.method} ${e.path}`, () => fuzz(name, e, e.body ? RUNS_WITH_BODY : RUNS_WITHOUT_BODY));
  }

  it(`sent at least ${MIN_REQUESTS} requests`, () => {
    assert.ok(tally.requests >= MIN_REQUESTS, `only ${tally.requests} requests`);
  });
});

// What the fuzzer found, kept whatever the seed: each was a defect, fixed where it arose.
describe('cases the fuzzer found', () => {
  const json = (path: string, body: unknown, credential: Request['credential']): Request =>
    ({ path, body: { text: JSON.stringify(body) }, headers: { 'content-type': 'application/json' }, credential });
  const problem = async (name: keyof typeof endpoints, req: Request): Promise<{ path: string; message: string }> => {
    current = await fingerprint();
    const res = await send(name, endpoints[name], req);
    assert.equal(res.status, 400, JSON.stringify(res.body));
    return res.body.error.details[0];
  };

  it('a lone surrogate (JSON text "\\ud800") in a key or a string is a 400 naming it, not a database error without details (jsonb refused it; text columns stored U+FFFD)', async () => {
    const tenant = { token: t.token };
    const lone = /lone UTF-16 surrogate/;
    let d = await problem('createAsset', json('/api/v1/assets', { type: 'repository', name: 'x', metadata: { '\ud800': {} } }, tenant));
    assert.equal(d.path, 'metadata.\\ud800');
    assert.match(d.message, /^keys must not contain/);
    assert.match(d.message, lone);
    d = await problem('createAsset', json('/api/v1/assets', { type: 'repository', name: 'a\udc00b' }, tenant));
    assert.deepEqual([d.path, lone.test(d.message)], ['name', true]);
    d = await problem('createAgent', json('/api/v1/agents', { name: 'a', labels: { '\ud800': [] } }, tenant));
    assert.equal(d.path, 'labels.\\ud800');
    d = await problem('runPipeline', json(`/api/v1/pipelines/${ids['/api/v1/pipelines'][1]}/run`, { context: { k: ['\ud83d'] } }, tenant));
    assert.equal(d.path, 'context.k[0]');
    d = await problem('heartbeat', json('/api/v1/agent/heartbeat', { extra: { '\ud800': null } }, { apiKey: agent.apiKey }));
    assert.equal(d.path, 'extra.\\ud800');
    d = await problem('completeCommand', json(`/api/v1/agent/commands/${ids['/api/v1/agent/commands'][0]}/complete`, { extra: { '\ud800': [] } }, { apiKey: agent.apiKey }));
    assert.equal(d.path, 'extra.\\ud800');
    // A pair is a character like any other.
    const ok = await h.request('POST', '/api/v1/assets', { token: t.token, body: { type: 'repository', name: '\ud83d\ude00', metadata: { '\ud83d\ude00': '\ud83d\ude00' } } });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(ok.body.name, '😀');
  });

  it('a duration past a year is a 400 naming it (a step timeout of "2147483647m" overflowed its integer column: a 400 naming nothing)', async () => {
    const tenant = { token: t.token };
    const created = await createPipeline(h, t, { name: `durations ${randomUUID()}`, steps: [step('a')] });
    let d = await problem('updateStep', json(`/api/v1/pipelines/${created.id}/steps/a`, { timeout: '2147483647m' }, tenant));
    assert.equal(d.path, 'timeout');
    d = await problem('createPipeline', json('/api/v1/pipelines', { name: `d ${randomUUID()}`, steps: [step('a', { timeout: 2 ** 31 })] }, tenant));
    assert.equal(d.path, 'steps[0].timeout');
    d = await problem('createPipeline', json('/api/v1/pipelines', { name: `d ${randomUUID()}`, steps: [step('a')], settings: { timeout: 1e300 } }, tenant));
    assert.equal(d.path, 'settings.timeout');
  });

  it('a pipeline named with the longest name keeps names it derives within the bound: its schedule scan (was a 500) and its copy (was a 400)', async () => {
    const tenant = { token: t.token };
    const long = `${randomUUID()}${'x'.repeat(216)}é😀`; // 255 UTF-16 units, 254 characters; unlike any the fuzzing made
    const created = await createPipeline(h, t, { name: 'to be renamed', steps: [step('a')] });
    const doc = { name: long, trigger: [{ schedule: '0 2 * * *' }, { schedule: '0 3 * * *' }], steps: [step('a')] };
    const res = await send('updatePipeline', endpoints.updatePipeline, json(`/api/v1/pipelines/${created.id}`, doc, tenant));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const { rows } = await h.pool.query<{ name: string }>(`SELECT name FROM scans WHERE pipeline_id = $1 ORDER BY trigger_index`, [created.id]);
    assert.deepEqual(rows.map((r) => [...r.name].length), [255, 255]);
    assert.deepEqual(rows.map((r) => r.name.slice(-13)), [' (schedule 1)', ' (schedule 2)']);
    const copy = await send('clonePipeline', endpoints.clonePipeline, json(`/api/v1/pipelines/${created.id}/clone`, {}, tenant));
    assert.equal(copy.status, 201, JSON.stringify(copy.body));
    assert.ok(copy.body.name.endsWith('x (copy)') && copy.body.name.startsWith(long.slice(0, 36)) && copy.body.name.length === 255, copy.body.name);
    const again = await send('clonePipeline', endpoints.clonePipeline, json(`/api/v1/pipelines/${created.id}/clone`, {}, tenant));
    assert.equal(again.status, 201, JSON.stringify(again.body));
    assert.ok(again.body.name.endsWith(' (copy 2)'), again.body.name);
  });
});
