// The agent API end to end through the real app (API.md "Agent API"): claims are exclusive
// under concurrent polls, capacity and tool/capability matching hold, long polls are woken
// by NOTIFY, replays are safe and contradictions are 409, results land on the run, and the
// heartbeat and credentials behave as the contract says. Each test uses its own tenant, so
// the commands of one test are never claimable by the agents of another.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createAsset, createPipeline, createTenant, getRun, passClaimDeadline, passCommandDeadline, startRun, step, stepsByKey,
  type Tenant,
} from './support/fixtures.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

// ---- helpers local to this file ----

/** A pipeline of `n` independent root steps, all needing `tool`, with room to queue them all at once. */
function rootSteps(n: number, tool: string, settings: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: `roots-${Math.random().toString(36).slice(2, 8)}`,
    steps: Array.from({ length: n }, (_, i) => step(`s${String(i).padStart(2, '0')}`, { tool })),
    settings: { max_parallel_steps: 50, fail_fast: false, ...settings },
  };
}

/** Starts a run of the pipeline and waits until its first wave of commands exists. */
async function dispatched(t: Tenant, doc: Record<string, unknown>, body: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const pipeline = await createPipeline(h, t, doc);
  const run = await startRun(h, t, pipeline.id, body);
  await h.settle();
  return run;
}

type CommandDbRow = { id: string; agent_id: string | null; status: string; claim_expires_at: Date | null };

async function commandRows(runIds: string[]): Promise<CommandDbRow[]> {
  const { rows } = await h.pool.query<CommandDbRow>(
    `SELECT id, agent_id, status, claim_expires_at FROM commands WHERE pipeline_run_id = ANY ($1::uuid[]) ORDER BY seq`,
    [runIds],
  );
  return rows;
}

async function commandRow(id: string): Promise<CommandDbRow> {
  const { rows } = await h.pool.query<CommandDbRow>(`SELECT id, agent_id, status, claim_expires_at FROM commands WHERE id = $1`, [id]);
  assert.equal(rows.length, 1, `command ${id} exists`);
  return rows[0];
}

/** The command as the tenant's management API shows it. */
async function tenantCommand(t: Tenant, id: string): Promise<Record<string, any>> {
  const res = await h.request('GET', `/api/v1/commands/${id}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/** Commands an agent holds (claimed-not-expired, acknowledged, running), per the database. */
async function heldBy(agentId: string): Promise<number> {
  const { rows } = await h.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM commands WHERE agent_id = $1
       AND (status IN ('acknowledged', 'running') OR (status = 'pending' AND claim_expires_at > now()))`,
    [agentId],
  );
  return rows[0].n;
}

function agentPost(apiKey: string | undefined, path: string, body: unknown = {}, extra: { token?: string; headers?: Record<string, string> } = {}) {
  return h.request('POST', `/api/v1/agent${path}`, { apiKey, body, ...extra });
}

function assertNames(res: { status: number; body: any }, status: number, field: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  const paths = (res.body?.error?.details ?? []).map((d: { path: string }) => d.path);
  assert.ok(paths.includes(field), `expected details to name '${field}', got ${JSON.stringify(res.body)}`);
}

function assertNoDuplicates(ids: string[]): void {
  const seen = new Map<string, number>();
  for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  const dups = [...seen].filter(([, n]) => n > 1);
  assert.deepEqual(dups, [], 'a command was handed out more than once');
}

// ---- 1. exclusive claims ----

