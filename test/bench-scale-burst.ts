// The bench's scale part "burst" (test/bench-scale.ts; `npm run bench -- scale-burst`): a
// nightly schedule that makes BENCH_SCHEDULE_BURST (10,000) scans of BENCH_BURST_TENANTS (10)
// tenants due at the same instant, each scan on an asset of its own. Measured with 1 and with
// 2 worker processes (ROLE=worker children of this process, WORKER_CONCURRENCY each; the list
// in BENCH_BURST_PROCESSES, default "1,2"), each round on tenants of its own in one scratch
// database: fires/s, the time from the due instant until every run exists, until every run
// is admitted (the tenants' limit is BENCH_BURST_TENANT_LIMIT, by default every scan of a
// tenant, so every run is admitted), until every admitted run started (its first command
// dispatched), per tenant; PostgreSQL's and the workers' CPU; what the backends waited on
// (pg_stat_activity sampled every 50 ms). Target: every run created within 10 s (✔/✘).
//
// Misbehaviour (a problem, not a figure): a scan fired twice or not at all, a run too many or
// missing, a fire record whose run_ids are not the scan's runs, a tenant with more admitted
// runs than its limit, a failed job.
//
// Diagnostics: BENCH_BURST_STARTED=0 stops each round at admission; BENCH_BURST_BLOCKERS=1
// prints which statement waits for which (pg_blocking_pids) when a backend waits for a lock;
// BENCH_STATEMENTS=1 preloads pg_stat_statements (embedded PostgreSQL only) and prints each
// round's costliest statements.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import type { ScaleContext } from './bench-scale.ts';
import { call } from './support/http-client.ts';
import { scratchDatabase } from './support/scratch-db.ts';
import { Misbehaviour, envInt, f1, findPostmaster, ok, postgresCpuMs, procStat, r1, r2, sleep, ticksPerSecond } from './support/measure.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const mainTs = path.join(root, 'src', 'main.ts');
const TARGET_S = 10;

type Round = {
  processes: number;
  concurrency: number;
  scans: number;
  tenants: number;
  tenant_limit: number;
  load_average_before: number[];
  /** From spawning the worker processes until every one registered (a start re-creates the views only when views.sql changed). */
  workers_registered_s: number;
  first_run_ms: number;
  /** Seen by the bench: every run exists (every 50 ms), is admitted, has started (every 500 ms). */
  all_runs_s: number;
  all_admitted_s: number;
  all_started_s: number | null;
  /** By the rows' timestamps: the last run's insert, admission (its transaction's start) and start. */
  rows_s: { last_run_created: number; last_admitted: number | null; last_started: number | null };
  fires_per_s: number;
  per_tenant: { tenant: number; runs: number; admitted: number; runs_s: number; admitted_s: number | null }[];
  cpu_s: { postgres: number | null; workers: number; wall: number };
  waits: Record<string, number>;
  lock_waits: Record<string, number>;
  statements?: { calls: number; total_ms: number; mean_ms: number; rows: number; query: string }[];
  pass: boolean;
};

