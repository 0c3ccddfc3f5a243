// The bench's scale part "retention" (`npm run bench -- scale-retention`; test/bench-scale.ts):
// what deleting history costs, done as scanflow does it (src/progression/retention.ts: batches
// of RETENTION_BATCH rows, each one statement in a short transaction of its own) against
// dropping a month's time partition of the same rows.
//
// On a scratch database, test/support/history.ts writes two spans of history: BENCH_RETENTION_RUNS
// runs over the 90 days that ended 35 days ago (so every event, the output and about 40 % of
// the commands are past their default retention) and as many over the last 29 days (all kept),
// with BENCH_RETENTION_OUTPUT_MB of output on the old span's latest commands, plus a channel's
// deliveries (half of them old). Then:
//
//   1. a probe of short write transactions like a step's transition (insert an event, update a
//      young command) runs at about 100/s for BENCH_RETENTION_PROBE_S seconds alone, then all
//      through a retention pass with the default settings: its latency with and without the
//      pass is what the deletes cost everyone else;
//   2. the pass: rows, batches, rows/s and each batch's transaction time (how long its row
//      locks are held) per kind, the WAL it wrote; then the VACUUM that reclaims the space;
//   3. a copy of the events as they were before the pass, partitioned by month (primary key
//      (id, created_at), the same indexes): a month past the cutoff dropped whole (DROP TABLE,
//      and DETACH … CONCURRENTLY then DROP), timed with the probe writing into the copy; and
//      the same DROP queued behind a reader that holds the table for BENCH_RETENTION_READER_MS,
//      which every write then waits behind.
//
// Sizes (env): BENCH_RETENTION_RUNS (100,000 per span), BENCH_RETENTION_OUTPUT_MB (256),
// BENCH_RETENTION_PROBE_S (10), BENCH_RETENTION_READER_MS (2,000).
import os from 'node:os';
import pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import type { ScaleContext } from './bench-scale.ts';
import { scratchDatabase } from './support/scratch-db.ts';
import { envInt, f1, mapSummary, sleep, summarize, type Summary } from './support/measure.ts';
import { fillHistory } from './support/history.ts';

const DAY = 86_400_000;

type Probe = { stop: () => Promise<number[]> };

/** Short write transactions at about `perSecond`, each timed from BEGIN to COMMIT. */
function probe(pool: pg.Pool, statements: { text: string; values: unknown[] }[], perSecond = 100): Probe {
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    const client = await pool.connect();
    try {
      while (running) {
        const t0 = performance.now();
        await client.query('BEGIN');
        for (const s of statements) await client.query(s.text, s.values);
        await client.query('COMMIT');
        const ms = performance.now() - t0;
        latencies.push(ms);
        const wait = 1000 / perSecond - ms;
        if (wait > 0) await sleep(wait);
      }
    } finally {
      client.release();
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return latencies;
    },
  };
}

const load = () => os.loadavg().map((x) => Math.round(x * 10) / 10);
const ms1 = (s: Summary) => `p50 ${f1(s.p50)} / p99 ${f1(s.p99)} / max ${f1(s.max)} ms`;