describe('concurrent polls', () => {
  it('never hand the same command to two agents; every command is handed out exactly once', async () => {
    const t = await createTenant(h);
    const agents = await Promise.all(
      [0, 1, 2, 3].map(() => TestAgent.create(h, t, { tools: ['shared-scanner'], max_concurrent_jobs: 200 })),
    );
    const pipeline = await createPipeline(h, t, rootSteps(20, 'shared-scanner'));
    const runs = [await startRun(h, t, pipeline.id), await startRun(h, t, pipeline.id), await startRun(h, t, pipeline.id)];
    await h.settle();
    const expected = await commandRows(runs.map((r) => r.id));
    assert.equal(expected.length, 60, 'three runs of 20 root steps make 60 commands');
    assert.ok(expected.every((c) => c.agent_id === null && c.status === 'pending'));

    const receivedBy = new Map<string, string[]>(); // command id → agents that received it
    for (let round = 0; round < 40; round++) {
      // Each agent polls twice at the same moment, with small limits, so claims overlap.
      const polls = agents.flatMap((a) => [1, 2].map((k) => a.poll({ limit: k + (round % 3) }).then((cs) => ({ a, cs }))));
      const results = await Promise.all(polls);
      let got = 0;
      for (const { a, cs } of results) {
        for (const c of cs) {
          got++;
          receivedBy.set(c.id, [...(receivedBy.get(c.id) ?? []), a.id]);
        }
      }
      if (got === 0) break;
    }
    assertNoDuplicates([...receivedBy].flatMap(([id, holders]) => holders.map(() => id)));
    // The polls really overlapped: the work was spread over several agents.
    assert.ok(new Set([...receivedBy.values()].flat()).size >= 2, 'more than one agent received commands');
    assert.deepEqual([...receivedBy.keys()].sort(), expected.map((c) => c.id).sort(), 'every command was handed out');

    // The database agrees: each command is claimed by exactly the one agent that received it.
    const rows = await commandRows(runs.map((r) => r.id));
    for (const row of rows) {
      assert.equal(row.status, 'pending');
      assert.deepEqual([row.agent_id], receivedBy.get(row.id), `command ${row.id} is held by the agent that got it`);
      assert.ok(row.claim_expires_at && row.claim_expires_at > new Date(Date.now() - 5_000));
    }
    // Nothing is left to claim for anyone.
    for (const a of agents) assert.deepEqual(await a.poll({ limit: 100 }), []);
  });

  it('racing acks of claims by many agents: only the holder can ack, every ack succeeds once', async () => {
    const t = await createTenant(h);
    const agents = await Promise.all([0, 1, 2].map(() => TestAgent.create(h, t, { tools: ['racer'], max_concurrent_jobs: 50 })));
    const run = await dispatched(t, rootSteps(12, 'racer'));
    const claims = await Promise.all(agents.map((a) => a.poll({ limit: 5 }).then((cs) => cs.map((c) => ({ a, id: c.id as string })))));
    const flat = claims.flat();
    assert.equal(flat.length, 12);
    assertNoDuplicates(flat.map((c) => c.id));
    // Every agent tries to ack every command at once; exactly the holder succeeds.
    const attempts = await Promise.all(
      flat.flatMap(({ id }) => agents.map((a) => a.ack(id).then((res) => ({ id, agent: a.id, status: res.status })))),
    );
    for (const { id, a } of flat) {
      const mine = attempts.filter((x) => x.id === id);
      assert.deepEqual(
        mine.map((x) => [x.agent === a.id, x.status]).sort(),
        agents.map((other) => [other.id === a.id, other.id === a.id ? 200 : 404]).sort(),
      );
    }
    const rows = await commandRows([run.id]);
    assert.ok(rows.every((r) => r.status === 'acknowledged'));
  });
});

// ---- 2. capacity ----

describe('capacity', () => {
  it('an agent never receives more than max_concurrent_jobs minus what it holds', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['cap-tool'], max_concurrent_jobs: 3 });
    await dispatched(t, rootSteps(10, 'cap-tool'));

    const first = await agent.poll({ limit: 10 });
    assert.equal(first.length, 3, 'capacity 3');
    assert.deepEqual(await agent.poll({ limit: 10 }), [], 'holding 3 claims: no room');
    assert.equal(await heldBy(agent.id), 3);

    // acknowledged and running commands still count.
    assert.equal((await agent.ack(first[0].id)).status, 200);
    assert.equal((await agent.start(first[1].id)).status, 200);
    assert.deepEqual(await agent.poll({ limit: 10 }), [], 'acknowledged + running + claimed = 3');

    // A finished command frees one slot.
    assert.equal((await agent.complete(first[0].id, { findings_count: 0 })).status, 200);
    const second = await agent.poll({ limit: 10 });
    assert.equal(second.length, 1, 'one slot freed by the completion');
    assert.ok(!first.some((c) => c.id === second[0].id));

    // A failed command frees one too.
    assert.equal((await agent.fail(first[1].id, { error_message: 'boom' })).status, 200);
    assert.equal((await agent.poll({ limit: 10 })).length, 1);

    // A claim whose ack deadline passed no longer counts against the agent.
    await passClaimDeadline(h, first[2].id);
    const third = await agent.poll({ limit: 10 });
    assert.equal(third.length, 1, 'the lapsed claim freed a slot');
    assert.equal(await heldBy(agent.id), 3);
  });

  it('limit below free capacity is honoured', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['lim'], max_concurrent_jobs: 10 });
    await dispatched(t, rootSteps(6, 'lim'));
    assert.equal((await agent.poll({ limit: 2 })).length, 2);
    assert.equal((await agent.poll({ limit: 1 })).length, 1);
    assert.equal((await agent.poll({ limit: 100 })).length, 3);
  });

  it('concurrent polls of the same agent together stay within its capacity', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['burst'], max_concurrent_jobs: 4 });
    await dispatched(t, rootSteps(15, 'burst'));
    const results = await Promise.all(Array.from({ length: 8 }, () => agent.poll({ limit: 3 })));
    const ids = results.flat().map((c) => c.id as string);
    assertNoDuplicates(ids);
    assert.equal(ids.length, 4, `8 concurrent polls of an agent with capacity 4 got ${ids.length} commands`);
    assert.equal(await heldBy(agent.id), 4);

    // The same once some are acknowledged/running: capacity minus held, even under a burst.
    await agent.ack(ids[0]);
    await agent.start(ids[1]);
    await agent.complete(ids[2], {});
    const again = await Promise.all(Array.from({ length: 6 }, () => agent.poll({ limit: 5 })));
    assert.equal(again.flat().length, 1, 'one slot free after one completion');
    assert.equal(await heldBy(agent.id), 4);
  });
});

// ---- 3. tool and capability matching ----

