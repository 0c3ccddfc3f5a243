// Realistic history for the bench's history section and the plan test: finished pipeline runs
// with their step runs, commands and events, findings with their sightings, ingests, and
// step output, written by set-based SQL (generate_series; each statement writes a batch of
// thousands of runs and everything that hangs off them; never a statement per row).
//
// The shape: `tenants` tenants of their own (history-1 …), plus optionally an existing tenant
// (`tenantId`, e.g. the bench's) that gets `share` % of the runs; each has 3 pipelines of
// the 4-step diamond (a → b, c → d), 100 assets, 8 agents and 5 scans. Runs come in blocks
// of 4 (same tenant, pipeline and asset: a daily scan of one asset), spread evenly over the
// `days` before `endAt`, oldest first (so bigint ids follow time within a connection's
// batches; the runs', step runs' and commands' UUIDs are random, as those written before
// migration 0011 made them time-ordered: the worst case for the indexes keyed by them):
// 90 % completed, 7 % failed (step c failed, d skipped), 2 % cancelled, 1 % timed out. Every
// run has 6 events (started, one per step, its end); each step that ran has its command.
// Every run's step b saw `sightings / runs` findings (one ingest per run); each finding is
// seen by the 4 runs of its block, so findings = sightings / 4, each with its
// finding.created event; 80 % open. Output: `outputBytes` in 16 KiB chunks of incompressible
// bytes (so the bytes are on disk too), 8 chunks per command, on the latest runs' commands.
import type pg from 'pg';

export type HistoryOptions = {
  runs: number;
  sightings: number;
  outputBytes: number;
  /** Tenants created for the history (besides `tenantId`). */
  tenants?: number;
  /** An existing tenant that gets `share` % of the runs. */
  tenantId?: string;
  share?: number;
  /** History spans this many days, ending at `endAt` (default: an hour ago). */
  days?: number;
  endAt?: Date;
  /** Runs per statement. */
  batch?: number;
  /** Connections filling at once (from `db` when it is a pool; default 2). */
  parallel?: number;
  progress?: (line: string) => void;
};

export type HistoryReport = {
  runs: number;
  step_runs: number;
  commands: number;
  events: number;
  findings: number;
  sightings: number;
  ingests: number;
  output_chunks: number;
  output_bytes: number;
  fill_s: number;
  analyze_s: number;
  /** Total size (heap, indexes, TOAST) of the tables history went into, in MB. */
  table_mb: Record<string, number>;
};

const CHUNK_BYTES = 16 * 1024;
const CHUNKS_PER_COMMAND = 8;
const HISTORY_TABLES = [
  'pipeline_runs', 'step_runs', 'commands', 'events', 'findings', 'finding_sightings', 'ingests',
  'command_outputs', 'command_output_chunks',
];

