// DAG progression through the real app and real graphile-worker: a diamond's join step is
// dispatched once however its parents' completions race, retries are new attempts after
// their delay, fail_fast cancels the rest, cancel and manual retry, max_parallel_steps,
// conditions, and runs keep the pipeline version they started with.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createAsset, createPipeline, createTenant, getRun, passRetryDelays, runEvents, startRun, step, stepsByKey,
  type Tenant,
  runCommands, runSteps,
} from './support/fixtures.ts';
import { createPool } from '../src/db/pool.ts';
import { startWorker } from '../src/worker.ts';
import { inTransaction } from '../src/db/transaction.ts';
import { advanceRun } from '../src/progression/runs.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

const commandsOf = (runId: string, stepKey?: string) => runCommands(h, runId, stepKey);

const stepsOf = (t: Tenant, runId: string) => runSteps(h, t, runId);

/** Settles, then polls until nothing more is dispatched, finishing every command; returns the dispatched step keys. */
async function drive(agent: TestAgent, results: Record<string, Record<string, unknown>> = {}): Promise<string[]> {
  const dispatched: string[] = [];
  for (let i = 0; i < 20; i++) {
    await h.settle();
    const commands = await agent.poll({ limit: 100 });
    if (commands.length === 0) return dispatched;
    for (const c of commands) {
      dispatched.push(c.payload.step_key);
      await agent.finish(c.id, results[c.payload.step_key] ?? {});
    }
  }
  throw new Error('the run did not stop dispatching');
}

async function onlyCommand(agent: TestAgent, stepKey: string): Promise<Record<string, any>> {
  await h.settle();
  const commands = await agent.poll();
  assert.deepEqual(commands.map((c) => c.payload.step_key), [stepKey]);
  return commands[0];
}

/** A job that threw is retried later with backoff, which settle() does not wait for: fail loudly instead. */
async function assertNoFailedJobs(): Promise<void> {
  const { rows } = await h.pool.query<{ task_identifier: string; key: string | null; attempts: number; last_error: string }>(
    `SELECT task_identifier, key, attempts, last_error FROM graphile_worker.jobs WHERE last_error IS NOT NULL`,
  );
  assert.deepEqual(rows, [], 'jobs that failed');
}

