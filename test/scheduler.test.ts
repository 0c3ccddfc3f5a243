// The scheduler: the scheduler_tick job at the earliest next_run_at, firing each due scan in
// its own transaction (SKIP LOCKED) and advancing next_run_at with croner. Frequency,
// missed-fire catch-up (once), paused and disabled scans, re-arming by create/update/delete,
// several worker processes racing on the same due scans, and DST in a named time zone.
// Time is moved in the database; the one real wait is the punctuality check (about 1 s).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import type { Runner } from 'graphile-worker';
import type pg from 'pg';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, type Tenant } from './support/fixtures.ts';
import { createPool } from '../src/db/pool.ts';
import { startWorker } from '../src/worker.ts';
import { nextFire, scheduleOf } from '../src/domain/scans.ts';
import {
  assertNoFailedJobs, createScan, finishRuns, getScan, makeDue, oneStep, scanFires, scanRow, scanRuns, schedulerJob, tick,
  updateScan, type Json,
} from './scan-support.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

async function setup(): Promise<{ t: Tenant; pipeline: Json; agent: TestAgent }> {
  const t = await createTenant(h);
  const pipeline = await createPipeline(h, t, oneStep(`p-${Math.random().toString(36).slice(2, 8)}`));
  const agent = await TestAgent.create(h, t, { tools: ['tool-a'], max_concurrent_jobs: 500 });
  return { t, pipeline, agent };
}

/** Sets a scan's next_run_at with an SQL expression over now(); returns the value. */
async function setNext(scanId: string, sql: string): Promise<Date> {
  const { rows } = await h.pool.query<{ next_run_at: Date }>(
    `UPDATE scans SET next_run_at = ${sql} WHERE id = $1 RETURNING next_run_at`, [scanId]);
  return rows[0].next_run_at;
}

/** An extra scheduler tick, due now, whatever the keyed one says; waits for it. */
async function extraTick(): Promise<void> {
  await h.pool.query(`SELECT graphile_worker.add_job('scheduler_tick', '{}'::json)`);
  await h.settle();
}

/** Pauses every scan of the database (so the test controls what the scheduler sees). */
async function pauseEverything(): Promise<void> {
  await h.pool.query(`UPDATE scans SET status = 'paused', next_run_at = NULL WHERE status = 'active'`);
}

