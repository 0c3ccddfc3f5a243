// The operators' views of sql/views.sql answer "what is running, on which agent, since when,
// and what is stuck" from plain SQL.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { applyViews, migrate } from '../src/db/migrate.ts';
import { startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createAsset, createPipeline, createTenant, passClaimDeadline, startRun, step, type Tenant,
} from './support/fixtures.ts';

let h: Harness;
let t: Tenant;

before(async () => {
  h = await startHarness();
  t = await createTenant(h, 'views-tenant');
});
after(() => h.close());

const rows = async (sql: string, values: unknown[] = []) => (await h.pool.query(sql, values)).rows as Record<string, any>[];

describe('operator views', () => {
  it('running_work, runs_in_progress and agent_load show a step in flight, its agent and since when', async () => {
    const agent = await TestAgent.create(h, t, { name: 'scanner-7', tools: ['tool-a'] });
    const p = await createPipeline(h, t, { name: 'Viewed', steps: [step('a'), step('b', { depends_on: ['a'] })] });
    const run = await startRun(h, t, p.id);
    await h.settle();
    const [cmd] = await agent.poll();
    assert.equal((await agent.ack(cmd.id)).status, 200);
    const work = await rows(`SELECT * FROM running_work WHERE pipeline_run_id = $1`, [run.id]);
    assert.equal(work.length, 1);
    assert.deepEqual([work[0].tenant, work[0].pipeline, work[0].step_key, work[0].step_status, work[0].agent, work[0].command_status],
      ['views-tenant', 'Viewed', 'a', 'running', 'scanner-7', 'acknowledged']);
    assert.ok(work[0].since instanceof Date && work[0].deadline instanceof Date);
    const progress = await rows(`SELECT * FROM runs_in_progress WHERE pipeline_run_id = $1`, [run.id]);
    assert.equal(progress[0].status, 'running');
    assert.equal(Number(progress[0].active_steps), 1);
    const load = await rows(`SELECT * FROM agent_load WHERE agent = 'scanner-7'`);
    assert.equal(Number(load[0].running), 1);
  });

  it('stuck_work names commands no agent can take, claims never acknowledged and work held by an offline agent', async () => {
    const p = await createPipeline(h, t, { name: 'Nobody', steps: [step('x', { tool: 'no-such-tool' })] });
    const run = await startRun(h, t, p.id);
    await h.settle();
    const noAgent = await rows(`SELECT * FROM stuck_work WHERE pipeline_run_id = $1`, [run.id]);
    assert.deepEqual(noAgent.map((r) => [r.problem, r.detail]), [['no_capable_agent', 'no-such-tool']]);

    const lazy = await TestAgent.create(h, t, { tools: ['tool-c'] });
    const p2 = await createPipeline(h, t, { name: 'Claimed', steps: [step('c')] });
    const run2 = await startRun(h, t, p2.id);
    await h.settle();
    const [claimed] = await lazy.poll();
    await passClaimDeadline(h, claimed.id);
    const unacked = await rows(`SELECT problem FROM stuck_work WHERE command_id = $1`, [claimed.id]);
    assert.deepEqual(unacked.map((r) => r.problem), ['claim_not_acknowledged']);
    assert.ok(run2.id);

    const gone = await TestAgent.create(h, t, { name: 'gone', tools: ['tool-g'] });
    const p3 = await createPipeline(h, t, { name: 'Held', steps: [step('g')] });
    await startRun(h, t, p3.id);
    await h.settle();
    const [held] = await gone.poll();
    await gone.ack(held.id);
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE name = 'gone'`);
    const offline = await rows(`SELECT problem, detail FROM stuck_work WHERE command_id = $1`, [held.id]);
    assert.deepEqual(offline.map((r) => [r.problem, r.detail]), [['agent_offline', 'gone']]);
  });

  it("scan_status shows a scan's next fire, its last fire and what that fire skipped", async () => {
    const asset = await createAsset(h, t, { type: 'server', name: 'srv-v' });
    const p = await createPipeline(h, t, { name: 'Scanned', steps: [step('s', { tool: 'nobody-has-this' })] });
    const scan = (await h.request('POST', '/api/v1/scans', {
      token: t.token,
      body: { name: 'Nightly', pipeline_id: p.id, targets: { asset_id: asset.id }, schedule_type: 'cron', cron_expression: '0 2 * * *', timezone: 'Europe/Berlin' },
    })).body;
    for (let i = 0; i < 2; i++) assert.equal((await h.request('POST', `/api/v1/scans/${scan.id}/trigger`, { token: t.token, body: {} })).status, 201);
    const [s] = await rows(`SELECT * FROM scan_status WHERE scan = 'Nightly'`);
    assert.equal(s.status, 'active');
    assert.ok(s.next_run_at instanceof Date);
    assert.equal(Number(s.active_runs), 1);
    assert.equal(Number(s.last_runs), 0);
    assert.equal(Number(s.last_skips), 1);
    assert.match(s.last_skipped[0].reason, /still (running|waiting)/);
  });
});

describe('the views at a process start', () => {
  const viewsText = () => readFile(new URL('../sql/views.sql', import.meta.url), 'utf8');
  const viewOids = async () => Object.fromEntries((await rows(
    `SELECT relname, oid::int AS oid FROM pg_class WHERE relkind = 'v' AND relnamespace = current_schema()::regnamespace ORDER BY 1`))
    .map((r) => [r.relname, r.oid]));

  it('a start does not wait for a sweep that has stalled_runs open: unchanged views are left as they are', async () => {
    const before = await viewOids();
    // A sweep's transaction, still open after reading stalled_runs (and through it run_jobs, orphaned_jobs).
    const sweep = new pg.Client({ connectionString: h.db.url });
    await sweep.connect();
    try {
      await sweep.query('BEGIN');
      await sweep.query('SELECT count(*) FROM stalled_runs');
      let timer: NodeJS.Timeout | undefined;
      const started = await Promise.race([
        migrate(h.db.url).then(() => 'started'),
        new Promise<string>((resolve) => { timer = setTimeout(() => resolve('still waiting after 10 s'), 10_000); }),
      ]).finally(() => clearTimeout(timer));
      assert.equal(started, 'started');
    } finally {
      await sweep.query('ROLLBACK').catch(() => {});
      await sweep.end();
    }
    assert.deepEqual(await viewOids(), before, 'no view was re-created');
  });

  it('a changed views.sql re-creates them, and a view dropped by hand comes back', async () => {
    const text = await viewsText();
    const client = new pg.Client({ connectionString: h.db.url });
    await client.connect();
    try {
      // An upgrade whose views.sql changed a view: the new definition is in place after the start.
      const upgraded = text.replace('CREATE VIEW agent_load AS\nSELECT ', 'CREATE VIEW agent_load AS\nSELECT 2 AS upgraded, ');
      assert.notEqual(upgraded, text);
      assert.equal(await applyViews(client, upgraded), true);
      const upgradedColumn = async () => (await rows(
        `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'agent_load' AND column_name = 'upgraded'`))[0].n;
      assert.equal(await upgradedColumn(), 1);
      assert.equal(await applyViews(client, upgraded), false, 'the same text again: nothing to do');
      // Back to this version's file (what the next start does).
      assert.equal(await applyViews(client, text), true);
      assert.equal(await upgradedColumn(), 0);
      assert.equal(await applyViews(client, text), false);
      // A view dropped by hand (CASCADE takes stuck_work with it) is created again.
      await h.pool.query('DROP VIEW stalled_runs CASCADE');
      assert.equal(await applyViews(client, text), true);
      assert.deepEqual(await rows(`SELECT * FROM stuck_work WHERE false`), []);
      assert.deepEqual(await rows(`SELECT * FROM stalled_runs WHERE false`), []);
    } finally {
      await client.end();
    }
  });
});
