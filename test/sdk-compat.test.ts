// Wire compatibility with the seed system's Go SDK (issue 9): agents built with it must work
// against scanflow unchanged. Every request here is built exactly as the SDK's client builds
// it (test/support/seed-sdk.ts mirrors pkg/client request for request: paths, headers,
// Go's json.Marshal with omitempty, zstd over 1 KB, retry rules) and sent over a real
// socket; every answer is decoded the way the SDK decodes it. Each test names the SDK
// functions it mirrors.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, getRun, startRun, stepsByKey, type Tenant } from './support/fixtures.ts';
import { GO_ZERO_TIME, HTTPError, SeedSdkClient, goTime, splitReport, unmarshalCommands, type CommandResult } from './support/seed-sdk.ts';

let h: Harness;
let base: string;
let t: Tenant;
let asset: Record<string, any>;
const clients: SeedSdkClient[] = [];

before(async () => {
  h = await startHarness();
  base = (await h.listen()).url;
  t = await createTenant(h);
  asset = await createAsset(h, t, { type: 'repository', name: 'api', value: 'https://github.com/example/api' });
});
after(async () => {
  for (const c of clients) c.close();
  await h.close();
});

/** An agent registered through the API, and an SDK client configured with its key (and id, as Config.AgentID). */
async function sdkAgent(tools: string[], opts: { agentID?: boolean; compression?: 'zstd' | 'gzip' | null } = {}) {
  const agent = await TestAgent.create(h, t, { tools, max_concurrent_jobs: 10 });
  const client = new SeedSdkClient({
    baseURL: base, apiKey: agent.apiKey, agentID: opts.agentID === false ? undefined : agent.id,
    compression: opts.compression === undefined ? 'zstd' : opts.compression, retryDelayMs: 10,
  });
  clients.push(client);
  return { agent, client };
}

/** A run of a one-step pipeline for `tool`, dispatched. */
async function dispatchedRun(tool: string, step: Record<string, unknown> = {}): Promise<string> {
  const pipeline = await createPipeline(h, t, {
    name: `sdk-${tool}-${Math.random().toString(36).slice(2, 8)}`,
    steps: [{ id: 'scan', name: 'Scan', tool, config: { rules: ['p/security-audit'] }, timeout: '30m', max_retries: 0, ...step }],
  });
  const run = await startRun(h, t, pipeline.id, { asset_id: asset.id });
  await h.settle();
  return run.id;
}

