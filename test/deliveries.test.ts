// Events out to real receivers on 127.0.0.1 (API.md Part 2 "Events out"): webhooks signed per
// Standard Webhooks 1.0 and verified with its reference implementation (standardwebhooks),
// Slack incoming-webhook bodies, email through an SMTP server (smtp-server). Retries are
// driven by moving run_at and next_attempt_at to now, never by sleeping.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, getRun, silenceAgent, startRun, step, type Tenant } from './support/fixtures.ts';
import { eventDeliveriesTotal } from '../src/observability/metrics.ts';
import { HttpReceiver, SmtpReceiver } from './support/receivers.ts';
import { DEFAULT_DELIVERY } from '../src/config.ts';
import { RETRY_DELAYS_SECONDS } from '../src/domain/channels.ts';

let h: Harness;
let t: Tenant;
let smtp: SmtpReceiver;
const receivers: HttpReceiver[] = [];

before(async () => {
  smtp = await SmtpReceiver.start();
  h = await startHarness({
    orchestration: { delivery: { ...DEFAULT_DELIVERY, timeoutSeconds: 1, smtpUrl: smtp.url, smtpFrom: 'scanflow@test.example', publicUrl: 'https://scanflow.test' } },
  });
  t = await createTenant(h, 'deliveries');
});
after(async () => {
  await h.close();
  for (const r of receivers) await r.close();
  await smtp.close();
});

async function receiver(): Promise<HttpReceiver> {
  const r = await HttpReceiver.start();
  receivers.push(r);
  return r;
}

