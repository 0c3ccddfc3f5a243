// The pure parts of events out and their SQL twins: event filters (TypeScript and the
// trigger's event_pattern_matches agree on every type), settings.notification read
// defensively (a malformed value routes nothing and never fails a transition), the retry
// schedule, the Standard Webhooks signature against the reference implementation, and
// messages that read well for every event type.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import { startHarness, type Harness } from './support/harness.ts';
import { EVENT_TYPES, RETRY_DELAYS_SECONDS, patternProblem, patternsMatch, retryDelaySeconds } from '../src/domain/channels.ts';
import { emailMessage, headline, slackMessage, webhookHeaders, webhookSignature, type Notice } from '../src/domain/messages.ts';

let h: Harness;
before(async () => {
  h = await startHarness({ worker: false });
});
after(() => h.close());

describe('event filters', () => {
  const patterns = ['*', 'pipeline.*', 'pipeline.run.*', 'pipeline.step.*', 'finding.*', 'pipeline.run.failed', 'scan.fired', 'agent.*', 'channel.test'];

  it('TypeScript and SQL (event_pattern_matches) agree on every event type', async () => {
    for (const type of EVENT_TYPES) {
      for (const p of patterns) {
        const { rows } = await h.pool.query<{ m: boolean }>(`SELECT event_pattern_matches($1::text[], $2) AS m`, [[p], type]);
        assert.equal(rows[0].m, patternsMatch([p], type), `${p} on ${type}`);
      }
    }
    assert.equal(patternsMatch(['pipeline.run.*'], 'pipeline.step.failed'), false);
    assert.equal(patternsMatch(['pipeline.*'], 'pipeline.step.failed'), true);
    assert.equal(patternsMatch([], 'pipeline.run.failed'), false);
  });

  it('a pattern must be able to select something', () => {
    assert.equal(patternProblem('pipeline.run.*'), null);
    assert.equal(patternProblem('*'), null);
    assert.match(patternProblem('pipeline.runs.*')!, /selects no event/);
    assert.match(patternProblem('pipeline.run.%')!, /not an event name/);
    assert.match(patternProblem('*.failed')!, /not an event name/);
  });

  it('settings.notification is read defensively: what is malformed routes nothing and raises nothing', async () => {
    const cases: [unknown, string, boolean][] = [
      [{ on_completion: true, channels: ['slack'] }, 'pipeline.run.completed', true],
      [{ on_completion: true, channels: ['SLACK'] }, 'pipeline.run.completed', true],
      [{ on_failure: true, channels: ['Team Hook'] }, 'pipeline.run.failed', true],
      [{ on_failure: true, channels: ['slack'] }, 'pipeline.run.timeout', true],
      [{ on_failure: true, channels: ['slack'] }, 'pipeline.run.cancelled', false],
      [{ on_completion: true, channels: ['slack'] }, 'pipeline.run.failed', false],
      [{ on_completion: 'yes', channels: ['slack'] }, 'pipeline.run.completed', false],
      [{ on_completion: true, channels: 'slack' }, 'pipeline.run.completed', false],
      [{ on_completion: true, channels: [{ x: 1 }, 7, null] }, 'pipeline.run.completed', false],
      [{ on_completion: true }, 'pipeline.run.completed', false],
      ['slack', 'pipeline.run.completed', false],
      [[1, 2], 'pipeline.run.completed', false],
      [null, 'pipeline.run.completed', false],
    ];
    for (const [notification, type, routes] of cases) {
      const { rows } = await h.pool.query<{ r: boolean | null }>(
        `SELECT notification_routes($1::jsonb, $2, 'slack', 'Team Hook') AS r`, [JSON.stringify(notification), type]);
      assert.equal(rows[0].r ?? false, routes, `${JSON.stringify(notification)} on ${type}`);
    }
  });
});

describe('retries', () => {
  it('after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h; then none', () => {
    assert.deepEqual(RETRY_DELAYS_SECONDS, [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]);
    assert.deepEqual(Array.from({ length: 10 }, (_, i) => retryDelaySeconds(i + 1)), [...RETRY_DELAYS_SECONDS, null]);
  });
});