describe('tool and capability matching', () => {
  it('an agent without the step tool never gets the command; one created later with the tool does', async () => {
    const t = await createTenant(h);
    const other = await createTenant(h);
    const wrongTool = await TestAgent.create(h, t, { tools: ['semgrep', 'trivy'], capabilities: ['dast'] });
    const otherTenant = await TestAgent.create(h, other, { tools: ['nuclei'], capabilities: ['dast'] });
    const run = await dispatched(t, {
      name: 'tool-match',
      steps: [{ id: 'dast', name: 'Dynamic', tool: 'nuclei', capabilities: ['dast'] }],
    });
    assert.deepEqual(await wrongTool.poll(), [], 'no nuclei: nothing, even with the dast capability');
    assert.deepEqual(await otherTenant.poll(), [], 'an agent of another tenant never sees it');
    const [row] = await commandRows([run.id]);
    assert.equal(row.agent_id, null);

    const rightTool = await TestAgent.create(h, t, { tools: ['nuclei'] });
    const got = await rightTool.poll();
    assert.equal(got.length, 1);
    assert.equal(got[0].id, row.id);
    assert.equal(got[0].payload.tool, 'nuclei');
    assert.equal((await commandRow(row.id)).agent_id, rightTool.id);
  });

  it('a tool-less step goes to an agent with all its capabilities, never to one with a subset', async () => {
    const t = await createTenant(h);
    const subset = await TestAgent.create(h, t, { tools: ['tool-anything'], capabilities: ['sast'] });
    const disjoint = await TestAgent.create(h, t, { capabilities: ['sca', 'secrets'] });
    const run = await dispatched(t, {
      name: 'capability-match',
      steps: [{ id: 'analysis', name: 'Analysis', capabilities: ['sast', 'sca'] }],
    });
    assert.deepEqual(await subset.poll(), []);
    assert.deepEqual(await disjoint.poll(), []);
    const superset = await TestAgent.create(h, t, { capabilities: ['secrets', 'sca', 'sast'] });
    const got = await superset.poll();
    assert.equal(got.length, 1);
    assert.equal(got[0].payload.step_key, 'analysis');
    assert.equal(got[0].payload.tool, null);
    assert.deepEqual([...got[0].payload.capabilities].sort(), ['sast', 'sca']);
    const [row] = await commandRows([run.id]);
    assert.equal(row.agent_id, superset.id);
  });
});

// ---- 4. long poll ----

describe('long poll', () => {
  it('a poll waiting before the run exists is woken by the new command, well before its wait ends', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['waiter'] });
    const pipeline = await createPipeline(h, t, rootSteps(1, 'waiter'));
    const started = Date.now();
    const poll = agent.poll({ wait: 5, limit: 5 }).then((cs) => ({ cs, elapsed: Date.now() - started }));
    await new Promise((r) => setTimeout(r, 300)); // the poll is now asleep on an empty queue
    const run = await startRun(h, t, pipeline.id);
    const { cs, elapsed } = await poll;
    assert.equal(cs.length, 1, 'the waiting poll got the command');
    assert.equal(cs[0].payload.pipeline_run_id, run.id);
    assert.ok(elapsed >= 300, `returned only after the run existed (${elapsed}ms)`);
    assert.ok(elapsed < 2_000, `woken by NOTIFY, not by the 5s wait ending (${elapsed}ms)`);
  });

  it('a wait with nothing to claim returns an empty list after about the wait', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['idle'] });
    const started = Date.now();
    const res = await h.request('GET', '/api/v1/agent/commands?wait=1&limit=5', { apiKey: agent.apiKey });
    const elapsed = Date.now() - started;
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, []);
    assert.equal(res.headers.get('x-poll-interval-seconds'), String(h.orchestration.pollIntervalSeconds));
    assert.ok(elapsed >= 900, `held for the wait (${elapsed}ms)`);
    assert.ok(elapsed < 3_000, `not much longer than the wait (${elapsed}ms)`);
  });

  it('a command of another tenant does not end the wait with anything', async () => {
    const t = await createTenant(h);
    const other = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['shared-name'] });
    const started = Date.now();
    const poll = agent.poll({ wait: 1 });
    await dispatched(other, rootSteps(1, 'shared-name'));
    assert.deepEqual(await poll, []);
    assert.ok(Date.now() - started >= 900);
  });

  it('bad wait and limit values are 400 naming the parameter', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['x'] });
    const get = (q: string) => h.request('GET', `/api/v1/agent/commands?${q}`, { apiKey: agent.apiKey });
    for (const q of ['wait=61', 'wait=-1', 'wait=abc', 'wait=', 'wait=1e3']) assertNames(await get(q), 400, 'wait');
    for (const q of ['limit=0', 'limit=-3', 'limit=abc', 'limit=101', 'limit=2.5']) assertNames(await get(q), 400, 'limit');
    // The edges are fine.
    assert.equal((await get('wait=0&limit=1')).status, 200);
    assert.equal((await get('limit=100')).status, 200);
  });
});

// ---- 5. replays and conflicts ----

