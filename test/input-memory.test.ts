// Memory per request is bounded (issue 7, part 4): the real server (src/main.ts) as a child
// process on its own database gets 50 deeply nested bodies, to several endpoints and
// fields, some 1 MiB large, and then bodies of 250,000 wrong values. Every answer is a 400
// naming the field, the process's resident memory (VmRSS) stays within 100 MB of what it
// was after warm-up, and nothing is written. Before the bounds each nested body cost
// 40–80 MB and answered 500 (issue 7: a fuzz of 12,841 bodies grew the server to 1.15 GB).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/db.ts';
import { freePort } from './support/ports.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const mainTs = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const ADMIN = `memory-admin-token-${Math.random().toString(36).slice(2)}`;
const MB = 1024 * 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let db: TestDatabase;
let child: ChildProcess;
let output = '';
let base = '';

/** The child's resident set size in bytes. */
function rss(): number {
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  assert.ok(kb, 'VmRSS in /proc/<pid>/status');
  return Number(kb[1]) * 1024;
}

async function send(method: string, path: string, auth: { token?: string; apiKey?: string }, body?: string) {
  const headers: Record<string, string> = {};
  if (auth.token) headers.authorization = `Bearer ${auth.token}`;
  if (auth.apiKey) headers['x-api-key'] = auth.apiKey;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, { method, headers, body, signal: AbortSignal.timeout(20_000) });
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed };
}

async function rowCounts(): Promise<Record<string, number>> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    const tables = ['tenants', 'assets', 'agents', 'pipeline_versions', 'pipeline_steps', 'pipeline_runs', 'step_runs', 'commands', 'scans', 'events'];
    const { rows } = await c.query(`SELECT ${tables.map((t) => `(SELECT count(*)::int FROM ${t}) AS ${t}`).join(', ')},
      (SELECT count(*)::int FROM commands WHERE status = 'running') AS running_commands`);
    return rows[0];
  } finally {
    await c.end();
  }
}

const arrays = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
const objects = (n: number) => `${'{"k":'.repeat(n)}1${'}'.repeat(n)}`;

type Target = { method: string; path: string; auth: { token?: string; apiKey?: string }; body: (value: string) => string; field: string };
let targets: Target[] = [];
let wrongValues: Target[] = [];

before(async () => {
  db = await createTestDatabase();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, [mainTs], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: db.url, PORT: String(port), ADMIN_TOKEN: ADMIN, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output = (output + d).slice(-20_000)));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output = (output + d).slice(-20_000)));
  const until = Date.now() + 20_000;
  while (!/scanflow is listening/.test(output)) {
    assert.ok(child.exitCode === null, `main.ts exited:\n${output}`);
    assert.ok(Date.now() < until, `main.ts did not start:\n${output}`);
    await sleep(50);
  }

  // A tenant with an asset, an agent, a one-step pipeline, a scan, and a running command.
  const tenant = await send('POST', '/api/v1/tenants', { token: ADMIN }, JSON.stringify({ name: 'memory' }));
  assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
  const token = tenant.body.token as string;
  const asset = await send('POST', '/api/v1/assets', { token }, JSON.stringify({ type: 'server', name: 'srv' }));
  assert.equal(asset.status, 201, JSON.stringify(asset.body));
  const agent = await send('POST', '/api/v1/agents', { token }, JSON.stringify({ name: 'a', tools: ['tool-x'] }));
  assert.equal(agent.status, 201, JSON.stringify(agent.body));
  const apiKey = agent.body.api_key as string;
  const pipeline = await send('POST', '/api/v1/pipelines', { token }, JSON.stringify({ name: 'one', steps: [{ id: 'x', tool: 'tool-x' }] }));
  assert.equal(pipeline.status, 201, JSON.stringify(pipeline.body));
  const p = `/api/v1/pipelines/${pipeline.body.id}`;
  const scan = await send('POST', '/api/v1/scans', { token }, JSON.stringify({
    name: 'manual', pipeline_id: pipeline.body.id, targets: { asset_id: asset.body.id }, schedule_type: 'manual',
  }));
  assert.equal(scan.status, 201, JSON.stringify(scan.body));
  const run = await send('POST', `${p}/run`, { token }, JSON.stringify({ asset_id: asset.body.id }));
  assert.equal(run.status, 201, JSON.stringify(run.body));
  const polled = await send('GET', '/api/v1/agent/commands?limit=1&wait=15', { apiKey });
  assert.equal(polled.status, 200, JSON.stringify(polled.body));
  const [cmd] = polled.body;
  assert.ok(cmd, 'a command was dispatched');
  for (const step of ['ack', 'start']) assert.equal((await send('POST', `/api/v1/agent/commands/${cmd.id}/${step}`, { apiKey })).status, 200);
  const complete = `/api/v1/agent/commands/${cmd.id}/complete`;

  targets = [
    { method: 'POST', path: '/api/v1/assets', auth: { token }, body: (x) => `{"type":"server","name":"deep","metadata":${x}}`, field: 'metadata' },
    { method: 'PUT', path: `/api/v1/assets/${asset.body.id}`, auth: { token }, body: (x) => `{"metadata":${x}}`, field: 'metadata' },
    { method: 'POST', path: '/api/v1/agents', auth: { token }, body: (x) => `{"name":"deep","tools":["t"],"labels":${x}}`, field: 'labels' },
    { method: 'POST', path: '/api/v1/pipelines', auth: { token }, body: (x) => `{"name":"deep","steps":[{"id":"a","tool":"t","config":${x}}]}`, field: 'steps[0].config' },
    { method: 'POST', path: `${p}/run`, auth: { token }, body: (x) => `{"context":${x}}`, field: 'context' },
    { method: 'POST', path: `/api/v1/scans/${scan.body.id}/trigger`, auth: { token }, body: (x) => `{"context":${x}}`, field: 'context' },
    { method: 'POST', path: `/api/v1/webhooks/${pipeline.body.id}`, auth: { token }, body: (x) => `{"context":${x}}`, field: 'context' },
    { method: 'POST', path: '/api/v1/agent/heartbeat', auth: { apiKey }, body: (x) => `{"hostname":"h","extra":${x}}`, field: 'extra' },
    { method: 'POST', path: complete, auth: { apiKey }, body: (x) => `{"findings_count":1,"output":${x}}`, field: 'output' },
    { method: 'POST', path: complete, auth: { apiKey }, body: (x) => `{"result":{"output":${x}}}`, field: 'result.output' },
  ];
  // Wrong values by the quarter million: every one an issue if all were listed.
  const wrong = Array(250_000).fill(1).join(',');
  wrongValues = [
    { method: 'POST', path: '/api/v1/assets', auth: { token }, body: () => `{"type":"server","name":"tags","tags":[${wrong}]}`, field: 'tags' },
    { method: 'POST', path: '/api/v1/agents', auth: { token }, body: () => `{"name":"tools","tools":[${wrong}]}`, field: 'tools' },
    { method: 'POST', path: '/api/v1/pipelines', auth: { token }, body: () => `{"name":"caps","steps":[{"id":"a","capabilities":[${wrong}]}]}`, field: 'steps[0].capabilities' },
    { method: 'POST', path: '/api/v1/agent/heartbeat', auth: { apiKey }, body: () => `{"command_ids":[${wrong}]}`, field: 'command_ids' },
  ];
});

