// What agents report (issue 9, items 3 and 4), beyond the SDK's own calls (sdk-compat):
// heartbeat fields validated by type and size and shown on the agent; a completion's
// exit code, duration, status and time recorded on the command; no findings_count given is
// null, not 0; metadata, output and other fields in the order they make the step's output;
// X-Agent-ID checked on every agent route.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, getRun, startRun, step, stepsByKey, type Tenant } from './support/fixtures.ts';

let h: Harness;
let t: Tenant;

before(async () => {
  h = await startHarness();
  t = await createTenant(h);
});
after(() => h.close());

function assertNames(res: { status: number; body: any }, status: number, field: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  const paths = (res.body?.error?.details ?? []).map((d: { path: string }) => d.path);
  assert.ok(paths.includes(field), `expected details to name '${field}', got ${JSON.stringify(res.body)}`);
}

const agentRow = async (id: string) =>
  (await h.pool.query('SELECT scanners, collectors, last_report, heartbeat_data, last_heartbeat_at FROM agents WHERE id = $1', [id])).rows[0];

/** One claimed, acknowledged command of a fresh one-step run, and the run. */
async function acknowledged(agent: TestAgent, tool: string): Promise<{ commandId: string; runId: string }> {
  const pipeline = await createPipeline(h, t, { name: `reports-${Math.random().toString(36).slice(2, 8)}`, steps: [step('s', { tool, max_retries: 0 })] });
  const run = await startRun(h, t, pipeline.id);
  await h.settle();
  const [command] = await agent.poll({ limit: 1 });
  assert.ok(command, 'a command was dispatched');
  assert.equal((await agent.ack(command.id)).status, 200);
  return { commandId: command.id, runId: run.id };
}

describe('heartbeat fields', () => {
  it('each field of the wrong type or size is a 400 naming it, and stores nothing', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['hb'] });
    const cases: [Record<string, unknown>, string][] = [
      [{ name: 'n'.repeat(256) }, 'name'],
      [{ status: 5 }, 'status'],
      [{ status: 's'.repeat(51) }, 'status'],
      [{ message: 'm'.repeat(10_001) }, 'message'],
      [{ scanners: 'semgrep' }, 'scanners'],
      [{ scanners: ['ok', 7] }, 'scanners[1]'],
      [{ scanners: [''] }, 'scanners[0]'],
      [{ collectors: Array.from({ length: 201 }, (_, i) => `c${i}`) }, 'collectors'],
      [{ collectors: ['x'.repeat(101)] }, 'collectors[0]'],
      [{ uptime_seconds: -1 }, 'uptime_seconds'],
      [{ uptime_seconds: 1.5 }, 'uptime_seconds'],
      [{ total_scans: '9' }, 'total_scans'],
      [{ errors: 2 ** 53 }, 'errors'],
      [{ cpu_percent: -0.1 }, 'cpu_percent'],
      [{ cpu_percent: 'high' }, 'cpu_percent'],
      [{ memory_percent: 100.5 }, 'memory_percent'],
      [{ active_jobs: 2 ** 31 }, 'active_jobs'],
      [{ region: ['eu'] }, 'region'],
      [{ region: 'r'.repeat(101) }, 'region'],
    ];
    for (const [body, field] of cases) assertNames(await agent.heartbeat(body), 400, field);
    const row = await agentRow(agent.id);
    assert.equal(row.last_report, null);
    assert.equal(row.last_heartbeat_at, null);
  });

  it('the last report replaces the one before; other fields are kept as extra, within the free-form bounds', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['hb'] });
    const first = await agent.heartbeat({ status: 'running', scanners: ['semgrep'], collectors: ['github'], cpu_percent: 150.5, gpu: { model: 'none' } });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    let shown = (await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body;
    assert.equal(shown.last_report.cpu_percent, 150.5, 'summed over cores, above 100');
    assert.deepEqual(shown.last_report.extra, { gpu: { model: 'none' } });
    assert.deepEqual(shown.scanners, ['semgrep']);

    assert.equal((await agent.heartbeat({ status: 'error', message: 'disk full', scanners: null })).status, 200);
    shown = (await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body;
    assert.equal(shown.last_report.status, 'error');
    assert.equal(shown.last_report.message, 'disk full');
    assert.equal(shown.last_report.cpu_percent, null);
    assert.deepEqual(shown.last_report.extra, {});
    assert.deepEqual(shown.scanners, []);
    assert.deepEqual(shown.collectors, []);
    // And in the list of agents.
    const listed = (await h.request('GET', '/api/v1/agents', { token: t.token })).body.items.find((a: { id: string }) => a.id === agent.id);
    assert.equal(listed.last_report.status, 'error');

    // A heartbeat whose extra field is past the free-form bounds is refused, naming it.
    assertNames(await agent.heartbeat({ blob: 'x'.repeat(300 * 1024) }), 400, 'blob');
  });

  it('an agent never heard from shows no last report and no scanners', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['quiet'] });
    const shown = (await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token })).body;
    assert.equal(shown.last_report, null);
    assert.deepEqual([shown.scanners, shown.collectors], [[], []]);
  });

  it('the answer carries the heartbeat and poll intervals', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['hb'] });
    const res = await agent.heartbeat({ status: 'running' });
    assert.equal(res.body.heartbeat_interval_seconds, h.orchestration.heartbeatIntervalSeconds);
    assert.equal(res.body.poll_interval_seconds, h.orchestration.pollIntervalSeconds);
  });
});