export default async function run(ctx: ScaleContext): Promise<{ problems: string[]; report: Record<string, unknown> }> {
  const RUNS = envInt('BENCH_RETENTION_RUNS', 100_000);
  const OUTPUT_MB = envInt('BENCH_RETENTION_OUTPUT_MB', 256);
  const PROBE_S = envInt('BENCH_RETENTION_PROBE_S', 10);
  const READER_MS = envInt('BENCH_RETENTION_READER_MS', 2_000);
  const { out, progress } = ctx;
  const problems: string[] = [];
  const report: Record<string, unknown> = { runs_per_span: RUNS, output_mb: OUTPUT_MB };

  const { migrate } = await import('../src/db/migrate.ts');
  const { retentionPass, withPoolClient, RETENTION_BATCH, BATCH_TARGET_MS } = await import('../src/progression/retention.ts');
  const { DEFAULT_RETENTION } = await import('../src/config.ts');

  const scratch = await scratchDatabase('scanflow_retention', { progress });
  const pool = createPool(scratch.url, 8);
  try {
    await migrate(scratch.url);
    // --- history ----------------------------------------------------------------------
    const tenant = (await pool.query<{ id: string }>(`INSERT INTO tenants (name) VALUES ('bench') RETURNING id`)).rows[0].id;
    progress(`scale-retention: filling ${RUNS} old runs (125 to 35 days ago) and ${RUNS} young ones (the last 29 days)`);
    const old = await fillHistory(pool, {
      runs: RUNS, sightings: RUNS, outputBytes: OUTPUT_MB * 1048576, tenants: 10, tenantId: tenant, share: 20,
      days: 90, endAt: new Date(Date.now() - 35 * DAY), progress,
    });
    // 29 days: none of it is past the events' 30 days while the bench runs. (Its batches are
    // written on two connections, so its ids do not follow time across a batch, as they do in
    // a live database; the pass's walk of the events by id stops at a window of young events
    // and would leave the older ones behind it for a later pass.)
    const young = await fillHistory(pool, {
      runs: RUNS, sightings: RUNS, outputBytes: 16 * 1048576, tenants: 10, tenantId: tenant, share: 20,
      days: 29, endAt: new Date(Date.now() - 3600_000), progress,
    });
    // A channel's deliveries (disabled: nothing routes to it now): RUNS of them, for the
    // tenant's oldest and newest run events, two attempts each, finished with their event.
    const channel = (await pool.query<{ id: string }>(
      `INSERT INTO channels (tenant_id, name, type, url, events, enabled) VALUES ($1, 'hook', 'slack', 'https://hooks.example/x', '{*}', false)
       RETURNING id`, [tenant])).rows[0].id;
    await pool.query(`
      WITH d AS (
        INSERT INTO deliveries (tenant_id, channel_id, event_id, event_type, event_ids, reason, status, attempts, created_at, updated_at, finished_at)
        SELECT $1, $2, e.id, e.type, ARRAY[e.id], 'subscribed', 'delivered', 2, e.created_at, e.created_at + interval '2 seconds',
               e.created_at + interval '2 seconds'
        FROM ((SELECT id, type, created_at FROM events WHERE tenant_id = $1 AND type LIKE 'pipeline.run.%'
               AND created_at < now() - interval '31 days' ORDER BY id LIMIT $3 / 2)
              UNION ALL
              (SELECT id, type, created_at FROM events WHERE tenant_id = $1 AND type LIKE 'pipeline.run.%'
               AND created_at > now() - interval '29 days' ORDER BY id DESC LIMIT $3 / 2)) e
        RETURNING id, tenant_id, channel_id, finished_at
      )
      INSERT INTO delivery_attempts (tenant_id, channel_id, delivery_id, attempt, outcome, status_code, latency_ms, attempted_at)
      SELECT d.tenant_id, d.channel_id, d.id, a, CASE a WHEN 1 THEN 'failed' ELSE 'delivered' END, CASE a WHEN 1 THEN 500 ELSE 200 END, 40,
             d.finished_at
      FROM d, generate_series(1, 2) a`, [tenant, channel, RUNS]);
    await pool.query('VACUUM ANALYZE deliveries, delivery_attempts');
    // What is past its retention as of `at` (the pass's start, afterwards: a command crossing
    // the 90-day line while the pass ran is not one it should have removed).
    const counts = async (at: Date) => (await pool.query(`
      SELECT (SELECT count(*) FROM events WHERE finding_id IS NULL AND created_at < $1::timestamptz - interval '30 days')::int AS events,
             (SELECT count(*) FROM events)::int AS all_events,
             (SELECT count(*) FROM commands WHERE completed_at < $1::timestamptz - interval '90 days')::int AS commands,
             (SELECT count(*) FROM commands)::int AS all_commands,
             (SELECT count(*) FROM command_output_chunks k JOIN commands c ON c.id = k.command_id
              WHERE c.completed_at < $1::timestamptz - interval '30 days')::int AS chunks,
             (SELECT count(*) FROM deliveries WHERE finished_at < $1::timestamptz - interval '30 days')::int AS deliveries,
             (SELECT count(*) FROM deliveries)::int AS all_deliveries`, [at])).rows[0] as Record<string, number>;
    const before = await counts(new Date());
    report.fill = { old, young, before };
    out(`history: ${old.runs + young.runs} runs (${old.events + young.events} events, ${old.commands + young.commands} commands, ` +
      `${((old.output_bytes + young.output_bytes) / 1048576).toFixed(0)} MB of output, ${before.all_deliveries} deliveries); ` +
      `past their retention: ${before.events} events, ${before.chunks} output chunks, ${before.commands} commands, ${before.deliveries} deliveries`);

    // The copy of the events, partitioned by month, for part 3 (written now: the pass deletes).
    progress('scale-retention: copying the events into a table partitioned by month');
    const months = (await pool.query<{ m: Date }>(
      `SELECT generate_series(date_trunc('month', min(created_at)), date_trunc('month', now()), interval '1 month') AS m FROM events`)).rows.map((r) => r.m);
    await pool.query(`CREATE TABLE events_part (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)`);
    for (const m of months) {
      const name = `events_part_${m.toISOString().slice(0, 7).replace('-', '_')}`;
      await pool.query(`CREATE TABLE ${name} PARTITION OF events_part FOR VALUES FROM ('${m.toISOString()}') TO ('${m.toISOString()}'::timestamptz + interval '1 month')`);
    }
    await pool.query(`INSERT INTO events_part SELECT * FROM events`);
    await pool.query(`ALTER TABLE events_part ADD PRIMARY KEY (id, created_at)`);
    await pool.query(`CREATE SEQUENCE events_part_id_seq`);
    await pool.query(`SELECT setval('events_part_id_seq', (SELECT max(id) FROM events_part))`);
    await pool.query(`ALTER TABLE events_part ALTER COLUMN id SET DEFAULT nextval('events_part_id_seq')`);
    await pool.query(`CREATE INDEX ON events_part (pipeline_run_id, id)`);
    await pool.query(`CREATE INDEX ON events_part (tenant_id, xid, id)`);
    await pool.query(`CREATE INDEX ON events_part (finding_id, id) WHERE finding_id IS NOT NULL`);
    await pool.query(`VACUUM ANALYZE events_part`);

    // The probe: a transition's writes (an event, a young command's update).
    const youngCommand = (await pool.query<{ id: string }>(`SELECT id FROM commands WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1`, [tenant])).rows[0].id;
    const transition = [
      { text: `INSERT INTO events (tenant_id, type, data) VALUES ($1, 'agent.offline', '{"probe": true}')`, values: [tenant] },
      { text: `UPDATE commands SET updated_at = now() WHERE id = $1`, values: [youngCommand] },
    ];

    // --- the plans: each batch an index range, never a sequential scan of a big table --------
    const { retentionSql } = await import('../src/store/queries.ts');
    const plans: Record<string, string[]> = {};
    const now = new Date();
    const cut = (days: number) => new Date(now.getTime() - days * DAY);
    const passId = '00000000-0000-0000-0000-000000000000';
    const statements: [string, { text: string }, unknown[]][] = [
      ['events', retentionSql.RetainEvents, [passId, cut(30), 0, 2000, now, true]],
      ['output', retentionSql.RetainOutput, [passId, cut(30), 2000, 64 * 1048576, now]],
      ['commands', retentionSql.RetainCommands, [passId, cut(90), 2000, now]],
      ['deliveries', retentionSql.RetainDeliveries, [passId, cut(30), 2000, now]],
    ];
    const SMALL = new Set(['tenants', 'channels', 'retention_log']);
    const client = await pool.connect();
    try {
      for (const [kind, q, values] of statements) {
        await client.query('BEGIN');
        // The generic plan: what a prepared statement settles on after its fifth run.
        await client.query(`SET LOCAL plan_cache_mode = force_generic_plan`);
        await client.query(`PREPARE retention_plan AS ${q.text.replace(/;\s*$/, '')}`);
        const args = values.map((v) => (typeof v === 'number' || typeof v === 'boolean' ? String(v)
          : client.escapeLiteral(v instanceof Date ? v.toISOString() : String(v)))).join(', ');
        const plan = (await client.query(`EXPLAIN (FORMAT JSON) EXECUTE retention_plan(${args})`)).rows[0]['QUERY PLAN'];
        await client.query('ROLLBACK');
        await client.query('DEALLOCATE ALL');
        const scans: string[] = [];
        const walk = (n: Record<string, any>) => {
          if (n['Relation Name']) scans.push(`${n['Node Type']} ${n['Index Name'] ? `${n['Index Name']}` : n['Relation Name']}`);
          for (const c of n.Plans ?? []) walk(c);
        };
        walk(plan[0].Plan);
        plans[kind] = [...new Set(scans)];
        for (const sc of scans) {
          const m = /^Seq Scan (\w+)$/.exec(sc);
          if (m && !SMALL.has(m[1])) problems.push(`${kind}: a batch reads all of ${m[1]} (Seq Scan)`);
        }
      }
    } finally {
      client.release();
    }
    out('plans of the batches (generic): ' + Object.entries(plans).map(([k, v]) => `${k}: ${v.join(', ')}`).join('; '));
    report.plans = plans;

    // --- 1 and 2: the pass, with the probe ----------------------------------------------
    await pool.query('CHECKPOINT');
    progress(`scale-retention: the probe alone for ${PROBE_S} s`);
    const loadAlone = load();
    const alone = probe(pool, transition);
    await sleep(PROBE_S * 1000);
    const aloneMs = summarize(await alone.stop());
    progress('scale-retention: a retention pass with the default settings, the probe running');
    const wal0 = (await pool.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn;
    const loadPass = load();
    const during = probe(pool, transition);
    const batches: Record<string, number[]> = {};
    const sizes: Record<string, number[]> = {};
    const t0 = performance.now();
    const pass = await retentionPass(withPoolClient(pool), DEFAULT_RETENTION, {
      budgetMs: 3_600_000,
      onBatch: (b) => {
        if (b.rows === 0) return;
        (batches[b.kind] ??= []).push(b.ms);
        (sizes[b.kind] ??= []).push(b.limit);
      },
    });
    const passS = (performance.now() - t0) / 1000;
    const duringMs = summarize(await during.stop());
    const walBytes = Number((await pool.query<{ b: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS b`, [wal0])).rows[0].b);
    const after = await counts(pass.startedAt);
    for (const k of ['events', 'commands', 'chunks', 'deliveries'] as const) {
      if (after[k] !== 0) problems.push(`${after[k]} ${k} past their retention are left after the pass`);
    }
    const kinds: Record<string, unknown> = {};
    out('');
    out(`retention pass (batches sized to take ${BATCH_TARGET_MS} ms, from ${RETENTION_BATCH} rows; load ${loadPass.join(' ')} at its start): ${f1(passS)} s, WAL ${(walBytes / 1048576).toFixed(0)} MB`);
    let longest = 0;
    for (const [kind, k] of Object.entries(pass.kinds)) {
      const s = summarize(batches[kind] ?? []);
      const seconds = (batches[kind] ?? []).reduce((a, b) => a + b, 0) / 1000;
      longest = Math.max(longest, s.max || 0);
      const sz = summarize(sizes[kind] ?? []);
      kinds[kind] = { rows: k.rows, batches: k.batches, bytes: k.bytes, seconds, rows_per_s: k.rows / seconds, batch_ms: mapSummary(s),
        batch_rows: mapSummary(sz) };
      out(`  ${kind.padEnd(10)} ${String(k.rows).padStart(9)} rows in ${String(k.batches).padStart(4)} batches ` +
        `(of ${k.batches ? `${sz.p50} rows, ${Math.min(...(sizes[kind] ?? [0]))}-${sz.max}` : '-'}), ${f1(seconds)} s: ` +
        `${Math.round(k.rows / Math.max(seconds, 1e-9))} rows/s${k.bytes ? ` (${(k.bytes / 1048576).toFixed(0)} MB)` : ''}; ` +
        `a batch's transaction ${k.batches ? ms1(s) : '-'}`);
    }
    out(`  the longest batch held its locks ${f1(longest)} ms ${longest <= 1000 ? '✔' : '✘'} (target: every batch ≤ 1 s)`);
    out(`  a transition's writes (probe, ~100/s): alone ${ms1(aloneMs)} (load ${loadAlone.join(' ')}); during the pass ${ms1(duringMs)}`);
    progress('scale-retention: VACUUM of what the pass deleted');
    const v0 = performance.now();
    await pool.query('VACUUM events, commands, step_runs, ingests, command_outputs, command_output_chunks, deliveries, delivery_attempts');
    const vacuumS = (performance.now() - v0) / 1000;
    out(`  then VACUUM of the tables it deleted from (autovacuum's work): ${f1(vacuumS)} s`);
    report.pass = { seconds: passS, wal_bytes: walBytes, kinds, longest_batch_ms: longest, probe_alone: mapSummary(aloneMs),
      probe_during: mapSummary(duringMs), vacuum_s: vacuumS, load_alone: loadAlone, load_pass: loadPass };

    // --- 3: time partitions of the same events ------------------------------------------
    const cutoff = new Date(pass.startedAt.getTime() - (DEFAULT_RETENTION.events ?? 0) * 1000);
    const whole = (await pool.query<{ name: string; rows: number; upper: Date }>(`
      SELECT c.relname AS name, c.reltuples::bigint::int AS rows,
             (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'events_part'::regclass ORDER BY 3`)).rows.filter((p) => p.upper <= cutoff && p.rows > 0);
    const partitions: Record<string, unknown>[] = [];
    out('');
    out(`time partitions: the events copied into events_part, by month (${months.length} partitions); ${whole.length} months wholly past the cutoff`);
    const writeProbe = [{ text: `INSERT INTO events_part (tenant_id, type, data, created_at) VALUES ($1, 'agent.offline', '{}', now())`, values: [tenant] }];
    const dropOne = async (how: 'drop' | 'detach' | 'queued', name: string, rows: number) => {
      const p = probe(pool, writeProbe);
      await sleep(300);
      const w0 = (await pool.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn;
      let reader: Promise<unknown> | null = null;
      if (how === 'queued') {
        // A report reading the events (any statement on the parent) for READER_MS.
        reader = pool.query(`SELECT count(*), pg_sleep($1::float8 / 1000) FROM events_part WHERE id < 0`, [READER_MS]);
        await sleep(100);
      }
      const d0 = performance.now();
      if (how === 'detach') {
        await pool.query(`ALTER TABLE events_part DETACH PARTITION ${name} CONCURRENTLY`);
        await pool.query(`DROP TABLE ${name}`);
      } else {
        await pool.query(`DROP TABLE ${name}`);
      }
      const dropMs = performance.now() - d0;
      await reader;
      await sleep(300);
      const lat = summarize(await p.stop());
      const wal = Number((await pool.query<{ b: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS b`, [w0])).rows[0].b);
      const label = how === 'drop' ? 'DROP TABLE' : how === 'detach' ? 'DETACH … CONCURRENTLY, DROP' : `DROP TABLE behind a ${READER_MS} ms reader`;
      out(`  ${label.padEnd(36)} ${name} (${rows} rows): ${f1(dropMs)} ms, WAL ${(wal / 1024).toFixed(0)} kB; ` +
        `writes to the table meanwhile ${ms1(lat)}`);
      partitions.push({ how, name, rows, ms: dropMs, wal_bytes: wal, writes: mapSummary(lat) });
    };
    const hows: ('drop' | 'detach' | 'queued')[] = ['drop', 'detach', 'queued'];
    for (let i = 0; i < whole.length && i < hows.length; i++) await dropOne(hows[i], whole[i].name, whole[i].rows);
    const events = kinds.events as { rows_per_s: number } | undefined;
    const biggest = whole.slice(0, hows.length).sort((a, b) => b.rows - a.rows)[0];
    if (events && biggest) {
      out(`  the ${biggest.rows} rows of ${biggest.name} deleted in batches: about ${f1(biggest.rows / events.rows_per_s)} s ` +
        `at the pass's ${Math.round(events.rows_per_s)} events/s, spread over short transactions`);
    }
    report.partitions = partitions;
  } finally {
    await pool.end();
    await scratch.drop();
  }
  return { problems, report };
}