/** Writes the history (see the head of this file) through `db`; returns what it wrote. */
export async function fillHistory(db: pg.Pool | pg.Client, o: HistoryOptions): Promise<HistoryReport> {
  const started = performance.now();
  const progress = o.progress ?? (() => {});
  const tenants = o.tenants ?? 20;
  const share = o.tenantId ? (o.share ?? 25) : 0;
  const days = o.days ?? 25;
  const endAt = o.endAt ?? new Date(Date.now() - 3600_000);
  const batch = Math.max(4, Math.floor((o.batch ?? 10_000) / 4) * 4);
  const runs = Math.floor(o.runs / 4) * 4;
  const perRun = o.sightings <= 0 ? 0 : Math.max(1, Math.round(o.sightings / Math.max(1, runs)));
  const salt = `${Date.now()}.${Math.random()}`;
  const pool = 'totalCount' in db ? db : null;
  const client = pool ? await pool.connect() : (db as pg.Client);
  const release = () => {
    if (pool) (client as pg.PoolClient).release();
  };
  // Batches run on `parallel` connections at once (a pool's; a single client fills alone).
  const parallel = pool ? Math.max(1, o.parallel ?? 2) : 1;
  try {
    await client.query('BEGIN');
    await setUp(client, { tenants, tenantId: o.tenantId ?? null, share });
    await client.query('COMMIT');
    // The planner must know the lookup tables' sizes (empty by default: it nested-looped the
    // step join, 30 probes per step run).
    await client.query('ANALYZE hist_slot, hist_pipeline, hist_step, hist_asset, hist_agent, hist_scan, hist_shape');
    const fast = await fastFill(client, runs >= 100_000);
    if (fast.walSize) progress(`history: max_wal_size ${fast.walSize} during the fill (fewer checkpoints, fewer full-page writes), restored after`);
    progress(`history: ${runs} runs in batches of ${batch} on ${parallel} connection(s), ${perRun} sighting(s) per run, ` +
      `${o.outputBytes} bytes of output`);
    const totals = { runs: 0, step_runs: 0, commands: 0, events: 0, findings: 0, sightings: 0, ingests: 0 };
    let lastPrint = performance.now();
    let next = 0;
    let done = 0;
    let failed = false;
    const filler = async (c: pg.PoolClient | pg.Client) => {
      await fillSession(c, fast);
      while (next < runs && !failed) {
        const lo = next;
        const hi = Math.min(runs, lo + batch);
        next = hi;
        const { rows } = await c.query(FILL_RUNS, [lo, hi, runs, endAt, days, perRun, salt]);
        for (const [k, v] of Object.entries(rows[0] as Record<string, number>)) totals[k as keyof typeof totals] += Number(v);
        done += hi - lo;
        if (performance.now() - lastPrint > 10_000) {
          lastPrint = performance.now();
          progress(`history: ${done}/${runs} runs (${((performance.now() - started) / 1000).toFixed(0)} s)`);
        }
      }
    };
    const others = await Promise.all(Array.from({ length: parallel - 1 }, () => pool!.connect()));
    let output: { chunks: number; bytes: number };
    try {
      // Every filler ends before any connection goes back (a failed one stops the others
      // after their batch in flight).
      const settled = await Promise.allSettled([client, ...others].map((c) => filler(c).catch((err) => {
        failed = true;
        throw err;
      })));
      const failure = settled.find((r) => r.status === 'rejected');
      if (failure) throw failure.reason;
      output = await fillOutput(client, o.outputBytes, progress);
    } finally {
      for (const c of others) {
        await resetSession(c, fast).catch(() => {});
        c.release();
      }
      await resetSession(client, fast).catch(() => {});
      if (fast.walSize) {
        await client.query(`ALTER SYSTEM RESET max_wal_size`).catch(() => {});
        await client.query(`SELECT pg_reload_conf()`).catch(() => {});
      }
    }
    const fillS = (performance.now() - started) / 1000;
    progress(`history: written in ${fillS.toFixed(0)} s; VACUUM ANALYZE (autovacuum's steady state)`);
    const analyzeStarted = performance.now();
    await client.query(`VACUUM ANALYZE ${HISTORY_TABLES.join(', ')}`);
    const analyzeS = (performance.now() - analyzeStarted) / 1000;
    const sizes = await client.query<{ t: string; mb: number }>(
      `SELECT t, round(pg_total_relation_size(t::regclass) / 1048576.0)::int AS mb FROM unnest($1::text[]) t`, [HISTORY_TABLES]);
    return {
      ...totals,
      output_chunks: output.chunks,
      output_bytes: output.bytes,
      fill_s: Math.round(fillS),
      analyze_s: Math.round(analyzeS),
      table_mb: Object.fromEntries(sizes.rows.map((r) => [r.t, r.mb])),
    };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    await client.query('DROP TABLE IF EXISTS hist_slot, hist_pipeline, hist_step, hist_asset, hist_agent, hist_scan, hist_shape').catch(() => {});
    release();
  }
}

type Fast = { replica: boolean; walSize: string | null };

/**
 * What a bulk load may do on this server. As a superuser (the embedded PostgreSQL): skip the
 * foreign-key checks (session_replication_role = replica; every row the fill writes names
 * rows it wrote or set up, by construction), which were half of a batch's time (18 key
 * checks per run, each an index probe and a row lock); and, for a large fill, raise
 * max_wal_size while it lasts (a checkpoint every GB of WAL made each later change to a page
 * of the random-UUID indexes write the whole page again). Without the privilege the fill is slower, not different.
 */
