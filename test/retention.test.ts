// Retention (src/progression/retention.ts, sql/retention.sql, tasks/retention.ts): history
// older than its setting goes, in bounded batches, and retention_log says what went and
// when; young history, findings, their sightings and events, runs and step runs stay. Time
// is moved by writing old timestamps: two fills of history (test/support/history.ts), one
// 100 to 120 days old and one of the last 10 days, plus deliveries of a channel.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import { createTenant, type Tenant } from './support/fixtures.ts';
import { fillHistory } from './support/history.ts';
import { retentionPass, withPoolClient, type RetentionReport } from '../src/progression/retention.ts';
import { DEFAULT_RETENTION, type RetentionConfig } from '../src/config.ts';

const DAY = 86_400_000;
const NONE: RetentionConfig = { output: null, events: null, commands: null, deliveries: null };

let h: Harness;
let tenant: Tenant;
let channelId: string;

type Counts = Record<string, number>;

/** What each kind holds, split at its default cutoff (as of the database's now()). */
async function counts(): Promise<Counts> {
  const { rows } = await h.pool.query(`
    SELECT
      (SELECT count(*) FROM events WHERE finding_id IS NULL AND created_at < now() - interval '30 days')::int AS old_events,
      (SELECT count(*) FROM events WHERE finding_id IS NULL AND created_at >= now() - interval '30 days')::int AS young_events,
      (SELECT count(*) FROM events WHERE finding_id IS NOT NULL)::int AS finding_events,
      (SELECT count(*) FROM commands WHERE completed_at < now() - interval '90 days')::int AS old_commands,
      (SELECT count(*) FROM commands WHERE completed_at >= now() - interval '90 days' OR completed_at IS NULL)::int AS young_commands,
      (SELECT count(*) FROM command_output_chunks k JOIN commands c ON c.id = k.command_id
       WHERE c.completed_at < now() - interval '30 days')::int AS old_chunks,
      (SELECT count(*) FROM command_output_chunks k JOIN commands c ON c.id = k.command_id
       WHERE c.completed_at >= now() - interval '30 days')::int AS young_chunks,
      (SELECT count(*) FROM deliveries WHERE status <> 'pending' AND finished_at < now() - interval '30 days')::int AS old_deliveries,
      (SELECT count(*) FROM deliveries WHERE status = 'pending' OR finished_at >= now() - interval '30 days')::int AS kept_deliveries,
      (SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
       WHERE d.status <> 'pending' AND d.finished_at < now() - interval '30 days')::int AS old_attempts,
      (SELECT count(*) FROM delivery_attempts)::int AS attempts,
      (SELECT count(*) FROM findings)::int AS findings,
      (SELECT count(*) FROM finding_sightings)::int AS sightings,
      (SELECT count(*) FROM pipeline_runs)::int AS runs,
      (SELECT count(*) FROM step_runs)::int AS step_runs,
      (SELECT count(*) FROM ingests)::int AS ingests`);
  return rows[0];
}

/** Finished deliveries of the channel, `n` finished `daysAgo` days ago, each with two attempts; `pending` of them still pending. */
async function deliveries(n: number, daysAgo: number, pending = 0) {
  await h.pool.query(`
    WITH d AS (
      INSERT INTO deliveries (tenant_id, channel_id, event_id, event_type, event_ids, reason, status, attempts, created_at, updated_at, finished_at)
      SELECT $1, $2, e.id, 'pipeline.run.completed', ARRAY[e.id], 'subscribed',
             CASE WHEN row_number() OVER () <= $5 THEN 'pending' ELSE 'delivered' END, 2,
             now() - make_interval(days => $4) - interval '1 hour', now() - make_interval(days => $4),
             CASE WHEN row_number() OVER () <= $5 THEN NULL ELSE now() - make_interval(days => $4) END
      FROM (SELECT id FROM events WHERE tenant_id = $1 AND id NOT IN (SELECT event_id FROM deliveries)
            ORDER BY id LIMIT $3) e
      RETURNING id
    )
    INSERT INTO delivery_attempts (tenant_id, channel_id, delivery_id, attempt, outcome, status_code, latency_ms, attempted_at)
    SELECT $1, $2, d.id, a, CASE a WHEN 1 THEN 'failed' ELSE 'delivered' END, CASE a WHEN 1 THEN 500 ELSE 200 END, 40,
           now() - make_interval(days => $4)
    FROM d, generate_series(1, 2) a`, [tenant.id, channelId, n, daysAgo, pending]);
}

