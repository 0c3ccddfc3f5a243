// Bursts of due scans (issue 13): a tick fires a batch of one tenant's due scans with one
// statement per step (src/progression/scans.ts fireScans, sql/scheduler.sql) and admits the
// tenant's runs with one admit_runs (migrations/0014_burst.sql); helper ticks take other
// tenants. The guarantees hold in a burst as they do one fire at a time: every scan fires
// exactly once however many runners race, the tenants' and scans' limits hold (the oldest
// runs admitted, the rest waiting), Crossfeed's in-progress rule skips targets whose previous
// run is still active, and every fire is recorded with its runs and its skips. Time is moved
// in the database; the burst's speed is measured by npm run bench -- scale-burst.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import type { Runner } from 'graphile-worker';
import type pg from 'pg';
import { startHarness, type Harness } from './support/harness.ts';
import { createPipeline, createTenant, type Tenant } from './support/fixtures.ts';
import { createPool } from '../src/db/pool.ts';
import { startWorker } from '../src/worker.ts';
import { nextFire } from '../src/domain/scans.ts';
import { assertNoFailedJobs, createScan, oneStep, scanFires, tick, triggerScan, type Json } from './scan-support.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

/** n assets of the tenant, inserted in one statement, in creation order. */
async function insertAssets(t: Tenant, n: number, prefix: string): Promise<string[]> {
  const { rows } = await h.pool.query<{ id: string }>(
    `INSERT INTO assets (tenant_id, type, name, tags, created_at)
     SELECT $1, 'domain', $2 || g || '.example.com', '{burst}', now() + g * interval '1 microsecond'
     FROM generate_series(1, $3::int) g RETURNING id`, [t.id, prefix, n]);
  return rows.map((r) => r.id);
}

/** One scan per asset (each targeting it), not yet due. Returns the scans' ids in asset order. */
async function insertScans(t: Tenant, pipelineId: string, assetIds: string[], prefix: string): Promise<string[]> {
  const { rows } = await h.pool.query<{ id: string }>(
    `INSERT INTO scans (tenant_id, name, pipeline_id, targets, schedule_type, cron_expression, timezone, next_run_at)
     SELECT $1, $2 || a.n, $3, jsonb_build_object('asset_id', a.id), 'cron', '0 0 1 1 *', 'UTC', now() + interval '1 day'
     FROM unnest($4::uuid[]) WITH ORDINALITY AS a (id, n) ORDER BY a.n RETURNING id`, [t.id, prefix, pipelineId, assetIds]);
  return rows.map((r) => r.id);
}

/** Every scan of the tenants is due at one instant (a second ago); returns that instant. */
async function makeAllDue(tenantIds: string[]): Promise<Date> {
  const { rows } = await h.pool.query<{ due: Date }>(
    `UPDATE scans SET next_run_at = date_trunc('second', now()) - interval '1 second'
     WHERE tenant_id = ANY ($1::uuid[]) AND status = 'active' RETURNING next_run_at AS due`, [tenantIds]);
  return rows[0].due;
}

/** Per tenant: its runs, admitted and waiting, and whether every admitted run is older than every waiting one. */
async function admission(tenantId: string): Promise<{ runs: number; admitted: number; waiting: number; oldestFirst: boolean }> {
  const { rows: [r] } = await h.pool.query(
    `SELECT count(*)::int AS runs, count(admitted_at)::int AS admitted, (count(*) - count(admitted_at))::int AS waiting,
            coalesce(max(created_at) FILTER (WHERE admitted_at IS NOT NULL) <= min(created_at) FILTER (WHERE admitted_at IS NULL), true) AS "oldestFirst"
     FROM pipeline_runs WHERE tenant_id = $1`, [tenantId]);
  return r;
}