async function command(id: string): Promise<Record<string, any>> {
  const res = await h.request('GET', `/api/v1/commands/${id}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

const sdkResult = (over: Partial<CommandResult> = {}): CommandResult => ({
  status: 'completed', completed_at: goTime(new Date()), duration_ms: 45_000, exit_code: 0, findings_count: 4,
  metadata: { scanner_name: 'semgrep', scanner_version: '1.50.0' }, ...over,
});

describe('the command cycle as the SDK runs it (CommandPoller: GetCommands → AcknowledgeCommand → ReportCommandResult)', () => {
  it('PollCommands decodes the poll as a bare []Command; ack then complete without StartCommand; metadata is the output', async () => {
    const { agent, client } = await sdkAgent(['semgrep']);
    const runId = await dispatchedRun('semgrep');

    // PollCommands(10) via GetCommands: json.Unmarshal into []Command must succeed.
    const polled = await client.GetCommands();
    assert.equal(polled.commands.length, 1);
    const [cmd] = polled.commands;
    assert.equal(cmd.type, 'scan', 'a type the CommandPoller allows (scan, collect, health_check)');
    assert.equal(typeof cmd.priority, 'string');
    const poll = client.sent.at(-1)!;
    assert.equal(poll.path, '/api/v1/agent/commands?limit=10');
    assert.equal(poll.headers['User-Agent'], 'sdk/1.0');
    assert.equal(poll.headers.Authorization, `Bearer ${agent.apiKey}`);
    assert.equal(poll.headers['X-Agent-ID'], agent.id);
    // What the README's bridge uses: seed 001's payload, the tool and the asset's value.
    const payload = cmd.payload as Record<string, any>;
    assert.equal(payload.tool, 'semgrep');
    assert.equal(payload.target.value, 'https://github.com/example/api');
    assert.deepEqual(payload.step_config.rules, ['p/security-audit']);

    // AcknowledgeCommand, then ReportCommandResult straight away (the poller never starts).
    await client.AcknowledgeCommand(cmd.id);
    await client.ReportCommandResult(cmd.id, sdkResult());
    const complete = client.sent.at(-1)!;
    assert.equal(complete.path, `/api/v1/agent/commands/${cmd.id}/complete`);
    assert.deepEqual(Object.keys(JSON.parse(complete.body.toString()).result),
      ['status', 'completed_at', 'duration_ms', 'exit_code', 'findings_count', 'metadata']);
    assert.ok(client.sent.every((s) => s.status === 200), 'no retries, no errors');

    const shown = await command(cmd.id);
    assert.equal(shown.status, 'completed');
    assert.equal(shown.exit_code, 0);
    assert.equal(shown.duration_ms, 45_000);
    assert.equal(shown.reported_status, 'completed');
    assert.ok(shown.reported_completed_at, 'the agent\'s completion time is kept');
    await h.settle();
    const run = await getRun(h, t, runId);
    assert.equal(run.status, 'completed');
    const step = stepsByKey(run).scan;
    assert.equal(step.status, 'completed');
    assert.ok(step.started_at, 'the step started when it was acknowledged');
    assert.equal(step.findings_count, 4);
    assert.deepEqual(step.output, { scanner_name: 'semgrep', scanner_version: '1.50.0' });
  });

  it('ReportCommandResult of a failure goes through FailCommand: the step fails with the error', async () => {
    const { client } = await sdkAgent(['trivy']);
    const runId = await dispatchedRun('trivy');
    const [cmd] = await client.PollCommands(10);
    await client.AcknowledgeCommand(cmd.id);
    await client.ReportCommandResult(cmd.id, sdkResult({ status: 'failed', error: 'scan failed: exit status 2', metadata: undefined }));
    const fail = client.sent.at(-1)!;
    assert.equal(fail.path, `/api/v1/agent/commands/${cmd.id}/fail`);
    assert.deepEqual(JSON.parse(fail.body.toString()), { error_message: 'scan failed: exit status 2' });

    await h.settle();
    const step = stepsByKey(await getRun(h, t, runId)).scan;
    assert.equal(step.status, 'failed');
    assert.equal(step.error_code, 'agent_error');
    assert.equal(step.error_message, 'scan failed: exit status 2');
  });

  it('CompleteCommand with result.status "failed" is a failure too (ReportCommandResult sends one when the error is empty)', async () => {
    const { client } = await sdkAgent(['gitleaks']);
    const runId = await dispatchedRun('gitleaks');
    const [first] = await client.PollCommands(10);
    await client.AcknowledgeCommand(first.id);
    // ReportCommandResult: status failed but Error "" → CompleteCommand.
    await client.ReportCommandResult(first.id, sdkResult({ status: 'failed', error: '', exit_code: 137, findings_count: 0, metadata: undefined }));
    assert.equal(client.sent.at(-1)!.path, `/api/v1/agent/commands/${first.id}/complete`);
    const shown = await command(first.id);
    assert.equal(shown.status, 'failed');
    assert.equal(shown.error_code, 'agent_error');
    assert.match(shown.error_message, /failed/);
    assert.equal(shown.exit_code, 137);
    assert.equal(shown.reported_status, 'failed');
    // A replay of it answers as a replayed failure does (200, nothing changes): the SDK would not retry a 409 anyway.
    await client.ReportCommandResult(first.id, sdkResult({ status: 'failed', error: '', exit_code: 137, findings_count: 0, metadata: undefined }));
    assert.equal(client.sent.at(-1)!.status, 200);

    await h.settle();
    const step = stepsByKey(await getRun(h, t, runId)).scan;
    assert.equal(step.status, 'failed');

    // Another client's completion of a failure with its error: the message is the error.
    const runId2 = await dispatchedRun('gitleaks');
    const [second] = await client.PollCommands(10);
    await client.AcknowledgeCommand(second.id);
    await client.CompleteCommand(second.id, JSON.stringify(sdkResult({ status: 'failed', error: 'gitleaks: repository not found' })));
    await h.settle();
    const step2 = stepsByKey(await getRun(h, t, runId2)).scan;
    assert.equal(step2.status, 'failed');
    assert.equal(step2.error_message, 'gitleaks: repository not found');
  });

  it('StartCommand between them works as well, and a completion whose CompletedAt was never set records no time', async () => {
    const { client } = await sdkAgent(['nuclei']);
    await dispatchedRun('nuclei');
    const [cmd] = await client.PollCommands(10);
    await client.AcknowledgeCommand(cmd.id);
    await client.StartCommand(cmd.id);
    await client.CompleteCommand(cmd.id, JSON.stringify(sdkResult({ completed_at: GO_ZERO_TIME })));
    const shown = await command(cmd.id);
    assert.equal(shown.status, 'completed');
    assert.equal(shown.reported_completed_at, null);
  });
});

describe('heartbeats (SendHeartbeat, TestConnection)', () => {
  it('every field of HeartbeatRequest is stored and shown on the agent', async () => {
    const { agent, client } = await sdkAgent(['semgrep']);
    await client.sendHeartbeatRequest({
      name: 'scanner-eu-1', status: 'running', version: '2.3.1', hostname: 'box-7', message: 'all good',
      scanners: ['semgrep', 'trivy'], collectors: ['github'], uptime_seconds: 86_400, total_scans: 1234, errors: 2,
      cpu_percent: 37.5, memory_percent: 61.25, active_jobs: 3, region: 'eu-west-1',
    });
    const shown = (await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body;
    assert.equal(shown.health, 'online');
    assert.equal(shown.version, '2.3.1');
    assert.equal(shown.hostname, 'box-7');
    assert.deepEqual(shown.scanners, ['semgrep', 'trivy']);
    assert.deepEqual(shown.collectors, ['github']);
    const { at, extra, ...report } = shown.last_report;
    assert.deepEqual(report, {
      name: 'scanner-eu-1', status: 'running', message: 'all good', uptime_seconds: 86_400, total_scans: 1234, errors: 2,
      cpu_percent: 37.5, memory_percent: 61.25, active_jobs: 3, region: 'eu-west-1',
    });
    assert.equal(at, shown.last_heartbeat_at);
    assert.deepEqual(extra, {});
  });

  it('SendHeartbeat as the SDK fills it (no version, no hostname; zero values left out) replaces the last report', async () => {
    const { agent, client } = await sdkAgent(['semgrep']);
    await client.sendHeartbeatRequest({ name: 'a', status: 'running', version: '1.0', hostname: 'h', scanners: ['semgrep'], region: 'us' });
    await client.SendHeartbeat({ name: 'a', status: 'stopping', scanners: [], errors: 0, total_scans: 9 });
    const sentBody = JSON.parse(client.sent.at(-1)!.body.toString());
    assert.deepEqual(sentBody, { name: 'a', status: 'stopping', total_scans: 9 }, 'Go drops empty lists and zeros');
    const shown = (await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body;
    assert.equal(shown.version, '1.0', 'version and hostname stay as last given');
    assert.deepEqual(shown.scanners, [], 'a list the SDK left out is none');
    assert.equal(shown.last_report.status, 'stopping');
    assert.equal(shown.last_report.region, null);
    assert.equal(shown.last_report.total_scans, 9);

    await client.TestConnection();
    const again = (await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body;
    assert.equal(again.last_report.name, 'connection-test');
    assert.equal(again.last_report.message, 'connection test');
  });
});

describe('compressed bodies (doRequestOnce: zstd by default over 1 KB, gzip with WithCompression("gzip"))', () => {
  for (const compression of ['zstd', 'gzip'] as const) {
    it(`${compression}: a heartbeat and a completion over 1 KB`, async () => {
      const { agent, client } = await sdkAgent(['semgrep'], { compression });
      const scanners = Array.from({ length: 60 }, (_, i) => `scanner-number-${i}`);
      await client.SendHeartbeat({ name: 'big', status: 'running', scanners, message: 'm'.repeat(500) });
      const hb = client.sent.at(-1)!;
      assert.ok(hb.body.length > 1024);
      assert.equal(hb.headers['Content-Encoding'], compression);
      assert.ok(hb.rawBody.length < hb.body.length);
      assert.deepEqual((await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body.scanners, scanners);

      const runId = await dispatchedRun('semgrep');
      const [cmd] = await client.PollCommands(10);
      await client.AcknowledgeCommand(cmd.id);
      const findings = Array.from({ length: 40 }, (_, i) => ({ rule: `rule-${i}`, path: `src/file-${i}.ts` }));
      await client.ReportCommandResult(cmd.id, sdkResult({ findings_count: 40, metadata: { findings } }));
      const complete = client.sent.at(-1)!;
      assert.equal(complete.headers['Content-Encoding'], compression);
      assert.equal(complete.status, 200);
      await h.settle();
      const step = stepsByKey(await getRun(h, t, runId)).scan;
      assert.equal(step.status, 'completed');
      assert.equal(step.findings_count, 40);
      assert.deepEqual(step.output, { findings });
    });
  }

  it('small bodies go as they are (no Content-Encoding under 1 KB)', async () => {
    const { client } = await sdkAgent(['semgrep']);
    await client.TestConnection();
    assert.equal(client.sent.at(-1)!.headers['Content-Encoding'], undefined);
    assert.equal(client.sent.at(-1)!.status, 200);
  });
});

describe('X-Agent-ID and the retry rules (doRequest gives up on 4xx but 429)', () => {
  it('an X-Agent-ID naming another agent is a 401 the SDK does not retry; without a key it is no credential', async () => {
    const { agent } = await sdkAgent(['semgrep']);
    const other = await TestAgent.create(h, t, { tools: ['semgrep'] });
    const liar = new SeedSdkClient({ baseURL: base, apiKey: agent.apiKey, agentID: other.id, retryDelayMs: 10 });
    clients.push(liar);
    for (const call of [() => liar.TestConnection(), () => liar.PollCommands(10), () => liar.AcknowledgeCommand(other.id)]) {
      const before = liar.sent.length;
      await assert.rejects(call(), (err: unknown) => err instanceof HTTPError && err.statusCode === 401 && /agent_id_mismatch/.test(err.body));
      assert.equal(liar.sent.length, before + 1, 'one attempt: a 4xx is not retried');
    }
    const idOnly = new SeedSdkClient({ baseURL: base, apiKey: '', agentID: agent.id, retryDelayMs: 10 });
    clients.push(idOnly);
    await assert.rejects(idOnly.TestConnection(), (err: unknown) => err instanceof HTTPError && err.statusCode === 401);
    // The right id, in any case, is fine.
    const upper = new SeedSdkClient({ baseURL: base, apiKey: agent.apiKey, agentID: agent.id.toUpperCase(), retryDelayMs: 10 });
    clients.push(upper);
    await upper.TestConnection();
  });

  it('a transition that contradicts the command (409) fails the SDK call at once', async () => {
    const { client } = await sdkAgent(['trivy']);
    await dispatchedRun('trivy');
    const [cmd] = await client.PollCommands(10);
    await client.AcknowledgeCommand(cmd.id);
    await client.FailCommand(cmd.id, 'boom');
    const before = client.sent.length;
    await assert.rejects(client.CompleteCommand(cmd.id, JSON.stringify(sdkResult())), (err: unknown) => err instanceof HTTPError && err.statusCode === 409);
    assert.equal(client.sent.length, before + 1);
  });
});

describe('the poll answer against the SDK decoder itself', () => {
  it('the old {commands: [...]} shape would fail json.Unmarshal into []Command; the answer now decodes', async () => {
    assert.throws(() => unmarshalCommands(JSON.stringify({ commands: [], poll_interval_seconds: 5 })), /cannot unmarshal object/);
    const { client } = await sdkAgent(['idle-tool']);
    assert.deepEqual(await client.PollCommands(5), []);
  });
});

describe('ingest as the SDK pushes (PushFindings, PushAssets, UploadChunk, CheckFingerprints)', () => {
  const now = goTime(new Date());
  const repo = { id: 'asset-repo', type: 'repository', value: 'https://github.com/example/sdk-repo', name: 'sdk-repo' };

  async function findingsOf(tool: string): Promise<Record<string, any>[]> {
    const res = await h.request('GET', `/api/v1/findings?tool=${tool}&limit=200`, { token: t.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.items;
  }

  it('PushFindings: a bare report, assets by reference and inline, a finding that cannot be stored listed in errors as strings', async () => {
    const { client } = await sdkAgent(['semgrep']);
    const resp = await client.PushFindings({
      version: '1.0',
      metadata: { id: 'sdk-report-1', timestamp: now },
      tool: { name: 'sdk-semgrep', version: '1.50.0' },
      assets: [repo],
      findings: [
        { type: 'vulnerability', title: 'SQL injection', severity: 'high', rule_id: 'sqli', asset_ref: 'asset-repo',
          location: { path: 'src/db.ts', start_line: 12, snippet: 'query(`SELECT ${x}`)' }, fingerprint: 'sdk-fp-1' },
        { type: 'misconfiguration', title: 'TLS 1.0 enabled', severity: 'medium', rule_id: 'tls10', asset_type: 'domain', asset_value: 'sdk.example.com' },
        { type: 'vulnerability', title: 'no severity the format knows', severity: 'urgent', rule_id: 'x', asset_ref: 'asset-repo' },
      ],
    });
    const sent = client.sent.at(-1)!;
    assert.equal(sent.path, '/api/v1/agent/ingest');
    assert.equal(sent.status, 201);
    assert.equal(JSON.parse(sent.body.toString()).report, undefined, 'no {report} wrapper');
    assert.equal(resp.findings_created, 2);
    assert.equal(resp.findings_skipped, 1);
    assert.ok(resp.assets_created >= 1);
    assert.equal(resp.errors.length, 1);
    assert.match(resp.errors[0], /^findings\[2\]\.severity: /);
    const stored = await findingsOf('sdk-semgrep');
    assert.deepEqual(stored.map((f) => f.title).sort(), ['SQL injection', 'TLS 1.0 enabled']);
  });

  it('PushAssets: an assets-only report (no tool, no findings)', async () => {
    const { client } = await sdkAgent(['semgrep']);
    const resp = await client.PushAssets({
      version: '1.0',
      metadata: { timestamp: now },
      assets: [{ id: 'h1', type: 'domain', value: 'assets-only.example.com' }, { id: 'h2', type: 'ip_address', value: '203.0.113.7' }],
      findings: [{ type: 'vulnerability', title: 'dropped by PushAssets', severity: 'low' }],
    });
    assert.equal(JSON.parse(client.sent.at(-1)!.body.toString()).findings, undefined);
    assert.equal(resp.assets_created, 2);
    assert.equal(resp.findings_created, 0);
    assert.deepEqual(resp.errors ?? [], []);
    const assets = (await h.request('GET', '/api/v1/assets?limit=200', { token: t.token })).body.items.map((a: { value: string }) => a.value);
    assert.ok(assets.includes('assets-only.example.com') && assets.includes('203.0.113.7'));
  });

  it('UploadChunk: a report split by chunk.Splitter into three zstd chunks, each ingested as it arrives', async () => {
    const { client } = await sdkAgent(['trivy']);
    const assets = ['a', 'b', 'c'].map((k) => ({ id: `ref-${k}`, type: 'container_image', value: `registry.example.com/app-${k}:1.0` }));
    const findings = assets.flatMap((a, i) => [0, 1].map((j) => ({
      type: 'vulnerability', title: `CVE-2024-000${i}${j} in openssl`, severity: 'critical', rule_id: `CVE-2024-000${i}${j}`,
      asset_ref: a.id, vulnerability: { cve_id: `CVE-2024-000${i}${j}`, package: 'openssl', fixed_version: '3.0.14' },
    })));
    const chunks = splitReport({ version: '1.0', metadata: { id: 'sdk-chunked-1', timestamp: now }, tool: { name: 'sdk-trivy' }, assets, findings }, 'sdk-chunked-1', 2);
    assert.equal(chunks.length, 3);
    assert.ok(chunks[0].tool && !chunks[1].tool && !chunks[2].tool, 'only the first chunk carries the tool and metadata');
    const answers = [];
    for (const chunk of chunks) answers.push(await client.UploadChunk(chunk));
    assert.deepEqual(answers.map((a) => [a.report_id, a.chunk_index]), [['sdk-chunked-1', 0], ['sdk-chunked-1', 1], ['sdk-chunked-1', 2]]);
    assert.ok(client.sent.slice(-3).every((s) => s.path === '/api/v1/agent/ingest/chunk' && s.status === 201));
    assert.ok(client.sent.slice(-3).every((s) => JSON.parse(s.body.toString()).compression === 'zstd'));
    assert.equal(answers.reduce((n, a) => n + a.findings_created, 0), 6);
    assert.equal((await findingsOf('sdk-trivy')).length, 6);
  });

  it('CheckFingerprints: {existing, missing} as lists of the strings sent', async () => {
    const { client } = await sdkAgent(['semgrep']);
    const res = await client.CheckFingerprints(['sdk-fp-1', 'never-seen-fp']);
    assert.equal(client.sent.at(-1)!.path, '/api/v1/agent/ingest/check');
    assert.deepEqual(res, { existing: ['sdk-fp-1'], missing: ['never-seen-fp'] });
  });

  it('a report over 1 KB goes zstd-compressed (doRequestOnce) and is ingested the same', async () => {
    const { client } = await sdkAgent(['semgrep']);
    const findings = Array.from({ length: 30 }, (_, i) => ({
      type: 'secret', title: `AWS key in config ${i}`, severity: 'critical', rule_id: 'aws-key', asset_ref: 'big-repo',
      location: { path: `config/${i}.env`, start_line: 1 },
    }));
    const resp = await client.PushFindings({
      version: '1.0', metadata: { timestamp: now }, tool: { name: 'sdk-gitleaks' },
      assets: [{ id: 'big-repo', type: 'repository', value: 'https://github.com/example/big' }], findings,
    });
    assert.equal(client.sent.at(-1)!.headers['Content-Encoding'], 'zstd');
    assert.equal(resp.findings_created, 30);
  });
});
