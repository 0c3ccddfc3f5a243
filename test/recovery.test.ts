// Recovery through the real app and real graphile-worker: step and queue timeouts, agents
// that stop responding, and a worker that stops and starts again. Deadlines are passed by
// moving timestamps and job run_at in the database; nobody sleeps.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AGENT_RETRIES } from '../src/domain/progression.ts';
import { startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createPipeline, createTenant, getRun, passCommandDeadline, passRetryDelays, runEvents, silenceAgent, startRun,
  step, stepsByKey, type Tenant,
  runCommands, runSteps,
} from './support/fixtures.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

const commandsOf = (runId: string, stepKey?: string) => runCommands(h, runId, stepKey);

const stepsOf = (t: Tenant, runId: string) => runSteps(h, t, runId);

async function onlyCommand(agent: TestAgent, stepKey: string): Promise<Record<string, any>> {
  await h.settle();
  const commands = await agent.poll();
  assert.deepEqual(commands.map((c) => c.payload.step_key), [stepKey]);
  return commands[0];
}

async function ok(res: Promise<{ status: number; body: any }>): Promise<any> {
  const r = await res;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

async function agentHealth(t: Tenant, agentId: string): Promise<string> {
  const res = await h.request('GET', `/api/v1/agents/${agentId}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.health;
}

/**
 * Seconds until each pending expiry job (task command_expire) of the run is due, soonest
 * first. Found by payload (the run's id or one of its commands' ids), so this holds whether
 * there is one timer per command or one per run.
 */
async function expiryTimersOf(runId: string): Promise<number[]> {
  const { rows } = await h.pool.query<{ s: number }>(
    `SELECT extract(epoch FROM j.run_at - now())::float AS s
     FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks t ON t.id = j.task_id
     WHERE t.identifier = 'command_expire' AND j.locked_at IS NULL
       AND (j.payload->>'run_id' = $1::text
            OR j.payload->>'command_id' IN (SELECT id::text FROM commands WHERE pipeline_run_id = $1::uuid))
     ORDER BY j.run_at`,
    [runId],
  );
  return rows.map((r) => r.s);
}

/** Every expiry job of the run fires now, whatever the deadlines say. */
async function fireExpiryTimers(runId: string): Promise<void> {
  await h.pool.query(
    `UPDATE graphile_worker._private_jobs j SET run_at = now()
     FROM graphile_worker._private_tasks t
     WHERE t.id = j.task_id AND t.identifier = 'command_expire'
       AND (j.payload->>'run_id' = $1::text
            OR j.payload->>'command_id' IN (SELECT id::text FROM commands WHERE pipeline_run_id = $1::uuid))`,
    [runId],
  );
}

async function jobRunsIn(key: string): Promise<number | null> {
  const { rows } = await h.pool.query<{ s: number }>(
    `SELECT extract(epoch FROM run_at - now())::float AS s FROM graphile_worker.jobs WHERE key = $1`, [key],
  );
  return rows[0]?.s ?? null;
}

describe('timeouts', () => {
  it('a step timeout expires the command, the step is retried, and the last timeout ends step and run', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'slow tool', steps: [step('a', { timeout: '1m', max_retries: 1 })] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);

    const first = await onlyCommand(agent, 'a');
    assert.equal(first.payload.timeout_seconds, 60);
    const acked = await ok(agent.ack(first.id));
    // The step deadline starts at the acknowledgement: one minute from now.
    const deadline = (Date.parse(acked.expires_at) - Date.parse(acked.acknowledged_at)) / 1000;
    assert.ok(Math.abs(deadline - 60) < 1, `step deadline ${deadline}s after ack`);
    // An expiry check is due no later than that deadline.
    const timers = await expiryTimersOf(run.id);
    assert.ok(timers.length > 0 && timers[0] <= 61, `expiry timers due in ${JSON.stringify(timers)}s`);

    await passCommandDeadline(h, first.id);
    await h.settle();
    let [c1] = await commandsOf(run.id);
    assert.deepEqual([c1.status, c1.error_code], ['expired', 'step_timeout']);
    let a = (await stepsOf(tenant, run.id)).a;
    assert.deepEqual([a.status, a.attempt, a.error_code], ['queued', 1, 'step_timeout']);
    assert.ok(a.retry_at);
    assert.ok((await runEvents(h, tenant, run.id)).some((e) => e.event === 'pipeline.step.retrying'));

    await passRetryDelays(h, run.id);
    const second = await onlyCommand(agent, 'a');
    assert.notEqual(second.id, first.id);
    assert.equal(second.payload.attempt, 2);
    await ok(agent.ack(second.id));
    await ok(agent.start(second.id));
    await passCommandDeadline(h, second.id);
    await h.settle();

    const commands = await commandsOf(run.id);
    assert.deepEqual(
      commands.map((c) => [c.attempt, c.status, c.error_code]),
      [[1, 'expired', 'step_timeout'], [2, 'expired', 'step_timeout']],
    );
    const final = await getRun(h, tenant, run.id);
    a = stepsByKey(final).a;
    assert.deepEqual([a.status, a.attempt, a.error_code], ['timeout', 2, 'step_timeout']);
    assert.equal(final.status, 'failed');
    assert.match(final.error_message, /Step 'a' timed out/);
    assert.equal(final.failed_steps, 1);
    const events = await runEvents(h, tenant, run.id);
    assert.ok(events.some((e) => e.event === 'pipeline.step.timeout' && e.data.step_key === 'a'));
    assert.equal(events.at(-1)!.event, 'pipeline.run.failed');

    for (const id of [first.id, second.id]) {
      const late = await agent.complete(id, { findings_count: 1 });
      assert.equal(late.status, 409, JSON.stringify(late.body));
      assert.equal(late.body.error.code, 'command_expired');
    }
    [c1] = await commandsOf(run.id);
    assert.equal(c1.status, 'expired', 'a late complete changes nothing');
    const hb = await agent.heartbeat();
    for (const id of [first.id, second.id]) assert.ok(hb.body.cancel_command_ids.includes(id), JSON.stringify(hb.body));
    assert.deepEqual(await agent.poll(), []);
  });

  it('an expiry check that fires before the deadline expires nothing and stays armed', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'early check', steps: [step('a', { timeout: '10m' })] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const cmd = await onlyCommand(agent, 'a');
    await ok(agent.ack(cmd.id));
    // The expiry job fires now, but the command's deadline is still ten minutes away.
    await fireExpiryTimers(run.id);
    await h.settle();
    const [c] = await commandsOf(run.id);
    assert.deepEqual([c.status, c.error_code], ['acknowledged', null]);
    assert.equal((await stepsOf(tenant, run.id)).a.status, 'running');
    const timers = await expiryTimersOf(run.id);
    assert.ok(timers.length > 0, 'still armed');
    assert.ok(timers[0] > 1 && timers[0] <= c.expires_in + 1, `next check in ${timers[0]}s, deadline in ${c.expires_in}s`);

    // The deadline, once it really passes, is still enforced.
    await passCommandDeadline(h, cmd.id);
    await h.settle();
    const [expired] = await commandsOf(run.id);
    assert.deepEqual([expired.status, expired.error_code], ['expired', 'step_timeout']);
    const final = await getRun(h, tenant, run.id);
    assert.equal(final.status, 'failed');
    assert.deepEqual(await expiryTimersOf(run.id), [], 'a finished run has no expiry timer left');
  });

  it('a finished run leaves no expiry timer behind', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'tidy', steps: [step('a', { timeout: '10m' })] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const cmd = await onlyCommand(agent, 'a');
    assert.ok((await expiryTimersOf(run.id)).length > 0, 'armed while the command is in flight');
    await agent.finish(cmd.id);
    await h.settle();
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
    assert.deepEqual(await expiryTimersOf(run.id), []);
  });

  it('a command no agent takes expires as queue_timeout; without retries the step times out and the run fails', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'nobody home', steps: [step('orphan'), step('after', { depends_on: ['orphan'] })],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-after'] });
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    assert.deepEqual(await agent.poll(), []);
    const [pending] = await commandsOf(run.id);
    assert.deepEqual([pending.step_key, pending.status, pending.agent_id], ['orphan', 'pending', null]);
    // The queue deadline is the orchestration default (1h).
    assert.ok(Math.abs(pending.expires_in - h.orchestration.queueTimeoutSeconds) < 60, `expires in ${pending.expires_in}s`);

    await passCommandDeadline(h, pending.id);
    await h.settle();
    const [expired] = await commandsOf(run.id);
    assert.deepEqual([expired.status, expired.error_code], ['expired', 'queue_timeout']);
    const final = await getRun(h, tenant, run.id);
    const steps = stepsByKey(final);
    assert.deepEqual([steps.orphan.status, steps.orphan.error_code], ['timeout', 'queue_timeout']);
    assert.equal(steps.after.status, 'skipped');
    assert.equal(final.status, 'failed');
    assert.match(final.error_message, /Step 'orphan' timed out/);
    assert.equal((await commandsOf(run.id)).length, 1);
  });
});

describe('lost agents', () => {
  it('a silent agent goes offline, its acknowledged command fails as agent_lost and another agent gets the retry at once, which spends none of the step\'s retries', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'lost', steps: [step('a', { max_retries: 1 })] });
    const lost = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const rescuer = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    await ok(lost.heartbeat());
    const run = await startRun(h, tenant, pipeline.id);
    const first = await onlyCommand(lost, 'a');
    await ok(lost.ack(first.id));
    await ok(lost.start(first.id));
    assert.equal(await agentHealth(tenant, lost.id), 'online');

    await silenceAgent(h, lost.id);
    await h.settle();
    assert.equal(await agentHealth(tenant, lost.id), 'offline');
    const [c1] = await commandsOf(run.id);
    assert.deepEqual([c1.status, c1.error_code], ['failed', 'agent_lost']);
    const a = (await stepsOf(tenant, run.id)).a;
    // Dispatched again at once (no retry delay), and the lost attempt is added: the step's
    // one retry is still there.
    assert.deepEqual([a.status, a.attempt, a.max_attempts, a.error_code], ['queued', 2, 3, 'agent_lost']);

    const second = await onlyCommand(rescuer, 'a');
    assert.equal(second.payload.attempt, 2);
    assert.notEqual(second.id, first.id);

    const late = await lost.complete(first.id, { findings_count: 9 });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.equal(late.body.error.code, 'command_failed');
    const hb = await lost.heartbeat();
    assert.ok(hb.body.cancel_command_ids.includes(first.id), JSON.stringify(hb.body));
    // The lost agent cannot touch the new attempt.
    const stolen = await lost.complete(second.id, { findings_count: 9 });
    assert.equal(stolen.status, 404, JSON.stringify(stolen.body));

    await rescuer.finish(second.id, { findings_count: 2 });
    await h.settle();
    const final = await getRun(h, tenant, run.id);
    const done = stepsByKey(final).a;
    assert.equal(final.status, 'completed');
    assert.deepEqual([done.status, done.attempt, done.agent_id, done.findings_count], ['completed', 2, rescuer.id, 2]);
    assert.deepEqual((await commandsOf(run.id)).map((c) => [c.attempt, c.status]), [[1, 'failed'], [2, 'completed']]);
  });

  it('a step without retries is tried again on another agent each time its agent is lost, up to AGENT_RETRIES times; the next loss fails the step and the run', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'lost for good', steps: [step('a'), step('b', { depends_on: ['a'] })] });
    const agents = [];
    for (let i = 0; i <= AGENT_RETRIES; i++) agents.push(await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b'] }));
    const run = await startRun(h, tenant, pipeline.id);
    for (const [i, agent] of agents.entries()) {
      const cmd = await onlyCommand(agent, 'a');
      assert.equal(cmd.payload.attempt, i + 1);
      await ok(agent.ack(cmd.id));
      await silenceAgent(h, agent.id);
      await h.settle();
      assert.equal(await agentHealth(tenant, agent.id), 'offline');
    }

    const final = await getRun(h, tenant, run.id);
    const steps = stepsByKey(final);
    assert.deepEqual([steps.a.status, steps.a.error_code, steps.a.attempt, steps.a.max_attempts], ['failed', 'agent_lost', AGENT_RETRIES + 1, AGENT_RETRIES + 1]);
    assert.equal(steps.b.status, 'skipped');
    assert.equal(final.status, 'failed');
    assert.match(final.error_message, /Step 'a' failed/);
    assert.deepEqual((await commandsOf(run.id)).map((c) => [c.attempt, c.status, c.error_code]),
      Array.from({ length: AGENT_RETRIES + 1 }, (_, i) => [i + 1, 'failed', 'agent_lost']));
  });

  it('a command given back with agent_shutdown before it started goes to another agent in the same advance, its payload counting the added attempt', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'given back', steps: [step('a')] });
    const stopping = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const other = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const first = await onlyCommand(stopping, 'a');
    assert.deepEqual([first.payload.attempt, first.payload.max_attempts], [1, 1]);
    await ok(stopping.fail(first.id, { error_code: 'agent_shutdown', error_message: 'the agent is stopping' }));
    const second = await onlyCommand(other, 'a');
    assert.deepEqual([second.payload.attempt, second.payload.max_attempts], [2, 2]);
    const a = (await stepsOf(tenant, run.id)).a;
    assert.deepEqual([a.status, a.attempt, a.max_attempts, a.error_code], ['queued', 2, 2, 'agent_shutdown']);
    await other.finish(second.id);
    await h.settle();
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
  });

  it("a lost agent's claimed but unacknowledged command returns to the queue without using an attempt", async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'dropped claim', steps: [step('a')] }); // max_retries 0
    const lost = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const other = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const claimed = await onlyCommand(lost, 'a');
    let [c] = await commandsOf(run.id);
    assert.deepEqual([c.status, c.agent_id], ['pending', lost.id]);
    assert.deepEqual(await other.poll(), [], 'a live claim is not claimable');

    await silenceAgent(h, lost.id);
    await h.settle();
    assert.equal(await agentHealth(tenant, lost.id), 'offline');
    [c] = await commandsOf(run.id);
    assert.deepEqual([c.id, c.status, c.agent_id, c.attempt], [claimed.id, 'pending', null, 1]);
    const a = (await stepsOf(tenant, run.id)).a;
    assert.deepEqual([a.status, a.attempt, a.retry_at], ['queued', 1, null]);

    const reclaimed = await other.poll();
    assert.deepEqual(reclaimed.map((x) => x.id), [claimed.id]);
    const stale = await lost.ack(claimed.id);
    assert.equal(stale.status, 404, `the lost agent no longer holds it: ${JSON.stringify(stale.body)}`);
    await other.finish(claimed.id);
    await h.settle();
    const final = await getRun(h, tenant, run.id);
    assert.equal(final.status, 'completed');
    assert.deepEqual([stepsByKey(final).a.attempt, stepsByKey(final).a.agent_id], [1, other.id]);
    assert.equal((await commandsOf(run.id)).length, 1);
  });

  it('an agent that keeps heartbeating stays online when its health check runs', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'alive', steps: [step('a')] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const cmd = await onlyCommand(agent, 'a');
    await ok(agent.ack(cmd.id));
    await ok(agent.heartbeat({ running_command_ids: [cmd.id] }));
    const key = `agent_health:${agent.id}`;
    const scheduled = await jobRunsIn(key);
    assert.ok(scheduled !== null && Math.abs(scheduled - h.orchestration.agentOfflineAfterSeconds) < 5, `health check in ${scheduled}s`);

    // The check runs now; last_seen_at stays as the heartbeat left it (just now).
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = $1`, [key]);
    await h.settle();
    assert.equal(await agentHealth(tenant, agent.id), 'online');
    const [c] = await commandsOf(run.id);
    assert.deepEqual([c.status, c.error_code], ['acknowledged', null]);
    assert.equal((await stepsOf(tenant, run.id)).a.status, 'running');
    const rearmed = await jobRunsIn(key);
    assert.ok(rearmed !== null && rearmed > 30, `the next check is at the end of the grace (${rearmed}s)`);
    const hb = await agent.heartbeat({ running_command_ids: [cmd.id] });
    assert.deepEqual(hb.body.cancel_command_ids, []);
  });
});