describe('scheduler: a burst of due scans', () => {
  it('four tenants, 1,000 scans due at once, three runners and extra ticks racing: each scan fires once, with one run, and its fire records it; the limits hold', async () => {
    const logger = pino({ level: 'silent' });
    const extras: { runner: Runner; pool: pg.Pool }[] = [];
    const sizes = [700, 150, 100, 50]; // the first tenant's scans take two batches of 500
    const limits = [300, 1000, 40, 1000];
    const tenants: Tenant[] = [];
    const scanIds: string[][] = [];
    try {
      await h.stopWorker();
      for (const [i, n] of sizes.entries()) {
        const t = await createTenant(h);
        const pipeline = await createPipeline(h, t, oneStep(`burst-${i}`));
        await h.pool.query(`UPDATE tenants SET max_active_runs = $2 WHERE id = $1`, [t.id, limits[i]]);
        scanIds.push(await insertScans(t, pipeline.id, await insertAssets(t, n, `t${i}-`), `burst ${i} `));
        tenants.push(t);
      }
      const due = await makeAllDue(tenants.map((t) => t.id));
      await h.pool.query(`SELECT arm_scheduler()`);
      await h.pool.query(`SELECT graphile_worker.add_job('scheduler_tick', '{}'::json) FROM generate_series(1, 4)`);
      const startExtra = async () => {
        const pool = createPool(h.db.url, 8);
        extras.push({ runner: await startWorker({ pgPool: pool, concurrency: 4, orchestration: h.orchestration, logger }), pool });
      };
      await Promise.all([h.startWorker(), startExtra(), startExtra()]);
      await h.settle(60_000);

      const nextJan1 = nextFire('0 0 1 1 *', 'UTC', new Date())!.getTime();
      for (const [i, t] of tenants.entries()) {
        // Every scan: one fire for the due instant, one run, the fire listing exactly that run.
        const { rows: perScan } = await h.pool.query<{ fires: number; due_fires: number; runs: number; matches: boolean; next_run_at: Date; skipped: number }>(
          `SELECT (SELECT count(*)::int FROM scan_fires f WHERE f.scan_id = s.id) AS fires,
                  (SELECT count(*)::int FROM scan_fires f WHERE f.scan_id = s.id AND f.trigger_type = 'schedule' AND f.due_at = $2) AS due_fires,
                  (SELECT count(*)::int FROM pipeline_runs r WHERE r.scan_id = s.id) AS runs,
                  (SELECT array_agg(r.id) FROM pipeline_runs r WHERE r.scan_id = s.id)
                    = (SELECT array_agg(x) FROM scan_fires f, unnest(f.run_ids) x WHERE f.scan_id = s.id) AS matches,
                  (SELECT sum(jsonb_array_length(f.skipped))::int FROM scan_fires f WHERE f.scan_id = s.id) AS skipped,
                  s.next_run_at
           FROM scans s WHERE s.tenant_id = $1`, [t.id, due]);
        assert.equal(perScan.length, sizes[i]);
        const wrong = perScan.filter((s) => s.fires !== 1 || s.due_fires !== 1 || s.runs !== 1 || !s.matches || s.skipped !== 0);
        assert.deepEqual(wrong.slice(0, 3), [], `tenant ${i}: ${wrong.length} scans did not fire exactly once with their run recorded`);
        assert.ok(perScan.every((s) => s.next_run_at.getTime() === nextJan1), `tenant ${i}: every next fire advanced once`);
        // The tenant's limit: the oldest runs admitted, the rest waiting; the fires say how many wait.
        const a = await admission(t.id);
        assert.deepEqual(a, { runs: sizes[i], admitted: Math.min(sizes[i], limits[i]), waiting: Math.max(0, sizes[i] - limits[i]), oldestFirst: true }, `tenant ${i}`);
        const { rows: [w] } = await h.pool.query<{ waiting: number }>(
          `SELECT sum(waiting_runs)::int AS waiting FROM scan_fires WHERE tenant_id = $1`, [t.id]);
        assert.equal(w.waiting, a.waiting, `tenant ${i}: the fires' waiting_runs add up to the runs that wait`);
      }
      // Nothing fired twice across tenants either, and every admitted run started (its first advance ran).
      const { rows: [all] } = await h.pool.query<{ fires: number; runs: number; started: number; admitted: number }>(
        `SELECT (SELECT count(*)::int FROM scan_fires WHERE tenant_id = ANY ($1::uuid[])) AS fires,
                count(*)::int AS runs, count(*) FILTER (WHERE status = 'running')::int AS started, count(admitted_at)::int AS admitted
         FROM pipeline_runs WHERE tenant_id = ANY ($1::uuid[])`, [tenants.map((t) => t.id)]);
      assert.deepEqual(all, { fires: 1000, runs: 1000, started: 300 + 150 + 40 + 50, admitted: 540 });
      await assertNoFailedJobs(h);
    } finally {
      await Promise.all(extras.map(async (e) => { await e.runner.stop(); await e.pool.end(); }));
      await h.startWorker().catch(() => {});
      await h.pool.query(`UPDATE scans SET status = 'paused', next_run_at = NULL WHERE tenant_id = ANY ($1::uuid[])`, [tenants.map((t) => t.id)]);
    }
  });

  it("in one batch: targets with a run in progress are skipped with the run's id, a deleted asset is skipped, a scan's own limit holds, and a scan that cannot fire is recorded as such while the others fire", async () => {
    const t = await createTenant(h);
    const pipeline = await createPipeline(h, t, oneStep('burst-rules'));
    const ids = await insertAssets(t, 6, 'rules-');
    const [busy1, busy2, free1, free2, gone, extra] = ids;
    // A scan whose earlier (manual) runs are still in progress on two of its four assets.
    const inProgress = await createScan(h, t, {
      name: 'in progress', pipeline_id: pipeline.id, targets: { asset_ids: [busy1, busy2, free1, free2] }, max_active_runs: 10,
      schedule_type: 'cron', cron_expression: '0 0 1 1 *',
    });
    const earlier = await triggerScan(h, t, inProgress.id);
    assert.equal(earlier.runs.length, 4);
    await h.settle();
    // Two of them finish: their assets are free again.
    const finishedIds = earlier.runs.filter((r: Json) => r.asset_id === free1 || r.asset_id === free2).map((r: Json) => r.id);
    await h.pool.query(`UPDATE pipeline_runs SET status = 'completed', completed_at = now() WHERE id = ANY ($1::uuid[])`, [finishedIds]);
    const stillRunning = Object.fromEntries(earlier.runs.filter((r: Json) => !finishedIds.includes(r.id)).map((r: Json) => [r.asset_id, r.id]));
    // A scan naming an asset that is then deleted, one limited to 2 active runs over 3 assets,
    // a filter scan, a scan with no targets, and one whose stored targets no longer parse.
    const withGone = await createScan(h, t, {
      name: 'with gone', pipeline_id: pipeline.id, targets: { asset_ids: [gone, extra] }, schedule_type: 'cron', cron_expression: '0 0 1 1 *',
    });
    await h.pool.query(`DELETE FROM assets WHERE id = $1`, [gone]);
    const limited = await createScan(h, t, {
      name: 'limited', pipeline_id: pipeline.id, targets: { asset_ids: [free1, free2, extra] }, max_active_runs: 2,
      schedule_type: 'cron', cron_expression: '0 0 1 1 *',
    });
    const filtered = await createScan(h, t, {
      name: 'filtered', pipeline_id: pipeline.id, targets: { asset_filter: { tags: ['burst'], expression: 'name.startsWith("rules-1")' } },
      schedule_type: 'cron', cron_expression: '0 0 1 1 *',
    });
    const none = await createScan(h, t, { name: 'none', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *' });
    const broken = await createScan(h, t, { name: 'broken', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 0 1 1 *' });
    await h.pool.query(`UPDATE scans SET targets = '{"asset_filter": {"expression": "tags.contains("}}' WHERE id = $1`, [broken.id]);
    const scans = [inProgress, withGone, limited, filtered, none, broken];
    const due = await makeAllDue([t.id]);
    await tick(h);

    const fireOf = async (scan: Json) => (await scanFires(h, t, scan.id)).filter((f) => f.trigger_type === 'schedule');
    for (const scan of scans) {
      const fires = await fireOf(scan);
      assert.equal(fires.length, 1, `${scan.name}: one scheduled fire`);
      assert.equal(fires[0].due_at, due.toISOString(), scan.name);
    }
    // In progress: runs on the two free assets only; the two busy ones skipped, naming the run.
    const [ip] = await fireOf(inProgress);
    const ipRuns = await h.pool.query<{ asset_id: string }>(`SELECT asset_id FROM pipeline_runs WHERE id = ANY ($1::uuid[])`, [ip.run_ids]);
    assert.deepEqual(new Set(ipRuns.rows.map((r) => r.asset_id)), new Set([free1, free2]));
    assert.deepEqual(new Set(ip.skipped.map((s: Json) => s.asset_id)), new Set([busy1, busy2]));
    for (const s of ip.skipped) assert.ok(s.reason.includes(stillRunning[s.asset_id]) && /still (running|waiting)/.test(s.reason), s.reason);
    // A deleted asset: skipped with its reason; the other asset runs.
    const [wg] = await fireOf(withGone);
    assert.equal(wg.run_ids.length, 1);
    assert.deepEqual(wg.skipped, [{ asset_id: gone, reason: 'the asset does not exist (deleted?)' }]);
    // The scan's own limit: 2 of its 3 runs admitted, the oldest; the fire says 1 waits.
    const [lim] = await fireOf(limited);
    assert.equal(lim.run_ids.length, 3);
    assert.equal(lim.waiting_runs, 1);
    const { rows: limRuns } = await h.pool.query<{ admitted: boolean }>(
      `SELECT admitted_at IS NOT NULL AS admitted FROM pipeline_runs WHERE scan_id = $1 ORDER BY created_at, id`, [limited.id]);
    assert.deepEqual(limRuns.map((r) => r.admitted), [true, true, false]);
    // The filter: its expression evaluated per asset (rules-1… only).
    const [fl] = await fireOf(filtered);
    const flRuns = await h.pool.query<{ name: string }>(
      `SELECT a.name FROM pipeline_runs r JOIN assets a ON a.id = r.asset_id WHERE r.id = ANY ($1::uuid[])`, [fl.run_ids]);
    assert.deepEqual(flRuns.rows.map((r) => r.name), ['rules-1.example.com']);
    // No targets: one run with no asset.
    const [nn] = await fireOf(none);
    assert.equal(nn.run_ids.length, 1);
    // The broken scan: its fire records why, with no runs; it did not stop the others.
    const [br] = await fireOf(broken);
    assert.deepEqual(br.run_ids, []);
    assert.equal(br.skipped.length, 1);
    assert.match(br.skipped[0].reason, /^the scan could not fire: /);
    // Each fire's scan.fired event, in fire order, with its runs.
    const { rows: events } = await h.pool.query<{ scan_id: string; run_ids: string[]; waiting_runs: number }>(
      `SELECT data ->> 'scan_id' AS scan_id, data -> 'run_ids' AS run_ids, (data ->> 'waiting_runs')::int AS waiting_runs
       FROM events WHERE tenant_id = $1 AND type = 'scan.fired' AND (data ->> 'trigger_type') = 'schedule' ORDER BY id`, [t.id]);
    assert.equal(events.length, scans.length);
    const limitedEvent = events.find((e) => e.scan_id === limited.id)!;
    assert.deepEqual([limitedEvent.run_ids, limitedEvent.waiting_runs], [lim.run_ids, 1]);
    await assertNoFailedJobs(h);
    await h.pool.query(`UPDATE scans SET status = 'paused', next_run_at = NULL WHERE tenant_id = $1`, [t.id]);
  });
});