async function ok(res: Promise<{ status: number; body: any }>): Promise<any> {
  const r = await res;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

describe('DAG progression', () => {
  it("a diamond's join step is dispatched exactly once when both parents complete at the same moment (3 × 20 runs, two worker processes)", async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'diamond',
      steps: [step('a'), step('b', { depends_on: ['a'] }), step('c', { depends_on: ['a'] }), step('d', { depends_on: ['b', 'c'] })],
    });
    const left = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b', 'tool-d'], max_concurrent_jobs: 100 });
    const right = await TestAgent.create(h, tenant, { tools: ['tool-c'], max_concurrent_jobs: 100 });
    // A second worker process on the same database, so two advances of one run can really overlap.
    const extraPool = createPool(h.db.url, 8);
    const extra = await startWorker({ pgPool: extraPool, concurrency: 4, orchestration: h.orchestration, logger: pino({ level: 'silent' }) });
    // Three rounds of 20 runs: the race this guards against shows in a few percent of runs.
    const RUNS = 20;
    try {
      for (let round = 0; round < 3; round++) {
        const runIds: string[] = [];
        for (let i = 0; i < RUNS; i++) runIds.push((await startRun(h, tenant, pipeline.id)).id);
        await h.settle();

        const roots = await left.poll({ limit: 100 });
        assert.equal(roots.length, RUNS);
        assert.ok(roots.every((c) => c.payload.step_key === 'a'));
        await Promise.all(roots.map((c) => left.finish(c.id)));
        await h.settle();

        const bs = await left.poll({ limit: 100 });
        const cs = await right.poll({ limit: 100 });
        assert.deepEqual([bs.length, cs.length], [RUNS, RUNS]);
        assert.ok(bs.every((c) => c.payload.step_key === 'b'));
        assert.ok(cs.every((c) => c.payload.step_key === 'c'));
        await Promise.all([
          ...bs.map(async (c) => { await ok(left.ack(c.id)); await ok(left.start(c.id)); }),
          ...cs.map(async (c) => { await ok(right.ack(c.id)); await ok(right.start(c.id)); }),
        ]);
        const bOf = new Map(bs.map((c) => [c.payload.pipeline_run_id as string, c.id as string]));
        const cOf = new Map(cs.map((c) => [c.payload.pipeline_run_id as string, c.id as string]));

        // Each run's b and c complete concurrently, and all runs at once.
        await Promise.all(runIds.map(async (runId) => {
          const [rb, rc] = await Promise.all([
            left.complete(bOf.get(runId)!, { findings_count: 1 }),
            right.complete(cOf.get(runId)!, { findings_count: 2 }),
          ]);
          assert.equal(rb.status, 200, JSON.stringify(rb.body));
          assert.equal(rc.status, 200, JSON.stringify(rc.body));
        }));
        await h.settle();
        await assertNoFailedJobs();

        for (const runId of runIds) {
          const { rows } = await h.pool.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM commands
             WHERE step_run_id = (SELECT id FROM step_runs WHERE pipeline_run_id = $1 AND step_key = 'd')`,
            [runId],
          );
          assert.equal(rows[0].n, 1, `run ${runId}: commands for d`);
          const queued = (await runEvents(h, tenant, runId)).filter((e) => e.event === 'pipeline.step.queued' && e.data.step_key === 'd');
          assert.equal(queued.length, 1, `run ${runId}: pipeline.step.queued events for d`);
          const d = (await stepsOf(tenant, runId)).d;
          assert.deepEqual([d.status, d.attempt], ['queued', 1]);
        }

        const ds = await left.poll({ limit: 100 });
        assert.equal(ds.length, RUNS);
        assert.deepEqual(new Set(ds.map((c) => c.payload.pipeline_run_id)), new Set(runIds));
        // d sees both parents' results in its payload.
        assert.deepEqual(
          [ds[0].payload.steps.b.status, ds[0].payload.steps.b.findings_count, ds[0].payload.steps.c.findings_count],
          ['completed', 1, 2],
        );
        await Promise.all(ds.map((c) => left.finish(c.id)));
        await h.settle();
        for (const runId of runIds) {
          const run = await getRun(h, tenant, runId);
          assert.deepEqual([run.status, run.completed_steps, run.total_findings], ['completed', 4, 3]);
        }
      }
    } finally {
      await extra.stop();
      await extraPool.end();
    }
  });

  it("a completion that commits while the run's advance job is being picked up still gets the run advanced", async () => {
    // The interleaving the diamond test above hits by chance, made deterministic:
    //  1. b completes → job run_advance:<run> (J).
    //  2. A worker locks J (uncommitted) and its advance reads the run: b done, c still running.
    //  3. c completes meanwhile; its add_job(job_key => run_advance:<run>) meets J mid-lock.
    //  4. The worker's lock commits, it finishes J. Something must still advance the run for c.
    // (graphile-worker's add_job returns NULL and adds nothing when its job_key row is being
    // locked at that moment: graphile/worker#580.)
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'diamond, one race',
      steps: [step('a'), step('b', { depends_on: ['a'] }), step('c', { depends_on: ['a'] }), step('d', { depends_on: ['b', 'c'] })],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b', 'tool-c', 'tool-d'] });
    const run = await startRun(h, tenant, pipeline.id);
    const a = await onlyCommand(agent, 'a');
    await agent.finish(a.id);
    await h.settle();
    const held = Object.fromEntries((await agent.poll()).map((cmd) => [cmd.payload.step_key, cmd]));
    assert.deepEqual(Object.keys(held).sort(), ['b', 'c']);
    for (const cmd of [held.b, held.c]) {
      await ok(agent.ack(cmd.id));
      await ok(agent.start(cmd.id));
    }

    await h.stopWorker();
    const lockClient = await h.pool.connect();
    const advanceClient = await h.pool.connect();
    let restarted = false;
    try {
      await ok(agent.complete(held.b.id)); // 1.
      // 2. The worker's get_job: lock J, not yet committed; its task's advance sees c running.
      await lockClient.query('BEGIN');
      // (Found by task and payload, not key, so the test holds however advances are enqueued.)
      const locked = await lockClient.query<{ id: string }>(
        `UPDATE graphile_worker._private_jobs j
         SET locked_at = now(), locked_by = 'test-worker', attempts = j.attempts + 1
         FROM graphile_worker._private_tasks t
         WHERE t.id = j.task_id AND t.identifier = 'run_advance' AND j.payload->>'run_id' = $1 AND j.locked_at IS NULL
         RETURNING j.id`,
        [run.id],
      );
      assert.ok(locked.rowCount! >= 1, 'an advance was enqueued for b');
      await inTransaction(advanceClient, (tx) => advanceRun(tx, run.id, h.orchestration));
      // 3. c completes; its request waits on J's row until the lock commits.
      const completing = agent.complete(held.c.id);
      await new Promise((r) => setTimeout(r, 300));
      await lockClient.query('COMMIT'); // 4.
      const res = await completing;
      assert.equal(res.status, 200, JSON.stringify(res.body));
      // The worker finishes J (graphile-worker's complete_job deletes it).
      await h.pool.query(`DELETE FROM graphile_worker._private_jobs WHERE id = ANY ($1::bigint[])`, [locked.rows.map((r) => r.id)]);
      await h.startWorker();
      restarted = true;
      await h.settle();
    } finally {
      lockClient.release();
      advanceClient.release();
      if (!restarted) await h.startWorker();
    }
    await assertNoFailedJobs();
    const steps = await stepsOf(tenant, run.id);
    assert.deepEqual([steps.b.status, steps.c.status], ['completed', 'completed']);
    assert.equal((await commandsOf(run.id, 'd')).length, 1, 'd is dispatched once c has completed');
  });

  it('a step that fails twice and then succeeds completes on attempt 3; each attempt is its own command', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'flaky', steps: [step('a', { max_retries: 2 }), step('b', { depends_on: ['a'] })],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b'] });
    const run = await startRun(h, tenant, pipeline.id);

    const seen: string[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const cmd = await onlyCommand(agent, 'a');
      assert.equal(cmd.payload.attempt, attempt);
      assert.equal(cmd.payload.max_attempts, 3);
      seen.push(cmd.id);
      if (attempt === 3) {
        await agent.finish(cmd.id, { findings_count: 4 });
        break;
      }
      await ok(agent.ack(cmd.id));
      await ok(agent.fail(cmd.id, { error_message: `crash ${attempt}` }));
      await h.settle();
      const a = (await stepsOf(tenant, run.id)).a;
      assert.equal(a.status, 'queued');
      assert.equal(a.attempt, attempt);
      assert.equal(a.error_message, `crash ${attempt}`);
      assert.ok(a.retry_at, 'a retry is scheduled');
      assert.deepEqual(await agent.poll(), [], 'no new attempt before the retry delay');
      await passRetryDelays(h, run.id);
    }
    const b = await onlyCommand(agent, 'b');
    await agent.finish(b.id);
    await h.settle();

    const final = await getRun(h, tenant, run.id);
    const a = stepsByKey(final).a;
    assert.equal(final.status, 'completed');
    assert.deepEqual([a.status, a.attempt, a.max_attempts, a.findings_count, a.error_message], ['completed', 3, 3, 4, null]);
    const commands = await commandsOf(run.id, 'a');
    assert.deepEqual(commands.map((c) => c.id), seen);
    assert.equal(new Set(seen).size, 3);
    assert.deepEqual(commands.map((c) => [c.attempt, c.status]), [[1, 'failed'], [2, 'failed'], [3, 'completed']]);
    const events = await runEvents(h, tenant, run.id);
    // passRetryDelays moves retry_at to now, which the event trigger also records as
    // 'retrying'; the product's own events are the ones whose retry_at is a delay (60s) away.
    const retrying = events.filter(
      (e) => e.event === 'pipeline.step.retrying' && Date.parse(e.data.retry_at) - Date.parse((e as any).timestamp) > 30_000,
    );
    assert.deepEqual(retrying.map((e) => [e.data.step_key, e.data.attempt, e.data.error_message]), [['a', 1, 'crash 1'], ['a', 2, 'crash 2']]);
    assert.equal(events.filter((e) => e.event === 'pipeline.step.failed').length, 0);
    assert.equal(events.at(-1)!.event, 'pipeline.run.completed');
  });

  it('with max_retries 0 the first failure is final: the step and the run fail, the run naming the step', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'no retries', steps: [step('scan', { max_retries: 0 }), step('report', { depends_on: ['scan'] })],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-scan', 'tool-report'] });
    const run = await startRun(h, tenant, pipeline.id);
    const cmd = await onlyCommand(agent, 'scan');
    await ok(agent.ack(cmd.id));
    await ok(agent.fail(cmd.id, { error_message: 'semgrep exited 2' }));
    await h.settle();

    const final = await getRun(h, tenant, run.id);
    const steps = stepsByKey(final);
    assert.equal(final.status, 'failed');
    assert.match(final.error_message, /Step 'scan' failed/);
    assert.deepEqual([steps.scan.status, steps.scan.attempt, steps.scan.error_message], ['failed', 1, 'semgrep exited 2']);
    assert.equal(steps.report.status, 'skipped');
    assert.equal(steps.report.skip_reason, "Upstream step 'scan' failed");
    assert.deepEqual([final.failed_steps, final.skipped_steps, final.completed_steps], [1, 1, 0]);
    assert.equal((await commandsOf(run.id)).length, 1);
    assert.deepEqual(await agent.poll(), []);
    const events = await runEvents(h, tenant, run.id);
    assert.equal(events.filter((e) => e.event === 'pipeline.step.retrying').length, 0);
    assert.equal(events.at(-1)!.event, 'pipeline.run.failed');
  });

  it("settings.retry_failed_steps is a step's default max_retries", async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'default retries', settings: { retry_failed_steps: 1 },
      steps: [step('a'), step('b', { max_retries: 0 })],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const cmd = await onlyCommand(agent, 'a');
    const steps = await stepsOf(tenant, run.id);
    assert.deepEqual([steps.a.max_attempts, steps.b.max_attempts], [2, 1]);
    await ok(agent.ack(cmd.id));
    await ok(agent.fail(cmd.id));
    await h.settle();
    const a = (await stepsOf(tenant, run.id)).a;
    assert.equal(a.status, 'queued');
    assert.ok(a.retry_at);
  });

  it('a retry waits for its delay: no new command until retry_at, then exactly one', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'slow retry', steps: [step('a', { max_retries: 1, retry_delay_seconds: 3600 })] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    const first = await onlyCommand(agent, 'a');
    await ok(agent.ack(first.id));
    await ok(agent.fail(first.id));
    await h.settle();

    assert.equal((await commandsOf(run.id)).length, 1);
    const a = (await stepsOf(tenant, run.id)).a;
    assert.equal(a.status, 'queued');
    assert.equal(a.attempt, 1);
    const { rows } = await h.pool.query<{ wait: number; job_wait: number }>(
      `SELECT extract(epoch FROM s.retry_at - now())::float AS wait, extract(epoch FROM j.run_at - now())::float AS job_wait
       FROM step_runs s JOIN graphile_worker.jobs j ON j.key = 'step_retry:' || s.id
       WHERE s.pipeline_run_id = $1 AND s.step_key = 'a'`,
      [run.id],
    );
    assert.equal(rows.length, 1, 'a step_retry job is scheduled');
    assert.ok(Math.abs(rows[0].wait - 3600) < 60, `retry_at is about an hour away (${rows[0].wait}s)`);
    assert.ok(Math.abs(rows[0].job_wait - rows[0].wait) < 2, 'the job runs at retry_at');
    assert.deepEqual(await agent.poll(), []);

    await passRetryDelays(h, run.id);
    await h.settle();
    const commands = await commandsOf(run.id);
    assert.deepEqual(commands.map((c) => [c.attempt, c.status]), [[1, 'failed'], [2, 'pending']]);
    const second = await agent.poll();
    assert.deepEqual(second.map((c) => [c.id, c.payload.attempt]), [[commands[1].id, 2]]);
  });

  it('fail_fast: the first final failure cancels running and pending steps and their commands; the run fails', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'fail fast', settings: { fail_fast: true },
      steps: [step('a', { max_retries: 0 }), step('b'), step('c', { depends_on: ['b'] })],
    });
    const agentA = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const agentB = await TestAgent.create(h, tenant, { tools: ['tool-b', 'tool-c'] });
    const run = await startRun(h, tenant, pipeline.id);
    const a = await onlyCommand(agentA, 'a');
    const b = await onlyCommand(agentB, 'b');
    await ok(agentB.ack(b.id));
    await ok(agentB.start(b.id));
    await ok(agentA.ack(a.id));
    await ok(agentA.fail(a.id, { error_message: 'boom' }));
    await h.settle();

    const final = await getRun(h, tenant, run.id);
    const steps = stepsByKey(final);
    assert.equal(final.status, 'failed');
    assert.match(final.error_message, /Step 'a' failed/);
    assert.deepEqual([steps.a.status, steps.b.status, steps.c.status], ['failed', 'cancelled', 'cancelled']);
    const commands = await commandsOf(run.id);
    assert.deepEqual(commands.map((c) => [c.step_key, c.status]), [['a', 'failed'], ['b', 'cancelled']]);

    const hb = await agentB.heartbeat();
    assert.equal(hb.status, 200);
    assert.ok(hb.body.cancel_command_ids.includes(b.id), JSON.stringify(hb.body));
    const late = await agentB.complete(b.id, { findings_count: 1 });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.equal(late.body.error.code, 'command_cancelled');

    await h.settle();
    assert.deepEqual(await agentB.poll(), [], 'c is never dispatched');
    assert.equal((await commandsOf(run.id)).length, 2);
    assert.equal((await getRun(h, tenant, run.id)).status, 'failed');
  });

  it('without fail_fast other branches continue, dependents of the failed step are skipped, and the run still fails', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'keep going', settings: { fail_fast: false },
      steps: [step('a', { max_retries: 0 }), step('b'), step('c', { depends_on: ['b'] }), step('d', { depends_on: ['a'] })],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b', 'tool-c', 'tool-d'] });
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    const first = Object.fromEntries((await agent.poll()).map((c) => [c.payload.step_key, c]));
    assert.deepEqual(Object.keys(first).sort(), ['a', 'b']);
    await ok(agent.ack(first.b.id));
    await ok(agent.start(first.b.id));
    await ok(agent.ack(first.a.id));
    await ok(agent.fail(first.a.id));
    await h.settle();

    let steps = await stepsOf(tenant, run.id);
    assert.equal((await getRun(h, tenant, run.id)).status, 'running');
    assert.deepEqual([steps.a.status, steps.b.status, steps.d.status], ['failed', 'running', 'skipped']);
    assert.equal(steps.d.skip_reason, "Upstream step 'a' failed");
    assert.equal((await commandsOf(run.id, 'b'))[0].status, 'running');

    await ok(agent.complete(first.b.id, { findings_count: 1 }));
    const c = await onlyCommand(agent, 'c');
    await agent.finish(c.id);
    await h.settle();
    const final = await getRun(h, tenant, run.id);
    steps = stepsByKey(final);
    assert.deepEqual([steps.b.status, steps.c.status], ['completed', 'completed']);
    assert.equal(final.status, 'failed');
    assert.match(final.error_message, /Step 'a' failed/);
    assert.deepEqual([final.completed_steps, final.failed_steps, final.skipped_steps], [2, 1, 1]);
    assert.equal((await commandsOf(run.id, 'd')).length, 0);
  });

  it('a failure carries down a chain of skips; a skip by a false condition does not', async () => {
    // a fails → d is skipped (upstream failed) → e, which only depends on d, must not run a
    // scan whose inputs never happened. g depends on n, skipped by its own `never`
    // condition: a skipped dependency counts as met, so g runs.
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'transitive',
      steps: [
        step('a', { max_retries: 0 }), step('d', { depends_on: ['a'] }), step('e', { depends_on: ['d'] }),
        step('n', { condition: { type: 'never' } }), step('g', { depends_on: ['n'] }),
      ],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-d', 'tool-e', 'tool-n', 'tool-g'] });
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    const first = await agent.poll();
    assert.deepEqual(first.map((c) => c.payload.step_key).sort(), ['a', 'g']);
    const a = first.find((c) => c.payload.step_key === 'a')!;
    await agent.finish(first.find((c) => c.payload.step_key === 'g')!.id);
    await ok(agent.ack(a.id));
    await ok(agent.fail(a.id));
    assert.deepEqual(await drive(agent), [], 'nothing downstream of a is dispatched');
    const final = await getRun(h, tenant, run.id);
    const steps = stepsByKey(final);
    assert.deepEqual([steps.d.status, steps.d.skip_reason], ['skipped', "Upstream step 'a' failed"]);
    assert.deepEqual([steps.e.status, steps.e.skip_reason], ['skipped', "Upstream step 'a' failed"]);
    assert.deepEqual([steps.n.status, steps.g.status], ['skipped', 'completed']);
    assert.equal(final.status, 'failed');
    assert.deepEqual([final.completed_steps, final.failed_steps, final.skipped_steps], [1, 1, 3]);
  });

  it('cancel stops every unfinished step and in-flight command, dispatches nothing more, and tells the agent', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'to cancel',
      steps: [
        step('running'), // acknowledged and started
        step('claimed'), // claimed, not acknowledged
        step('unclaimed'), // no agent has its tool
        step('waiting', { max_retries: 1 }), // failed once, waiting for its retry
        step('later', { depends_on: ['running'] }), // pending
      ],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-running', 'tool-claimed', 'tool-waiting', 'tool-later'] });
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    const held = Object.fromEntries((await agent.poll()).map((c) => [c.payload.step_key, c]));
    assert.deepEqual(Object.keys(held).sort(), ['claimed', 'running', 'waiting']);
    await ok(agent.ack(held.running.id));
    await ok(agent.start(held.running.id));
    await ok(agent.ack(held.waiting.id));
    await ok(agent.fail(held.waiting.id));
    await h.settle();
    const before = await stepsOf(tenant, run.id);
    assert.deepEqual(
      [before.running.status, before.claimed.status, before.unclaimed.status, before.waiting.status, before.later.status],
      ['running', 'queued', 'queued', 'queued', 'pending'],
    );
    assert.ok(before.waiting.retry_at);

    const res = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: tenant.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'cancelled');
    for (const s of res.body.step_runs) assert.equal(s.status, 'cancelled', `step ${s.step_key}`);
    const commands = await commandsOf(run.id);
    assert.deepEqual(
      commands.map((c) => [c.step_key, c.attempt, c.status]).sort(),
      [['claimed', 1, 'cancelled'], ['running', 1, 'cancelled'], ['unclaimed', 1, 'cancelled'], ['waiting', 1, 'failed']],
    );

    // Nothing is dispatched afterwards, even when the retry's timer comes due.
    await h.pool.query(
      `UPDATE graphile_worker._private_jobs SET run_at = now()
       WHERE key IN (SELECT 'step_retry:' || id FROM step_runs WHERE pipeline_run_id = $1) OR key = 'run_advance:' || $1`,
      [run.id],
    );
    await h.pool.query(`SELECT graphile_worker.add_job('run_advance', json_build_object('run_id', $1::uuid))`, [run.id]);
    await h.settle();
    assert.equal((await commandsOf(run.id)).length, 4);
    assert.deepEqual(await agent.poll(), []);
    const after = await getRun(h, tenant, run.id);
    assert.equal(after.status, 'cancelled');
    assert.ok(after.step_runs.every((s: Record<string, any>) => s.status === 'cancelled'));

    const hb = await agent.heartbeat();
    assert.equal(hb.status, 200);
    for (const k of ['running', 'claimed']) assert.ok(hb.body.cancel_command_ids.includes(held[k].id), `${k} in ${JSON.stringify(hb.body)}`);

    const late = await agent.complete(held.running.id, { findings_count: 3 });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.equal(late.body.error.code, 'command_cancelled');
    const lateAck = await agent.ack(held.claimed.id);
    assert.equal(lateAck.status, 409, JSON.stringify(lateAck.body));

    const again = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: tenant.token });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(again.body.status, 'cancelled');
    const events = await runEvents(h, tenant, run.id);
    assert.equal(events.filter((e) => e.event === 'pipeline.run.cancelled').length, 1);
  });

  it('cancelling a run that already completed answers 409 and changes nothing', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'done', steps: [step('a')] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const run = await startRun(h, tenant, pipeline.id);
    assert.deepEqual(await drive(agent), ['a']);
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
    const res = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: tenant.token });
    assert.equal(res.status, 409, JSON.stringify(res.body));
    const final = await getRun(h, tenant, run.id);
    assert.equal(final.status, 'completed');
    assert.equal(stepsByKey(final).a.status, 'completed');
  });

  it('manual retry re-queues the failed step and its skipped dependents; the run can then complete', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'retry me',
      steps: [step('a', { max_retries: 0 }), step('b', { depends_on: ['a'] }), step('c')],
    });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b', 'tool-c'] });
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    const first = Object.fromEntries((await agent.poll()).map((cmd) => [cmd.payload.step_key, cmd]));
    assert.deepEqual(Object.keys(first).sort(), ['a', 'c']);
    await agent.finish(first.c.id, { findings_count: 5 });
    await ok(agent.ack(first.a.id));
    const running = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/retry`, { token: tenant.token });
    assert.equal(running.status, 409, `retry of a running run: ${JSON.stringify(running.body)}`);
    await ok(agent.fail(first.a.id));
    await h.settle();
    let steps = await stepsOf(tenant, run.id);
    assert.equal((await getRun(h, tenant, run.id)).status, 'failed');
    assert.deepEqual([steps.a.status, steps.b.status, steps.c.status], ['failed', 'skipped', 'completed']);

    const res = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/retry`, { token: tenant.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'running');
    assert.equal(res.body.error_message, null);
    const retried = stepsByKey(res.body);
    assert.deepEqual([retried.a.status, retried.b.status, retried.c.status], ['pending', 'pending', 'completed']);

    const a2 = await onlyCommand(agent, 'a');
    assert.equal(a2.payload.attempt, 2);
    assert.notEqual(a2.id, first.a.id);
    await agent.finish(a2.id, { findings_count: 1 });
    const b = await onlyCommand(agent, 'b');
    await agent.finish(b.id);
    await h.settle();
    const final = await getRun(h, tenant, run.id);
    steps = stepsByKey(final);
    assert.equal(final.status, 'completed');
    assert.equal(final.error_message, null);
    assert.deepEqual([steps.a.status, steps.b.status, steps.c.status], ['completed', 'completed', 'completed']);
    assert.deepEqual([final.completed_steps, final.failed_steps, final.skipped_steps, final.total_findings], [3, 0, 0, 6]);
    assert.equal((await commandsOf(run.id, 'c')).length, 1, 'the completed step is not run again');

    const done = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/retry`, { token: tenant.token });
    assert.equal(done.status, 409, `retry of a completed run: ${JSON.stringify(done.body)}`);
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
  });

  it('manual retry of a cancelled run dispatches the cancelled steps again', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'cancel then retry', steps: [step('a'), step('b', { depends_on: ['a'] })] });
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b'] });
    const run = await startRun(h, tenant, pipeline.id);
    const a1 = await onlyCommand(agent, 'a');
    await ok(agent.ack(a1.id));
    const cancel = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: tenant.token });
    assert.equal(cancel.status, 200, JSON.stringify(cancel.body));
    const res = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/retry`, { token: tenant.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await drive(agent), ['a', 'b']);
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
    assert.equal((await commandsOf(run.id, 'a')).length, 2);
  });

  it('max_parallel_steps 2: never more than two steps active, and steps start in `order`', async () => {
    const tenant = await createTenant(h);
    // Document order differs from `order`: order decides.
    const orders: Record<string, number> = { s1: 3, s2: 1, s3: 5, s4: 2, s5: 4 };
    const pipeline = await createPipeline(h, tenant, {
      name: 'two at a time', settings: { max_parallel_steps: 2 },
      steps: Object.entries(orders).map(([k, order]) => step(k, { order })),
    });
    const agent = await TestAgent.create(h, tenant, { tools: Object.keys(orders).map((k) => `tool-${k}`), max_concurrent_jobs: 10 });
    const run = await startRun(h, tenant, pipeline.id);

    const held = new Map<string, string>(); // step key → command id
    const finished: string[] = [];
    for (let i = 0; i < 10 && finished.length < 5; i++) {
      await h.settle();
      for (const c of await agent.poll({ limit: 10 })) held.set(c.payload.step_key, c.id);
      const { rows } = await h.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM step_runs WHERE pipeline_run_id = $1 AND status IN ('queued', 'running')`, [run.id],
      );
      assert.ok(rows[0].n <= 2, `${rows[0].n} steps active at once`);
      assert.ok(held.size <= 2, `${held.size} commands held at once`);
      // Finish the held step of the lowest order, one at a time.
      const next = [...held.keys()].sort((x, y) => orders[x] - orders[y])[0];
      await agent.finish(held.get(next)!);
      held.delete(next);
      finished.push(next);
    }
    await h.settle();
    assert.deepEqual(finished, ['s2', 's4', 's1', 's5', 's3']);
    const final = await getRun(h, tenant, run.id);
    assert.equal(final.status, 'completed');
    assert.equal(final.completed_steps, 5);
    const dispatchOrder = (await commandsOf(run.id)).map((c) => c.step_key);
    assert.deepEqual(dispatchOrder, ['s2', 's4', 's1', 's5', 's3']);

    // Over the whole history (events), at most two steps were ever queued/running together.
    let active = 0;
    let peak = 0;
    for (const e of await runEvents(h, tenant, run.id)) {
      if (e.event === 'pipeline.step.queued') active++;
      if (e.event === 'pipeline.step.completed') active--;
      peak = Math.max(peak, active);
    }
    assert.equal(peak, 2);
  });

  it('conditions: step_result, never, asset_type, context and steps expressions, and the seed expression', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, {
      name: 'conditions',
      steps: [
        step('a'),
        step('on_findings', { depends_on: ['a'], condition: { type: 'step_result', step: 'a', check: 'findings_count > 0' } }),
        step('never', { condition: { type: 'never' } }),
        step('repo_only', { condition: { type: 'asset_type', value: 'repository' } }),
        step('repo_or_server', { condition: { type: 'asset_type', value: ['repository', 'server'] } }),
        step('main_only', { condition: { type: 'expression', value: "context.branch == 'main'" } }),
        step('after_a', {
          depends_on: ['a'],
          condition: { type: 'expression', value: "steps.a.status == 'completed' && steps.a.findings_count >= 2" },
        }),
        step('prod_web', {
          condition: { type: 'expression', value: "asset.type == 'web_application' && asset.tags.contains('production')" },
        }),
      ],
    });
    const keys = ['a', 'on_findings', 'never', 'repo_only', 'repo_or_server', 'main_only', 'after_a', 'prod_web'];
    const agent = await TestAgent.create(h, tenant, { tools: keys.map((k) => `tool-${k}`), max_concurrent_jobs: 20 });

    const runOn = async (assetBody: Record<string, unknown>, context: Record<string, unknown>, aFindings: number) => {
      const asset = await createAsset(h, tenant, assetBody);
      const run = await startRun(h, tenant, pipeline.id, { asset_id: asset.id, context });
      const dispatched = await drive(agent, { a: { findings_count: aFindings } });
      const final = await getRun(h, tenant, run.id);
      assert.equal(final.status, 'completed');
      return { dispatched: dispatched.sort(), steps: stepsByKey(final) };
    };

    const web = await runOn({ type: 'web_application', name: 'shop', value: 'https://shop.example.com', tags: ['production'] }, { branch: 'main' }, 3);
    assert.deepEqual(web.dispatched, ['a', 'after_a', 'main_only', 'on_findings', 'prod_web']);
    assert.deepEqual(web.steps.on_findings.condition_result, true);
    assert.equal(web.steps.never.skip_reason, "Condition not met: condition is 'never'");
    assert.equal(web.steps.repo_only.status, 'skipped');
    assert.match(web.steps.repo_only.skip_reason, /^Condition not met: asset\.type/);
    assert.equal(web.steps.repo_or_server.status, 'skipped');

    const repo = await runOn({ type: 'repository', name: 'webapp', value: 'https://github.com/example/webapp' }, { branch: 'dev' }, 0);
    assert.deepEqual(repo.dispatched, ['a', 'repo_only', 'repo_or_server']);
    const s = repo.steps;
    assert.deepEqual([s.on_findings.status, s.on_findings.condition_result], ['skipped', false]);
    assert.equal(s.on_findings.skip_reason, 'Condition not met: steps.a: findings_count > 0');
    assert.equal(s.never.status, 'skipped');
    assert.deepEqual([s.repo_only.status, s.repo_or_server.status], ['completed', 'completed']);
    assert.equal(s.main_only.skip_reason, "Condition not met: context.branch == 'main'");
    assert.equal(s.after_a.status, 'skipped');
    assert.match(s.after_a.skip_reason, /^Condition not met: steps\.a\.status == 'completed'/);
    assert.equal(s.prod_web.status, 'skipped');

    // A web application without the production tag: the seed expression is false.
    const staging = await runOn({ type: 'web_application', name: 'staging', value: 'https://staging.example.com', tags: ['staging'] }, { branch: 'main' }, 2);
    assert.deepEqual(staging.dispatched, ['a', 'after_a', 'main_only', 'on_findings']);
    assert.equal(staging.steps.prod_web.skip_reason, "Condition not met: asset.type == 'web_application' && asset.tags.contains('production')");
  });

  it('a run keeps the pipeline version it started with; a new run uses the new version', async () => {
    const tenant = await createTenant(h);
    const v1 = {
      name: 'versioned',
      steps: [step('a', { config: { mode: 'v1' } }), step('b', { depends_on: ['a'] })],
    };
    const pipeline = await createPipeline(h, tenant, v1);
    assert.equal(pipeline.version, 1);
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a', 'tool-b', 'tool-x'] });
    const run1 = await startRun(h, tenant, pipeline.id);
    await h.settle();

    const put = await h.request('PUT', `/api/v1/pipelines/${pipeline.id}`, {
      token: tenant.token,
      body: { name: 'versioned', steps: [step('a', { config: { mode: 'v2' } }), step('x', { depends_on: ['a'] })] },
    });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.version, 2);
    const run2 = await startRun(h, tenant, pipeline.id);

    const r1 = await getRun(h, tenant, run1.id);
    const r2 = await getRun(h, tenant, run2.id);
    assert.equal(r1.pipeline_version, 1);
    assert.equal(r2.pipeline_version, 2);
    assert.deepEqual(Object.keys(stepsByKey(r1)).sort(), ['a', 'b']);
    assert.deepEqual(Object.keys(stepsByKey(r2)).sort(), ['a', 'x']);

    await h.settle();
    const firsts = await agent.poll();
    const byRun = new Map(firsts.map((c) => [c.payload.pipeline_run_id, c]));
    assert.equal(byRun.get(run1.id)?.payload.step_config.mode, 'v1');
    assert.equal(byRun.get(run2.id)?.payload.step_config.mode, 'v2');
    for (const c of firsts) await agent.finish(c.id);
    await h.settle();
    const seconds = await agent.poll();
    assert.deepEqual(
      seconds.map((c) => [c.payload.pipeline_run_id, c.payload.step_key]).sort(),
      [[run1.id, 'b'], [run2.id, 'x']].sort(),
    );
    for (const c of seconds) await agent.finish(c.id);
    await h.settle();
    const f1 = await getRun(h, tenant, run1.id);
    const f2 = await getRun(h, tenant, run2.id);
    assert.deepEqual([f1.status, f1.pipeline_version, f1.completed_steps], ['completed', 1, 2]);
    assert.deepEqual([f2.status, f2.pipeline_version, f2.completed_steps], ['completed', 2, 2]);
  });
});
