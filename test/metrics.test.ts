// GET /metrics: the seed system's names and labels counted where the transitions happen
// (a run through the real app, worker and agent protocol), gauges read from the database,
// routes as patterns, METRICS_TOKEN, and promtool's own check of the output.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createPipeline, createTenant, getRun, passCommandDeadline, passRetryDelays, runCommands, startRun, step, type Tenant,
} from './support/fixtures.ts';

let h: Harness;
let tenant: Tenant;

before(async () => {
  h = await startHarness();
  tenant = await createTenant(h);
});
after(() => h.close());

type Sample = { name: string; labels: Record<string, string>; value: number };

/** The samples of a Prometheus text exposition (no escapes in our label values). */
function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(): Promise<{ text: string; value: (name: string, labels?: Record<string, string>) => number }> {
  const res = await h.request('GET', '/metrics');
  assert.equal(res.status, 200, String(res.body));
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = res.body as string;
  const all = samples(text);
  const value = (name: string, labels: Record<string, string> = {}) =>
    all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
  return { text, value };
}

describe('GET /metrics', () => {
  it('counts a run, its steps, commands, a retry and an agent report where they happened, and reads the gauges from the database', async () => {
    const t = { tenant_id: tenant.id };
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b'] });
    await agent.heartbeat();
    const pipeline = await createPipeline(h, tenant, {
      name: 'metrics',
      steps: [step('a', { max_retries: 1, retry_delay: '1s' }), step('b', { depends_on: ['a'] })],
    });
    let m = await scrape();
    assert.equal(m.value('agents_online', t), 1);
    assert.equal(m.value('pipeline_runs_in_progress', t), 0);
    assert.equal(m.value('command_queue_size', t), 0);

    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    m = await scrape();
    assert.equal(m.value('pipeline_runs_total', { ...t, status: 'pending' }), 1);
    assert.equal(m.value('pipeline_runs_total', { ...t, status: 'running' }), 1);
    assert.equal(m.value('pipeline_runs_in_progress', t), 1);
    assert.equal(m.value('command_queue_size', t), 1, 'step a waits for an agent');
    assert.equal(m.value('step_runs_total', { ...t, step_key: 'a', status: 'queued' }), 1);
    assert.equal(m.value('commands_total', { ...t, type: 'scan', status: 'pending' }), 1);

    // Attempt 1 of a fails, is retried; attempt 2 and b complete.
    const [first] = await agent.poll();
    assert.equal((await agent.ack(first.id)).status, 200);
    assert.equal((await agent.fail(first.id)).status, 200);
    await h.settle();
    await passRetryDelays(h, run.id);
    await h.settle();
    for (let i = 0; i < 2; i++) {
      const [c] = await agent.poll();
      await agent.finish(c.id, { findings_count: 0 });
      await h.settle();
    }
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
    // Replays change nothing and count nothing.
    const done = (await runCommands(h, run.id, 'b'))[0];
    assert.equal((await agent.complete(done.id)).status, 200);

    m = await scrape();
    assert.equal(m.value('pipeline_runs_total', { ...t, status: 'completed' }), 1);
    assert.equal(m.value('pipeline_runs_in_progress', t), 0);
    assert.equal(m.value('command_queue_size', t), 0);
    assert.equal(m.value('step_runs_total', { ...t, step_key: 'a', status: 'queued' }), 2, 'queued, then queued again by the retry');
    assert.equal(m.value('step_runs_total', { ...t, step_key: 'a', status: 'running' }), 2);
    assert.equal(m.value('step_runs_total', { ...t, step_key: 'a', status: 'completed' }), 1);
    assert.equal(m.value('step_runs_total', { ...t, step_key: 'b', status: 'completed' }), 1);
    assert.ok(m.value('step_retry_total') >= 1);
    assert.equal(m.value('commands_total', { ...t, status: 'pending' }), 3);
    assert.equal(m.value('commands_total', { ...t, status: 'acknowledged' }), 3);
    assert.equal(m.value('commands_total', { ...t, status: 'running' }), 2, 'the failed attempt was never started');
    assert.equal(m.value('commands_total', { ...t, status: 'completed' }), 2, 'the replayed completion is not counted');
    assert.equal(m.value('commands_total', { ...t, status: 'failed' }), 1);
    assert.equal(m.value('agent_commands_executed_total', { ...t, agent_id: agent.id, status: 'completed' }), 2);
    assert.equal(m.value('agent_commands_executed_total', { ...t, agent_id: agent.id, status: 'failed' }), 1);
    assert.ok(m.value('pipeline_run_duration_seconds_count') >= 1);
    assert.ok(m.value('step_run_duration_seconds_count') >= 2);
    assert.ok(m.value('command_duration_seconds_count') >= 3);
    // Every series of the seed's list is there (counters with no sample yet show their HELP).
    for (const name of [
      'pipeline_runs_total', 'pipeline_run_duration_seconds', 'pipeline_runs_in_progress', 'step_runs_total',
      'step_run_duration_seconds', 'step_retry_total', 'commands_total', 'command_duration_seconds',
      'commands_expired_total', 'command_queue_size', 'agents_online', 'agent_commands_executed_total',
      'scans_scheduled_total', 'findings_ingested_total', 'event_deliveries_total', 'http_request_duration_seconds',
    ]) {
      assert.match(m.text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
  });

  it('a cancelled run counts its cancelled step and command; an expired command counts as expired', async () => {
    const t = { tenant_id: tenant.id };
    const pipeline = await createPipeline(h, tenant, { name: 'cancelled', steps: [step('x', { tool: 'nobody-has-it' })] });
    const before = await scrape();
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    assert.equal((await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: tenant.token })).status, 200);
    await h.settle();
    const m = await scrape();
    const delta = (name: string, labels: Record<string, string>) => m.value(name, labels) - before.value(name, labels);
    assert.equal(delta('pipeline_runs_total', { ...t, status: 'cancelled' }), 1);
    assert.equal(delta('step_runs_total', { ...t, step_key: 'x', status: 'cancelled' }), 1);
    assert.equal(delta('commands_total', { ...t, status: 'cancelled' }), 1);

    const late = await startRun(h, tenant, pipeline.id);
    await h.settle();
    const [command] = await runCommands(h, late.id);
    await passCommandDeadline(h, command.id);
    await h.settle();
    assert.equal((await getRun(h, tenant, late.id)).status, 'failed');
    const after = await scrape();
    const since = (name: string, labels: Record<string, string>) => after.value(name, labels) - m.value(name, labels);
    assert.equal(since('commands_expired_total', t), 1);
    assert.equal(since('commands_total', { ...t, status: 'expired' }), 1);
    assert.equal(since('step_runs_total', { ...t, step_key: 'x', status: 'timeout' }), 1);
    assert.equal(since('pipeline_runs_total', { ...t, status: 'failed' }), 1);
  });

  it('labels HTTP requests with the route pattern, never the raw path', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    assert.equal((await h.request('GET', `/api/v1/pipeline-runs/${id}`, { token: tenant.token })).status, 404);
    assert.equal((await h.request('GET', `/no/such/${id}`)).status, 404);
    const m = await scrape();
    assert.ok(m.value('http_request_duration_seconds_count', { method: 'GET', route: '/api/v1/pipeline-runs/:id', status: '404' }) >= 1);
    assert.ok(m.value('http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status: '404' }) >= 1);
    assert.doesNotMatch(m.text, new RegExp(id));
  });

  it('passes promtool check metrics (Debian package prometheus)', async (t) => {
    const probe = spawnSync('promtool', ['--version']);
    if (probe.error) {
      t.skip('promtool is not installed (Debian package prometheus: apt-get install prometheus)');
      return;
    }
    const { text } = await scrape();
    const checked = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(checked.status, 0, `promtool check metrics:\n${checked.stdout}${checked.stderr}`);
  });
});

describe('METRICS_TOKEN', () => {
  let guarded: Harness;
  before(async () => {
    guarded = await startHarness({ worker: false, metricsToken: 'metrics-token-0123456789' });
  });
  after(() => guarded.close());

  it('wants the token as a bearer when it is set: 401 in the error shape without it or with another', async () => {
    const attempts: Record<string, string>[] = [{}, { authorization: 'Bearer wrong-token-0123456789' }, { 'x-api-key': 'metrics-token-0123456789' }];
    for (const headers of attempts) {
      const res = await guarded.request('GET', '/metrics', { headers });
      assert.equal(res.status, 401);
      assert.equal(res.body.error.code, 'unauthorized');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="metrics"');
    }
    const ok = await guarded.request('GET', '/metrics', { token: 'metrics-token-0123456789' });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /^# HELP pipeline_runs_total /m);
  });
});
