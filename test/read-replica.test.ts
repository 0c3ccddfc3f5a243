// DATABASE_READ_URL on a real streaming replica (test/support/replica.ts: an embedded primary
// and a cold-copied standby, whatever DATABASE_URL says): the whole orchestrator runs with
// DATABASE_URL = the primary and DATABASE_READ_URL = the standby. A whole workflow answers
// without an error (a write sent to the standby fails: "cannot execute … in a read-only
// transaction", a 500); with the standby's replay paused, lists and /metrics lag while
// writes and the agent protocol go on, a tenant reads its own writes and the dashboard reads
// what happened; a standby that stops costs no error.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import pino from 'pino';
import { loadConfig } from '../src/config.ts';
import { ReadRouting, lsnOf } from '../src/db/reads.ts';
import { startOrchestrator, type Orchestrator } from '../src/server.ts';
import { call, type CallOptions, type Res } from './support/http-client.ts';
import { replicaUnsupported, startReplicaPair, type ReplicaPair } from './support/replica.ts';

const ADMIN = 'replica-test-admin-token-0123456789';
const SARIF = readFileSync(new URL('./fixtures/sarif/eslint.sarif', import.meta.url));
const unsupported = replicaUnsupported();

let pair: ReplicaPair;
let orch: Orchestrator;
let primary: pg.Client;
let standby: pg.Client;
const logLines: string[] = [];
/** Every answer of the orchestrator in this file: none may be a 5xx. */
const answers: { method: string; path: string; status: number; body: unknown }[] = [];

async function api<T = any>(method: string, path: string, o: CallOptions = {}): Promise<Res<T>> {
  const res = await call<T>(orch.url, method, path, o);
  answers.push({ method, path, status: res.status, body: res.body });
  return res;
}

async function ok<T = any>(method: string, path: string, o: CallOptions, status = 200): Promise<T> {
  const res = await api<T>(method, path, o);
  assert.equal(res.status, status, `${method} ${path}: ${JSON.stringify(res.body)}`);
  return res.body;
}

type Tenant = { id: string; token: string; agentKey: string; assetId: string; pipelineId: string };

async function tenantWithWork(name: string): Promise<Tenant> {
  const created = await ok('POST', '/api/v1/tenants', { token: ADMIN, body: { name } }, 201);
  const token = created.token as string;
  const asset = await ok('POST', '/api/v1/assets', { token, body: { type: 'web_application', name: 'shop', value: 'https://shop.example.com' } }, 201);
  const agent = await ok('POST', '/api/v1/agents', { token, body: { name: 'scanner', tools: ['semgrep'], max_concurrent_jobs: 5 } }, 201);
  const pipeline = await ok('POST', '/api/v1/pipelines', { token, body: { name: 'sast', steps: [{ id: 'sast', name: 'sast', tool: 'semgrep' }] } }, 201);
  await ok('POST', '/api/v1/agent/heartbeat', { apiKey: agent.api_key, body: { version: '1.0', hostname: 'replica-test' } });
  return { id: created.tenant.id, token, agentKey: agent.api_key, assetId: asset.id, pipelineId: pipeline.id };
}

/** A run of the tenant's pipeline, and its one command claimed, acknowledged and started by the agent. */
async function runningStep(t: Tenant): Promise<{ runId: string; commandId: string }> {
  const run = await ok('POST', `/api/v1/pipelines/${t.pipelineId}/run`, { token: t.token, body: { asset_id: t.assetId } }, 201);
  const until = Date.now() + 15_000;
  let commands: { id: string; payload: { pipeline_run_id?: string } }[] = [];
  while (commands.length === 0) {
    assert.ok(Date.now() < until, 'the step was handed to the agent');
    commands = await ok('GET', '/api/v1/agent/commands?limit=1&wait=5', { apiKey: t.agentKey });
  }
  const commandId = commands[0].id;
  await ok('POST', `/api/v1/agent/commands/${commandId}/ack`, { apiKey: t.agentKey });
  await ok('POST', `/api/v1/agent/commands/${commandId}/start`, { apiKey: t.agentKey });
  return { runId: run.id, commandId };
}