async function createChannel(tenant: Tenant, body: Record<string, unknown>): Promise<{ channel: Record<string, any>; secret?: string }> {
  const res = await h.request('POST', '/api/v1/channels', { token: tenant.token, body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

async function attempts(tenant: Tenant, channelId: string): Promise<Record<string, any>[]> {
  const res = await h.request('GET', `/api/v1/channels/${channelId}/deliveries?limit=200`, { token: tenant.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
}

async function channel(tenant: Tenant, id: string): Promise<Record<string, any>> {
  const res = await h.request('GET', `/api/v1/channels/${id}`, { token: tenant.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/** Every delivery retry waiting for its time is due now (the job's run_at and the delivery's next attempt). */
async function retriesDueNow(): Promise<number> {
  const { rowCount } = await h.pool.query(`UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending' AND next_attempt_at > now()`);
  await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now()
                      WHERE task_id = (SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'event_deliver') AND locked_at IS NULL`);
  return rowCount ?? 0;
}

/** Runs every step of a run to its end with one agent: completes them, or fails those listed. */
async function runThrough(agent: TestAgent, runId: string, fail: string[] = []): Promise<Record<string, any>> {
  for (let i = 0; i < 20; i++) {
    await h.settle();
    const run = await getRun(h, t, runId);
    if (!['pending', 'running'].includes(run.status)) return run;
    for (const cmd of await agent.poll({ limit: 10 })) {
      if (fail.includes(cmd.payload.step_key)) {
        assert.equal((await agent.ack(cmd.id)).status, 200);
        assert.equal((await agent.fail(cmd.id, { error_message: 'scanner crashed', error_code: 'tool_error' })).status, 200);
      } else {
        await agent.finish(cmd.id, { findings_count: 2 });
      }
    }
  }
  assert.fail(`run ${runId} did not end`);
}

const verify = (secret: string, r: { body: string; headers: Record<string, string> }) => new Webhook(secret).verify(r.body, r.headers);

describe('webhooks (Standard Webhooks 1.0)', () => {
  it('a run of a subscribed pipeline: its started and completed events, signed, verified by the reference implementation; no step events', async () => {
    const recv = await receiver();
    const { channel: ch, secret } = await createChannel(t, { name: 'runs', type: 'webhook', url: `${recv.url}/hook`, events: ['pipeline.run.*'] });
    assert.match(secret!, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const agent = await TestAgent.create(h, t, { tools: ['tool-a', 'tool-b'] });
    const p = await createPipeline(h, t, { name: 'Signed', steps: [step('a'), step('b', { depends_on: ['a'] })] });
    const run = await startRun(h, t, p.id);
    assert.equal((await runThrough(agent, run.id)).status, 'completed');
    await recv.waitFor(2);
    await h.settle();
    assert.equal(recv.received.length, 2, 'one message per run event, none for its 6 step events');
    const payloads = recv.received.map((r) => verify(secret!, r) as Record<string, any>);
    assert.deepEqual(payloads.map((x) => x.event).sort(), ['pipeline.run.completed', 'pipeline.run.started']);
    const done = payloads.find((x) => x.event === 'pipeline.run.completed')!;
    assert.equal(done.tenant_id, t.id);
    assert.equal(typeof done.id, 'number');
    assert.ok(!Number.isNaN(Date.parse(done.timestamp)));
    // Seed 001's payload fields.
    assert.equal(done.data.pipeline_run_id, run.id);
    assert.equal(done.data.pipeline_name, 'Signed');
    assert.equal(done.data.status, 'completed');
    assert.equal(done.data.findings_count, 4);
    assert.equal(typeof done.data.duration_seconds, 'number');
    for (const r of recv.received) {
      assert.equal(r.path, '/hook');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.match(r.headers['webhook-id'], /^msg_[0-9a-f]{32}$/);
      assert.ok(Math.abs(Number(r.headers['webhook-timestamp']) - Date.now() / 1000) < 60);
      assert.throws(() => verify(`whsec_${Buffer.alloc(32, 7).toString('base64')}`, r), /signature/i, 'another secret does not verify');
    }
    const log = await attempts(t, ch.id);
    assert.equal(log.length, 2);
    for (const a of log) {
      assert.equal(a.outcome, 'delivered');
      assert.equal(a.status_code, 200);
      assert.equal(a.attempt, 1);
      assert.equal(a.next_retry_at, null);
      assert.equal(typeof a.latency_ms, 'number');
      assert.ok(['pipeline.run.started', 'pipeline.run.completed'].includes(a.event_type));
    }
    assert.equal((await channel(t, ch.id)).last_error, null);
  });

  it('a receiver failing with 500 is retried on the schedule with the same webhook-id until it accepts; the log shows each attempt', async () => {
    const counted = async () => Object.fromEntries((await eventDeliveriesTotal.get()).values
      .filter((x) => x.labels.type === 'webhook').map((x) => [x.labels.outcome, x.value]));
    const before = await counted();
    const recv = await receiver();
    recv.script.push({ status: 500, body: 'database down' }, { status: 503 });
    const { channel: ch, secret } = await createChannel(t, { name: 'flaky', type: 'webhook', url: recv.url, events: ['channel.test', 'agent.offline'] });
    const agent = await TestAgent.create(h, t, { name: 'flaky-agent' });
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]); // agent.offline
    await recv.waitFor(1);
    await h.settle();
    let log = await attempts(t, ch.id);
    assert.equal(log.length, 1);
    assert.equal(log[0].outcome, 'failed');
    assert.equal(log[0].status_code, 500);
    assert.match(log[0].error, /HTTP 500: database down/);
    assert.equal(log[0].event_type, 'agent.offline');
    const wait = (Date.parse(log[0].next_retry_at) - Date.parse(log[0].attempted_at)) / 1000;
    assert.ok(Math.abs(wait - RETRY_DELAYS_SECONDS[0]) < 1, `the first retry comes 5 s later (${wait})`);
    assert.ok((await channel(t, ch.id)).failing_since, 'the channel is failing');

    assert.equal(await retriesDueNow(), 1);
    await recv.waitFor(2);
    await h.settle();
    log = await attempts(t, ch.id);
    const wait2 = (Date.parse(log[0].next_retry_at) - Date.parse(log[0].attempted_at)) / 1000;
    assert.ok(Math.abs(wait2 - RETRY_DELAYS_SECONDS[1]) < 1, `the second retry comes 5 min later (${wait2})`);
    assert.equal(await retriesDueNow(), 1);
    await recv.waitFor(3);
    await h.settle();
    log = await attempts(t, ch.id);
    assert.deepEqual(log.map((a) => [a.attempt, a.outcome, a.status_code]), [[3, 'delivered', 200], [2, 'failed', 503], [1, 'failed', 500]]);
    assert.equal(log[0].next_retry_at, null);
    assert.equal(log[0].delivery_status, 'delivered');
    const ids = new Set(recv.received.map((r) => r.headers['webhook-id']));
    assert.equal(ids.size, 1, 'the webhook-id is the same on every attempt');
    assert.equal([...ids][0], log[0].message_id);
    for (const r of recv.received) assert.equal((verify(secret!, r) as any).event, 'agent.offline');
    const after = await channel(t, ch.id);
    assert.equal(after.failing_since, null, 'a success ends the failing streak');
    assert.equal(after.enabled, true);
    assert.equal(await retriesDueNow(), 0, 'nothing left to retry');
    const now = await counted();
    assert.equal((now.retrying ?? 0) - (before.retrying ?? 0), 2, 'event_deliveries_total counts the attempts');
    assert.equal((now.delivered ?? 0) - (before.delivered ?? 0), 1);
  });

  it('410 Gone disables the channel with the reason, and nothing more is sent to it', async () => {
    const recv = await receiver();
    recv.otherwise = { status: 410, body: 'gone' };
    const { channel: ch } = await createChannel(t, { name: 'gone', type: 'webhook', url: recv.url, events: ['agent.offline'] });
    const agent = await TestAgent.create(h, t, { name: 'gone-agent' });
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]);
    await recv.waitFor(1);
    await h.settle();
    const c = await channel(t, ch.id);
    assert.equal(c.enabled, false);
    assert.match(c.disabled_reason, /410 Gone/);
    const log = await attempts(t, ch.id);
    assert.deepEqual(log.map((a) => [a.outcome, a.status_code, a.next_retry_at, a.delivery_status]), [['gone', 410, null, 'failed']]);
    await h.pool.query(`UPDATE agents SET health = 'online' WHERE id = $1`, [agent.id]);
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]);
    await h.settle();
    assert.equal(recv.received.length, 1, 'a disabled channel gets nothing');
    // Enabled again by a person: it gets events again, and its reason is gone.
    const enabled = await h.request('PUT', `/api/v1/channels/${ch.id}`, { token: t.token, body: { enabled: true } });
    assert.equal(enabled.status, 200);
    assert.equal(enabled.body.disabled_reason, null);
  });

  it('a receiver that never answers: the attempt ends at the timeout and is retried', async () => {
    const recv = await receiver();
    recv.script.push('hang');
    const { channel: ch } = await createChannel(t, { name: 'hangs', type: 'webhook', url: recv.url, events: ['agent.offline'] });
    const agent = await TestAgent.create(h, t, { name: 'hang-agent' });
    const started = Date.now();
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]);
    await recv.waitFor(1);
    await h.settle();
    const log = await attempts(t, ch.id);
    assert.equal(log.length, 1);
    assert.equal(log[0].outcome, 'failed');
    assert.equal(log[0].status_code, null);
    assert.match(log[0].error, /no answer within 1 s/);
    assert.ok(log[0].latency_ms >= 900 && log[0].latency_ms < 5000, `ended at the timeout (${log[0].latency_ms} ms)`);
    assert.ok(Date.now() - started < 10_000);
    assert.ok(log[0].next_retry_at);
  });

  it('a redirect is not followed: the attempt fails naming where it pointed', async () => {
    const recv = await receiver();
    const target = await receiver();
    recv.script.push({ status: 302, headers: { location: `${target.url}/elsewhere` } });
    const { channel: ch } = await createChannel(t, { name: 'redirects', type: 'webhook', url: recv.url, events: ['agent.offline'] });
    const agent = await TestAgent.create(h, t, { name: 'redirect-agent' });
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]);
    await recv.waitFor(1);
    await h.settle();
    const [a] = await attempts(t, ch.id);
    assert.equal(a.status_code, 302);
    assert.match(a.error, /redirect to http:\/\/127\.0\.0\.1:\d+\/elsewhere not followed/);
    assert.equal(target.received.length, 0);
  });

  it('a channel failing for 24 hours is disabled with the reason', async () => {
    const recv = await receiver();
    recv.otherwise = { status: 500 };
    const { channel: ch } = await createChannel(t, { name: 'failing', type: 'webhook', url: recv.url, events: ['agent.offline'] });
    const agent = await TestAgent.create(h, t, { name: 'failing-agent' });
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]);
    await recv.waitFor(1);
    await h.settle();
    assert.equal((await channel(t, ch.id)).enabled, true, 'one failure does not disable');
    // Its streak began 25 hours ago: the next failure disables it and ends the delivery.
    await h.pool.query(`UPDATE channels SET failing_since = now() - interval '25 hours' WHERE id = $1`, [ch.id]);
    await retriesDueNow();
    await recv.waitFor(2);
    await h.settle();
    const c = await channel(t, ch.id);
    assert.equal(c.enabled, false);
    assert.match(c.disabled_reason, /every delivery failed for 24 hours \(since \d{4}-.*\); the last: HTTP 500/);
    const log = await attempts(t, ch.id);
    assert.equal(log[0].next_retry_at, null);
    assert.equal(log[0].delivery_status, 'failed');
    assert.equal(await retriesDueNow(), 0);
  });

  it('a rotated secret with a grace period: both sign, each verifies; without one the old stops at once', async () => {
    const recv = await receiver();
    const { channel: ch, secret: old } = await createChannel(t, { name: 'rotating', type: 'webhook', url: recv.url, events: [] });
    const rotated = await h.request('POST', `/api/v1/channels/${ch.id}/rotate-secret`, { token: t.token, body: { grace_seconds: 3600 } });
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    const fresh = rotated.body.secret as string;
    assert.notEqual(fresh, old);
    assert.ok(rotated.body.channel.previous_secret_until);
    assert.equal((await h.request('POST', `/api/v1/channels/${ch.id}/test`, { token: t.token })).status, 202);
    await recv.waitFor(1);
    const first = recv.received[0];
    assert.equal(first.headers['webhook-signature'].split(' ').length, 2);
    assert.equal((verify(old!, first) as any).event, 'channel.test');
    assert.equal((verify(fresh, first) as any).event, 'channel.test');

    const again = await h.request('POST', `/api/v1/channels/${ch.id}/rotate-secret`, { token: t.token, body: {} });
    assert.equal(again.body.channel.previous_secret_until, null);
    assert.equal((await h.request('POST', `/api/v1/channels/${ch.id}/test`, { token: t.token })).status, 202);
    await recv.waitFor(2);
    const second = recv.received[1];
    assert.equal(second.headers['webhook-signature'].split(' ').length, 1);
    assert.doesNotThrow(() => verify(again.body.secret, second));
    assert.throws(() => verify(fresh, second), /signature/i, 'the replaced secret no longer signs');
  });
});

/** A run of one step `scan` whose command ingests `findings` (tied to the run by X-Command-Id), then completes. */
async function runWithFindings(agent: TestAgent, pipelineId: string, assetId: string, findings: Record<string, unknown>[]): Promise<string> {
  const run = await startRun(h, t, pipelineId, { asset_id: assetId });
  await h.settle();
  const [cmd] = await agent.poll();
  assert.equal((await agent.ack(cmd.id)).status, 200);
  assert.equal((await agent.start(cmd.id)).status, 200);
  const ingested = await h.request('POST', '/api/v1/agent/ingest', {
    apiKey: agent.apiKey, headers: { 'x-command-id': cmd.id }, body: { version: '1.0', findings },
  });
  assert.equal(ingested.status, 201, JSON.stringify(ingested.body));
  assert.equal((await agent.complete(cmd.id, {})).status, 200);
  await h.settle();
  return run.id;
}

const severities = ['critical', 'high', 'medium', 'low', 'info'];
const finding = (i: number, severity = severities[i % 5]) => ({
  type: 'vulnerability', title: `Finding ${i}`, severity, rule_id: `rule-${i}`, location: { path: `src/f${i}.ts`, start_line: i },
});

describe('what a channel gets', () => {
  it('subscribed to step events: one message per step transition; scan.fired and agent.offline from the real transitions', async () => {
    const recv = await receiver();
    await createChannel(t, { name: 'steps-and-more', type: 'webhook', url: recv.url, events: ['pipeline.step.*', 'scan.fired', 'agent.offline'] });
    const agent = await TestAgent.create(h, t, { name: 'stepper', tools: ['tool-s'] });
    await agent.heartbeat({});
    const p = await createPipeline(h, t, { name: 'Stepped', steps: [step('s')] });
    const scan = await h.request('POST', '/api/v1/scans', { token: t.token, body: { name: 'stepped-scan', pipeline_id: p.id } });
    assert.equal(scan.status, 201, JSON.stringify(scan.body));
    const fired = await h.request('POST', `/api/v1/scans/${scan.body.id}/trigger`, { token: t.token, body: {} });
    assert.equal(fired.status, 201, JSON.stringify(fired.body));
    const runId = fired.body.runs[0].id;
    assert.equal((await runThrough(agent, runId)).status, 'completed');
    await silenceAgent(h, agent.id);
    await recv.waitFor(5);
    await h.settle();
    const got = recv.received.map((r) => r.json);
    assert.deepEqual(got.map((b) => b.event), [
      'scan.fired', 'pipeline.step.queued', 'pipeline.step.started', 'pipeline.step.completed', 'agent.offline',
    ]);
    assert.deepEqual([got[0].data.scan_name, got[0].data.run_ids, got[0].data.trigger_type], ['stepped-scan', [runId], 'manual']);
    const done = got[3].data;
    assert.deepEqual([done.pipeline_run_id, done.pipeline_name, done.step_id, done.step_name, done.status, done.findings_count],
      [runId, 'Stepped', 's', 's', 'completed', 2]);
    assert.equal(typeof done.duration_seconds, 'number');
    assert.deepEqual([got[4].data.agent_id, got[4].data.agent_name], [agent.id, 'stepper']);
  });

  it('the findings of one ingest are one finding.created message per channel: a capped list and a count; min_severity filters', async () => {
    const all = await receiver();
    const high = await receiver();
    const { secret } = await createChannel(t, { name: 'all-findings', type: 'webhook', url: all.url, events: ['finding.*'] });
    await createChannel(t, { name: 'high-findings', type: 'webhook', url: high.url, events: ['finding.created'], min_severity: 'high' });
    const agent = await TestAgent.create(h, t, { name: 'finder', tools: ['tool-scan'] });
    const asset = await h.request('POST', '/api/v1/assets', { token: t.token, body: { type: 'repository', name: 'repo-findings' } });
    const p = await createPipeline(h, t, { name: 'Findings', steps: [step('scan')] });
    const runId = await runWithFindings(agent, p.id, asset.body.id, Array.from({ length: 150 }, (_, i) => finding(i)));
    await all.waitFor(1);
    await high.waitFor(1);
    await h.settle();
    assert.equal(all.received.length, 1, '150 findings, one message');
    const body = verify(secret!, all.received[0]) as Record<string, any>;
    assert.equal(body.event, 'finding.created');
    assert.equal(body.data.count, 150);
    assert.equal(body.data.listed, 100);
    assert.equal(body.data.findings.length, 100);
    assert.deepEqual(body.data.severities, { critical: 30, high: 30, medium: 30, low: 30, info: 30 });
    assert.deepEqual([...new Set(body.data.findings.slice(0, 30).map((f: any) => f.severity))], ['critical'], 'highest severity first');
    assert.equal(body.data.pipeline_run_id, runId);
    assert.equal(body.data.pipeline_name, 'Findings');
    assert.equal(body.data.findings[0].asset, 'repo-findings');
    const highBody = high.received[0].json;
    assert.equal(high.received.length, 1);
    assert.equal(highBody.data.count, 60, 'only critical and high');
    assert.deepEqual(highBody.data.severities, { critical: 30, high: 30 });
    assert.ok(highBody.data.findings.every((f: any) => ['critical', 'high'].includes(f.severity)));

    // The same report again creates nothing: no message. A finding triaged: one status_changed to the finding.* channel.
    await runWithFindings(agent, p.id, asset.body.id, Array.from({ length: 150 }, (_, i) => finding(i)));
    const [one] = (await h.request('GET', '/api/v1/findings?limit=1', { token: t.token })).body.items;
    assert.equal((await h.request('PATCH', `/api/v1/findings/${one.id}`, { token: t.token, body: { status: 'false_positive', reason: 'test data' } })).status, 200);
    await all.waitFor(2);
    await h.settle();
    assert.equal(all.received.length, 2);
    assert.equal(all.received[1].json.event, 'finding.status_changed');
    assert.equal(all.received[1].json.data.to, 'false_positive');
    assert.equal(high.received.length, 1);
  });

  it('Slack: {text, blocks} with the run, its status, the failed steps and a link', async () => {
    const slack = await receiver();
    const { channel: ch } = await createChannel(t, { name: 'slack-runs', type: 'slack', url: `${slack.url}/services/T0/B0/x`, events: ['pipeline.run.failed'] });
    assert.equal(ch.secret_prefix, null);
    const agent = await TestAgent.create(h, t, { name: 'slacker', tools: ['tool-sast', 'tool-deps', 'tool-dast'] });
    const p = await createPipeline(h, t, {
      name: 'Nightly <Scan> & more',
      settings: { fail_fast: false },
      steps: [step('sast'), step('deps'), step('dast', { depends_on: ['sast'] })],
    });
    const run = await startRun(h, t, p.id);
    assert.equal((await runThrough(agent, run.id, ['sast'])).status, 'failed');
    await slack.waitFor(1);
    await h.settle();
    assert.equal(slack.received.length, 1, 'only the failure');
    const msg = slack.received[0];
    assert.equal(msg.path, '/services/T0/B0/x');
    assert.equal(msg.headers['webhook-signature'], undefined, 'Slack is not signed');
    const { text, blocks } = msg.json as { text: string; blocks: any[] };
    assert.match(text, /Nightly <Scan> & more: run failed https:\/\/scanflow\.test\/runs\//);
    assert.equal(blocks[0].type, 'section');
    assert.match(blocks[0].text.text, /Nightly &lt;Scan&gt; &amp; more: run failed/, 'mrkdwn is escaped');
    const fields = blocks[1].fields.map((f: any) => f.text).join('\n');
    assert.match(fields, /\*Run status\*\nfailed/);
    assert.match(fields, /1 of 3 steps completed, 1 failed, 1 skipped/);
    const failed = blocks.find((b) => b.text?.text?.startsWith('*Failed steps*'));
    assert.match(failed.text.text, /• sast \(sast\): failed — tool_error: scanner crashed/);
    const link = blocks[blocks.length - 1];
    assert.equal(link.type, 'context');
    assert.equal(link.elements[0].text, `<https://scanflow.test/runs/${run.id}|View in scanflow>`);
  });

  it('email through SMTP_URL: one message per event, a subject saying what happened, plain text and HTML', async () => {
    const before = smtp.mails.length;
    const { channel: ch } = await createChannel(t, { name: 'mail-runs', type: 'email', to: ['sec@example.com', 'ops@example.com'], events: ['pipeline.run.completed'] });
    assert.deepEqual(ch.to, ['sec@example.com', 'ops@example.com']);
    assert.equal(ch.url, null);
    const agent = await TestAgent.create(h, t, { name: 'mailer', tools: ['tool-m'] });
    const p = await createPipeline(h, t, { name: 'Mailed', steps: [step('m')] });
    const run = await startRun(h, t, p.id);
    await runThrough(agent, run.id);
    await smtp.waitFor(before + 1);
    await h.settle();
    assert.equal(smtp.mails.length, before + 1);
    const mail = smtp.mails[before];
    assert.equal(mail.from, 'scanflow@test.example');
    assert.deepEqual(mail.to.sort(), ['ops@example.com', 'sec@example.com']);
    assert.match(mail.raw, /^Subject: \[scanflow\] Mailed: run completed/m);
    assert.match(mail.raw, /Content-Type: text\/plain/);
    assert.match(mail.raw, /Content-Type: text\/html/);
    assert.match(mail.raw, /1 of 1 steps completed, 2 findings/);
    assert.match(mail.raw, new RegExp(`https://scanflow.test/runs/${run.id}`));
    const [a] = await attempts(t, ch.id);
    assert.deepEqual([a.outcome, a.status_code], ['delivered', 250]);
  });

  it('settings.notification routes a pipeline\'s completion and failure to the channels of those types or names, whatever their filters; one message each', async () => {
    const slack = await receiver();
    const hook = await receiver();
    const other = await receiver();
    const before = smtp.mails.length;
    // No events of its own: only what pipelines route to it.
    await createChannel(t, { name: 'team-slack', type: 'slack', url: slack.url });
    // Subscribed to run failures itself and named by the pipeline: still one message.
    await createChannel(t, { name: 'Audit Hook', type: 'webhook', url: hook.url, events: ['pipeline.run.failed'] });
    await createChannel(t, { name: 'unrelated', type: 'webhook', url: other.url, events: ['agent.offline'] });
    await createChannel(t, { name: 'team-mail', type: 'email', to: 'team@example.com' });
    const agent = await TestAgent.create(h, t, { name: 'notified', tools: ['tool-n'] });
    const p = await createPipeline(h, t, {
      name: 'Notifying', steps: [step('n')],
      settings: { notification: { on_completion: true, on_failure: true, channels: ['slack', 'audit hook', 'email'] } },
    });
    assert.equal((await runThrough(agent, (await startRun(h, t, p.id)).id)).status, 'completed');
    assert.equal((await runThrough(agent, (await startRun(h, t, p.id)).id, ['n'])).status, 'failed');
    await slack.waitFor(2);
    await hook.waitFor(2);
    await h.settle();
    assert.deepEqual(slack.received.map((r) => /run (\w+)/.exec(r.json.text)![1]), ['completed', 'failed']);
    assert.deepEqual(hook.received.map((r) => r.json.event), ['pipeline.run.completed', 'pipeline.run.failed'], 'one message per run event');
    assert.equal(other.received.length, 0);
    const emailChannels = (await h.pool.query(`SELECT count(*)::int AS n FROM channels WHERE tenant_id = $1 AND type = 'email' AND enabled`, [t.id])).rows[0].n;
    await smtp.waitFor(before + 2 * emailChannels);
    assert.equal(smtp.mails.length, before + 2 * emailChannels, 'each of the tenant\'s email channels got both');
    const reasons = (await h.pool.query(`SELECT d.reason, count(*)::int AS n FROM deliveries d JOIN channels c ON c.id = d.channel_id
                                         WHERE c.name IN ('team-slack', 'Audit Hook') GROUP BY 1 ORDER BY 1`)).rows;
    assert.deepEqual(reasons, [{ reason: 'pipeline_notification', n: 3 }, { reason: 'subscribed', n: 1 }]);
  });

  it('POST /channels/{id}/test sends channel.test now, to that channel only, also while it is disabled', async () => {
    const recv = await receiver();
    const bystander = await receiver();
    const { channel: ch, secret } = await createChannel(t, { name: 'tested', type: 'webhook', url: recv.url, events: [], enabled: false });
    await createChannel(t, { name: 'bystander', type: 'webhook', url: bystander.url, events: ['*'] });
    const res = await h.request('POST', `/api/v1/channels/${ch.id}/test`, { token: t.token });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.equal(res.body.event.event, 'channel.test');
    await recv.waitFor(1);
    await h.settle();
    const body = verify(secret!, recv.received[0]) as Record<string, any>;
    assert.equal(body.id, res.body.event.id);
    assert.equal(body.data.channel_id, ch.id);
    assert.equal(recv.received[0].headers['webhook-id'], res.body.delivery.message_id);
    assert.equal(bystander.received.filter((r) => r.json.event === 'channel.test').length, 0);
    const [a] = await attempts(t, ch.id);
    assert.deepEqual([a.event_type, a.outcome, a.reason], ['channel.test', 'delivered', 'test']);
  });
});