async function fastFill(c: pg.PoolClient | pg.Client, large: boolean): Promise<Fast> {
  const { rows } = await c.query<{ su: boolean }>(`SELECT rolsuper AS su FROM pg_roles WHERE rolname = current_user`);
  if (!rows[0]?.su) return { replica: false, walSize: null };
  let walSize: string | null = null;
  const { rows: w } = await c.query<{ mb: number }>(`SELECT setting::int AS mb FROM pg_settings WHERE name = 'max_wal_size'`);
  // Only for a large fill (the bench's): it is the whole server's setting while it lasts.
  if (large && Number(w[0]?.mb) < 16384) {
    await c.query(`ALTER SYSTEM SET max_wal_size = '16GB'`);
    await c.query(`SELECT pg_reload_conf()`);
    walSize = '16GB';
  }
  return { replica: true, walSize };
}

/** A fill connection's settings: memory for a batch's sorts, and no key checks when allowed. */
async function fillSession(c: pg.PoolClient | pg.Client, fast: Fast) {
  await c.query(`SET work_mem = '256MB'`);
  if (fast.replica) await c.query(`SET session_replication_role = replica`);
}

async function resetSession(c: pg.PoolClient | pg.Client, fast: Fast) {
  await c.query(`RESET work_mem`);
  if (fast.replica) await c.query(`RESET session_replication_role`);
}

/**
 * The tenants and what runs refer to, as session tables (hist_*): slot → tenant (1,000
 * slots, by share), each tenant's pipelines (and their steps), assets, agents and scans, and
 * the shape of a run of each status.
 */