describe('messages', () => {
  const secret = `whsec_${Buffer.alloc(32, 5).toString('base64')}`;

  it('signatures are Standard Webhooks 1.0: the reference implementation makes the same and verifies ours', () => {
    const body = JSON.stringify({ id: 1, event: 'channel.test' });
    const at = Math.floor(Date.now() / 1000);
    assert.equal(webhookSignature(secret, 'msg_1', at, body), new Webhook(secret).sign('msg_1', new Date(at * 1000), body));
    const headers = webhookHeaders('msg_1', at, body, [secret, `whsec_${Buffer.alloc(32, 6).toString('base64')}`]);
    assert.equal(headers['webhook-signature'].split(' ').length, 2);
    assert.deepEqual(new Webhook(secret).verify(body, headers), { id: 1, event: 'channel.test' });
    assert.throws(() => new Webhook(secret).verify(`${body} `, headers), /signature/i);
  });

  const run = {
    id: 'r1', pipeline_id: 'p1', pipeline_name: 'Full Security Scan', status: 'failed', total_steps: 5, completed_steps: 3, failed_steps: 1,
    skipped_steps: 1, total_findings: 12, duration_seconds: 903, error_message: null,
    failed: [{ step_key: 'dast', name: 'Dynamic Scan', status: 'timeout', error_code: 'timeout', error_message: 'no answer in 60m' }],
  };
  const notice = (event: string, data: Record<string, unknown>, extra: Partial<Notice> = {}): Notice => ({
    event: { id: 7, event, timestamp: '2026-01-15T10:15:00.000Z', tenant_id: 't', data }, group: null, run: null, link: null, ...extra,
  });

  it('every event type reads as a sentence in Slack and email (no undefined, no [object Object])', () => {
    const data: Record<string, Record<string, unknown>> = {
      'pipeline.step.failed': { step_key: 'sast', step_name: 'Static Analysis', attempt: 1, max_attempts: 3, error_code: 'tool_error', error_message: 'boom', findings_count: 0 },
      'finding.status_changed': { finding_id: 'f1', title: 'SQL injection', to: 'false_positive', from: 'open', reason: 'test code' },
      'scan.fired': { scan_id: 's1', scan_name: 'Nightly', trigger_type: 'schedule', run_ids: ['a', 'b'], skipped: 1 },
      'agent.offline': { agent_id: 'a1', agent_name: 'scanner-1', hostname: 'box', last_seen_at: '2026-01-15T10:00:00Z' },
      'channel.test': { channel_id: 'c1', channel_name: 'ops' },
    };
    for (const type of EVENT_TYPES) {
      const n = notice(type, data[type] ?? { pipeline_run_id: 'r1', step_key: 'sast', step_name: 'SAST', finding_id: 'f1', title: 'XSS', severity: 'high' },
        type.startsWith('pipeline.') ? { run, link: 'https://scanflow.example/runs/r1' } : {});
      const all = JSON.stringify([headline(n), slackMessage(n), emailMessage(n)]);
      assert.doesNotMatch(all, /undefined|\[object Object\]|NaN/, type);
    }
    assert.equal(headline(notice('scan.fired', data['scan.fired'])), 'Scan Nightly fired (schedule): 2 runs, 1 skipped');
    assert.equal(headline(notice('agent.offline', data['agent.offline'])), 'Agent scanner-1 went offline');
    assert.equal(headline(notice('pipeline.run.failed', {}, { run })), 'Full Security Scan: run failed');
  });

  it('a grouped finding message lists the first findings and counts the rest; email escapes HTML', () => {
    const findings = Array.from({ length: 60 }, (_, i) => ({
      finding_id: `f${i}`, title: i === 0 ? '<script>alert(1)</script>' : `Finding ${i}`, severity: 'high', tool: 'semgrep', rule_id: 'r', asset: 'repo', status: 'open',
    }));
    const n = notice('finding.created', { ingest_id: 'i1', pipeline_run_id: 'r1' }, {
      run, link: 'https://scanflow.example/runs/r1', group: { count: 250, severities: { high: 200, critical: 50 }, findings },
    });
    assert.equal(headline(n), '250 new findings in Full Security Scan (50 critical, 200 high)');
    const slack = slackMessage(n);
    assert.match(JSON.stringify(slack.blocks), /…and 240 more/);
    const mail = emailMessage(n);
    assert.equal(mail.subject, '[scanflow] 250 new findings in Full Security Scan (50 critical, 200 high)');
    assert.match(mail.text, /…and 200 more/);
    assert.match(mail.html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.doesNotMatch(mail.html, /<script>/);
    assert.match(mail.text, /Steps: 3 of 5 steps completed, 1 failed, 1 skipped, 12 findings, 15m 3s/);
  });
});
