// A process killed with SIGKILL leaves graphile-worker jobs locked under its pool id (for
// 4 hours, by graphile-worker's own rule). Worker processes heartbeat; any live process's
// maintenance sweep releases a dead one's jobs and re-requests whatever a run, an agent or
// the scheduler lost. stuck_work tells the truth meanwhile.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startHarness, type Harness } from './support/harness.ts';
import { killHard, killWorkerProcesses, startWorkerProcess, until } from './support/worker-process.ts';
import {
  TestAgent, createPipeline, createTenant, getRun, runCommands, startRun, step, type Tenant,
} from './support/fixtures.ts';
import { sweep } from '../src/progression/maintenance.ts';


// Short liveness settings so the test takes seconds (the defaults are 5 s and 20 s).
const HEARTBEAT_S = 1;
const DEAD_AFTER_S = 3;

let h: Harness;
let t: Tenant;

before(async () => {
  h = await startHarness({ worker: false, orchestration: { workerHeartbeatSeconds: HEARTBEAT_S, workerDeadAfterSeconds: DEAD_AFTER_S } });
  t = await createTenant(h, 'crash-tenant');
});
after(async () => {
  killWorkerProcesses();
  await h.close();
});

const rows = async <T = Record<string, any>>(sql: string, values: unknown[] = []) => (await h.pool.query(sql, values)).rows as T[];


const startWorkerChild = () => startWorkerProcess(h.db.url, { heartbeatSeconds: HEARTBEAT_S, deadAfterSeconds: DEAD_AFTER_S, adminToken: 'crash-test-admin-token-0123' });