export default async function run(ctx: ScaleContext): Promise<{ problems: string[]; report: Record<string, unknown> }> {
  const SCANS = envInt('BENCH_SCHEDULE_BURST', 10_000);
  const TENANTS = envInt('BENCH_BURST_TENANTS', 10);
  const PER_TENANT = Math.ceil(SCANS / TENANTS);
  const LIMIT = envInt('BENCH_BURST_TENANT_LIMIT', PER_TENANT);
  const CONCURRENCY = envInt('WORKER_CONCURRENCY', 8);
  const PROCESSES = (process.env.BENCH_BURST_PROCESSES ?? '1,2').split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 1 || n > 8) throw new Error('BENCH_BURST_PROCESSES must list whole numbers from 1 to 8, e.g. "1,2"');
    return n;
  });
  const STATEMENTS = process.env.BENCH_STATEMENTS === '1';
  // BENCH_BURST_STARTED=0: stop at admission, without waiting for every admitted run's start.
  const WAIT_STARTED = process.env.BENCH_BURST_STARTED !== '0';
  const problems: string[] = [];
  const rounds: Round[] = [];

  const cleanups: (() => Promise<void>)[] = [];
  try {
    const scratch = await scratchDatabase('scanflow_burst', { preloadStatements: STATEMENTS && !process.env.DATABASE_URL, progress: ctx.progress });
    cleanups.push(scratch.drop);
    const { startOrchestrator } = await import('../src/server.ts');
    const { loadConfig } = await import('../src/config.ts');
    const pino = (await import('pino')).default;
    const adminToken = randomBytes(24).toString('base64url');
    // The API alone here (setup over HTTP); the scheduler runs in the worker children.
    const config = loadConfig({ ...process.env, DATABASE_URL: scratch.url, PORT: '0', ADMIN_TOKEN: adminToken, LOG_LEVEL: 'warn', ROLE: 'api' });
    const orch = await startOrchestrator(config, pino({ level: 'warn' }, pino.destination(2)));
    cleanups.push(orch.stop);
    const db = createPool(scratch.url, 3);
    cleanups.push(() => db.end());
    await findPostmaster(db);
    let statementsOn = false;
    if (STATEMENTS) {
      try {
        await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
        await db.query('SELECT pg_stat_statements_reset()');
        statementsOn = true;
      } catch (err) {
        ctx.progress(`pg_stat_statements is not available: ${String(err).split('\n')[0]}`);
      }
    }

    for (const [ri, procs] of PROCESSES.entries()) {
      ctx.progress(`scale-burst: round ${ri + 1}: ${SCANS} scans of ${TENANTS} tenants, ${procs} worker process(es)`);
      // --- setup: tenants, pipelines over HTTP; assets and scans with SQL (not yet due) ---
      const tenantIds: string[] = [];
      for (let i = 0; i < TENANTS; i++) {
        const t = ok(await call<{ tenant: { id: string }; token: string }>(orch.url, 'POST', '/api/v1/tenants', {
          token: adminToken, body: { name: `burst-${ri}-${i}` },
        }), 'create tenant');
        const pipeline = ok(await call<{ id: string }>(orch.url, 'POST', '/api/v1/pipelines', {
          token: t.token, body: { name: 'nightly', steps: [{ id: 'x', tool: 'bench-unclaimed', timeout: '1h' }] },
        }), 'create pipeline');
        await db.query(`UPDATE tenants SET max_active_runs = $2 WHERE id = $1`, [t.tenant.id, LIMIT]);
        const n = Math.min(PER_TENANT, SCANS - i * PER_TENANT);
        await db.query(
          `WITH a AS (
             INSERT INTO assets (tenant_id, type, name, value, tags, criticality)
             SELECT $1, 'web_application', 'app-' || g, 'https://app-' || g || '.example.com', '{production}', 'high'
             FROM generate_series(1, $3::int) g
             RETURNING id, name
           )
           INSERT INTO scans (tenant_id, name, pipeline_id, targets, schedule_type, cron_expression, timezone, next_run_at)
           SELECT $1, 'nightly ' || a.name, $2, jsonb_build_object('asset_id', a.id), 'daily', '0 2 * * *', 'UTC', now() + interval '1 day'
           FROM a`,
          [t.tenant.id, pipeline.id, n]);
        tenantIds.push(t.tenant.id);
      }
      await db.query('VACUUM ANALYZE');

      // --- the worker processes -----------------------------------------------------------
      const children: ChildProcess[] = [];
      const stopChildren = async () => {
        await Promise.all(children.splice(0).map((c) => new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
        })));
      };
      cleanups.push(stopChildren);
      const startedAt = (await db.query<{ t: Date }>('SELECT now() AS t')).rows[0].t;
      const logs: string[][] = [];
      const spawnedAt = Date.now();
      for (let i = 0; i < procs; i++) {
        const child = spawn(process.execPath, [mainTs], {
          cwd: root,
          env: {
            PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '',
            DATABASE_URL: scratch.url, ROLE: 'worker', PORT: '0', ADMIN_TOKEN: adminToken, LOG_LEVEL: 'warn',
            WORKER_CONCURRENCY: String(CONCURRENCY),
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        // Its log (stdout) is kept to be shown if it does not come up; stderr is shown as it comes.
        const log: string[] = [];
        logs.push(log);
        child.stdout!.on('data', (d: Buffer) => {
          log.push(d.toString());
          if (log.length > 50) log.shift();
        });
        child.stderr!.on('data', (d: Buffer) => ctx.progress(`worker ${i}: ${d.toString().trim().slice(0, 500)}`));
        children.push(child);
      }
      for (const until = Date.now() + 120_000; ;) {
        const { rows } = await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM worker_processes WHERE started_at >= $1 AND stopped_at IS NULL`, [startedAt]);
        if (rows[0].n >= procs) break;
        if (children.some((c) => c.exitCode !== null)) throw new Misbehaviour('a worker process exited while starting');
        if (Date.now() > until) {
          const { rows: act } = await db.query<{ q: string }>(
            `SELECT state || ' ' || coalesce(wait_event_type || ':' || wait_event, '') || ' ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 120) AS q
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'`);
          throw new Misbehaviour(`only ${rows[0].n}/${procs} worker processes registered within 120 s; their logs:\n${logs.map((l) => l.join('')).join('\n')}\n` +
            `the database's busy connections:\n${act.map((a) => a.q).join('\n')}`);
        }
        await sleep(100);
      }
      const workersRegisteredS = r2((Date.now() - spawnedAt) / 1000);
      await sleep(1000); // the workers settle (their first polls, heartbeats)

      // --- the burst --------------------------------------------------------------------
      const loadBefore = os.loadavg().map(r2);
      if (statementsOn) await db.query('SELECT pg_stat_statements_reset()');
      const due = (await db.query<{ due: Date }>(
        `UPDATE scans SET next_run_at = date_trunc('second', now()) + interval '3 seconds'
         WHERE tenant_id = ANY ($1::uuid[]) RETURNING next_run_at AS due`, [tenantIds])).rows[0].due;
      await db.query('SELECT arm_scheduler()');
      const expectedAdmitted = tenantIds.reduce((n, _, i) => n + Math.min(LIMIT, Math.min(PER_TENANT, SCANS - i * PER_TENANT)), 0);
      while (Date.now() < due.getTime() - 100) await sleep(20);
      const pg0 = postgresCpuMs();
      const w0 = children.map((c) => cpuOfPid(c.pid));
      const t0 = Date.now();
      const waits: Record<string, number> = {};
      const locks: Record<string, number> = {};
      let samples = 0;
      // What the bench saw, by its own clock: a run exists, or is admitted, for
      // everyone once its transaction committed; the rows' timestamps are taken earlier (the
      // insert's clock, the transaction's start).
      const seen: { runs: number | null; admitted: number | null; started: number | null } = { runs: null, admitted: null, started: null };
      for (let lastCount = 0; ;) {
        const { rows: act } = await db.query<{ w: string; n: number }>(
          `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w, count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'
           GROUP BY 1`);
        samples++;
        for (const r of act) waits[r.w] = (waits[r.w] ?? 0) + r.n;
        if (act.some((r) => r.w.startsWith('Lock:'))) {
          const { rows: lk } = await db.query<{ what: string; n: number }>(
            `SELECT l.locktype || coalesce(' ' || l.mode, '') || coalesce(' ' || l.classid::regclass::text, '') ||
                    coalesce(' ' || l.relation::regclass::text, '') AS what, count(*)::int AS n
             FROM pg_locks l WHERE NOT l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                OR NOT l.granted AND l.locktype IN ('transactionid', 'advisory', 'object')
             GROUP BY 1`);
          for (const r of lk) locks[r.what] = (locks[r.what] ?? 0) + r.n;
          if (process.env.BENCH_BURST_BLOCKERS === '1') {
            const { rows: bl } = await db.query<{ waiting: string; blocker: string }>(
              `SELECT left(regexp_replace(w.query, '\\s+', ' ', 'g'), 90) AS waiting, left(regexp_replace(b.query, '\\s+', ' ', 'g'), 90) || ' [' || b.state || ']' AS blocker
               FROM pg_stat_activity w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) bp JOIN pg_stat_activity b ON b.pid = bp
               WHERE w.datname = current_database() AND w.wait_event_type = 'Lock' LIMIT 3`);
            for (const b of bl) ctx.progress(`blocked: ${b.waiting}  BY  ${b.blocker}`);
          }
        }
        // Until every scan fired: how many of the burst's scans are still due (the due index,
        // cheap), every 50 ms; a fire's runs commit with its scan's next fire. Then the runs'
        // admission and start, every 500 ms (counting 10,000 runs costs the database).
        if (seen.runs === null) {
          const { rows: [d] } = await db.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM scans WHERE status = 'active' AND next_run_at <= $1 AND tenant_id = ANY ($2::uuid[])`, [due, tenantIds]);
          if (d.n === 0) seen.runs = (Date.now() - due.getTime()) / 1000;
        } else if (Date.now() - lastCount >= 500) {
          lastCount = Date.now();
          const { rows: [c] } = await db.query<{ runs: number; admitted: number; started: number }>(
            `SELECT count(*)::int AS runs, count(admitted_at)::int AS admitted, count(*) FILTER (WHERE status = 'running')::int AS started
             FROM pipeline_runs WHERE tenant_id = ANY ($1::uuid[])`, [tenantIds]);
          const at = (Date.now() - due.getTime()) / 1000;
          if (c.runs < SCANS) throw new Misbehaviour(`burst: every scan fired, but ${c.runs}/${SCANS} runs exist`);
          if (seen.admitted === null && c.admitted >= expectedAdmitted) seen.admitted = at;
          if (seen.started === null && c.started >= expectedAdmitted) seen.started = at;
          if (seen.admitted !== null && (seen.started !== null || !WAIT_STARTED)) break;
        }
        if (Date.now() > t0 + 600_000) throw new Misbehaviour(`burst: not every run exists, is admitted and started after 10 min`);
        await sleep(50);
      }
      const wallMs = Date.now() - t0;
      const pgCpu = pg0 === null ? null : (postgresCpuMs()! - pg0) / 1000;
      const workersCpu = children.reduce((s, c, i) => s + (cpuOfPid(c.pid) - w0[i]), 0) / 1000;
      let statements: Round['statements'];
      if (statementsOn) {
        const { rows } = await db.query<{ calls: string; total: number; mean: number; rows: string; query: string }>(
          `SELECT calls, total_exec_time AS total, mean_exec_time AS mean, rows, query FROM pg_stat_statements
           WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           ORDER BY total_exec_time DESC LIMIT 15`);
        statements = rows.map((r) => ({
          calls: Number(r.calls), total_ms: r1(r.total), mean_ms: r2(r.mean), rows: Number(r.rows), query: r.query.replace(/\s+/g, ' ').slice(0, 140),
        }));
      }
      await settleJobs(db);
      await stopChildren();

      // --- what happened, from the database ------------------------------------------------
      const perTenant = (await db.query<{ tenant_id: string; runs: number; admitted: number; last_run: Date; last_admitted: Date | null; first_run: Date }>(
        `SELECT tenant_id, count(*)::int AS runs, count(admitted_at)::int AS admitted, min(created_at) AS first_run,
                max(created_at) AS last_run, max(admitted_at) AS last_admitted
         FROM pipeline_runs WHERE tenant_id = ANY ($1::uuid[]) GROUP BY tenant_id`, [tenantIds])).rows;
      const { rows: [all] } = await db.query<{ first: Date; last: Date; last_admitted: Date | null; last_started: Date | null; last_fire: Date }>(
        `SELECT min(created_at) AS first, max(created_at) AS last, max(admitted_at) AS last_admitted, max(started_at) AS last_started,
                (SELECT max(fired_at) FROM scan_fires WHERE tenant_id = ANY ($1::uuid[])) AS last_fire
         FROM pipeline_runs WHERE tenant_id = ANY ($1::uuid[])`, [tenantIds]);
      problems.push(...(await checkBurst(db, tenantIds, due, LIMIT)).map((p) => `${procs} process(es): ${p}`));
      const sec = (d: Date | null) => (d === null ? null : r2((d.getTime() - due.getTime()) / 1000));
      const allRuns = r2(seen.runs!);
      rounds.push({
        processes: procs,
        concurrency: CONCURRENCY,
        scans: SCANS,
        tenants: TENANTS,
        tenant_limit: LIMIT,
        load_average_before: loadBefore,
        workers_registered_s: workersRegisteredS,
        first_run_ms: r1(all.first.getTime() - due.getTime()),
        all_runs_s: allRuns,
        all_admitted_s: r2(seen.admitted!),
        all_started_s: seen.started === null ? null : r2(seen.started),
        rows_s: { last_run_created: sec(all.last)!, last_admitted: sec(all.last_admitted), last_started: sec(all.last_started) },
        fires_per_s: r1(SCANS / Math.max(0.001, allRuns)),
        per_tenant: tenantIds.map((id, i) => {
          const t = perTenant.find((p) => p.tenant_id === id);
          return { tenant: i, runs: t?.runs ?? 0, admitted: t?.admitted ?? 0, runs_s: t ? sec(t.last_run)! : NaN, admitted_s: t ? sec(t.last_admitted) : null };
        }),
        cpu_s: { postgres: pgCpu === null ? null : r2(pgCpu), workers: r2(workersCpu), wall: r2(wallMs / 1000) },
        waits: Object.fromEntries(Object.entries(waits).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, r2(v / samples)])),
        lock_waits: Object.fromEntries(Object.entries(locks).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, r2(v / samples)])),
        statements,
        pass: allRuns <= TARGET_S,
      });
      print(ctx.out, rounds[rounds.length - 1]);
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err) => ctx.progress(`cleanup: ${String(err)}`));
  }
  return { problems, report: { target_s: TARGET_S, rounds } };
}

/** CPU milliseconds (user + system) a process used so far; 0 when it is gone. */
function cpuOfPid(pid: number | undefined): number {
  const st = pid ? procStat(String(pid)) : null;
  if (!st) return 0;
  return ((Number(st.fields[11]) + Number(st.fields[12])) * 1000) / ticksPerSecond();
}

/** Waits until no job is due or running (the burst's admissions, advances, scheduler ticks). */
async function settleJobs(db: pg.Pool): Promise<void> {
  for (const until = Date.now() + 60_000; Date.now() < until;) {
    const { rows } = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE (run_at <= now() AND attempts < max_attempts) OR locked_at IS NOT NULL`);
    if (rows[0].n === 0) return;
    await sleep(100);
  }
}

/** Every guarantee of the burst, checked in the database; answers what broke. */
async function checkBurst(db: pg.Pool, tenantIds: string[], due: Date, limit: number): Promise<string[]> {
  const problems: string[] = [];
  const { rows: [c] } = await db.query<{ scans: number; not_once: number; runs_not_one: number; fire_mismatch: number; skipped: number; late: number }>(
    `WITH per_scan AS (
       SELECT s.id,
              (SELECT count(*) FROM scan_fires f WHERE f.scan_id = s.id) AS fires,
              (SELECT count(*) FROM scan_fires f WHERE f.scan_id = s.id AND f.trigger_type = 'schedule' AND f.due_at = $2) AS due_fires,
              (SELECT count(*) FROM pipeline_runs r WHERE r.scan_id = s.id) AS runs,
              (SELECT array_agg(r.id ORDER BY r.id) FROM pipeline_runs r WHERE r.scan_id = s.id) AS run_ids,
              (SELECT array_agg(x ORDER BY x) FROM scan_fires f, unnest(f.run_ids) x WHERE f.scan_id = s.id) AS fired_ids,
              (SELECT coalesce(sum(jsonb_array_length(f.skipped)), 0) FROM scan_fires f WHERE f.scan_id = s.id) AS skipped,
              s.next_run_at <= $2 AS late
       FROM scans s WHERE s.tenant_id = ANY ($1::uuid[]))
     SELECT count(*)::int AS scans,
            count(*) FILTER (WHERE fires <> 1 OR due_fires <> 1)::int AS not_once,
            count(*) FILTER (WHERE runs <> 1)::int AS runs_not_one,
            count(*) FILTER (WHERE run_ids IS DISTINCT FROM fired_ids)::int AS fire_mismatch,
            sum(skipped)::int AS skipped,
            count(*) FILTER (WHERE late)::int AS late
     FROM per_scan`, [tenantIds, due]);
  if (c.not_once) problems.push(`${c.not_once} of ${c.scans} scans did not fire exactly once for the due instant`);
  if (c.runs_not_one) problems.push(`${c.runs_not_one} scans have not exactly one run`);
  if (c.fire_mismatch) problems.push(`${c.fire_mismatch} scans' fire records do not list exactly their runs`);
  if (c.skipped) problems.push(`${c.skipped} targets skipped (none was in progress)`);
  if (c.late) problems.push(`${c.late} scans' next fire was not advanced past the due instant`);
  const { rows: over } = await db.query<{ tenant_id: string; n: number }>(
    `SELECT tenant_id, count(*)::int AS n FROM pipeline_runs
     WHERE tenant_id = ANY ($1::uuid[]) AND admitted_at IS NOT NULL AND status IN ('pending', 'running')
     GROUP BY tenant_id HAVING count(*) > $2`, [tenantIds, limit]);
  for (const o of over) problems.push(`tenant ${o.tenant_id} has ${o.n} admitted runs in progress, over its limit ${limit}`);
  const { rows: failed } = await db.query<{ task_identifier: string; last_error: string }>(
    `SELECT task_identifier, last_error FROM graphile_worker.jobs WHERE last_error IS NOT NULL LIMIT 3`);
  for (const f of failed) problems.push(`job ${f.task_identifier} failed: ${f.last_error.split('\n')[0]}`);
  return problems;
}

function print(out: (line?: string) => void, r: Round): void {
  const pf = (b: boolean) => (b ? '✔' : '✘');
  const s = (x: number | null) => (x === null ? 'n/a' : `${x} s`);
  out(`${r.scans} scans of ${r.tenants} tenants due at one instant; ${r.processes} worker process(es) × concurrency ${r.concurrency}; ` +
    `tenant limit ${r.tenant_limit} (load average before: ${r.load_average_before.join(', ')}); every worker process registered ${r.workers_registered_s} s after its spawn`);
  out(`   ${f1(r.fires_per_s)} fires/s; first run ${f1(r.first_run_ms)} ms after the due instant; every run exists after ${s(r.all_runs_s)}, ` +
    `is admitted after ${s(r.all_admitted_s)}, started (first command dispatched) after ${s(r.all_started_s)} (seen by the bench: runs every 50 ms, the rest every 500 ms)`);
  out(`   by the rows' timestamps: last run inserted ${s(r.rows_s.last_run_created)}, last admission's transaction began ${s(r.rows_s.last_admitted)}, ` +
    `last run started ${s(r.rows_s.last_started)} after the due instant`);
  const runsS = r.per_tenant.map((t) => t.runs_s);
  const admS = r.per_tenant.map((t) => t.admitted_s ?? NaN);
  out(`   per tenant (rows' timestamps): every run after ${f1(Math.min(...runsS))}–${f1(Math.max(...runsS))} s, admitted after ${f1(Math.min(...admS))}–${f1(Math.max(...admS))} s ` +
    `(${r.per_tenant.map((t) => `${t.runs_s}/${t.admitted_s ?? '-'}`).join(' ')})`);
  out(`   CPU: postgres ${r.cpu_s.postgres ?? 'n/a'} s, worker processes ${r.cpu_s.workers} s over ${r.cpu_s.wall} s`);
  out(`   backends (mean active, by wait): ${Object.entries(r.waits).slice(0, 6).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (Object.keys(r.lock_waits).length) out(`   lock waits (mean, by lock): ${Object.entries(r.lock_waits).slice(0, 5).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  for (const st of r.statements ?? []) {
    out(`      ${String(st.calls).padStart(7)} calls ${f1(st.total_ms).padStart(9)} ms ${st.mean_ms.toFixed(2).padStart(8)} ms/call ${String(st.rows).padStart(7)} rows  ${st.query}`);
  }
  out(`   every run within ${TARGET_S} s       ${f1(r.all_runs_s).padStart(7)} s    ${pf(r.pass)}`);
}