describe('replays and conflicts', () => {
  let t: Tenant;
  let agent: TestAgent;
  let stranger: TestAgent;
  let commands: Record<string, any>[];

  before(async () => {
    t = await createTenant(h);
    agent = await TestAgent.create(h, t, { tools: ['replay'], max_concurrent_jobs: 20 });
    stranger = await TestAgent.create(h, t, { tools: ['replay'], max_concurrent_jobs: 20 });
    await dispatched(t, rootSteps(8, 'replay'));
    commands = await agent.poll({ limit: 8 });
    assert.equal(commands.length, 8);
  });

  it('ack twice: 200 both times with the same command', async () => {
    const id = commands[0].id;
    const a = await agent.ack(id);
    const b = await agent.ack(id);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(a.body.id, id);
    assert.equal(b.body.id, id);
    assert.equal(a.body.status, 'acknowledged');
    assert.equal(b.body.status, 'acknowledged');
    assert.equal(b.body.acknowledged_at, a.body.acknowledged_at, 'the replay did not re-acknowledge');
    assert.equal(b.body.expires_at, a.body.expires_at, 'the replay did not move the step deadline');
  });

  it('complete twice: 200 both with the same state; fail afterwards is 409 and changes nothing', async () => {
    const id = commands[0].id; // acknowledged above (or acked here when run alone)
    await agent.ack(id);
    const a = await agent.complete(id, { findings_count: 5, output: { n: 1 } });
    const b = await agent.complete(id, { findings_count: 5, output: { n: 1 } });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(a.body.status, 'completed');
    assert.deepEqual(b.body, a.body, 'the replay answers with the unchanged command');
    // A replay carrying a different result does not overwrite the recorded one.
    const c = await agent.complete(id, { findings_count: 99 });
    assert.equal(c.status, 200);
    assert.deepEqual(c.body.result, a.body.result);

    const fail = await agent.fail(id, { error_message: 'late failure' });
    assert.equal(fail.status, 409, JSON.stringify(fail.body));
    assert.equal(typeof fail.body.error?.code, 'string');
    const now = await tenantCommand(t, id);
    assert.equal(now.status, 'completed');
    assert.deepEqual(now.result, a.body.result);
    assert.equal(now.error_message, null);
    // ack/start after completion are replays of done transitions.
    assert.equal((await agent.ack(id)).status, 200);
    assert.equal((await agent.start(id)).status, 200);
    assert.equal((await tenantCommand(t, id)).status, 'completed');
  });

  it('complete after fail is 409 and the command stays failed', async () => {
    const id = commands[1].id;
    assert.equal((await agent.ack(id)).status, 200);
    assert.equal((await agent.start(id)).status, 200);
    const f1 = await agent.fail(id, { error_message: 'scanner crashed', error_code: 'tool_error' });
    assert.equal(f1.status, 200, JSON.stringify(f1.body));
    assert.equal(f1.body.status, 'failed');
    assert.equal(f1.body.error_code, 'tool_error');
    const f2 = await agent.fail(id, { error_message: 'scanner crashed', error_code: 'tool_error' });
    assert.equal(f2.status, 200, 'fail replay');
    assert.equal(f2.body.status, 'failed');
    const done = await agent.complete(id, { findings_count: 1 });
    assert.equal(done.status, 409, JSON.stringify(done.body));
    const now = await tenantCommand(t, id);
    assert.equal(now.status, 'failed');
    assert.equal(now.error_message, 'scanner crashed');
    assert.equal(now.result, null);
    assert.equal((await agent.start(id)).status, 409, 'start after fail');
    assert.equal((await agent.ack(id)).status, 409, 'ack after fail');
  });

  it('another agent cannot move a command it does not hold: 404 for every transition', async () => {
    const id = commands[2].id;
    const before = await commandRow(id);
    for (const res of [
      await stranger.ack(id),
      await h.request('POST', `/api/v1/agent/commands/${id}/acknowledge`, { apiKey: stranger.apiKey }),
      await stranger.start(id),
      await stranger.complete(id, { findings_count: 1 }),
      await stranger.fail(id, { error_message: 'not mine' }),
    ]) {
      assert.equal(res.status, 404, JSON.stringify(res.body));
      assert.equal(res.body.error?.code, 'not_found');
    }
    // An agent of another tenant, with the same tool, fares no better.
    const outsider = await TestAgent.create(h, await createTenant(h), { tools: ['replay'] });
    for (const res of [await outsider.ack(id), await outsider.start(id), await outsider.complete(id, {}), await outsider.fail(id, { error_message: 'x' })]) {
      assert.equal(res.status, 404, JSON.stringify(res.body));
    }
    assert.deepEqual(await commandRow(id), before, 'nothing changed');
    // Also for a completed command held by someone else.
    const completed = await stranger.complete(commands[0].id, {});
    assert.equal(completed.status, 404);
    // The holder still can.
    assert.equal((await agent.ack(id)).status, 200);
  });

  it('a random UUID and a non-UUID id are 404', async () => {
    for (const id of [randomUUID(), 'not-a-uuid', '12345']) {
      for (const res of [
        await agent.ack(id), await agent.start(id), await agent.complete(id, {}), await agent.fail(id, { error_message: 'x' }),
      ]) {
        assert.equal(res.status, 404, `${id}: ${JSON.stringify(res.body)}`);
      }
    }
  });

  it('complete straight from acknowledged (no /start) works', async () => {
    const id = commands[3].id;
    assert.equal((await agent.ack(id)).status, 200);
    const res = await agent.complete(id, { findings_count: 2 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'completed');
    assert.ok(res.body.completed_at);
  });

  it('/acknowledge is an alias of /ack', async () => {
    const id = commands[4].id;
    const res = await h.request('POST', `/api/v1/agent/commands/${id}/acknowledge`, { apiKey: agent.apiKey });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'acknowledged');
    assert.equal((await commandRow(id)).status, 'acknowledged');
  });

  it('start without ack acknowledges implicitly and runs', async () => {
    const id = commands[5].id;
    const res = await agent.start(id);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'running');
    assert.ok(res.body.acknowledged_at, 'acknowledged on the way');
    assert.ok(res.body.started_at);
    const again = await agent.start(id);
    assert.equal(again.status, 200);
    assert.equal(again.body.started_at, res.body.started_at, 'start replay does not restart');
    assert.equal((await agent.ack(id)).status, 200, 'ack after start is a replay');
    // The step run is running on this agent.
    await h.settle();
    const run = await getRun(h, t, res.body.pipeline_run_id);
    const sr = run.step_runs.find((s: any) => s.command_id === id);
    assert.equal(sr.status, 'running');
    assert.equal(sr.agent_id, agent.id);
  });

  it('anything after expiry is 409: queue timeout while claimed, step timeout once acknowledged', async () => {
    const queued = commands[7].id; // claimed, never acknowledged
    await passCommandDeadline(h, queued);
    await h.settle();
    const q = await commandRow(queued);
    assert.equal(q.status, 'expired');
    for (const res of [await agent.ack(queued), await agent.start(queued), await agent.complete(queued, {}), await agent.fail(queued, { error_message: 'x' })]) {
      assert.equal(res.status, 409, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'command_expired');
    }
    const acked = commands[4].id; // acknowledged through the alias above
    await agent.ack(acked);
    await passCommandDeadline(h, acked);
    await h.settle();
    assert.equal((await commandRow(acked)).status, 'expired');
    const late = await agent.complete(acked, { findings_count: 3 });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    const now = await tenantCommand(t, acked);
    assert.equal(now.error_code, 'step_timeout');
    assert.equal(now.result, null, 'the late result was not recorded');
    const hb = await agent.heartbeat({});
    for (const id of [queued, acked]) assert.ok(hb.body.cancel_command_ids.includes(id), `heartbeat tells the agent to stop ${id}`);
  });

  it('a report body over the size limit is 413, not a crash', async () => {
    const id = commands[3].id;
    const big = await h.request('POST', `/api/v1/agent/commands/${id}/complete`, {
      apiKey: agent.apiKey, body: { findings_count: 1, output: { blob: 'x'.repeat(2 * 1024 * 1024) } },
    });
    assert.equal(big.status, 413, JSON.stringify(big.body).slice(0, 300));
    assert.equal(big.body.error?.code, 'payload_too_large');
  });

  it('complete straight from a pending claim works', async () => {
    const id = commands[6].id;
    const res = await agent.complete(id, { findings_count: 7 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'completed');
    assert.ok(res.body.acknowledged_at, 'completion implies acknowledgement');
    await h.settle();
    const run = await getRun(h, t, res.body.pipeline_run_id);
    const sr = run.step_runs.find((s: any) => s.command_id === id);
    assert.equal(sr.status, 'completed');
    assert.equal(sr.findings_count, 7);
  });
});