async function passLog(passId: string): Promise<Record<string, { rows: number; batches: number; bytes: number | null; oldest_at: Date; newest_at: Date; cutoff: Date }>> {
  const { rows } = await h.pool.query(
    `SELECT kind, rows::int, batches, bytes::bigint::float8 AS bytes, oldest_at, newest_at, cutoff FROM retention_log WHERE pass_id = $1`, [passId]);
  return Object.fromEntries(rows.map((r) => [r.kind, r]));
}

before(async () => {
  // No worker at first: its cron passes would race this file's own (the last test starts it).
  h = await startHarness({ worker: false });
  tenant = await createTenant(h);
  const old = await fillHistory(h.pool, {
    runs: 120, sightings: 120, outputBytes: 8 * 16 * 1024 * 6, tenants: 1, tenantId: tenant.id, share: 100,
    days: 20, endAt: new Date(Date.now() - 100 * DAY), batch: 40,
  });
  const young = await fillHistory(h.pool, {
    runs: 40, sightings: 40, outputBytes: 8 * 16 * 1024 * 3, tenants: 1, tenantId: tenant.id, share: 100,
    days: 10, endAt: new Date(Date.now() - 3600_000), batch: 40,
  });
  assert.ok(old.output_chunks > 0 && young.output_chunks > 0);
  // A channel (disabled, so nothing routes to it now) with deliveries old and young.
  const { rows } = await h.pool.query(
    `INSERT INTO channels (tenant_id, name, type, url, events, enabled) VALUES ($1, 'hook', 'slack', 'https://hooks.example/x', '{*}', false)
     RETURNING id`, [tenant.id]);
  channelId = rows[0].id;
  await deliveries(30, 45, 2); // 28 delivered 45 days ago, 2 still pending (never removed)
  await deliveries(10, 5);
});

after(async () => {
  await h?.close();
});