async function setUp(c: pg.PoolClient | pg.Client, o: { tenants: number; tenantId: string | null; share: number }) {
  const tag = Date.now().toString(36);
  await c.query(`
    CREATE TEMP TABLE hist_tenant ON COMMIT DROP AS
    SELECT k, id FROM (
      SELECT 0 AS k, $1::uuid AS id WHERE $1::uuid IS NOT NULL
      UNION ALL
      SELECT k, gen_random_uuid() FROM generate_series(1, $2::int) k) t`, [o.tenantId, o.tenants]);
  await c.query(`INSERT INTO tenants (id, name) SELECT id, 'history-' || $1 || '-' || k FROM hist_tenant WHERE k > 0`, [tag]);
  // 1,000 slots: the first share*10 are the given tenant's, the rest dealt round-robin.
  await c.query(`
    CREATE UNLOGGED TABLE hist_slot AS
    SELECT s AS slot,
           CASE WHEN s < $1::int * 10 AND EXISTS (SELECT 1 FROM hist_tenant WHERE k = 0) THEN 0
                ELSE 1 + (s % $2::int) END AS k
    FROM generate_series(0, 999) s`, [o.share, o.tenants]);
  await c.query(`ALTER TABLE hist_slot ADD PRIMARY KEY (slot)`);
  await c.query(`
    CREATE UNLOGGED TABLE hist_pipeline AS
    SELECT t.k, j, t.id AS tenant_id, gen_random_uuid() AS pipeline_id
    FROM hist_tenant t, generate_series(0, 2) j`);
  await c.query(`ALTER TABLE hist_pipeline ADD PRIMARY KEY (k, j)`);
  await c.query(`
    INSERT INTO pipeline_templates (id, tenant_id, name, version, settings)
    SELECT pipeline_id, tenant_id, 'history-' || $1 || '-' || j, 1, '{"max_parallel_steps": 2}' FROM hist_pipeline`, [tag]);
  await c.query(`
    INSERT INTO pipeline_versions (tenant_id, pipeline_id, version, name, settings)
    SELECT tenant_id, pipeline_id, 1, 'history-' || $1 || '-' || j, '{"max_parallel_steps": 2}' FROM hist_pipeline`, [tag]);
  await c.query(`
    CREATE UNLOGGED TABLE hist_step AS
    SELECT p.pipeline_id, s.i, s.key, s.tool, s.deps, gen_random_uuid() AS step_id
    FROM hist_pipeline p,
         (VALUES (0, 'a', 'nmap', '{}'::text[]), (1, 'b', 'semgrep', '{a}'), (2, 'c', 'secretlint', '{a}'),
                 (3, 'd', 'report', '{b,c}')) s(i, key, tool, deps)`);
  await c.query(`ALTER TABLE hist_step ADD PRIMARY KEY (pipeline_id, i)`);
  await c.query(`
    INSERT INTO pipeline_steps (id, tenant_id, pipeline_id, version, step_key, name, step_order, tool, depends_on, timeout_seconds)
    SELECT s.step_id, p.tenant_id, s.pipeline_id, 1, s.key, upper(s.key), s.i, s.tool, s.deps, 1800
    FROM hist_step s JOIN hist_pipeline p USING (pipeline_id)`);
  await c.query(`
    CREATE UNLOGGED TABLE hist_asset AS
    SELECT t.k, i, t.id AS tenant_id, gen_random_uuid() AS asset_id, 'host-' || $1 || '-' || t.k || '-' || i || '.example.com' AS value
    FROM hist_tenant t, generate_series(0, 99) i`, [tag]);
  await c.query(`ALTER TABLE hist_asset ADD PRIMARY KEY (k, i)`);
  await c.query(`
    INSERT INTO assets (id, tenant_id, type, name, value)
    SELECT asset_id, tenant_id, 'host', value, value FROM hist_asset`);
  await c.query(`
    CREATE UNLOGGED TABLE hist_agent AS
    SELECT t.k, i, t.id AS tenant_id, gen_random_uuid() AS agent_id FROM hist_tenant t, generate_series(0, 7) i`);
  await c.query(`ALTER TABLE hist_agent ADD PRIMARY KEY (k, i)`);
  await c.query(`
    INSERT INTO agents (id, tenant_id, name, api_key_hash, api_key_prefix, tools)
    SELECT agent_id, tenant_id, 'history-agent-' || i, sha256(convert_to(agent_id::text, 'UTF8')), 'sfa_hist',
           '{nmap,semgrep,secretlint,report}'
    FROM hist_agent`);
  await c.query(`
    CREATE UNLOGGED TABLE hist_scan AS
    SELECT p.k, i, p.tenant_id, gen_random_uuid() AS scan_id, p.pipeline_id
    FROM hist_pipeline p, generate_series(0, 4) i WHERE p.j = 0`);
  await c.query(`ALTER TABLE hist_scan ADD PRIMARY KEY (k, i)`);
  await c.query(`
    INSERT INTO scans (id, tenant_id, name, pipeline_id)
    SELECT scan_id, tenant_id, 'history-' || $1 || '-' || i, pipeline_id FROM hist_scan`, [tag]);
  // Per run status and step (a 0, b 1, c 2, d 3): the step's status, its command's (none:
  // it never ran) and why.
  await c.query(`
    CREATE UNLOGGED TABLE hist_shape AS
    SELECT * FROM (VALUES
      ('completed', 0, 'completed', 'completed', NULL, NULL), ('completed', 1, 'completed', 'completed', NULL, NULL),
      ('completed', 2, 'completed', 'completed', NULL, NULL), ('completed', 3, 'completed', 'completed', NULL, NULL),
      ('failed', 0, 'completed', 'completed', NULL, NULL), ('failed', 1, 'completed', 'completed', NULL, NULL),
      ('failed', 2, 'failed', 'failed', 'tool_error', NULL), ('failed', 3, 'skipped', NULL, NULL, 'upstream step c failed'),
      ('cancelled', 0, 'completed', 'completed', NULL, NULL), ('cancelled', 1, 'cancelled', 'cancelled', 'cancelled', NULL),
      ('cancelled', 2, 'cancelled', 'cancelled', 'cancelled', NULL), ('cancelled', 3, 'cancelled', NULL, NULL, NULL),
      ('timeout', 0, 'completed', 'completed', NULL, NULL), ('timeout', 1, 'timeout', 'expired', 'step_timeout', NULL),
      ('timeout', 2, 'completed', 'completed', NULL, NULL), ('timeout', 3, 'skipped', NULL, NULL, 'upstream step b timed out')
    ) s(run_status, i, step_status, command_status, error_code, skip_reason)`);
}