describe('a worker process killed while it holds jobs', { timeout: 120_000 }, () => {
  it('its locked jobs are listed as orphaned, its runs as stalled, and a live process recovers them within the bound', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['tool-a', 'tool-b'], max_concurrent_jobs: 10 });
    const p = await createPipeline(h, t, { name: 'Crashy', steps: [step('a'), step('b', { depends_on: ['a'] })] });

    // Hold the runs' row locks so the child's advances block right after it fetched (and
    // locked) their jobs: it is then killed holding them, the situation found in the field.
    const blocker = new pg.Client({ connectionString: h.db.url });
    await blocker.connect();
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await startRun(h, t, p.id));
    const ids = runs.map((r) => r.id);
    await blocker.query('BEGIN');
    await blocker.query('SELECT id FROM pipeline_runs WHERE id = ANY ($1) FOR UPDATE', [ids]);

    const child = startWorkerChild();
    const poolId = await until('the child locking the runs\' advance jobs (and registering the pool that locks them)', 30_000, async () => {
      const locked = await rows<{ locked_by: string; n: number }>(
        `SELECT locked_by, count(*)::int AS n FROM graphile_worker.jobs
         WHERE task_identifier = 'run_advance' AND locked_by IS NOT NULL GROUP BY locked_by`);
      if (locked.length !== 1 || locked[0].n !== 3) return null;
      // graphile-worker takes jobs as soon as its pool runs; the pool's first heartbeat follows.
      return (await rows(`SELECT 1 FROM worker_processes WHERE pool_id = $1`, [locked[0].locked_by])).length ? locked[0].locked_by : null;
    });
    const [registered] = await rows(`SELECT * FROM worker_status WHERE pool_id = $1`, [poolId]);
    assert.equal(registered.state, 'alive', 'the child registered its pool and heartbeats');
    assert.equal(Number(registered.locked_jobs), 3);

    await killHard(child);
    const killedAt = Date.now();
    await blocker.query('ROLLBACK');
    await blocker.end();

    // Nothing live sweeps yet: once the child is past its dead_after, the truth is visible.
    const stuck = await until('the killed process to be past its dead_after', 15_000, async () => {
      const r = await rows(`SELECT problem, pipeline_run_id, detail FROM stuck_work WHERE pipeline_run_id = ANY ($1) ORDER BY problem`, [ids]);
      return r.some((x) => x.problem === 'job_orphaned') ? r : null;
    });
    assert.deepEqual(
      stuck.filter((r) => r.problem === 'job_orphaned').map((r) => r.pipeline_run_id).sort(), [...ids].sort(),
      'every held advance job is listed as orphaned',
    );
    for (const r of stuck.filter((x) => x.problem === 'job_orphaned')) assert.match(r.detail, new RegExp(`run_advance locked by ${poolId} \\(dead\\)`));
    assert.deepEqual(
      stuck.filter((r) => r.problem === 'run_stalled').map((r) => [r.pipeline_run_id, r.detail]).sort(),
      [...ids].sort().map((id) => [id, 'no_way_forward']),
      'the runs are stalled: their only way forward is held by a dead process',
    );
    for (const id of ids) assert.equal((await getRun(h, t, id)).status, 'pending', 'nothing moved while no live process swept');

    // A live worker process: its first sweep releases the jobs, the runs move.
    await h.startWorker();
    const [dead] = await until('the sweep releasing the jobs', 10_000, async () =>
      (await rows(`SELECT * FROM worker_status WHERE pool_id = $1 AND released_jobs > 0`, [poolId])));
    assert.equal(dead.state, 'dead');
    assert.equal(dead.released_jobs, 3);
    assert.equal(Number(dead.locked_jobs), 0);

    // The runs complete: steps go to the agent, which finishes them.
    const done = new Set<string>();
    await until('every run to complete', 20_000, async () => {
      for (const cmd of await agent.poll()) await agent.finish(cmd.id);
      for (const id of ids) if ((await getRun(h, t, id)).status === 'completed') done.add(id);
      return done.size === ids.length;
    });
    const recoveredIn = (Date.now() - killedAt) / 1000;
    // The bound: dead_after + one heartbeat interval + the time to run the steps (here 3 + 1 + ~2 s).
    assert.ok(recoveredIn < DEAD_AFTER_S + HEARTBEAT_S + 10, `recovered in ${recoveredIn}s`);
    for (const id of ids) {
      const cmds = await runCommands(h, id);
      assert.deepEqual(cmds.map((c) => [c.step_key, c.status, c.attempt]), [['a', 'completed', 1], ['b', 'completed', 1]],
        'no step ran twice');
    }
    assert.deepEqual(await rows(`SELECT * FROM stuck_work WHERE pipeline_run_id = ANY ($1)`, [ids]), []);
    await h.stopWorker();
  });

  it('a clean stop is recorded; a live process never has its jobs taken', async () => {
    await h.startWorker();
    await h.stopWorker();
    const stopped = await rows(`SELECT state, stopped_at FROM worker_status WHERE state = 'stopped'`);
    assert.ok(stopped.length >= 1);

    // A live (heartbeating) process holding a job for a long time keeps it.
    await h.pool.query(`INSERT INTO worker_processes (pool_id, hostname, pid, dead_after) VALUES ('pool-live-test', 'h', 1, '1 minute')`);
    const [{ id: jobId }] = await rows(`SELECT (graphile_worker.add_job('run_advance', json_build_object('run_id', gen_random_uuid()))).id`);
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET locked_by = 'pool-live-test', locked_at = now() - interval '30 minutes' WHERE id = $1`, [jobId]);
    const report = await sweep(h.pool, h.orchestration);
    assert.ok(report);
    assert.deepEqual(report.releasedJobs, []);
    assert.equal((await rows(`SELECT locked_by FROM graphile_worker.jobs WHERE id = $1`, [jobId]))[0].locked_by, 'pool-live-test');

    // Silent past its dead_after: released, and recorded.
    await h.pool.query(`UPDATE worker_processes SET last_heartbeat_at = now() - interval '2 minutes' WHERE pool_id = 'pool-live-test'`);
    const again = await sweep(h.pool, h.orchestration);
    assert.deepEqual(again!.releasedJobs.map((r) => [r.locked_by, r.jobs]), [['pool-live-test', 1]]);
    assert.equal((await rows(`SELECT locked_by FROM graphile_worker.jobs WHERE id = $1`, [jobId]))[0].locked_by, null);
    await h.pool.query(`DELETE FROM graphile_worker._private_jobs WHERE id = $1`, [jobId]);

    // A dead process's job whose attempts graphile-worker spent (add_job gave its key to a
    // new job while it was locked): deleted, not left to sit failed forever.
    await h.pool.query(`INSERT INTO worker_processes (pool_id, hostname, pid, dead_after, last_heartbeat_at) VALUES ('pool-dead-test', 'h', 2, '1 second', now() - interval '1 minute')`);
    const [{ id: keyed }] = await rows(`SELECT (graphile_worker.add_job('run_advance', json_build_object('run_id', gen_random_uuid()), job_key => 'spent-test')).id`);
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET locked_by = 'pool-dead-test', locked_at = now() WHERE id = $1`, [keyed]);
    const [{ id: successor }] = await rows(`SELECT (graphile_worker.add_job('run_advance', '{}', job_key => 'spent-test')).id`);
    assert.notEqual(successor, keyed);
    const spent = await sweep(h.pool, h.orchestration);
    assert.deepEqual(spent!.discardedJobs.map((j) => Number(j.id)), [Number(keyed)]);
    assert.deepEqual(await rows(`SELECT id FROM graphile_worker.jobs WHERE id = $1`, [keyed]), []);
    await h.pool.query(`DELETE FROM graphile_worker._private_jobs WHERE id = $1`, [successor]);

    // A locker that never registered: released once it held the lock for over a minute.
    const [{ id: other }] = await rows(`SELECT (graphile_worker.add_job('run_advance', json_build_object('run_id', gen_random_uuid()))).id`);
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET locked_by = 'pool-unknown', locked_at = now() - interval '10 seconds' WHERE id = $1`, [other]);
    assert.deepEqual((await sweep(h.pool, h.orchestration))!.releasedJobs, []);
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET locked_at = now() - interval '2 minutes' WHERE id = $1`, [other]);
    assert.deepEqual((await sweep(h.pool, h.orchestration))!.releasedJobs.map((r) => r.locked_by), ['pool-unknown']);
    await h.pool.query(`DELETE FROM graphile_worker._private_jobs WHERE id = $1`, [other]);
  });

  it('two sweeps at once: one sweeps, the other skips', async () => {
    const c = await h.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(`SELECT pg_advisory_xact_lock(hashtextextended('scanflow.maintenance_sweep', 0))`);
      assert.equal(await sweep(h.pool, h.orchestration), null);
    } finally {
      await c.query('ROLLBACK');
      c.release();
    }
    assert.notEqual(await sweep(h.pool, h.orchestration), null);
  });
});