describe('scheduler: frequency and catch-up', () => {
  it('a punctual fire of an hourly cron scan sets next_run_at one period later; ticks before it fire nothing', async () => {
    const { t, pipeline, agent } = await setup();
    const scan = await createScan(h, t, { name: 'hourly', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 * * * *' });
    for (let round = 1; round <= 2; round++) {
      const due = await setNext(scan.id, `date_trunc('hour', now())`);
      await tick(h);
      const fires = await scanFires(h, t, scan.id);
      assert.equal(fires.length, round);
      const fire = fires[round - 1];
      assert.equal(fire.trigger_type, 'schedule');
      assert.equal(fire.due_at, due.toISOString());
      assert.equal(fire.run_ids.length, 1, `round ${round}: ${JSON.stringify(fire)}`);
      const row = await scanRow(h, scan.id);
      if (Math.floor(new Date(fire.fired_at).getTime() / HOUR) === due.getTime() / HOUR) {
        assert.equal(row.next_run_at.getTime(), due.getTime() + HOUR, 'one period after the fire it made');
      }
      assert.ok(row.last_run_at.getTime() >= due.getTime());
      // Before the next fire is due, ticks fire nothing.
      await extraTick();
      await extraTick();
      assert.equal((await scanFires(h, t, scan.id)).length, round);
      assert.equal((await scanRow(h, scan.id)).next_run_at.getTime(), row.next_run_at.getTime());
      await finishRuns(h, agent, fire.run_ids);
    }
    const runs = await scanRuns(h, t, scan.id);
    assert.deepEqual(runs.map((r) => [r.trigger_type, r.status]), [['schedule', 'completed'], ['schedule', 'completed']]);
    await assertNoFailedJobs(h);
  });

  it('daily, weekly and monthly scans whose first fire is now due fire at once and next fire one day / week / month later', async () => {
    const { t, pipeline } = await setup();
    const { rows } = await h.pool.query<{ anchor: Date }>(`SELECT date_trunc('minute', now()) - interval '1 minute' AS anchor`);
    const anchor = rows[0].anchor;
    const plusMonth = new Date(anchor);
    plusMonth.setUTCMonth(plusMonth.getUTCMonth() + 1);
    const expected: Record<string, Date> = {
      daily: new Date(anchor.getTime() + DAY),
      weekly: new Date(anchor.getTime() + 7 * DAY),
      monthly: anchor.getUTCDate() <= 28 ? plusMonth : nextFire(`${anchor.getUTCMinutes()} ${anchor.getUTCHours()} ${anchor.getUTCDate()} * *`, 'UTC', anchor)!,
    };
    for (const type of ['daily', 'weekly', 'monthly']) {
      const scan = await createScan(h, t, { name: type, pipeline_id: pipeline.id, schedule_type: type, next_run_at: anchor.toISOString() });
      assert.equal(scan.next_run_at, anchor.toISOString());
      await h.settle(); // creating a scan that is already due re-armed the scheduler for now
      const fires = await scanFires(h, t, scan.id);
      assert.equal(fires.length, 1, type);
      assert.equal(fires[0].due_at, anchor.toISOString());
      assert.equal((await getScan(h, t, scan.id)).next_run_at, expected[type].toISOString(), type);
    }
  });

  it('missed-fire catch-up: a scan due three periods ago fires once, and its next fire is the next one after now', async () => {
    const { t, pipeline } = await setup();
    const hourly = await createScan(h, t, { name: 'hourly missed', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 * * * *' });
    const daily = await createScan(h, t, { name: 'daily missed', pipeline_id: pipeline.id, schedule_type: 'daily', timezone: 'Europe/Berlin' });
    const dueHourly = await setNext(hourly.id, `date_trunc('hour', now()) - interval '3 hours'`);
    const dueDaily = await setNext(daily.id, `now() - interval '3 days'`);
    await tick(h);
    await extraTick();
    for (const [scan, due, cron, tz] of [[hourly, dueHourly, '0 * * * *', 'UTC'], [daily, dueDaily, '0 0 * * *', 'Europe/Berlin']] as const) {
      const fires = await scanFires(h, t, scan.id);
      assert.equal(fires.length, 1, `${scan.name}: once, not once per missed period`);
      assert.equal(fires[0].due_at, due.toISOString());
      assert.equal((await scanRuns(h, t, scan.id)).length, 1);
      const row = await scanRow(h, scan.id);
      assert.ok(row.next_run_at.getTime() > Date.now() - 1000, `${scan.name}: next fire is in the future`);
      const fired = new Date(fires[0].fired_at);
      assert.equal(row.next_run_at.toISOString(), nextFire(cron, tz, fired)!.toISOString(), scan.name);
    }
  });

  it('a manual scan never fires by schedule, and a scheduled scan\'s manual trigger does not move its schedule', async () => {
    const { t, pipeline } = await setup();
    const manual = await createScan(h, t, { name: 'manual only', pipeline_id: pipeline.id });
    const cron = await createScan(h, t, { name: 'scheduled', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '15 4 * * *' });
    await extraTick();
    assert.deepEqual(await scanFires(h, t, manual.id), []);
    const res = await h.request('POST', `/api/v1/scans/${cron.id}/trigger`, { token: t.token, body: {} });
    assert.equal(res.status, 201);
    const after = await getScan(h, t, cron.id);
    assert.equal(after.next_run_at, cron.next_run_at);
  });
});

describe('scheduler: paused and disabled scans', () => {
  it('a paused or disabled scan never fires, even when its next_run_at is in the past', async () => {
    const { t, pipeline } = await setup();
    const paused = await createScan(h, t, { name: 'paused', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '* * * * *', status: 'paused' });
    const disabled = await createScan(h, t, { name: 'disabled', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '* * * * *', status: 'disabled' });
    const active = await createScan(h, t, { name: 'active', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *' });
    // Force a stale next_run_at in the past on the paused and disabled scans.
    await makeDue(h, paused.id, '1 hour');
    await makeDue(h, disabled.id, '1 hour');
    await makeDue(h, active.id);
    await tick(h);
    await extraTick();
    assert.deepEqual(await scanFires(h, t, paused.id), []);
    assert.deepEqual(await scanFires(h, t, disabled.id), []);
    assert.deepEqual(await scanRuns(h, t, paused.id), []);
    assert.equal((await scanFires(h, t, active.id)).length, 1, 'the active scan beside them fired');

    // Pausing an active scan whose fire is due stops it too.
    await makeDue(h, active.id);
    await updateScan(h, t, active.id, { status: 'paused' });
    await extraTick();
    assert.equal((await scanFires(h, t, active.id)).length, 1);
  });

  it('resuming recomputes the next fire from now: what was missed while paused does not run', async () => {
    const { t, pipeline } = await setup();
    const scan = await createScan(h, t, { name: 'resume', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 * * * *', status: 'paused' });
    await makeDue(h, scan.id, '5 hours');
    const resumed = await updateScan(h, t, scan.id, { status: 'active' });
    const expected = nextFire('0 * * * *', 'UTC', new Date())!;
    assert.equal(resumed.next_run_at, expected.toISOString());
    await tick(h);
    await extraTick();
    assert.deepEqual(await scanFires(h, t, scan.id), []);
    assert.equal((await getScan(h, t, scan.id)).next_run_at, expected.toISOString());
  });
});

describe('scheduler: one job, re-armed by changes to scans', () => {
  it('the keyed scheduler_tick job runs at the earliest next_run_at; create, update, pause and delete re-arm it', async () => {
    const { t, pipeline } = await setup();
    await pauseEverything();
    await h.settle();
    await h.pool.query(`SELECT graphile_worker.remove_job('scheduler_tick')`);
    assert.equal(await schedulerJob(h), null);
    const at = async (minutes: number) =>
      (await h.pool.query<{ t: Date }>(`SELECT date_trunc('second', now()) + make_interval(mins => $1) AS t`, [minutes])).rows[0].t;
    const jobAt = async () => (await schedulerJob(h))?.run_at.toISOString() ?? null;

    const s10 = await createScan(h, t, { name: 'in 10', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *', next_run_at: (await at(10)).toISOString() });
    assert.equal(await jobAt(), s10.next_run_at, 'create arms the scheduler');
    const s5 = await createScan(h, t, { name: 'in 5', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *', next_run_at: (await at(5)).toISOString() });
    assert.equal(await jobAt(), s5.next_run_at, 'an earlier scan moves the tick earlier');
    const s20 = await createScan(h, t, { name: 'in 20', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *', next_run_at: (await at(20)).toISOString() });
    assert.equal(await jobAt(), s5.next_run_at, 'a later scan leaves it');
    await createScan(h, t, { name: 'manual', pipeline_id: pipeline.id });
    assert.equal(await jobAt(), s5.next_run_at);

    const moved = await updateScan(h, t, s20.id, { next_run_at: (await at(2)).toISOString() });
    assert.equal(await jobAt(), moved.next_run_at, 'an update to an earlier fire re-arms');

    // Pausing the earliest scan: the tick may still come at its time, finds nothing due,
    // and re-arms at the earliest remaining scan.
    await updateScan(h, t, s20.id, { status: 'paused' });
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = 'scheduler_tick'`);
    await h.settle();
    assert.equal(await jobAt(), s5.next_run_at);
    assert.deepEqual(await scanFires(h, t, s20.id), []);

    await h.request('DELETE', `/api/v1/scans/${s5.id}`, { token: t.token });
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = 'scheduler_tick'`);
    await h.settle();
    assert.equal(await jobAt(), s10.next_run_at, 'after a delete the tick re-arms at the next scan');

    // Resuming re-arms for the resumed scan's next fire when it is the earliest.
    await updateScan(h, t, s10.id, { status: 'paused' });
    const resumed = await updateScan(h, t, s20.id, { status: 'active', next_run_at: (await at(1)).toISOString() });
    assert.equal(await jobAt(), resumed.next_run_at);

    // Not a loop: between fires there is one scheduler job, in the future.
    const { rows } = await h.pool.query<{ n: number; due: number }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE run_at <= now())::int AS due
       FROM graphile_worker.jobs WHERE task_identifier = 'scheduler_tick'`);
    assert.deepEqual(rows[0], { n: 1, due: 0 });
    await pauseEverything();
  });

  it('fires at its due time without anyone asking (within a second)', async () => {
    const { t, pipeline } = await setup();
    const { rows } = await h.pool.query<{ t: Date }>(`SELECT now() + interval '600 milliseconds' AS t`);
    const scan = await createScan(h, t, { name: 'soon', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *', next_run_at: rows[0].t.toISOString() });
    let fires: Json[] = [];
    for (const until = Date.now() + 3000; Date.now() < until; ) {
      fires = await scanFires(h, t, scan.id);
      if (fires.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(fires.length, 1, 'the scan fired on its own');
    const delay = new Date(fires[0].fired_at).getTime() - new Date(fires[0].due_at).getTime();
    assert.ok(delay >= 0 && delay < 1000, `fired ${delay} ms after its due time`);
    await h.settle();
  });

  it('a scan that cannot be fired does not stop the scheduler from firing the other due scans', async () => {
    const { t, pipeline } = await setup();
    const broken = await createScan(h, t, { name: 'broken', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *' });
    const fine = await createScan(h, t, { name: 'fine', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *' });
    // A DBA edits the stored targets by hand into something the scan cannot fire on.
    await h.pool.query(`UPDATE scans SET targets = '{"asset_filter": {"expression": "tags.contains("}}' WHERE id = $1`, [broken.id]);
    await makeDue(h, broken.id, '2 minutes');
    await makeDue(h, fine.id, '1 minute');
    await tick(h);
    try {
      const { rows: errors } = await h.pool.query(`SELECT last_error FROM graphile_worker.jobs WHERE task_identifier = 'scheduler_tick' AND last_error IS NOT NULL`);
      assert.equal((await scanFires(h, t, fine.id)).length, 1,
        `the good scan fired although an earlier due scan is broken (tick errors: ${JSON.stringify(errors.map((e) => e.last_error.split('\n')[0]))})`);
    } finally {
      await h.pool.query(`DELETE FROM scans WHERE id = $1`, [broken.id]);
      await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE task_id = (SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'scheduler_tick')`);
      await h.settle();
      await h.pool.query(`DELETE FROM graphile_worker._private_jobs WHERE last_error IS NOT NULL`);
      await h.pool.query(`SELECT arm_scheduler()`);
    }
  });
});

describe('scheduler: several worker processes racing on the same due scans', () => {
  it('every due scan fires exactly once and its next_run_at advances once (3 rounds × 250 scans, 3 runners)', async () => {
    const logger = pino({ level: 'silent' });
    const extras: { runner: Runner; pool: pg.Pool }[] = [];
    const startExtra = async () => {
      const pool = createPool(h.db.url, 8);
      extras.push({ runner: await startWorker({ pgPool: pool, concurrency: 4, orchestration: h.orchestration, logger }), pool });
    };
    const SCANS = 250;
    try {
      for (let round = 0; round < 3; round++) {
        const t = await createTenant(h);
        const pipeline = await createPipeline(h, t, oneStep('race'));
        await h.settle();
        // Everyone stops; the scans are created and made due; then three runners start at once.
        await h.stopWorker();
        await Promise.all(extras.splice(0).map(async (e) => { await e.runner.stop(); await e.pool.end(); }));
        await h.pool.query(
          `INSERT INTO scans (tenant_id, name, pipeline_id, targets, schedule_type, cron_expression, timezone, next_run_at)
           SELECT $1, 'race ' || g, $2, '{}', 'cron', '0 0 1 1 *', 'UTC', now() + interval '1 day' FROM generate_series(1, $3::int) g`,
          [t.id, pipeline.id, SCANS]);
        const { rows: [{ due }] } = await h.pool.query<{ due: Date }>(
          `UPDATE scans SET next_run_at = date_trunc('second', now()) - interval '1 second' WHERE tenant_id = $1 RETURNING next_run_at AS due`, [t.id]);
        await h.pool.query(`SELECT arm_scheduler()`);
        await h.pool.query(`SELECT graphile_worker.add_job('scheduler_tick', '{}'::json) FROM generate_series(1, 8)`);
        await Promise.all([h.startWorker(), startExtra(), startExtra()]);
        await h.settle(30_000);

        const { rows: perScan } = await h.pool.query<{ id: string; fires: number; runs: number; schedule_fires: number; next_run_at: Date; last_run_at: Date | null; due_ok: boolean }>(
          `SELECT s.id, s.next_run_at, s.last_run_at,
                  (SELECT count(*)::int FROM scan_fires f WHERE f.scan_id = s.id) AS fires,
                  (SELECT count(*)::int FROM scan_fires f WHERE f.scan_id = s.id AND f.trigger_type = 'schedule' AND f.due_at = $2) AS schedule_fires,
                  (SELECT count(*)::int FROM pipeline_runs r WHERE r.scan_id = s.id) AS runs,
                  true AS due_ok
           FROM scans s WHERE s.tenant_id = $1`, [t.id, due]);
        assert.equal(perScan.length, SCANS);
        const wrong = perScan.filter((s) => s.fires !== 1 || s.schedule_fires !== 1 || s.runs !== 1);
        assert.deepEqual(wrong.slice(0, 5), [], `round ${round}: ${wrong.length} scans did not fire exactly once`);
        const nextJan1 = nextFire('0 0 1 1 *', 'UTC', new Date())!.getTime();
        for (const s of perScan) {
          assert.equal(s.next_run_at.getTime(), nextJan1, 'next_run_at advanced once, to the next fire');
          assert.ok(s.last_run_at);
        }
        // Admission stayed under the tenant's limit (100) while hundreds of runs arrived at once.
        const { rows: [adm] } = await h.pool.query<{ admitted: number; waiting: number }>(
          `SELECT count(*) FILTER (WHERE admitted_at IS NOT NULL)::int AS admitted, count(*) FILTER (WHERE admitted_at IS NULL)::int AS waiting
           FROM pipeline_runs WHERE tenant_id = $1`, [t.id]);
        assert.deepEqual(adm, { admitted: 100, waiting: SCANS - 100 });
        await assertNoFailedJobs(h);
        // This round's scans are done with.
        await h.pool.query(`UPDATE scans SET status = 'paused', next_run_at = NULL WHERE tenant_id = $1`, [t.id]);
      }
    } finally {
      await Promise.all(extras.map(async (e) => { await e.runner.stop(); await e.pool.end(); }));
      await h.startWorker();
    }
  });
});

// ---- DST -------------------------------------------------------------------------------

const iso = (d: Date | null) => d?.toISOString();

describe('schedules across DST changes (Europe/Berlin)', () => {
  it('daily 03:00 Berlin: 23 hours apart across the spring change (2026-03-29), 25 across the fall change (2026-10-25)', () => {
    const chain = (cron: string, from: string, n: number, tz = 'Europe/Berlin') => {
      const out: string[] = [];
      let t = new Date(from);
      for (let i = 0; i < n; i++) {
        t = nextFire(cron, tz, t)!;
        out.push(t.toISOString());
      }
      return out;
    };
    assert.deepEqual(chain('0 3 * * *', '2026-03-27T12:00:00Z', 3), [
      '2026-03-28T02:00:00.000Z', // 03:00 CET
      '2026-03-29T01:00:00.000Z', // 03:00 CEST, 23 h later
      '2026-03-30T01:00:00.000Z',
    ]);
    assert.deepEqual(chain('0 3 * * *', '2026-10-23T12:00:00Z', 3), [
      '2026-10-24T01:00:00.000Z', // 03:00 CEST
      '2026-10-25T02:00:00.000Z', // 03:00 CET, 25 h later
      '2026-10-26T02:00:00.000Z',
    ]);
    // 02:30 does not exist on 2026-03-29: it fires once that day, at the first valid time after the gap.
    assert.deepEqual(chain('30 2 * * *', '2026-03-27T12:00:00Z', 3), [
      '2026-03-28T01:30:00.000Z',
      '2026-03-29T01:00:00.000Z',
      '2026-03-30T00:30:00.000Z',
    ]);
    // 02:30 happens twice on 2026-10-25: it fires once, at the first.
    assert.deepEqual(chain('30 2 * * *', '2026-10-23T12:00:00Z', 3), [
      '2026-10-24T00:30:00.000Z',
      '2026-10-25T00:30:00.000Z',
      '2026-10-26T01:30:00.000Z',
    ]);
    // The wall clock is kept in other zones too (New York changes on 2026-03-08).
    assert.deepEqual(chain('0 9 * * 1-5', '2026-03-06T00:00:00Z', 2, 'America/New_York'), ['2026-03-06T14:00:00.000Z', '2026-03-09T13:00:00.000Z']);
  });

  it('scheduleOf: a daily scan anchored at 03:00 Berlin keeps 03:00 local; a paused scan has no next fire', () => {
    const daily = scheduleOf({ schedule_type: 'daily', cron_expression: null, timezone: 'Europe/Berlin', status: 'active', next_run_at: new Date('2026-03-28T02:00:00Z') }, new Date('2026-03-01T00:00:00Z'));
    assert.equal(daily.cron, '0 3 * * *');
    assert.equal(iso(daily.next), '2026-03-28T02:00:00.000Z');
    assert.equal(iso(nextFire(daily.cron!, 'Europe/Berlin', daily.next!)), '2026-03-29T01:00:00.000Z');
    const fromNow = scheduleOf({ schedule_type: 'cron', cron_expression: '0 3 * * *', timezone: 'Europe/Berlin', status: 'active', next_run_at: null }, new Date('2026-10-24T12:00:00Z'));
    assert.equal(iso(fromNow.next), '2026-10-25T02:00:00.000Z');
    const paused = scheduleOf({ schedule_type: 'cron', cron_expression: '0 3 * * *', timezone: 'Europe/Berlin', status: 'paused', next_run_at: null }, new Date());
    assert.equal(paused.next, null);
  });

  it('end to end: the next fire computed across the coming DST change is stored as the right UTC instant, on create and by the scheduler', async () => {
    const { t, pipeline } = await setup();
    const now = Date.now();
    const lastSunday = (year: number, month: number) => {
      const d = new Date(Date.UTC(year, month + 1, 0));
      return d.getUTCDate() - d.getUTCDay();
    };
    // The next spring and fall changes in Berlin (last Sundays of March and October, 01:00 UTC).
    let ys = new Date(now).getUTCFullYear();
    if (Date.UTC(ys, 2, lastSunday(ys, 2), 1) <= now + DAY) ys++;
    let yf = new Date(now).getUTCFullYear();
    if (Date.UTC(yf, 9, lastSunday(yf, 9), 1) <= now + DAY) yf++;
    const spring = lastSunday(ys, 2);
    const fall = lastSunday(yf, 9);
    const cases: [string, number][] = [
      [`0 3 ${spring - 1} 3 *`, Date.UTC(ys, 2, spring - 1, 2)], // 03:00 CET the day before
      [`0 3 ${spring} 3 *`, Date.UTC(ys, 2, spring, 1)], // 03:00 CEST on the day
      [`30 2 ${spring} 3 *`, Date.UTC(ys, 2, spring, 1)], // 02:30 does not exist: 03:00 CEST
      [`30 2 ${fall} 10 *`, Date.UTC(yf, 9, fall, 0, 30)], // 02:30 twice: the first (CEST)
      [`0 3 ${fall} 10 *`, Date.UTC(yf, 9, fall, 2)], // 03:00 CET
    ];
    for (const [i, [cron, expected]] of cases.entries()) {
      const scan = await createScan(h, t, { name: `dst ${i}`, pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: cron, timezone: 'Europe/Berlin' });
      assert.equal(scan.next_run_at, new Date(expected).toISOString(), `created: ${cron}`);
      // The scheduler's own computation (fired now, next fire after now) lands on the same instant.
      await makeDue(h, scan.id);
      await tick(h);
      assert.equal((await scanFires(h, t, scan.id)).length, 1);
      assert.equal((await getScan(h, t, scan.id)).next_run_at, new Date(expected).toISOString(), `after a fire: ${cron}`);
      await updateScan(h, t, scan.id, { status: 'paused' });
    }
    // A daily scan at 03:00 Berlin whose first fire is the day before the spring change.
    const daily = await createScan(h, t, {
      name: 'dst daily', pipeline_id: pipeline.id, schedule_type: 'daily', timezone: 'Europe/Berlin',
      next_run_at: new Date(Date.UTC(ys, 2, spring - 1, 2)).toISOString(),
    });
    assert.equal(daily.cron_expression, '0 3 * * *');
    assert.equal(iso(nextFire(daily.cron_expression, daily.timezone, new Date(daily.next_run_at))), new Date(Date.UTC(ys, 2, spring, 1)).toISOString());
    await updateScan(h, t, daily.id, { status: 'paused' });
  });
});