/** The run's status on the primary itself, once it is `status`. */
async function onPrimary(runId: string, status: string): Promise<void> {
  const until = Date.now() + 15_000;
  for (;;) {
    const { rows } = await primary.query<{ status: string }>('SELECT status FROM pipeline_runs WHERE id = $1', [runId]);
    if (rows[0]?.status === status) return;
    assert.ok(Date.now() < until, `run ${runId} became ${status} on the primary (is ${rows[0]?.status})`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function signIn(token: string): Promise<{ cookie: string; csrf: string }> {
  const res = await api('POST', '/api/v1/session', { body: { token } });
  assert.equal(res.status, 204, JSON.stringify(res.body));
  const cookie = /^(scanflow_session=[^;]+)/.exec(String(res.headers['set-cookie']))![1];
  const me = await ok('GET', '/api/v1/session', { headers: { cookie } });
  return { cookie, csrf: me.csrf_token };
}

const gauge = (text: string, name: string, tenantId: string): number =>
  Number(new RegExp(`^${name}\\{tenant_id="${tenantId}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);

describe('DATABASE_READ_URL on a streaming replica', { skip: unsupported ? `no replica on this platform: ${unsupported}` : false }, () => {
  before(async () => {
    pair = await startReplicaPair('scanflow_replica');
    const config = loadConfig({
      DATABASE_URL: pair.primaryUrl, DATABASE_READ_URL: pair.replicaUrl, PORT: '0', ADMIN_TOKEN: ADMIN, WORKER_CONCURRENCY: '4',
    });
    const logger = pino({ level: 'warn' }, { write: (line: string) => void logLines.push(line) });
    orch = await startOrchestrator(config, logger);
    primary = new pg.Client({ connectionString: pair.primaryUrl });
    standby = new pg.Client({ connectionString: pair.replicaUrl });
    await primary.connect();
    await standby.connect();
  });
  after(async () => {
    await primary?.end();
    await standby?.end().catch(() => {});
    await orch?.stop();
    await pair?.stop();
  });

  it('a whole workflow: every answer without an error, and no write reaches the standby', async () => {
    const t = await tenantWithWork('replica-workflow');
    const { runId, commandId } = await runningStep(t);
    const ingested = await ok('POST', '/api/v1/agent/ingest/sarif', {
      apiKey: t.agentKey, raw: SARIF, headers: { 'content-type': 'application/sarif+json', 'x-command-id': commandId },
    }, 201);
    assert.ok(ingested.findings_created > 0, JSON.stringify(ingested));
    await ok('POST', `/api/v1/agent/commands/${commandId}/complete`, { apiKey: t.agentKey, body: { findings_count: ingested.findings_created } });
    await onPrimary(runId, 'completed');
    await pair.caughtUp();
    assert.equal((await ok('GET', `/api/v1/pipeline-runs/${runId}`, { token: t.token })).status, 'completed');

    // Triage, then the finding read back at once: the triage is there (the tenant's own write).
    const findings = await ok('GET', '/api/v1/findings?limit=5', { token: t.token });
    assert.ok(findings.items.length > 0);
    const finding = findings.items[0];
    await ok('PATCH', `/api/v1/findings/${finding.id}`, { token: t.token, body: { status: 'false_positive', reason: 'test data' } });
    assert.equal((await ok('GET', `/api/v1/findings/${finding.id}`, { token: t.token })).status, 'false_positive');

    // A run cancelled, then read back at once.
    const second = await ok('POST', `/api/v1/pipelines/${t.pipelineId}/run`, { token: t.token, body: { asset_id: t.assetId } }, 201);
    await ok('POST', `/api/v1/pipeline-runs/${second.id}/cancel`, { token: t.token });
    assert.equal((await ok('GET', `/api/v1/pipeline-runs/${second.id}`, { token: t.token })).status, 'cancelled');

    // Every list and detail the replica serves.
    for (const path of [
      '/api/v1/assets', `/api/v1/assets/${t.assetId}`, '/api/v1/agents', '/api/v1/pipelines', `/api/v1/pipelines/${t.pipelineId}`,
      `/api/v1/pipelines/${t.pipelineId}/steps`, '/api/v1/pipeline-runs', '/api/v1/pipeline-runs?status=completed', `/api/v1/pipeline-runs/${runId}/steps`,
      `/api/v1/pipeline-runs/${runId}/steps/sast`, `/api/v1/pipeline-runs/${runId}/steps/sast/logs`, `/api/v1/pipeline-runs/${runId}/findings`,
      `/api/v1/pipeline-runs/${runId}/events`, '/api/v1/commands', `/api/v1/commands/${commandId}`, '/api/v1/scans', '/api/v1/findings/summary',
      `/api/v1/findings/${finding.id}/sightings`, `/api/v1/findings/${finding.id}/status-changes`, '/api/v1/channels', '/api/v1/events',
    ]) await ok('GET', path, { token: t.token });
    await ok('GET', '/api/v1/tenants', { token: ADMIN });
    await ok('GET', `/api/v1/tenants/${t.id}`, { token: ADMIN });
    assert.equal(gauge(await ok('GET', '/metrics', {}), 'pipeline_runs_in_progress', t.id), 0);

    // The dashboard's pages, through a session (their reads are the API's), and a triage from it.
    const s = await signIn(t.token);
    for (const page of ['/', `/runs/${runId}`, `/runs/${runId}?part=live`, '/agents', '/scans', '/findings']) {
      const res = await api('GET', page, { headers: { cookie: s.cookie } });
      assert.equal(res.status, 200, `${page}: ${String(res.body).slice(0, 300)}`);
    }
    const other = findings.items[1] ?? finding;
    await ok('PATCH', `/api/v1/findings/${other.id}`, {
      body: { status: 'accepted_risk', reason: 'lab only' }, headers: { cookie: s.cookie, 'x-csrf-token': s.csrf },
    });

    const failures = answers.filter((a) => a.status >= 500);
    assert.deepEqual(failures, [], 'no answer is a 5xx');
    assert.doesNotMatch(pair.replicaLog(), /read-only transaction|cannot execute/, 'no write was sent to the standby');
    assert.deepEqual(logLines.filter((l) => /replica/.test(l)), [], 'the replica never failed a read');
    // The reads were the standby's: its sessions named 'scanflow reads' exist there, and none on the primary.
    const named = `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'scanflow reads'`;
    assert.ok((await standby.query(named)).rows[0].n > 0, 'the orchestrator reads the standby');
    assert.equal((await primary.query(named)).rows[0].n, 0);
  });

  it('with the standby\'s replay paused: lists and /metrics lag, writes and the agent protocol go on, a tenant reads its own writes, the dashboard reads what happened', async () => {
    const t = await tenantWithWork('replica-paused');
    const { runId, commandId } = await runningStep(t);
    await pair.caughtUp();
    assert.equal((await ok('GET', `/api/v1/pipeline-runs/${runId}`, { token: t.token })).step_runs[0].status, 'running');
    assert.equal(gauge(await ok('GET', '/metrics', {}), 'pipeline_runs_in_progress', t.id), 1);

    await standby.query('SELECT pg_wal_replay_pause()');
    try {
      for (let until = Date.now() + 10_000; ;) {
        const { rows } = await standby.query<{ state: string }>('SELECT pg_get_wal_replay_pause_state() AS state');
        if (rows[0].state === 'paused') break;
        assert.ok(Date.now() < until, 'replay paused');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }

      // The agent protocol writes on the primary: the step completes, the worker ends the run.
      await ok('POST', `/api/v1/agent/commands/${commandId}/complete`, { apiKey: t.agentKey, body: { findings_count: 0 } });
      await onPrimary(runId, 'completed');

      // An API client's reads are the standby's, as it was when replay paused.
      const stale = await ok('GET', `/api/v1/pipeline-runs/${runId}`, { token: t.token });
      assert.equal(stale.status, 'running', 'the run as the paused standby has it');
      assert.equal(stale.step_runs[0].status, 'running');
      const running = await ok('GET', '/api/v1/pipeline-runs?status=running', { token: t.token });
      assert.deepEqual(running.items.map((r: { id: string }) => r.id), [runId]);
      assert.equal(gauge(await ok('GET', '/metrics', {}), 'pipeline_runs_in_progress', t.id), 1, 'the gauge as the standby has it');

      // The dashboard's reads see everything committed before them (after the 250 ms wait, the primary).
      const s = await signIn(t.token);
      assert.equal((await ok('GET', `/api/v1/pipeline-runs/${runId}`, { headers: { cookie: s.cookie } })).status, 'completed');
      const page = await api('GET', `/runs/${runId}?part=live`, { headers: { cookie: s.cookie } });
      assert.equal(page.status, 200);
      assert.match(String(page.body), /id="run-status" data-status="completed"/, 'the run page shows the run completed');
      assert.match(String(page.body), /id="node-sast"[^>]*data-state="completed"/, 'and its step');

      // A tenant's own writes: created and cancelled while the standby cannot have them, read back at once.
      const { runId: thirdId } = await (async () => {
        const third = await ok('POST', `/api/v1/pipelines/${t.pipelineId}/run`, { token: t.token, body: { asset_id: t.assetId } }, 201);
        return { runId: third.id as string };
      })();
      assert.equal((await standby.query('SELECT count(*)::int AS n FROM pipeline_runs WHERE id = $1', [thirdId])).rows[0].n, 0,
        'the standby does not have the new run');
      assert.equal((await ok('GET', `/api/v1/pipeline-runs/${thirdId}`, { token: t.token })).id, thirdId);
      await ok('POST', `/api/v1/pipeline-runs/${thirdId}/cancel`, { token: t.token });
      assert.equal((await ok('GET', `/api/v1/pipeline-runs/${thirdId}`, { token: t.token })).status, 'cancelled');
    } finally {
      await standby.query('SELECT pg_wal_replay_resume()');
    }
    await pair.caughtUp();
    assert.equal((await ok('GET', `/api/v1/pipeline-runs/${runId}`, { token: t.token })).status, 'completed', 'the standby caught up');
    assert.equal(gauge(await ok('GET', '/metrics', {}), 'pipeline_runs_in_progress', t.id), 0);
    assert.deepEqual(answers.filter((a) => a.status >= 500), []);
    assert.doesNotMatch(pair.replicaLog(), /read-only transaction|cannot execute/);
  });

  it('a standby that stops: reads go to the primary, no request fails', async () => {
    const t = await tenantWithWork('replica-gone');
    await pair.caughtUp();
    await standby.end();
    await pair.stopReplica();
    assert.equal((await ok('GET', '/api/v1/pipelines', { token: t.token })).items.length, 1);
    assert.equal((await ok('GET', `/api/v1/assets/${t.assetId}`, { token: t.token })).id, t.assetId);
    await ok('GET', '/metrics', {});
    assert.ok(logLines.some((l) => /the read replica failed/.test(l)), 'the failure is logged');
    assert.deepEqual(answers.filter((a) => a.status >= 500), []);
  });
});

describe('the DATABASE_READ_URL setting', () => {
  it('is a postgres:// URL, named when it is not; unset, every read stays on the one pool', () => {
    assert.throws(() => loadConfig({ DATABASE_READ_URL: 'mysql://replica/db' }), /DATABASE_READ_URL: must be a postgres:\/\/ URL/);
    assert.equal(loadConfig({ DATABASE_READ_URL: 'postgres://replica/db' }).databaseReadUrl, 'postgres://replica/db');
    assert.equal(loadConfig({}).databaseReadUrl, undefined);
    const pool = {} as pg.Pool;
    assert.equal(new ReadRouting(pool, null, pino({ level: 'silent' })).reads({ key: 't', causal: true }), pool);
  });

  it('compares WAL positions as numbers, not as text', () => {
    assert.ok(lsnOf('A/0') > lsnOf('9/FFFFFFFF'));
    assert.ok(lsnOf('16/B374D848') > lsnOf('16/B374D847'));
    assert.equal(lsnOf('0/10'), 16n);
  });
});