// ---- 6. ack deadline ----

describe('ack deadline', () => {
  it('a claim not acked by its deadline goes to the next poller; the first agent then gets 404', async () => {
    const t = await createTenant(h);
    const first = await TestAgent.create(h, t, { tools: ['slow'] });
    const second = await TestAgent.create(h, t, { tools: ['slow'] });
    await dispatched(t, rootSteps(1, 'slow'));
    const [cmd] = await first.poll();
    assert.ok(cmd);
    assert.deepEqual(await second.poll(), [], 'claimed: nobody else gets it');

    await passClaimDeadline(h, cmd.id);
    const [again] = await second.poll();
    assert.equal(again?.id, cmd.id, 'the lapsed claim was handed to the next poller');
    assert.equal((await commandRow(cmd.id)).agent_id, second.id);

    for (const res of [await first.ack(cmd.id), await first.start(cmd.id), await first.complete(cmd.id, {})]) {
      assert.equal(res.status, 404, JSON.stringify(res.body));
    }
    const ack = await second.ack(cmd.id);
    assert.equal(ack.status, 200);
    assert.equal(ack.body.agent_id, second.id);
    const done = await second.finish(cmd.id, { findings_count: 1 });
    assert.equal(done.status, 'completed');
    await h.settle();
    const run = await getRun(h, t, cmd.payload.pipeline_run_id);
    assert.equal(run.status, 'completed');
    assert.equal(run.step_runs[0].agent_id, second.id);
  });

  it('a lapsed claim can be re-claimed by the same agent', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['again'], max_concurrent_jobs: 1 });
    await dispatched(t, rootSteps(1, 'again'));
    const [cmd] = await agent.poll();
    assert.deepEqual(await agent.poll(), []);
    await passClaimDeadline(h, cmd.id);
    const [again] = await agent.poll();
    assert.equal(again?.id, cmd.id);
    const row = await commandRow(cmd.id);
    assert.ok(row.claim_expires_at! > new Date(), 'a fresh claim deadline');
  });
});

// ---- 7. results ----