describe('completion reports', () => {
  it('no findings_count given is null on the command (not 0); a given one is kept, 0 included', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['fc'], max_concurrent_jobs: 5 });
    const none = await acknowledged(agent, 'fc');
    const res = await agent.complete(none.commandId, { result: { status: 'completed', metadata: { k: 1 } } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.result.findings_count, null);
    const zero = await acknowledged(agent, 'fc');
    assert.equal((await agent.complete(zero.commandId, { result: { findings_count: 0 } })).body.result.findings_count, 0);
    const top = await acknowledged(agent, 'fc');
    assert.equal((await agent.complete(top.commandId, { findings_count: 7, result: { findings_count: 2 } })).body.result.findings_count, 7, 'the top level wins');
    await h.settle();
    const step = stepsByKey(await getRun(h, t, none.runId)).s;
    assert.equal(step.status, 'completed');
    assert.equal(step.findings_count, 0, 'nothing ingested for it either');
  });

  it('the output: output, else result.output, else metadata, else the other fields (duration and exit code among them)', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['out'], max_concurrent_jobs: 10 });
    const cases: [Record<string, unknown>, Record<string, unknown>][] = [
      [{ output: { a: 1 }, result: { output: { b: 2 }, metadata: { c: 3 } } }, { a: 1 }],
      [{ result: { output: { b: 2 }, metadata: { c: 3 } } }, { b: 2 }],
      [{ result: { metadata: { c: 3 }, scan_id: 'x', exit_code: 0 } }, { c: 3 }],
      [{ scan_id: 'top', result: { status: 'completed', completed_at: '2026-01-31T12:00:00Z', duration_ms: 5, exit_code: 1, error: '', scan: 'n' } },
        { scan_id: 'top', scan: 'n', duration_ms: 5, exit_code: 1 }],
    ];
    for (const [body, output] of cases) {
      const { commandId } = await acknowledged(agent, 'out');
      const res = await agent.complete(commandId, body);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.result.output, output, JSON.stringify(body));
    }
  });

  it('exit code, duration, status and the agent\'s time are recorded and shown by GET /commands/{id}', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['rec'] });
    const { commandId } = await acknowledged(agent, 'rec');
    const res = await agent.complete(commandId, {
      result: { status: 'completed', completed_at: '2026-01-31T12:00:00.123456789+01:00', duration_ms: 9_000_000_000, exit_code: -1 },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const shown = (await h.request('GET', `/api/v1/commands/${commandId}`, { token: t.token })).body;
    assert.equal(shown.exit_code, -1);
    assert.equal(shown.duration_ms, 9_000_000_000);
    assert.equal(shown.reported_status, 'completed');
    assert.equal(shown.reported_completed_at, '2026-01-31T11:00:00.123Z');
    assert.notEqual(shown.completed_at, shown.reported_completed_at, 'our own completion time stays ours');
  });

  it('a failure records the exit code and duration it reports; bad ones are 400s naming them', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['failrep'] });
    const { commandId } = await acknowledged(agent, 'failrep');
    assertNames(await agent.fail(commandId, { error_message: 'x', exit_code: 'two' }), 400, 'exit_code');
    assertNames(await agent.fail(commandId, { error_message: 'x', duration_ms: -5 }), 400, 'duration_ms');
    const res = await agent.fail(commandId, { error_message: 'semgrep exited 2', error_code: 'tool_failed', exit_code: 2, duration_ms: 1234 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const shown = (await h.request('GET', `/api/v1/commands/${commandId}`, { token: t.token })).body;
    assert.deepEqual([shown.status, shown.error_code, shown.exit_code, shown.duration_ms], ['failed', 'tool_failed', 2, 1234]);
  });

  it('bad report fields are 400s naming them, and complete nothing', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['badrep'] });
    const { commandId } = await acknowledged(agent, 'badrep');
    const cases: [Record<string, unknown>, string][] = [
      [{ result: { exit_code: 1.5 } }, 'result.exit_code'],
      [{ result: { exit_code: '0' } }, 'result.exit_code'],
      [{ result: { duration_ms: -1 } }, 'result.duration_ms'],
      [{ result: { completed_at: 'yesterday' } }, 'result.completed_at'],
      [{ result: { completed_at: '2026-02-30T25:00:00Z' } }, 'result.completed_at'],
      [{ result: { status: 3 } }, 'result.status'],
      [{ result: { error: 'e'.repeat(10_001) } }, 'result.error'],
      [{ result: { metadata: 'text' } }, 'result.metadata'],
      [{ result: { findings_count: -2 } }, 'result.findings_count'],
    ];
    for (const [body, field] of cases) assertNames(await agent.complete(commandId, body), 400, field);
    const { rows } = await h.pool.query('SELECT status FROM commands WHERE id = $1', [commandId]);
    assert.equal(rows[0].status, 'acknowledged');
  });

  it('a completed result with status "failed" fails the step; replayed it answers 200; completing it normally then is a 409', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['ff'] });
    const { commandId, runId } = await acknowledged(agent, 'ff');
    const body = { result: { status: 'failed', error: '  semgrep crashed  ', exit_code: 2, metadata: { stderr: 'segfault' } } };
    const res = await agent.complete(commandId, body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'failed');
    assert.equal(res.body.error_code, 'agent_error');
    assert.equal(res.body.error_message, 'semgrep crashed');
    assert.deepEqual(res.body.result.output, { stderr: 'segfault' }, 'what it carried is kept on the command');
    assert.equal((await agent.complete(commandId, body)).status, 200);
    assert.equal((await agent.fail(commandId, { error_message: 'semgrep crashed' })).status, 200, 'a /fail replay too');
    assert.equal((await agent.complete(commandId, { findings_count: 1 })).status, 409);
    await h.settle();
    const step = stepsByKey(await getRun(h, t, runId)).s;
    assert.equal(step.status, 'failed');
    assert.equal(step.error_message, 'semgrep crashed');
  });
});