describe('a retention pass', () => {
  let report: RetentionReport;
  let before: Counts;

  it('removes what is older than each setting, in batches, and keeps the rest', async () => {
    before = await counts();
    for (const k of ['old_events', 'young_events', 'finding_events', 'old_commands', 'young_commands', 'old_chunks', 'young_chunks',
      'old_deliveries', 'kept_deliveries', 'old_attempts']) {
      assert.ok(before[k] > 0, `the fill has ${k}: ${JSON.stringify(before)}`);
    }
    const batches: string[] = [];
    report = await retentionPass(withPoolClient(h.pool), DEFAULT_RETENTION, { batchRows: 50, onBatch: (b) => batches.push(b.kind) });
    const now = await counts();
    assert.deepEqual(
      { events: now.old_events, commands: now.old_commands, chunks: now.old_chunks, deliveries: now.old_deliveries, attempts: now.attempts },
      { events: 0, commands: 0, chunks: 0, deliveries: 0, attempts: before.attempts - before.old_attempts },
      'nothing older than its setting is left',
    );
    assert.deepEqual(
      { young_events: now.young_events, young_commands: now.young_commands, young_chunks: now.young_chunks, kept_deliveries: now.kept_deliveries },
      { young_events: before.young_events, young_commands: before.young_commands, young_chunks: before.young_chunks, kept_deliveries: before.kept_deliveries },
      'everything younger is kept',
    );
    assert.deepEqual(
      { finding_events: now.finding_events, findings: now.findings, sightings: now.sightings, runs: now.runs, step_runs: now.step_runs, ingests: now.ingests },
      { finding_events: before.finding_events, findings: before.findings, sightings: before.sightings, runs: before.runs, step_runs: before.step_runs, ingests: before.ingests },
      'findings, their sightings and events, runs, step runs and ingests are never removed',
    );
    // The report, and the kinds taking turns.
    assert.equal(report.stopped, false);
    assert.deepEqual(
      Object.fromEntries(Object.entries(report.kinds).map(([k, r]) => [k, r.rows])),
      { output: before.old_chunks, events: before.old_events, deliveries: before.old_deliveries, commands: before.old_commands },
    );
    assert.ok(report.kinds.events!.batches >= Math.ceil(before.old_events / 50), `events in batches of 50: ${report.kinds.events!.batches}`);
    assert.ok(report.kinds.commands!.batches >= Math.ceil(before.old_commands / 50));
    assert.deepEqual(batches.slice(0, 4), ['output', 'events', 'deliveries', 'commands'], 'a round is a batch of each kind');
  });

  it('leaves step runs and ingests without the commands it removed, and the outputs it emptied marked purged', async () => {
    const { rows } = await h.pool.query(`
      SELECT (SELECT count(*) FROM step_runs s WHERE s.command_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.id = s.command_id))::int AS dangling,
             (SELECT count(*) FROM step_runs s JOIN pipeline_runs r ON r.id = s.pipeline_run_id
              WHERE r.created_at < now() - interval '95 days' AND s.command_id IS NOT NULL)::int AS old_with_command,
             (SELECT count(*) FROM command_outputs o JOIN commands c ON c.id = o.command_id
              WHERE c.completed_at < now() - interval '30 days' AND o.purged_at IS NULL)::int AS unpurged_old`);
    assert.deepEqual(rows[0], { dangling: 0, old_with_command: 0, unpurged_old: 0 });
  });

  it('is recorded in retention_log: rows, batches, bytes, their times and the cutoff of each kind', async () => {
    const log = await passLog(report.passId);
    assert.deepEqual(Object.keys(log).sort(), ['commands', 'deliveries', 'events', 'output']);
    const start = report.startedAt.getTime();
    for (const [kind, days] of [['output', 30], ['events', 30], ['deliveries', 30], ['commands', 90]] as const) {
      const l = log[kind];
      assert.equal(l.rows, report.kinds[kind]!.rows, kind);
      assert.equal(l.batches, report.kinds[kind]!.batches, kind);
      assert.equal(l.cutoff.getTime(), start - days * DAY, `${kind}: the cutoff is the pass's start less the setting`);
      assert.ok(l.oldest_at <= l.newest_at && l.newest_at < l.cutoff, `${kind}: what went is older than the cutoff`);
    }
    assert.ok(log.events.batches > 1 && log.commands.batches > 1, 'several batches');
    assert.equal(log.output.bytes, before.old_chunks * 16 * 1024);
    // What a DBA reads.
    const { rows } = await h.pool.query(`SELECT kind, rows, oldest_at, newest_at, started_at, finished_at FROM retention_log ORDER BY id DESC`);
    assert.equal(rows.length, 4);
    for (const r of rows) assert.ok(r.finished_at >= r.started_at);
  });

  it('a second pass finds nothing and writes no log row', async () => {
    const again = await retentionPass(withPoolClient(h.pool), DEFAULT_RETENTION, { batchRows: 50 });
    assert.deepEqual(Object.values(again.kinds).map((k) => k.rows), [0, 0, 0, 0]);
    assert.deepEqual(await passLog(again.passId), {});
  });

  it('a feed cursor it removed is a 410 naming EVENT_RETENTION; a kept one pages on', async () => {
    const { rows } = await h.pool.query(`SELECT max(last_id)::int AS last_id FROM retention_log WHERE kind = 'events'`);
    const removed = rows[0].last_id as number;
    const res = await h.request('GET', `/api/v1/events?after=${removed}`, { token: tenant.token });
    assert.equal(res.status, 410, JSON.stringify(res.body));
    assert.equal(res.body.error.code, 'events_expired');
    assert.match(res.body.error.message, /EVENT_RETENTION/);
    assert.equal(res.body.error.removed_to, removed);
    assert.deepEqual(res.body.error.details, [{ path: 'after', message: `event ${removed} was removed by retention` }]);
    const stream = await h.request('GET', '/api/v1/events/stream', { token: tenant.token, headers: { 'last-event-id': String(removed) } });
    assert.equal(stream.status, 410);
    assert.deepEqual(stream.body.error.details, [{ path: 'Last-Event-ID', message: `event ${removed} was removed by retention` }]);

    const kept = await h.pool.query(`SELECT min(id)::int AS id FROM events WHERE tenant_id = $1 AND id > $2`, [tenant.id, removed]);
    const page = await h.request('GET', `/api/v1/events?after=${kept.rows[0].id}&limit=5`, { token: tenant.token });
    assert.equal(page.status, 200);
    assert.equal(page.body.items.length, 5);
    // An id past what retention removed that is not the tenant's is still a 400.
    const unknown = await h.request('GET', `/api/v1/events?after=999999999`, { token: tenant.token });
    assert.equal(unknown.status, 400);
  });
});