// One batch: runs $1 … $2 - 1 of $3, the history ending at $4 and spanning $5 days, $6
// sightings per run, $7 this fill's salt. Every table in one statement: the foreign keys between them (a step run
// names its command, the command its step run) are checked at the statement's end.
const FILL_RUNS = `
WITH r AS MATERIALIZED (
  SELECT g, gen_random_uuid() AS id, sl.k, p.tenant_id, p.pipeline_id, a.asset_id, a.value AS asset_value,
         sc.scan_id, ag.agent_id,
         CASE WHEN (g * 31) % 100 < 90 THEN 'completed' WHEN (g * 31) % 100 < 97 THEN 'failed'
              WHEN (g * 31) % 100 < 99 THEN 'cancelled' ELSE 'timeout' END AS status,
         $4::timestamptz - make_interval(days => $5::int) * (($3::bigint - g)::float8 / $3::bigint) AS created_at
  FROM generate_series($1::bigint, $2::bigint - 1) g
  JOIN hist_slot sl ON sl.slot = ((g / 4) * 7919) % 1000
  JOIN hist_pipeline p ON p.k = sl.k AND p.j = (g / 4) % 3
  JOIN hist_asset a ON a.k = sl.k AND a.i = (g / 12) % 100
  JOIN hist_agent ag ON ag.k = sl.k AND ag.i = g % 8
  LEFT JOIN hist_scan sc ON sc.k = sl.k AND sc.i = (g / 8) % 5 AND (g / 4) % 2 = 0
), s AS MATERIALIZED (
  SELECT r.*, sh.i, sh.step_status, sh.command_status, sh.error_code, sh.skip_reason, st.key AS step_key, st.tool,
         st.deps, st.step_id, gen_random_uuid() AS step_run_id,
         CASE WHEN sh.command_status IS NOT NULL THEN gen_random_uuid() END AS command_id,
         r.created_at + interval '2 seconds' + sh.i * interval '60 seconds' AS queued_at,
         r.created_at + interval '7 seconds' + sh.i * interval '60 seconds' AS step_started_at,
         r.created_at + interval '57 seconds' + sh.i * interval '60 seconds' AS step_done_at
  FROM r JOIN hist_shape sh ON sh.run_status = r.status
  JOIN hist_step st ON st.pipeline_id = r.pipeline_id AND st.i = sh.i
), runs AS (
  INSERT INTO pipeline_runs (id, tenant_id, pipeline_id, pipeline_version, asset_id, scan_id, trigger_type, triggered_by,
                             status, target, settings, total_steps, completed_steps, failed_steps, skipped_steps,
                             total_findings, new_findings, started_at, completed_at, error_message, admitted_at,
                             created_at, updated_at)
  SELECT r.id, r.tenant_id, r.pipeline_id, 1, r.asset_id, r.scan_id,
         CASE WHEN r.scan_id IS NULL THEN 'api' ELSE 'schedule' END, CASE WHEN r.scan_id IS NULL THEN 'ci' END,
         r.status, jsonb_build_object('id', r.asset_id, 'type', 'host', 'name', r.asset_value, 'value', r.asset_value),
         '{"max_parallel_steps": 2}', 4,
         CASE r.status WHEN 'completed' THEN 4 WHEN 'cancelled' THEN 1 ELSE 2 END,
         CASE WHEN r.status IN ('failed', 'timeout') THEN 1 ELSE 0 END,
         CASE WHEN r.status IN ('failed', 'timeout') THEN 1 ELSE 0 END, $6::int, CASE WHEN r.g % 4 = 0 THEN $6::int ELSE 0 END,
         r.created_at + interval '1 second', r.created_at + interval '245 seconds',
         CASE r.status WHEN 'failed' THEN 'step c failed' WHEN 'timeout' THEN 'step b timed out' END,
         r.created_at, r.created_at, r.created_at + interval '245 seconds'
  FROM r
  RETURNING 1
), steps AS (
  INSERT INTO step_runs (id, tenant_id, pipeline_run_id, step_id, step_key, name, step_order, depends_on, status, agent_id,
                         command_id, condition_evaluated, condition_result, skip_reason, findings_count, output, attempt,
                         max_attempts, queued_at, started_at, completed_at, error_code, error_message, created_at, updated_at)
  SELECT s.step_run_id, s.tenant_id, s.id, s.step_id, s.step_key, upper(s.step_key), s.i, s.deps, s.step_status,
         CASE WHEN s.command_id IS NOT NULL THEN s.agent_id END, s.command_id, s.command_id IS NOT NULL,
         CASE WHEN s.command_id IS NOT NULL THEN true END, s.skip_reason,
         CASE WHEN s.i = 1 AND s.step_status = 'completed' THEN $6::int ELSE 0 END,
         CASE WHEN s.command_status = 'completed' THEN jsonb_build_object('summary', 'ok', 'i', s.g) ELSE '{}' END,
         CASE WHEN s.command_id IS NOT NULL THEN 1 ELSE 0 END, 1,
         CASE WHEN s.command_id IS NOT NULL THEN s.queued_at END, CASE WHEN s.command_id IS NOT NULL THEN s.step_started_at END,
         s.step_done_at, s.error_code, CASE WHEN s.error_code IS NOT NULL THEN 'the tool exited 2' END,
         s.created_at, s.step_done_at
  FROM s
  RETURNING 1
), cmds AS (
  INSERT INTO commands (id, tenant_id, agent_id, pipeline_run_id, step_run_id, attempt, status, tool, timeout_seconds, payload,
                        result, error_code, error_message, claimed_at, acknowledged_at, started_at, completed_at, expires_at,
                        exit_code, duration_ms, created_at, updated_at)
  SELECT s.command_id, s.tenant_id, s.agent_id, s.id, s.step_run_id, 1, s.command_status, s.tool, 1800,
         jsonb_build_object('step_key', s.step_key, 'tool', s.tool, 'pipeline_run_id', s.id, 'attempt', 1,
                            'step_config', jsonb_build_object('args', jsonb_build_array('--quiet', '--format', 'sarif'),
                                                              'rules', 'p/default', 'timeout', '30m'),
                            'target', jsonb_build_object('id', s.asset_id, 'type', 'host', 'name', s.asset_value, 'value', s.asset_value),
                            'context', jsonb_build_object('trigger', 'schedule', 'branch', 'main')),
         CASE WHEN s.command_status = 'completed' THEN jsonb_build_object('findings_count', CASE WHEN s.i = 1 THEN $6::int ELSE 0 END,
                                                                             'summary', 'ok', 'exit_code', 0) END,
         s.error_code, CASE WHEN s.error_code IS NOT NULL THEN 'the tool exited 2' END,
         s.queued_at + interval '1 second', s.step_started_at, s.step_started_at + interval '1 second', s.step_done_at,
         s.step_started_at + interval '1800 seconds',
         CASE WHEN s.command_status = 'completed' THEN 0 WHEN s.command_status = 'failed' THEN 2 END, 50000,
         s.queued_at, s.step_done_at
  FROM s WHERE s.command_id IS NOT NULL
  RETURNING 1
), found AS MATERIALIZED (
  -- The findings of each block, one per sighting of each of its runs, made by its first run.
  -- Their ids follow from (the fill's salt $7, block, j), so a sighting names its finding
  -- without a join.
  SELECT r.g, j, md5($7 || '/' || r.g || '/' || j)::uuid AS id, r.tenant_id, r.asset_id, r.id AS run_id, r.created_at,
         (r.g * 13 + j * 7) % 300 AS rule, (r.g * 17 + j) % 100 AS pick
  FROM r, generate_series(0, $6::int - 1) j WHERE r.g % 4 = 0
), findings_in AS (
  INSERT INTO findings (id, tenant_id, asset_id, fingerprint, type, tool, rule_id, title, description, severity, status,
                        resolution, location, occurrences, first_seen_at, last_seen_at, resolved_at, first_run_id,
                        last_run_id, last_step_key, created_at, updated_at)
  SELECT f.id, f.tenant_id, f.asset_id, 'hist-' || f.g || '-' || f.j, 'vulnerability', 'semgrep', 'rule-' || f.rule,
         'Possible injection through ' || (ARRAY['query', 'path', 'header', 'template', 'command'])[1 + f.rule % 5] || ' ' || f.rule,
         'A value from the request reaches a sink without validation.',
         (ARRAY['critical', 'high', 'medium', 'medium', 'low', 'low', 'low', 'info', 'info', 'info'])[1 + f.pick % 10],
         CASE WHEN f.pick < 80 THEN 'open' WHEN f.pick < 92 THEN 'resolved' WHEN f.pick < 96 THEN 'false_positive'
              WHEN f.pick < 98 THEN 'accepted_risk' ELSE 'in_progress' END,
         CASE WHEN f.pick >= 80 AND f.pick < 92 THEN 'auto_fixed' END,
         jsonb_build_object('path', 'src/module' || (f.g % 40) || '/file' || f.rule || '.ts', 'start_line', 10 + f.pick),
         4, f.created_at + interval '100 seconds', f.created_at + interval '3 days 100 seconds',
         CASE WHEN f.pick >= 80 AND f.pick < 92 THEN f.created_at + interval '4 days' END,
         f.run_id, f.run_id, 'b', f.created_at + interval '100 seconds', f.created_at + interval '3 days 100 seconds'
  FROM found f
  RETURNING id, tenant_id, first_seen_at
), ingests_in AS (
  INSERT INTO ingests (id, tenant_id, agent_id, kind, status, tool, coverage_type, command_id, pipeline_run_id, step_run_id,
                       step_key, default_asset_id, scope_tools, scope_asset_ids, findings_created, findings_updated,
                       created_at, ingested_at)
  SELECT s.command_id, s.tenant_id, s.agent_id, 'sarif', 'ingested', 'semgrep', 'full', s.command_id, s.id, s.step_run_id,
         'b', s.asset_id, '{semgrep}', ARRAY[s.asset_id],
         CASE WHEN s.g % 4 = 0 THEN $6::int ELSE 0 END, CASE WHEN s.g % 4 = 0 THEN 0 ELSE $6::int END,
         s.step_done_at - interval '3 seconds', s.step_done_at - interval '2 seconds'
  FROM s WHERE s.i = 1
  RETURNING 1
), sightings_in AS (
  INSERT INTO finding_sightings (tenant_id, finding_id, ingest_id, pipeline_run_id, step_run_id, command_id, new, location, seen_at)
  SELECT s.tenant_id, md5($7 || '/' || (s.g - s.g % 4) || '/' || j)::uuid, s.command_id, s.id, s.step_run_id, s.command_id,
         s.g % 4 = 0,
         jsonb_build_object('path', 'src/module' || ((s.g - s.g % 4) % 40) || '/file' || ((s.g - s.g % 4) * 13 + j * 7) % 300 || '.ts',
                            'start_line', 10 + ((s.g - s.g % 4) * 17 + j) % 100),
         s.step_done_at - interval '2 seconds'
  FROM s, generate_series(0, $6::int - 1) j
  WHERE s.i = 1
  ORDER BY s.step_done_at, j
  RETURNING 1
), events_in AS (
  INSERT INTO events (tenant_id, pipeline_run_id, step_run_id, finding_id, type, data, created_at)
  SELECT tenant_id, run_id, step_run_id, finding_id, type, data, at FROM (
    SELECT r.tenant_id, r.id AS run_id, NULL::uuid AS step_run_id, NULL::uuid AS finding_id, 'pipeline.run.started' AS type,
           jsonb_build_object('pipeline_run_id', r.id, 'pipeline_id', r.pipeline_id, 'pipeline_version', 1, 'asset_id', r.asset_id,
                              'status', 'running', 'previous_status', 'pending', 'total_steps', 4, 'completed_steps', 0,
                              'failed_steps', 0, 'skipped_steps', 0, 'total_findings', 0) AS data,
           r.created_at + interval '1 second' AS at
    FROM r
    UNION ALL
    SELECT s.tenant_id, s.id, s.step_run_id, NULL, 'pipeline.step.' || s.step_status,
           jsonb_build_object('pipeline_run_id', s.id, 'step_run_id', s.step_run_id, 'step_key', s.step_key,
                              'step_name', upper(s.step_key), 'status', s.step_status, 'previous_status', 'running',
                              'attempt', 1, 'max_attempts', 1, 'agent_id', s.agent_id, 'command_id', s.command_id,
                              'findings_count', CASE WHEN s.i = 1 THEN $6::int ELSE 0 END, 'skip_reason', s.skip_reason,
                              'error_code', s.error_code, 'duration_seconds', 50),
           s.step_done_at
    FROM s
    UNION ALL
    SELECT r.tenant_id, r.id, NULL, NULL, 'pipeline.run.' || r.status,
           jsonb_build_object('pipeline_run_id', r.id, 'pipeline_id', r.pipeline_id, 'pipeline_version', 1, 'asset_id', r.asset_id,
                              'status', r.status, 'previous_status', 'running', 'total_steps', 4, 'duration_seconds', 244),
           r.created_at + interval '245 seconds'
    FROM r
    UNION ALL
    SELECT f.tenant_id, NULL, NULL, f.id, 'finding.created',
           jsonb_build_object('finding_id', f.id, 'pipeline_run_id', f.run_id, 'severity', 'medium', 'tool', 'semgrep',
                              'rule_id', 'rule-' || f.rule),
           f.created_at + interval '100 seconds'
    FROM found f
  ) e
  ORDER BY at
  RETURNING 1
)
SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM steps) AS step_runs, (SELECT count(*) FROM cmds) AS commands,
       (SELECT count(*) FROM events_in) AS events, (SELECT count(*) FROM findings_in) AS findings,
       (SELECT count(*) FROM sightings_in) AS sightings, (SELECT count(*) FROM ingests_in) AS ingests`;