describe('results', () => {
  it('findings_count and output land on the step run and the run total, in both body shapes', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['res'], max_concurrent_jobs: 5 });
    const run = await dispatched(t, {
      name: 'results',
      steps: [step('flat', { tool: 'res' }), step('seed', { tool: 'res' }), step('nested', { tool: 'res' })],
      settings: { fail_fast: false },
    });
    const cs = Object.fromEntries((await agent.poll({ limit: 5 })).map((c) => [c.payload.step_key, c]));
    assert.deepEqual(Object.keys(cs).sort(), ['flat', 'nested', 'seed']);

    const flat = await agent.finish(cs.flat.id, { findings_count: 3, output: { report: 'r.json', high: 1 } });
    assert.equal(flat.result.findings_count, 3);
    // Seed 001 "Worker Response", as written.
    await agent.ack(cs.seed.id);
    const seed = await agent.complete(cs.seed.id, {
      command_id: cs.seed.id, status: 'completed', result: { findings_count: 12, duration_ms: 45000, scan_id: 'scan-001' },
    });
    assert.equal(seed.status, 200, JSON.stringify(seed.body));
    await agent.ack(cs.nested.id);
    const nested = await agent.complete(cs.nested.id, { result: { findings_count: 1, output: { k: 'v' } } });
    assert.equal(nested.status, 200, JSON.stringify(nested.body));

    await h.settle();
    const done = await getRun(h, t, run.id);
    const steps = stepsByKey(done);
    assert.equal(steps.flat.findings_count, 3);
    assert.deepEqual(steps.flat.output, { report: 'r.json', high: 1 });
    assert.equal(steps.seed.findings_count, 12);
    assert.equal(steps.seed.output.duration_ms, 45000, JSON.stringify(steps.seed.output));
    assert.equal(steps.seed.output.scan_id, 'scan-001');
    assert.equal(steps.nested.findings_count, 1);
    assert.deepEqual(steps.nested.output, { k: 'v' });
    assert.equal(done.total_findings, 16);
    assert.equal(done.status, 'completed');
    assert.equal(done.completed_steps, 3);
  });

  it('bad findings_count and a missing error_message are 400 naming the field, and change nothing', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['bad'] });
    await dispatched(t, rootSteps(1, 'bad'));
    const [cmd] = await agent.poll();
    assert.equal((await agent.ack(cmd.id)).status, 200);

    assertNames(await agent.complete(cmd.id, { findings_count: -1 }), 400, 'findings_count');
    assertNames(await agent.complete(cmd.id, { findings_count: '3' }), 400, 'findings_count');
    assertNames(await agent.complete(cmd.id, { findings_count: 1.5 }), 400, 'findings_count');
    assertNames(await agent.complete(cmd.id, { result: { findings_count: -2 } }), 400, 'result.findings_count');
    assertNames(await agent.complete(cmd.id, { output: 'text' }), 400, 'output');
    assertNames(await agent.fail(cmd.id, {}), 400, 'error_message');
    assertNames(await agent.fail(cmd.id, { error_message: '   ' }), 400, 'error_message');
    assertNames(await agent.fail(cmd.id, { error_message: 42 }), 400, 'error_message');
    const malformed = await h.request('POST', `/api/v1/agent/commands/${cmd.id}/complete`, { apiKey: agent.apiKey, raw: '{"findings_count": ' });
    assert.equal(malformed.status, 400);

    const row = await commandRow(cmd.id);
    assert.equal(row.status, 'acknowledged', 'invalid reports changed nothing');
    const ok = await agent.complete(cmd.id, { findings_count: 0 });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.status, 'completed');
  });
});

// ---- 8. heartbeat ----