describe('retention settings', () => {
  it('0 or off keeps a kind forever; one kind can be kept while others go', async () => {
    // Time moves 40 days for the young history's events.
    const aged = await h.pool.query(
      `UPDATE events SET created_at = created_at - interval '40 days' WHERE finding_id IS NULL AND created_at >= now() - interval '30 days'`);
    assert.ok((aged.rowCount ?? 0) > 0);
    const kept = await retentionPass(withPoolClient(h.pool), { ...DEFAULT_RETENTION, events: null }, { batchRows: 10 });
    assert.equal(kept.kinds.events, undefined, 'events are not looked at');
    assert.equal((await counts()).old_events, aged.rowCount);
    const gone = await retentionPass(withPoolClient(h.pool), { ...NONE, events: 30 * 86_400 }, { batchRows: 10 });
    assert.deepEqual(Object.keys(gone.kinds), ['events']);
    assert.equal(gone.kinds.events!.rows, aged.rowCount);
    assert.equal((await counts()).old_events, 0);
  });
});

/** `n` events of the tenant written `daysAgo` days ago (after every event there is: no younger one is left). */
async function oldEvents(n: number, daysAgo: number) {
  await h.pool.query(`
    INSERT INTO events (tenant_id, type, data, created_at)
    SELECT $1, 'scan.fired', '{}', now() - make_interval(days => $3) FROM generate_series(1, $2)`, [tenant.id, n, daysAgo]);
}

describe('concurrency and bounds', () => {
  it('two passes at once remove each row once and count it once', async () => {
    await oldEvents(400, 40);
    const config = { ...NONE, events: 30 * 86_400 };
    const [a, b] = await Promise.all([
      retentionPass(withPoolClient(h.pool), config, { batchRows: 20 }),
      retentionPass(withPoolClient(h.pool), config, { batchRows: 20 }),
    ]);
    assert.equal(a.kinds.events!.rows + b.kinds.events!.rows, 400);
    const [logA, logB] = [await passLog(a.passId), await passLog(b.passId)];
    assert.equal((logA.events?.rows ?? 0) + (logB.events?.rows ?? 0), 400, 'retention_log counts each row once');
    assert.equal((await counts()).old_events, 0);
  });

  it('a pass stops when its time is up, and the next carries on', async () => {
    await oldEvents(100, 40);
    const config = { ...NONE, events: 30 * 86_400 };
    const first = await retentionPass(withPoolClient(h.pool), config, { batchRows: 10, budgetMs: 0 });
    assert.equal(first.stopped, true);
    assert.ok(first.kinds.events!.rows < 100);
    const aborted = new AbortController();
    aborted.abort();
    assert.equal((await retentionPass(withPoolClient(h.pool), config, { batchRows: 10, signal: aborted.signal })).stopped, true);
    const next = await retentionPass(withPoolClient(h.pool), config, { batchRows: 10 });
    assert.equal(first.kinds.events!.rows + next.kinds.events!.rows, 100);
    assert.equal(next.stopped, false);
  });
});

describe('the retention task', () => {
  it('is a graphile-worker cron item, and a job of it runs a pass', async () => {
    await h.startWorker();
    let known = 0;
    for (let i = 0; i < 100 && known === 0; i++) {
      known = (await h.pool.query(`SELECT 1 FROM graphile_worker._private_known_crontabs WHERE identifier = 'retention'`)).rowCount ?? 0;
      if (known === 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(known, 1, 'the worker registered the retention cron item');
    await oldEvents(25, 40);
    const passes = (await h.pool.query(`SELECT count(DISTINCT pass_id)::int AS n FROM retention_log`)).rows[0].n;
    await h.pool.query(`SELECT graphile_worker.add_job('retention', '{}'::json, job_key => 'retention')`);
    await h.settle();
    assert.equal((await counts()).old_events, 0);
    const log = await h.pool.query(`SELECT kind, rows::int FROM retention_log ORDER BY id DESC LIMIT 1`);
    assert.deepEqual(log.rows[0], { kind: 'events', rows: 25 });
    assert.equal((await h.pool.query(`SELECT count(DISTINCT pass_id)::int AS n FROM retention_log`)).rows[0].n, passes + 1);
  });
});