/** `bytes` of output on the latest completed commands: 8 chunks of 16 KiB each, incompressible. */
async function fillOutput(c: pg.PoolClient | pg.Client, bytes: number, progress: (line: string) => void) {
  const commands = Math.ceil(bytes / (CHUNK_BYTES * CHUNKS_PER_COMMAND));
  if (commands <= 0) return { chunks: 0, bytes: 0 };
  // 64 distinct blocks of random bytes (md5 of random values), dealt to chunks in turn.
  await c.query(`
    CREATE TEMP TABLE hist_block AS
    SELECT b, decode(string_agg(md5(random()::text || b || '.' || x), '' ORDER BY x), 'hex') AS data
    FROM generate_series(0, 63) b, generate_series(1, $1::int / 16) x GROUP BY b`, [CHUNK_BYTES]);
  await c.query(`
    CREATE TEMP TABLE hist_output AS
    SELECT row_number() OVER (ORDER BY c.completed_at DESC) - 1 AS n, c.id, c.tenant_id, c.completed_at
    FROM commands c WHERE c.status = 'completed' ORDER BY c.completed_at DESC LIMIT $1`, [commands]);
  let chunks = 0;
  let written = 0;
  for (let lo = 0; lo < commands; lo += 256) {
    const { rows } = await c.query<{ chunks: number; bytes: number }>(`
      WITH o AS (
        INSERT INTO command_outputs (command_id, tenant_id, received_bytes, kept_bytes, stored_bytes, created_at, updated_at)
        SELECT id, tenant_id, $3::bigint * $4::int, $3::bigint * $4::int, $3::bigint * $4::int,
               completed_at - interval '50 seconds', completed_at
        FROM hist_output WHERE n >= $1 AND n < $2
        RETURNING command_id, tenant_id, created_at
      ), k AS (
        INSERT INTO command_output_chunks (command_id, byte_offset, tenant_id, data, created_at)
        SELECT o.command_id, i * $3::bigint, o.tenant_id, b.data, o.created_at + i * interval '5 seconds'
        FROM o, generate_series(0, $4::int - 1) i
        JOIN hist_block b ON b.b = (i * 7 + 3) % 64
        RETURNING octet_length(data) AS n
      )
      SELECT count(*)::int AS chunks, coalesce(sum(n), 0)::bigint AS bytes FROM k`,
    [lo, lo + 256, CHUNK_BYTES, CHUNKS_PER_COMMAND]);
    chunks += rows[0].chunks;
    written += Number(rows[0].bytes);
    if (lo % 2048 === 0) progress(`history: output ${(written / 1048576).toFixed(0)} MB`);
  }
  await c.query('DROP TABLE hist_block, hist_output');
  return { chunks, bytes: written };
}