after(async () => {
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await Promise.race([new Promise((resolve) => child.once('exit', resolve)), sleep(10_000)]);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
  await db?.drop();
});

/** Sends the bodies; returns what went wrong and the largest RSS seen after any answer. */
async function sendAll(bodies: { target: Target; raw: string }[]): Promise<{ failures: string[]; peak: number }> {
  const failures: string[] = [];
  let peak = 0;
  for (const { target, raw } of bodies) {
    const res = await send(target.method, target.path, target.auth, raw);
    peak = Math.max(peak, rss());
    const details = res.body?.error?.details;
    const named = Array.isArray(details) && details.some((d: any) => typeof d?.path === 'string' && d.path.startsWith(target.field));
    if (res.status !== 400 || !named) {
      failures.push(`${target.method} ${target.path} (${raw.length} bytes): ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
    }
  }
  return { failures, peak };
}

describe('memory per request is bounded', { timeout: 120_000 }, () => {
  it('50 deeply nested bodies (5,000 levels to 1 MiB of "["): each a 400 naming the field, RSS within 100 MB, nothing written', async () => {
    const counts = await rowCounts();
    const deepBodies = (n: number) =>
      Array.from({ length: n }, (_, i) => {
        const target = targets[i % targets.length];
        // Alternately objects 5,000 deep, arrays 5,000 deep, and a body of 1 MiB of "[".
        const kind = Math.floor(i / targets.length) % 3;
        const value = kind === 0 ? objects(5_000) : kind === 1 ? arrays(5_000) : arrays(Math.floor((MB - 100 - target.body("").length) / 2));
        return { target, raw: target.body(value) };
      });
    // Warm-up: the code paths, the allocator and the first GCs.
    const initial = rss();
    const warm = await sendAll(deepBodies(30));
    assert.deepEqual(warm.failures, []);
    await sleep(300);
    const start = rss();
    const { failures, peak } = await sendAll(deepBodies(50));
    await sleep(300);
    const end = rss();
    const line = `RSS before ${(initial / MB).toFixed(1)} MB, after warm-up ${(start / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB, end ${(end / MB).toFixed(1)} MB (peak − start ${((peak - start) / MB).toFixed(1)} MB)`;
    console.log(`# deep bodies: ${line}`);
    assert.deepEqual(failures, []);
    assert.ok(peak - start < 100 * MB, line);
    assert.deepEqual(await rowCounts(), counts, 'nothing was written');
    assert.doesNotMatch(output, /unhandled error|RangeError|Maximum call stack/);
  });

  it('bodies of 250,000 wrong values: each a 400 naming the field, RSS within 100 MB, nothing written', async () => {
    const counts = await rowCounts();
    const bodies = Array.from({ length: 12 }, (_, i) => ({ target: wrongValues[i % wrongValues.length], raw: wrongValues[i % wrongValues.length].body('') }));
    for (const b of bodies) assert.ok(b.raw.length < MB, String(b.raw.length));
    const warm = await sendAll(bodies.slice(0, 4));
    assert.deepEqual(warm.failures, []);
    await sleep(300);
    const start = rss();
    const { failures, peak } = await sendAll(bodies);
    const line = `RSS after warm-up ${(start / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB (peak − start ${((peak - start) / MB).toFixed(1)} MB)`;
    console.log(`# wrong values: ${line}`);
    assert.deepEqual(failures, []);
    assert.ok(peak - start < 100 * MB, line);
    assert.deepEqual(await rowCounts(), counts, 'nothing was written');
  });
});