describe('the safety net: lost follow-up jobs are re-requested', { timeout: 60_000 }, () => {
  it('a step whose command finished but whose advance job vanished: listed, then advanced by the sweep', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['tool-s', 'tool-t'] });
    const p = await createPipeline(h, t, { name: 'Lost advance', steps: [step('s'), step('t', { depends_on: ['s'] })] });
    const run = await startRun(h, t, p.id);
    await h.startWorker();
    await h.settle();
    await h.stopWorker();
    const [cmd] = await agent.poll();
    await agent.finish(cmd.id);
    // The advance the completion asked for is lost (deleted, as if completed by a dead process).
    await h.pool.query(`DELETE FROM graphile_worker._private_jobs WHERE payload->>'run_id' = $1`, [run.id]);
    await h.pool.query(`UPDATE commands SET completed_at = now() - interval '31 seconds' WHERE id = $1`, [cmd.id]);

    const stuck = await rows(`SELECT problem, detail, command_id FROM stuck_work WHERE pipeline_run_id = $1 ORDER BY problem`, [run.id]);
    assert.deepEqual(stuck.map((r) => [r.problem, r.detail]), [
      ['run_stalled', 'no_way_forward'],
      ['step_not_advanced', 's: command completed'],
    ]);

    const report = await sweep(h.pool, h.orchestration);
    assert.deepEqual(report!.advancedRuns.map((r) => r.pipeline_run_id), [run.id]);
    await h.startWorker();
    await h.settle();
    const [next] = await agent.poll();
    assert.equal(next.payload.step_key, 't');
    await agent.finish(next.id);
    await h.settle();
    assert.equal((await getRun(h, t, run.id)).status, 'completed');
    await h.stopWorker();
  });

  it('a due advance job counts as the way forward; a finished command with only a far-future job does not', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['tool-u', 'tool-v'] });
    const p = await createPipeline(h, t, { name: 'Far job', steps: [step('u'), step('v')] });
    const run = await startRun(h, t, p.id);
    await h.startWorker();
    await h.settle();
    await h.stopWorker();
    const cmds = await agent.poll();
    assert.equal(cmds.length, 2);
    await agent.finish(cmds[0].id);
    assert.deepEqual(await rows(`SELECT * FROM stalled_runs WHERE pipeline_run_id = $1`, [run.id]), [], 'its advance job is due');
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() + interval '1 hour' WHERE payload->>'run_id' = $1 AND key LIKE 'run_advance:%'`, [run.id]);
    assert.deepEqual((await rows(`SELECT problem FROM stalled_runs WHERE pipeline_run_id = $1`, [run.id])).map((r) => r.problem), ['step_not_advanced']);
    await sweep(h.pool, h.orchestration);
    assert.deepEqual(await rows(`SELECT * FROM stalled_runs WHERE pipeline_run_id = $1`, [run.id]), []);
    await agent.finish(cmds[1].id);
    await h.startWorker();
    await h.settle();
    assert.equal((await getRun(h, t, run.id)).status, 'completed');
    await h.stopWorker();
  });

  it('commands in flight without a timer: listed as no_timer, re-armed for their deadline', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['tool-w'] });
    const p = await createPipeline(h, t, { name: 'Lost timer', steps: [step('w', { timeout: '10m' })] });
    const run = await startRun(h, t, p.id);
    await h.startWorker();
    await h.settle();
    await h.stopWorker();
    const [cmd] = await agent.poll();
    await agent.ack(cmd.id);
    await h.pool.query(`SELECT graphile_worker.remove_job('command_expire:' || $1)`, [run.id]);
    assert.deepEqual((await rows(`SELECT problem FROM stalled_runs WHERE pipeline_run_id = $1`, [run.id])).map((r) => r.problem), ['no_timer']);
    const report = await sweep(h.pool, h.orchestration);
    assert.equal(report!.rearmedTimers, 1);
    const [timer] = await rows(`SELECT run_at FROM graphile_worker.jobs WHERE key = $1`, [`command_expire:${run.id}`]);
    const [command] = await rows(`SELECT expires_at FROM commands WHERE id = $1`, [cmd.id]);
    assert.equal(timer.run_at.getTime(), command.expires_at.getTime(), 'armed for the command deadline');
    assert.deepEqual(await rows(`SELECT * FROM stalled_runs WHERE pipeline_run_id = $1`, [run.id]), []);
    await agent.finish(cmd.id);
  });

  it('a sweep repairs at most stalledRunsPerSweep runs, those stalled first; the next sweeps repair the rest', async () => {
    await sweep(h.pool, h.orchestration); // whatever the other tests left stalled
    const p = await createPipeline(h, t, { name: 'Many lost timers', steps: [step('m', { timeout: '10m' })] });
    const runs: Record<string, any>[] = [];
    for (let i = 0; i < 5; i++) runs.push(await startRun(h, t, p.id));
    const lostAdvance = await startRun(h, t, (await createPipeline(h, t, { name: 'Lost advance of many', steps: [step('n')] })).id);
    await h.startWorker();
    await h.settle();
    await h.stopWorker();
    const ids = runs.map((r) => r.id as string);
    // Oldest first: the runs' stalled-since (updated_at) in the order they are listed here.
    await h.pool.query(`UPDATE pipeline_runs SET updated_at = now() - interval '1 hour' + make_interval(secs => array_position($1::uuid[], id))
                        WHERE id = ANY ($1::uuid[])`, [ids]);
    await h.pool.query(`SELECT graphile_worker.remove_job('command_expire:' || id) FROM unnest($1::uuid[]) id`, [ids]);
    // The other run's command finished (cancelled by hand) and its advance job was lost.
    await h.pool.query(`UPDATE commands SET status = 'cancelled', completed_at = now() WHERE pipeline_run_id = $1`, [lostAdvance.id]);
    await h.pool.query(`SELECT graphile_worker.remove_job('command_expire:' || $1::text)`, [lostAdvance.id]);
    assert.deepEqual((await rows(`SELECT problem FROM stalled_runs WHERE pipeline_run_id = ANY ($1::uuid[]) ORDER BY since`, [[...ids, lostAdvance.id]]))
      .map((r) => r.problem), ['no_timer', 'no_timer', 'no_timer', 'no_timer', 'no_timer', 'no_way_forward']);
    const timers = async () => (await rows<{ run_id: string }>(
      `SELECT payload->>'run_id' AS run_id FROM graphile_worker._private_jobs WHERE key = ANY (SELECT 'command_expire:' || x FROM unnest($1::uuid[]) x) ORDER BY 1`, [ids]))
      .map((r) => r.run_id);

    const first = await sweep(h.pool, h.orchestration, { stalledRunsPerSweep: 2 });
    assert.equal(first!.rearmedTimers, 2);
    assert.deepEqual(first!.advancedRuns, []);
    assert.deepEqual(await timers(), ids.slice(0, 2).sort(), 'the two stalled first');
    const second = await sweep(h.pool, h.orchestration, { stalledRunsPerSweep: 2 });
    assert.equal(second!.rearmedTimers, 2);
    const third = await sweep(h.pool, h.orchestration, { stalledRunsPerSweep: 2 });
    assert.equal(third!.rearmedTimers, 1);
    assert.deepEqual(third!.advancedRuns.map((r) => [r.pipeline_run_id, r.problem]), [[lostAdvance.id, 'no_way_forward']]);
    assert.deepEqual(await timers(), [...ids].sort());
    // Each timer is set for its run's deadline (run_next_deadline: a pending command's step
    // timeout, 10 minutes, from the sweep), and the other run has its advance job.
    const armed = await rows(`SELECT count(*)::int AS n FROM graphile_worker._private_jobs j
                              WHERE j.key = ANY (SELECT 'command_expire:' || x FROM unnest($1::uuid[]) x)
                                AND j.run_at BETWEEN now() + interval '9 minutes' AND now() + interval '10 minutes'`, [ids]);
    assert.equal(armed[0].n, 5);
    assert.deepEqual((await rows(`SELECT key FROM graphile_worker._private_jobs WHERE payload->>'run_id' = $1`, [lostAdvance.id])).map((r) => r.key),
      [`run_advance:${lostAdvance.id}`]);
    assert.deepEqual(await rows(`SELECT * FROM stalled_runs WHERE pipeline_run_id = ANY ($1::uuid[])`, [[...ids, lostAdvance.id]]), []);
    const quiet = await sweep(h.pool, h.orchestration, { stalledRunsPerSweep: 2 });
    assert.equal(quiet!.rearmedTimers, 0);
    assert.deepEqual(quiet!.advancedRuns, []);
  });

  it("an online agent's lost health check and a lost scheduler tick are re-armed", async () => {
    const agent = await TestAgent.create(h, t, { tools: ['tool-x'] });
    assert.equal((await agent.heartbeat()).status, 200);
    await h.pool.query(`SELECT graphile_worker.remove_job('agent_health:' || $1)`, [agent.id]);
    const p = await createPipeline(h, t, { name: 'Scheduled', steps: [step('x')] });
    const scan = await h.request('POST', '/api/v1/scans', {
      token: t.token, body: { name: 'Hourly', pipeline_id: p.id, schedule_type: 'cron', cron_expression: '0 * * * *' },
    });
    assert.equal(scan.status, 201);
    await h.pool.query(`DELETE FROM graphile_worker._private_jobs j USING graphile_worker._private_tasks t
                        WHERE t.id = j.task_id AND t.identifier = 'scheduler_tick'`);
    const report = await sweep(h.pool, h.orchestration);
    assert.ok(report!.rearmedAgentChecks >= 1);
    assert.equal(report!.rearmedScheduler, true);
    const [health] = await rows(`SELECT run_at FROM graphile_worker.jobs WHERE key = $1`, [`agent_health:${agent.id}`]);
    const [a] = await rows(`SELECT last_seen_at FROM agents WHERE id = $1`, [agent.id]);
    assert.equal(health.run_at.getTime(), a.last_seen_at.getTime() + h.orchestration.agentOfflineAfterSeconds * 1000);
    const [tick] = await rows(`SELECT j.run_at FROM graphile_worker.jobs j WHERE j.key = 'scheduler_tick'`);
    const [s] = await rows(`SELECT next_run_at FROM scans WHERE id = $1`, [scan.body.id]);
    assert.equal(tick.run_at.getTime(), s.next_run_at.getTime());
    // Nothing lost: the next sweep re-arms nothing.
    const quiet = await sweep(h.pool, h.orchestration);
    assert.equal(quiet!.rearmedAgentChecks, 0);
    assert.equal(quiet!.rearmedScheduler, false);
  });
});