describe('heartbeat', () => {
  it('answers the contract shape and marks the agent online with its version and hostname', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['hb'] });
    const before = await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token });
    assert.equal(before.body.health, 'unknown', 'never heard from yet');

    const res = await agent.heartbeat({ version: '1.4.2', hostname: 'scanner-01', active_jobs: 0 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, {
      status: 'ok', agent_id: agent.id, tenant_id: t.id, heartbeat_interval_seconds: h.orchestration.heartbeatIntervalSeconds,
      poll_interval_seconds: h.orchestration.pollIntervalSeconds, cancel_command_ids: [],
      max_concurrent_jobs: 5, tools: ['hb'], capabilities: [],
    });
    const shown = await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token });
    assert.equal(shown.status, 200);
    assert.equal(shown.body.health, 'online');
    assert.equal(shown.body.version, '1.4.2');
    assert.equal(shown.body.hostname, 'scanner-01');
    assert.ok(shown.body.last_heartbeat_at);
    // An empty body is a heartbeat too.
    assert.equal((await h.request('POST', '/api/v1/agent/heartbeat', { apiKey: agent.apiKey })).status, 200);
    assertNames(await agent.heartbeat({ running_command_ids: ['nope'] }), 400, 'running_command_ids[0]');
  });

  it('reports a running command whose run was cancelled in cancel_command_ids', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['hb-cancel', 'hb-keep'], max_concurrent_jobs: 5 });
    const doomed = await dispatched(t, rootSteps(1, 'hb-cancel'));
    const kept = await dispatched(t, rootSteps(1, 'hb-keep'));
    const cs = await agent.poll({ limit: 5 });
    assert.equal(cs.length, 2);
    const victim = cs.find((c) => c.payload.pipeline_run_id === doomed.id)!;
    const survivor = cs.find((c) => c.payload.pipeline_run_id === kept.id)!;
    for (const c of cs) assert.equal((await agent.start(c.id)).status, 200);

    const quiet = await agent.heartbeat({ running_command_ids: [victim.id, survivor.id] });
    assert.deepEqual(quiet.body.cancel_command_ids, [], 'both still ours to run');

    const cancel = await h.request('POST', `/api/v1/pipeline-runs/${doomed.id}/cancel`, { token: t.token });
    assert.equal(cancel.status, 200, JSON.stringify(cancel.body));
    assert.equal((await commandRow(victim.id)).status, 'cancelled');

    const named = await agent.heartbeat({ running_command_ids: [victim.id, survivor.id] });
    assert.equal(named.status, 200);
    assert.deepEqual(named.body.cancel_command_ids, [victim.id]);
    const unnamed = await agent.heartbeat({});
    assert.deepEqual(unnamed.body.cancel_command_ids, [victim.id], 'recently cancelled commands are reported even unnamed');

    // The agent cannot report on the cancelled command any more.
    for (const res of [await agent.complete(victim.id, { findings_count: 1 }), await agent.fail(victim.id, { error_message: 'x' })]) {
      assert.equal(res.status, 409, JSON.stringify(res.body));
    }
    // A command the agent names but no longer holds in flight (here: finished) is one to stop.
    assert.equal((await agent.complete(survivor.id, {})).status, 200);
    const finished = await agent.heartbeat({ command_ids: [survivor.id] });
    assert.deepEqual([...finished.body.cancel_command_ids].sort(), [victim.id, survivor.id].sort());
  });
});

// ---- 9. credentials ----

describe('agent credentials', () => {
  const poll = (headers: { apiKey?: string; token?: string; headers?: Record<string, string> }, query = '') =>
    h.request('GET', `/api/v1/agent/commands${query}`, headers);

  it('no credential, a tenant token, or a key in the query string are 401', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['auth'] });
    const id = randomUUID();
    for (const res of [
      await agentPost(undefined, '/heartbeat'),
      await poll({}),
      await agentPost(undefined, `/commands/${id}/ack`),
    ]) assert.equal(res.status, 401, JSON.stringify(res.body));

    for (const res of [
      await agentPost(undefined, '/heartbeat', {}, { token: t.token }),
      await poll({ token: t.token }),
      await poll({ apiKey: t.token }),
      await poll({ token: ADMIN_TOKEN }),
    ]) assert.equal(res.status, 401, JSON.stringify(res.body));

    for (const q of [`?api_key=${agent.apiKey}`, `?token=${agent.apiKey}`]) {
      assert.equal((await poll({}, q)).status, 401, q);
      assert.equal((await h.request('POST', `/api/v1/agent/heartbeat${q}`, { body: {} })).status, 401, q);
    }
    assert.equal((await poll({ headers: { authorization: 'Bearer sfa_not-a-real-key' } })).status, 401);

    // Both header forms work.
    assert.equal((await poll({ apiKey: agent.apiKey })).status, 200);
    assert.equal((await poll({ token: agent.apiKey })).status, 200);
  });

  it('a deactivated agent is 403; activated again it works', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['deact'] });
    assert.equal((await agent.heartbeat()).status, 200);
    const off = await h.request('POST', `/api/v1/agents/${agent.id}/deactivate`, { token: t.token });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    assert.equal((await agent.heartbeat()).status, 403);
    assert.equal((await poll({ apiKey: agent.apiKey })).status, 403);
    assert.equal((await agent.ack(randomUUID())).status, 403);
    const on = await h.request('POST', `/api/v1/agents/${agent.id}/activate`, { token: t.token });
    assert.equal(on.status, 200);
    assert.equal((await agent.heartbeat()).status, 200);
    assert.equal((await poll({ apiKey: agent.apiKey })).status, 200);
  });

  it('a tenant without the scans module: heartbeat works, poll and ack are 403', async () => {
    const created = await h.request('POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name: 'no-modules', modules: [] } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.deepEqual(created.body.tenant.modules, []);
    const t: Tenant = { id: created.body.tenant.id, token: created.body.token };
    const agent = await TestAgent.create(h, t, { tools: ['gated'] });
    assert.equal((await agent.heartbeat({ version: '1' })).status, 200);
    const p = await poll({ apiKey: agent.apiKey });
    assert.equal(p.status, 403, JSON.stringify(p.body));
    assert.equal((await agent.ack(randomUUID())).status, 403);
    assert.equal((await agent.complete(randomUUID(), {})).status, 403);
  });

  it('a revoked agent is 401', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['rev'] });
    assert.equal((await agent.heartbeat()).status, 200);
    const del = await h.request('DELETE', `/api/v1/agents/${agent.id}`, { token: t.token });
    assert.equal(del.status, 200, JSON.stringify(del.body));
    assert.equal((await agent.heartbeat()).status, 401);
    assert.equal((await poll({ apiKey: agent.apiKey })).status, 401);
    assert.equal((await agent.ack(randomUUID())).status, 401);
  });

  it('regenerate-key: the old key is 401, the new key works', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['regen'] });
    assert.equal((await agent.heartbeat()).status, 200);
    const res = await h.request('POST', `/api/v1/agents/${agent.id}/regenerate-key`, { token: t.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const newKey = res.body.api_key as string;
    assert.ok(newKey && newKey !== agent.apiKey);
    assert.equal((await agent.heartbeat()).status, 401);
    assert.equal((await poll({ apiKey: agent.apiKey })).status, 401);
    const renewed = new TestAgent(h, agent.id, newKey);
    const hb = await renewed.heartbeat();
    assert.equal(hb.status, 200);
    assert.equal(hb.body.agent_id, agent.id);
    assert.equal((await poll({ apiKey: newKey })).status, 200);
  });
});