describe('worker restarts', () => {
  it('a completion while the worker is down waits as a job; after restart the run advances exactly once', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'restart', steps: [step('a'), step('b', { depends_on: ['a'] })] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b'] });
    const run = await startRun(h, tenant, pipeline.id);
    const a = await onlyCommand(agent, 'a');
    await ok(agent.ack(a.id));
    await ok(agent.start(a.id));

    await h.stopWorker();
    try {
      await ok(agent.complete(a.id, { findings_count: 1 }));
      const { rows } = await h.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = $1`, [`run_advance:${run.id}`],
      );
      assert.equal(rows[0].n, 1, 'the advance is waiting as a job');
      const steps = await stepsOf(tenant, run.id);
      assert.deepEqual([steps.a.status, steps.b.status], ['running', 'pending']);
      assert.equal((await commandsOf(run.id, 'b')).length, 0);
      assert.deepEqual(await agent.poll(), []);
      // As if several worker processes had each been asked to advance this run.
      for (let i = 0; i < 6; i++) {
        await h.pool.query(`SELECT graphile_worker.add_job('run_advance', json_build_object('run_id', $1::uuid))`, [run.id]);
      }
    } finally {
      await h.startWorker();
    }
    await h.settle();

    assert.equal((await commandsOf(run.id, 'b')).length, 1);
    const queued = (await runEvents(h, tenant, run.id)).filter((e) => e.event === 'pipeline.step.queued' && e.data.step_key === 'b');
    assert.equal(queued.length, 1);
    const b = await onlyCommand(agent, 'b');
    await agent.finish(b.id);
    await h.settle();
    const final = await getRun(h, tenant, run.id);
    assert.deepEqual([final.status, final.completed_steps, final.total_findings], ['completed', 2, 1]);
    const events = (await runEvents(h, tenant, run.id)).map((e) => e.event);
    assert.equal(events.filter((e) => e === 'pipeline.step.completed').length, 2);
    assert.equal(events.filter((e) => e === 'pipeline.run.completed').length, 1);
  });
});