describe('X-Agent-ID', () => {
  it('on every agent route: the key\'s own id passes, another id is a 401 that changes nothing, an id alone is no credential', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['xid'] });
    const other = await TestAgent.create(h, t, { tools: ['xid'] });
    const { commandId } = await acknowledged(agent, 'xid');
    const routes: [string, string, Record<string, unknown> | undefined][] = [
      ['POST', '/api/v1/agent/heartbeat', { status: 'running' }],
      ['GET', '/api/v1/agent/commands?limit=1', undefined],
      ['POST', `/api/v1/agent/commands/${commandId}/start`, undefined],
      ['POST', `/api/v1/agent/commands/${commandId}/complete`, { findings_count: 1 }],
    ];
    for (const [method, path, body] of routes) {
      const wrong = await h.request(method, path, { apiKey: agent.apiKey, body, headers: { 'x-agent-id': other.id } });
      assert.equal(wrong.status, 401, `${method} ${path}: ${JSON.stringify(wrong.body)}`);
      assert.equal(wrong.body.error.code, 'agent_id_mismatch');
      const garbage = await h.request(method, path, { apiKey: agent.apiKey, body, headers: { 'x-agent-id': 'worker-1' } });
      assert.equal(garbage.status, 401, `${method} ${path} with a non-id`);
      const alone = await h.request(method, path, { body, headers: { 'x-agent-id': agent.id } });
      assert.equal(alone.status, 401, `${method} ${path} with only X-Agent-ID`);
      assert.equal(alone.body.error.code, 'unauthorized');
    }
    const { rows } = await h.pool.query('SELECT status FROM commands WHERE id = $1', [commandId]);
    assert.equal(rows[0].status, 'acknowledged', 'no refused request moved the command');
    assert.equal((await agentRow(agent.id)).last_report, null, 'no refused heartbeat was stored');
    for (const [method, path, body] of routes) {
      const right = await h.request(method, path, { apiKey: agent.apiKey, body, headers: { 'x-agent-id': agent.id } });
      assert.equal(right.status, 200, `${method} ${path}: ${JSON.stringify(right.body)}`);
    }
  });
});