// ---- 10. command payload ----

describe('command payload', () => {
  it('has the shape of API.md, and a later step sees its dependencies in payload.steps', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['semgrep', 'nuclei'], capabilities: ['sast', 'dast'] });
    const asset = await createAsset(h, t, { type: 'web_application', name: 'shop', value: 'https://shop.example.com', tags: ['prod'] });
    const run = await dispatched(t, {
      name: 'payload',
      steps: [
        { id: 'sast', name: 'Static Analysis', tool: 'semgrep', capabilities: ['sast'], config: { rules: ['p/owasp-top-ten'] }, timeout: '10m' },
        { id: 'dast', name: 'Dynamic Scan', tool: 'nuclei', capabilities: ['dast'], depends_on: ['sast'], timeout: 90 },
      ],
    }, { asset_id: asset.id, context: { branch: 'main', commit: 'abc123' } });

    const [cmd] = await agent.poll();
    assert.ok(cmd, 'the root step was dispatched');
    assert.match(cmd.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(cmd.type, 'scan');
    assert.equal(cmd.priority, 'normal');
    for (const f of ['created_at', 'expires_at']) {
      assert.equal(typeof cmd[f], 'string', f);
      assert.match(cmd[f], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, `${f} is RFC 3339 UTC`);
    }
    assert.ok(new Date(cmd.expires_at) > new Date(cmd.created_at));

    const sr = stepsByKey(await getRun(h, t, run.id));
    const p = cmd.payload;
    assert.equal(p.pipeline_run_id, run.id);
    assert.equal(p.step_run_id, sr.sast.id);
    assert.equal(p.step_key, 'sast');
    assert.equal(p.step_name, 'Static Analysis');
    assert.equal(p.tool, 'semgrep');
    assert.deepEqual(p.capabilities, ['sast']);
    assert.deepEqual(p.step_config.rules, ['p/owasp-top-ten']);
    assert.equal(p.timeout_seconds, 600);
    assert.equal(p.attempt, 1);
    assert.equal(p.target.id, asset.id);
    assert.equal(p.target.type, 'web_application');
    assert.equal(p.target.name, 'shop');
    assert.deepEqual(p.context, { branch: 'main', commit: 'abc123' });
    assert.equal(typeof p.steps, 'object');
    assert.deepEqual(Object.keys(p.steps).sort(), ['dast', 'sast']);
    for (const s of Object.values(p.steps) as Record<string, unknown>[]) {
      assert.ok('status' in s && 'findings_count' in s && 'output' in s, JSON.stringify(s));
    }

    await agent.finish(cmd.id, { findings_count: 4, output: { sarif: 's.json' } });
    await h.settle();
    const [next] = await agent.poll();
    assert.ok(next, 'dast dispatched after sast completed');
    assert.equal(next.payload.step_key, 'dast');
    assert.equal(next.payload.timeout_seconds, 90);
    assert.equal(next.payload.step_run_id, sr.dast.id);
    assert.deepEqual(next.payload.steps.sast, { status: 'completed', findings_count: 4, output: { sarif: 's.json' } });
  });
});

// ---- a lapsed claim wakes long polls (real time, with a 1s ack deadline) ----

describe('long poll and a lapsing claim', () => {
  let fast: Harness;
  before(async () => {
    fast = await startHarness({ orchestration: { ackTimeoutSeconds: 1 } });
  });
  after(() => fast.close());

  it('a claim that lapses while another agent long-polls is handed to that agent when it lapses, not when the wait ends', async () => {
    const t = await createTenant(fast);
    const holder = await TestAgent.create(fast, t, { tools: ['lapse'] });
    const waiter = await TestAgent.create(fast, t, { tools: ['lapse'] });
    const pipeline = await createPipeline(fast, t, rootSteps(1, 'lapse'));
    await startRun(fast, t, pipeline.id);
    await fast.settle();
    const [claimed] = await holder.poll();
    assert.ok(claimed);
    const claimedAt = Date.now();
    // The holder never acknowledges. Its claim goes back to the queue after 1s; the waiting
    // agent should get it then, not at the end of its 4s wait.
    const got = await waiter.poll({ wait: 4 });
    const elapsed = Date.now() - claimedAt;
    assert.equal(got[0]?.id, claimed.id, 'the waiting agent got the lapsed command');
    assert.ok(elapsed >= 900, `not before the ack deadline (${elapsed}ms)`);
    assert.ok(elapsed < 2_500, `handed over when the claim lapsed (~1s), not when the 4s wait ended (${elapsed}ms)`);
  });
});
