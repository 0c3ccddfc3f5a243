// `npm run bench`: the real orchestrator (startOrchestrator: HTTP server, LISTEN connection,
// graphile-worker runner) on a fresh database, driven over real HTTP by simulated agents.
//
//   Phase 1  step handoff latency: agent X completes step A of a chain A → B while agent Y
//            is already long-polling (wait=30); latency = X sends complete → Y's poll
//            answers with B. Sequential samples after a warm-up; with a breakdown taken
//            from the database's own timestamps (same machine, same clock).
//   Phase 2  end-to-end throughput: many runs of a 4-step diamond pipeline, N agents with
//            every tool (poll → ack → start → complete), steps/s from the first trigger
//            until the last run completed; every step verified to run exactly once.
//   Phase 3  raw graphile-worker on the same database and concurrency with a no-op task:
//            jobs enqueued in batches before the runner starts (the maximum), and jobs
//            added one at a time while it runs. The ratio (target ≥ 40 %) is against the
//            one-at-a-time figure, the honest baseline: each step needs at least one job added
//            by the transaction that made it necessary. The batch ratio is printed beside it.
//   Phase 4  the scheduler: delay from a scan's due time to its run (a burst of due scans is
//            the scale section's part scale-burst, test/bench-scale-burst.ts).
//   Phase 5  findings ingestion (test/bench-findings.ts): a 50,000-result SARIF log ingested,
//            re-ingested and sent zstd-compressed; /ingest/check; findings list pages.
//   Phase 6  events out (test/bench-events.ts): transition → webhook delay to a receiver on
//            127.0.0.1, one at a time; deliveries/s of a burst of events.
//
// Sections: `npm run bench` runs every one; `npm run bench -- findings` (or handoff,
// throughput, scheduler, events, raw, scale, scale-history, scale-agents, scale-burst,
// scale-processes; several may be named) runs those only. The scale section
// (test/bench-scale.ts) runs last, on databases of its own. They run in the
// order handoff, throughput, scheduler, findings, events, raw (raw stops the orchestrator);
// the ratio needs throughput and raw.
//
// The simulated agents (phase 2's: test/support/throughput.ts) run in a worker thread of this process (own event loop), so the
// server's event loop only serves requests; both share the machine's CPUs with PostgreSQL.
//
// Sizes (env): BENCH_SAMPLES (300), BENCH_WARMUP (20), BENCH_RUNS (1000, 4 steps each),
// BENCH_AGENTS (8), BENCH_NOOP_JOBS (20000), BENCH_SINGLE_JOBS (5000, the one-at-a-time
// variant), BENCH_PRODUCERS (8, its concurrent adders), BENCH_PARK_MS (10),
// BENCH_STALL_SECONDS (30: phase 2 fails when no run completes for this long),
// BENCH_FINDINGS (50000 SARIF results), BENCH_CHECK_CALLS (30: /ingest/check and list pages),
// BENCH_EVENT_SAMPLES (200), BENCH_EVENT_WARMUP (20), BENCH_EVENT_BURST (2000 events).
// Diagnostics (they change what is measured; not for the headline figures):
// BENCH_STATEMENTS=1 (pg_stat_statements and backend wait states during phase 2, by execution
// time, or by calls with BENCH_STATEMENTS_ORDER=calls; and each
// ingest's costliest statements in phase 5; embedded
// PostgreSQL only unless the server preloads pg_stat_statements), BENCH_SYNCHRONOUS_COMMIT=off.
// Exit code: 0 when the system behaved (targets met or not: the figures are the result);
// 1 when it misbehaved (a run failed, a step ran twice, an HTTP error, a timeout).
import { isMainThread } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import type { Runner } from 'graphile-worker';
import { call, now } from './support/http-client.ts';
import { scratchDatabase } from './support/scratch-db.ts';
import {
  Misbehaviour, cpuLine, cpuMark, cpuReport, cpuSince, cpuThreads, envInt, f1, findPostmaster, mapSummary, ok, pct, r1, r2,
  sleep, sorted, summarize, type CpuOut, type Summary,
} from './support/measure.ts';
import { benchFindings, findingsTargets, printFindings, type FindingsReport } from './bench-findings.ts';
import { benchEvents, eventsTargets, printEvents, type EventsReport } from './bench-events.ts';
import { SCALE_PARTS, benchScale, isScaleSection, scalePartsOf } from './bench-scale.ts';
import { HANDOFF_CHAIN, HANDOFF_TOOLS, handoffReport, measureHandoff } from './support/handoff.ts';
import { DIAMOND, DIAMOND_STEPS, DIAMOND_TOOLS, awaitRuns, startThroughputAgents, verifyExactlyOnce } from './support/throughput.ts';

type DbCounters = { xact_commit: number; xact_rollback: number; jobs_ins: number; jobs_upd: number; jobs_del: number };
async function dbCounters(db: pg.Pool): Promise<DbCounters> {
  const { rows } = await db.query(`
    SELECT d.xact_commit::bigint AS xact_commit, d.xact_rollback::bigint AS xact_rollback,
           coalesce(t.n_tup_ins, 0)::bigint AS jobs_ins, coalesce(t.n_tup_upd, 0)::bigint AS jobs_upd,
           coalesce(t.n_tup_del, 0)::bigint AS jobs_del
    FROM pg_stat_database d
    LEFT JOIN pg_stat_user_tables t ON t.schemaname = 'graphile_worker' AND t.relname = '_private_jobs'
    WHERE d.datname = current_database()`);
  const r = rows[0];
  return {
    xact_commit: Number(r.xact_commit), xact_rollback: Number(r.xact_rollback),
    jobs_ins: Number(r.jobs_ins), jobs_upd: Number(r.jobs_upd), jobs_del: Number(r.jobs_del),
  };
}
function counterDelta(a: DbCounters, b: DbCounters): DbCounters {
  return {
    xact_commit: b.xact_commit - a.xact_commit, xact_rollback: b.xact_rollback - a.xact_rollback,
    jobs_ins: b.jobs_ins - a.jobs_ins, jobs_upd: b.jobs_upd - a.jobs_upd, jobs_del: b.jobs_del - a.jobs_del,
  };
}
/** Backends report their statistics about once a second when idle: give them the time. */
async function settledCounters(db: pg.Pool): Promise<DbCounters> {
  await sleep(1200);
  return dbCounters(db);
}

const out = (line = '') => process.stdout.write(line + '\n');
const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** The sections, in the order they run (raw stops the orchestrator: it comes last). */
const SECTIONS = ['handoff', 'throughput', 'scheduler', 'findings', 'events', 'raw'] as const;
type Section = (typeof SECTIONS)[number];

/** `npm run bench -- findings` (or several names): those sections; none named: every one. */
function sectionsOf(args: string[]): Set<Section> {
  const unknown = args.filter((a) => !(SECTIONS as readonly string[]).includes(a) && !isScaleSection(a));
  if (unknown.length > 0) {
    throw new Error(`no section ${unknown.join(', ')}: the sections are ${SECTIONS.join(', ')}, scale (${SCALE_PARTS.map((p) => `scale-${p}`).join(', ')})`);
  }
  const own = args.filter((a) => (SECTIONS as readonly string[]).includes(a)) as Section[];
  return new Set(args.length ? own : SECTIONS);
}

/** Every section named (none named: all of them, scale last, on databases of its own). */
async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const want = sectionsOf(args);
  const scale = scalePartsOf(args.length ? args : ['scale']);
  let code = 0;
  if (want.size > 0) code = await mainSections(want);
  if (scale.size > 0) {
    const problems = await benchScale(scale, { out, progress });
    if (problems.length > 0) {
      out(`MISBEHAVIOUR:\n   ${problems.join('\n   ')}`);
      code = Math.max(code, 1);
    }
  }
  return code;
}

async function mainSections(want: Set<Section>): Promise<number> {
  const SAMPLES = envInt('BENCH_SAMPLES', 300);
  const WARMUP = envInt('BENCH_WARMUP', 20);
  const RUNS = envInt('BENCH_RUNS', 1000);
  const AGENTS = envInt('BENCH_AGENTS', 8);
  const NOOP_JOBS = envInt('BENCH_NOOP_JOBS', 20000);
  const SINGLE_JOBS = envInt('BENCH_SINGLE_JOBS', 5000);
  const PRODUCERS = envInt('BENCH_PRODUCERS', 8);
  const PARK_MS = envInt('BENCH_PARK_MS', 10);
  const SCHED_SCANS = envInt('BENCH_SCHEDULED_SCANS', 50);
  const FINDINGS = envInt('BENCH_FINDINGS', 50_000);
  const CHECK_CALLS = envInt('BENCH_CHECK_CALLS', 30);
  const EVENT_SAMPLES = envInt('BENCH_EVENT_SAMPLES', 200);
  const EVENT_WARMUP = envInt('BENCH_EVENT_WARMUP', 20);
  const EVENT_BURST = envInt('BENCH_EVENT_BURST', 2000);
  // Diagnostic only: e.g. BENCH_SYNCHRONOUS_COMMIT=off to see how much of the time is WAL flushes.
  const SYNC_COMMIT = process.env.BENCH_SYNCHRONOUS_COMMIT;
  if (SYNC_COMMIT !== undefined && !['on', 'off', 'local', 'remote_write', 'remote_apply'].includes(SYNC_COMMIT)) {
    throw new Error('BENCH_SYNCHRONOUS_COMMIT must be on, off, local, remote_write or remote_apply');
  }
  // Diagnostic: BENCH_STATEMENTS=1 lists phase 2's costliest statements (pg_stat_statements;
  // the embedded PostgreSQL is restarted once to preload it).
  const STATEMENTS = process.env.BENCH_STATEMENTS === '1';
  const loadAtStart = os.loadavg();
  const STALL_S = envInt('BENCH_STALL_SECONDS', 30);
  const STEPS_PER_RUN = DIAMOND_STEPS;

  const { startOrchestrator } = await import('../src/server.ts');
  const { loadConfig } = await import('../src/config.ts');
  const { workerLogger, runnerSettings } = await import('../src/worker.ts');
  const { createPool } = await import('../src/db/pool.ts');
  const { run: runGraphileWorker, makeWorkerUtils } = await import('graphile-worker');
  const pino = (await import('pino')).default;
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));

  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch((err) => progress(`cleanup: ${String(err)}`));
    cleanups.length = 0;
  };

  const report: Record<string, unknown> = {};
  const problems: string[] = [];
  try {
    // --- a fresh database -------------------------------------------------------------
    const scratch = await scratchDatabase('scanflow_bench', { preloadStatements: STATEMENTS && !process.env.DATABASE_URL, progress });
    cleanups.push(scratch.drop);
    const databaseUrl = scratch.url;
    const databaseKind = scratch.kind;

    if (SYNC_COMMIT) {
      const c = new pg.Client({ connectionString: databaseUrl });
      await c.connect();
      const dbName = (await c.query<{ d: string }>('SELECT current_database() AS d')).rows[0].d;
      await c.query(`ALTER DATABASE "${dbName}" SET synchronous_commit = ${SYNC_COMMIT}`);
      await c.end();
    }

    const adminToken = randomBytes(24).toString('base64url'); // 32 characters
    const config = loadConfig({ ...process.env, DATABASE_URL: databaseUrl, PORT: '0', ADMIN_TOKEN: adminToken, LOG_LEVEL: 'warn' });
    progress('starting the orchestrator');
    const orch = await startOrchestrator(config, logger);
    let orchStopped = false;
    const stopOrch = async () => {
      if (orchStopped) return;
      orchStopped = true;
      await orch.stop();
    };
    cleanups.push(stopOrch);
    const base = orch.url;

    // The bench's own connections (verification, progress, statistics), apart from the server's.
    const db = createPool(databaseUrl, 2);
    cleanups.push(() => db.end());
    await findPostmaster(db);

    // What one small committed write costs on this machine (WAL flush), sequentially.
    await db.query('CREATE TABLE bench_commit_probe (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())');
    const commitMs: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = now();
      await db.query('INSERT INTO bench_commit_probe DEFAULT VALUES');
      commitMs.push(now() - t);
    }
    await db.query('DROP TABLE bench_commit_probe');
    const commitProbe = summarize(commitMs);

    const info = (await db.query<{ v: string; sc: string; fsync: string; sb: string }>(
      `SELECT current_setting('server_version') AS v, current_setting('synchronous_commit') AS sc,
              current_setting('fsync') AS fsync, current_setting('shared_buffers') AS sb`,
    )).rows[0];
    const cpus = os.cpus();
    const env = {
      date: new Date().toISOString(),
      cpus: cpus.length,
      cpu_model: cpus[0]?.model ?? 'unknown',
      node: process.version,
      postgres: info.v,
      synchronous_commit: info.sc,
      fsync: info.fsync,
      shared_buffers: info.sb,
      database: databaseKind,
      worker_concurrency: config.workerConcurrency,
      load_average_at_start: loadAtStart.map(r2),
      single_insert_commit_ms: { p50: r2(commitProbe.p50), p95: r2(commitProbe.p95) },
    };
    report.env = env;

    // --- setup over HTTP --------------------------------------------------------------
    const created = ok(await call<{ tenant: { id: string }; token: string }>(base, 'POST', '/api/v1/tenants', { token: adminToken, body: { name: 'bench' } }), 'create tenant');
    const T = created.token;
    const mkAgent = async (name: string, tools: string[], maxJobs: number) =>
      ok(await call<{ agent: { id: string }; api_key: string }>(base, 'POST', '/api/v1/agents', {
        token: T, body: { name, tools, capabilities: [], max_concurrent_jobs: maxJobs },
      }), `create agent ${name}`).api_key;
    const mkPipeline = async (body: unknown) =>
      ok(await call<{ id: string }>(base, 'POST', '/api/v1/pipelines', { token: T, body }), 'create pipeline').id;

    let chainId = '';
    let keyX = '';
    let keyY = '';
    if (want.has('handoff')) {
      chainId = await mkPipeline(HANDOFF_CHAIN);
      keyX = await mkAgent('bench-x', HANDOFF_TOOLS.x, 5);
      keyY = await mkAgent('bench-y', HANDOFF_TOOLS.y, 5);
    }
    let diamondId = '';
    const workerKeys: string[] = [];
    if (want.has('throughput')) {
      diamondId = await mkPipeline(DIAMOND);
      for (let i = 0; i < AGENTS; i++) {
        workerKeys.push(await mkAgent(`bench-agent-${i}`, DIAMOND_TOOLS, 20));
      }
    }
    let statementsOn = false;
    if (STATEMENTS) {
      try {
        await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
        statementsOn = true;
      } catch (err) {
        progress(`pg_stat_statements is not available: ${String(err)}`);
      }
    }

    // What each section measured, for the verdict and the report.
    let phase1: { handoff: Summary; completeRtt: Summary; seg: Record<string, number[]>; elapsedMs: number } | null = null;
    let phase2: { stepsPerSec: number; jobsInserted: number; steps: number } | null = null;
    let schedulerDelay: Summary | null = null;
    let raw: { batchRate: number; singleRate: number; singleCpu: CpuOut['per_unit_ms'] } | null = null;

    // --- phase 1: handoff latency -----------------------------------------------------
    if (want.has('handoff')) {
      progress(`phase 1: handoff latency, ${WARMUP} warm-up + ${SAMPLES} samples`);
      if (os.loadavg()[0] > 0.5) progress(`the machine is not idle (load average ${os.loadavg()[0].toFixed(2)}): figures will be skewed`);
      const p1 = await measureHandoff(db, {
        url: base, databaseUrl, tenantToken: T, pipelineId: chainId, keyX, keyY, warmup: WARMUP, samples: SAMPLES, parkMs: PARK_MS,
      });
      const { handoff, completeRtt, seg } = p1;
      problems.push(...p1.problems.map((p) => `phase 1: ${p}`));
      report.handoff_ms = handoffReport(p1, PARK_MS);
      phase1 = { handoff, completeRtt, seg, elapsedMs: p1.elapsedMs };
    }

    // --- phase 2: throughput ------------------------------------------------------------
    if (want.has('throughput')) {
      progress(`phase 2: ${RUNS} runs × ${STEPS_PER_RUN} steps, ${AGENTS} agents`);
      const statements = statementsOn;
      if (statements) await db.query('SELECT pg_stat_statements_reset()');
      const c2a = await settledCounters(db);
      const cpu2 = cpuMark();
      let t0Phase2 = 0;
      const client2 = startThroughputAgents(
        { urls: [base], tenantToken: T, pipelineId: diamondId, agentKeys: workerKeys, runs: RUNS, triggerConcurrency: 4 },
        (m) => {
          if (m.type === 'started') t0Phase2 = m.t0;
        },
      );
      let clientFailure: unknown = null;
      client2.result.catch((err) => {
        clientFailure = err;
      });
      // Diagnostic: what the server's backends are doing, sampled every 20 ms.
      const waits = new Map<string, number>();
      let waitSamples = 0;
      let sampling = statements;
      const sampler = (async () => {
        while (sampling) {
          const { rows } = await db.query<{ k: string; n: string }>(`
            SELECT a.state || ': ' || coalesce(a.wait_event_type || '/' || a.wait_event, 'on CPU')
                   || CASE WHEN l.classid = 'pg_database'::regclass AND l.objid = 0 THEN ' (the NOTIFY queue lock, taken at commit)'
                           WHEN l.locktype IS NOT NULL THEN ' (' || l.locktype || ')' ELSE '' END AS k,
                   count(*) AS n
            FROM pg_stat_activity a
            LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted AND a.wait_event_type = 'Lock'
            WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
              AND a.state <> 'idle' AND a.query NOT LIKE 'LISTEN%'
            GROUP BY 1`).catch(() => ({ rows: [] as { k: string; n: string }[] }));
          waitSamples++;
          for (const r of rows) waits.set(r.k, (waits.get(r.k) ?? 0) + Number(r.n));
          await sleep(20);
        }
      })();
      const finishedAt = await awaitRuns(db, {
        pipelineId: diamondId, runs: RUNS, stallSeconds: STALL_S, what: 'phase 2', progress, failure: () => clientFailure,
      });
      const cpuP2 = cpuSince(cpu2);
      sampling = false;
      await sampler;
      if (statements) {
        report.backend_activity = Object.fromEntries(
          [...waits].sort((a, b) => b[1] - a[1]).map(([k, n]) => [k, r2(n / waitSamples)]),
        );
      }
      client2.worker.postMessage('stop');
      const p2 = await client2.result;
      const wallMs = finishedAt - t0Phase2;
      const verified = await verifyExactlyOnce(db, { pipelineId: diamondId, runs: RUNS, stepsPerRun: STEPS_PER_RUN, what: 'phase 2', agents: p2 });
      problems.push(...verified.problems);
      const { stepsCompleted } = verified;
      const c2 = counterDelta(c2a, await settledCounters(db));
      const stepsPerSec = stepsCompleted / (wallMs / 1000);
      if (statements) {
        const { rows } = await db.query<{ query: string; calls: string; total: number; mean: number; rows: string }>(`
          SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, total_exec_time AS total, mean_exec_time AS mean, rows
          FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          ORDER BY ${process.env.BENCH_STATEMENTS_ORDER === 'calls' ? 'calls' : 'total_exec_time'} DESC LIMIT 30`);
        // Every statement executed, nested ones (functions, triggers) included: each costs
        // PostgreSQL its executor start-up (locks, catalog lookups, expressions) whatever it does.
        report.statement_calls_per_step = r2(Number((await db.query<{ n: string }>(`
          SELECT coalesce(sum(calls), 0) AS n FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)).rows[0].n) / stepsCompleted);
        report.statements = rows.map((r) => ({
          query: r.query.slice(0, 160), calls: Number(r.calls), total_ms: r1(r.total), mean_ms: r2(r.mean),
          ms_per_step: r2(r.total / stepsCompleted), rows: Number(r.rows),
        }));
      }
      report.throughput = {
        runs: RUNS,
        steps: stepsCompleted,
        agents: AGENTS,
        wall_s: r2(wallMs / 1000),
        trigger_s: r2((p2.tTriggered - p2.t0) / 1000),
        steps_per_s: r1(stepsPerSec),
        runs_per_s: r1(RUNS / (wallMs / 1000)),
        http_requests: p2.requests,
        request_ms: Object.fromEntries(Object.entries(p2.latencies).map(([k, v]) => [k, mapSummary(v)])),
        per_step: {
          db_commits: r2(c2.xact_commit / stepsCompleted),
          db_rollbacks: r2(c2.xact_rollback / stepsCompleted),
          job_rows_inserted: r2(c2.jobs_ins / stepsCompleted),
          job_rows_updated: r2(c2.jobs_upd / stepsCompleted),
          job_rows_deleted: r2(c2.jobs_del / stepsCompleted),
          http_requests: r2(p2.requests / stepsCompleted),
        },
        cpu: { ...cpuReport(cpuP2, stepsCompleted), agents_event_loop_busy_s: r2(p2.clientBusyMs / 1000) },
      };
      phase2 = { stepsPerSec, jobsInserted: c2.jobs_ins, steps: stepsCompleted };
    }

    // --- phase 4: the scheduler ------------------------------------------------------------
    if (want.has('scheduler')) {
      // The delay: scans created over HTTP, each due at its own instant a few seconds ahead;
      // the delay of a fire is its run's creation (the fire transaction's clock) minus the due
      // time. (A burst of due scans is the scale section's part: test/bench-scale-burst.ts.)
      const schedPipelineId = await mkPipeline({ name: 'bench-scheduled', steps: [{ id: 'x', tool: 'bench-unclaimed' }] });
      const dueBase = Date.now() + 3000;
      progress(`phase 4: ${SCHED_SCANS} scans due one by one, 100 ms apart`);
      const delayScanIds: string[] = [];
      for (let i = 0; i < SCHED_SCANS; i++) {
        delayScanIds.push(ok(await call<{ id: string }>(base, 'POST', '/api/v1/scans', {
          token: T,
          body: {
            name: `bench-delay-${i}`, pipeline_id: schedPipelineId, schedule_type: 'cron', cron_expression: '0 0 1 1 *',
            next_run_at: new Date(dueBase + i * 100).toISOString(),
          },
        }), 'create scan').id);
      }
      const delayDeadline = dueBase + SCHED_SCANS * 100 + 15_000;
      let delays: number[] = [];
      for (;;) {
        const { rows } = await db.query<{ ms: number }>(
          `SELECT extract(epoch FROM r.created_at - f.due_at) * 1000 AS ms
           FROM scan_fires f JOIN pipeline_runs r ON r.id = f.run_ids[1]
           WHERE f.scan_id = ANY ($1::uuid[]) AND f.trigger_type = 'schedule'`, [delayScanIds]);
        delays = rows.map((r) => Number(r.ms));
        if (delays.length >= SCHED_SCANS) break;
        if (Date.now() > delayDeadline) throw new Misbehaviour(`scheduler: ${delays.length}/${SCHED_SCANS} scans fired in time`);
        await sleep(100);
      }
      const schedDelay = summarize(delays);

      report.scheduler = { delay_ms: mapSummary(schedDelay) };
      schedulerDelay = schedDelay;
    }

    // --- phase 5: findings ingestion (test/bench-findings.ts) ---------------------------------
    if (want.has('findings')) {
      report.findings = await benchFindings({
        base, adminToken, db, statements: statementsOn, results: FINDINGS, checkCalls: CHECK_CALLS, progress,
      });
      // What the ingests left to vacuum and write out should not land on the raw phase's clock.
      if (want.has('raw')) {
        progress('vacuuming the findings tables and checkpointing before the raw phase');
        await db.query('VACUUM ANALYZE findings, finding_sightings, events, ingests');
        await db.query('CHECKPOINT').catch(() => {}); // needs pg_checkpoint on a shared server
      }
    }


    // --- phase 6: events out (test/bench-events.ts) -------------------------------------------
    if (want.has('events')) {
      report.events = await benchEvents({
        base, adminToken, db, samples: EVENT_SAMPLES, warmup: EVENT_WARMUP, burst: EVENT_BURST,
        concurrency: config.orchestration.delivery.concurrency, progress,
      });
    }

    // --- phase 3: raw graphile-worker on the same database --------------------------------
    if (want.has('raw')) {
      progress('stopping the orchestrator (API, LISTEN connection, worker) for the raw graphile-worker phase');
      await stopOrch();
      const otherJobs = Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM graphile_worker.jobs`)).rows[0].n);
      const concurrency = config.workerConcurrency;
      const gwLogger = workerLogger(logger.child({ component: 'bench-worker' }));
      const gwPool = createPool(databaseUrl, concurrency + 2);
      cleanups.push(() => gwPool.end());
      const utils = await makeWorkerUtils({ pgPool: gwPool, logger: gwLogger });
      cleanups.push(async () => { await utils.release(); });

      let succeeded = 0;
      let failedJobs = 0;
      let target = 0;
      let onTarget: (() => void) | null = null;
      const startRaw = async (): Promise<Runner> => {
        const runner = await runGraphileWorker({
          ...runnerSettings(concurrency), // exactly the orchestrator's worker settings
          pgPool: gwPool,
          logger: gwLogger,
          taskList: { bench_noop: async () => {} },
        });
        runner.events.on('job:success', ({ job }) => {
          if (job.task_identifier !== 'bench_noop') return;
          succeeded++;
          if (succeeded >= target && onTarget) onTarget();
        });
        runner.events.on('job:error', () => {
          failedJobs++;
        });
        return runner;
      };
      const waitFor = (n: number, timeoutMs: number) =>
        new Promise<void>((resolve, reject) => {
          target = n;
          if (succeeded >= n) return resolve();
          const timer = setTimeout(() => reject(new Misbehaviour(`raw graphile-worker: ${succeeded}/${n} no-op jobs done after ${timeoutMs / 1000} s`)), timeoutMs);
          onTarget = () => {
            clearTimeout(timer);
            onTarget = null;
            resolve();
          };
        });

      // 3a: batch-enqueued before the runner starts: the runner's maximum rate.
      progress(`phase 3a: ${NOOP_JOBS} no-op jobs, batch-enqueued, concurrency ${concurrency}`);
      for (let i = 0; i < NOOP_JOBS; i += 1000) {
        const specs = Array.from({ length: Math.min(1000, NOOP_JOBS - i) }, () => ({ identifier: 'bench_noop', payload: {} }));
        await utils.addJobs(specs);
      }
      const c3a0 = await settledCounters(db);
      const cpu3a = cpuMark();
      const t3a = now();
      const runner = await startRaw();
      let runnerStopped = false;
      const stopRunner = async () => {
        if (runnerStopped) return;
        runnerStopped = true;
        await runner.stop();
      };
      cleanups.push(stopRunner);
      await waitFor(NOOP_JOBS, 600_000);
      const batchMs = now() - t3a;
      const cpuP3a = cpuSince(cpu3a);
      const c3a = counterDelta(c3a0, await settledCounters(db));
      const batchRate = NOOP_JOBS / (batchMs / 1000);

      // 3b: added one at a time (one transaction each, with a job key, like our add_job calls)
      // by concurrent producers while the runner works.
      const singleJobs = SINGLE_JOBS;
      progress(`phase 3b: ${singleJobs} no-op jobs added one at a time by ${PRODUCERS} producers while the runner works`);
      succeeded = 0;
      const prodPool = createPool(databaseUrl, PRODUCERS);
      cleanups.push(() => prodPool.end());
      await Promise.all(Array.from({ length: PRODUCERS }, () => prodPool.query('SELECT 1')));
      const cpu3b = cpuMark();
      const t3b = now();
      let nextJob = 0;
      const producer = async () => {
        while (nextJob < singleJobs) {
          const i = nextJob++;
          await prodPool.query(`SELECT graphile_worker.add_job('bench_noop', '{}'::json, job_key => $1)`, [`bench_noop:${i}`]);
        }
      };
      const done3b = waitFor(singleJobs, 600_000);
      await Promise.all(Array.from({ length: PRODUCERS }, producer));
      const enqueuedMs = now() - t3b;
      await done3b;
      const singleMs = now() - t3b;
      const cpuP3b = cpuSince(cpu3b);
      const singleRate = singleJobs / (singleMs / 1000);
      if (failedJobs > 0) problems.push(`raw graphile-worker: ${failedJobs} no-op job(s) errored`);
      await stopRunner();

      report.raw_worker = {
        concurrency,
        other_jobs_in_queue: otherJobs,
        batch: {
          jobs: NOOP_JOBS,
          wall_s: r2(batchMs / 1000),
          jobs_per_s: r1(batchRate),
          db_commits_per_job: r2(c3a.xact_commit / NOOP_JOBS),
          cpu: cpuReport(cpuP3a, NOOP_JOBS),
        },
        one_at_a_time: {
          jobs: singleJobs,
          producers: PRODUCERS,
          wall_s: r2(singleMs / 1000),
          enqueue_s: r2(enqueuedMs / 1000),
          jobs_per_s: r1(singleRate),
          cpu: cpuReport(cpuP3b, singleJobs),
        },
      };
      raw = { batchRate, singleRate, singleCpu: cpuReport(cpuP3b, singleJobs).per_unit_ms };
    }

    // --- verdict ----------------------------------------------------------------------------
    const targets: Targets = {};
    if (phase1) {
      const { handoff } = phase1;
      targets.handoff_p50 = { value_ms: r2(handoff.p50), target_ms: 20, pass: handoff.p50 <= 20 };
      targets.handoff_p99 = { value_ms: r2(handoff.p99), target_ms: 100, pass: handoff.p99 <= 100 };
    }
    let ratio = NaN;
    if (phase2 && raw) {
      const { stepsPerSec } = phase2;
      ratio = (stepsPerSec / raw.singleRate) * 100;
      targets.throughput_ratio = { value_pct: r1(ratio), target_pct: 40, pass: ratio >= 40 };
      report.ratio_pct = r1(ratio);
      report.ratio_pct_vs_batch = r1((stepsPerSec / raw.batchRate) * 100);
      // What graphile-worker's own cost per job allows: a step needs its jobs added one at a
      // time by the transactions that made them necessary, so each costs what a job of the
      // one-at-a-time variant cost (Node + PostgreSQL CPU); with nothing else costing anything,
      // the machine's CPUs could run at most this many steps per second.
      const single = raw.singleCpu;
      const jobsPerStep = r2(phase2.jobsInserted / phase2.steps);
      if (single.postgres !== null && jobsPerStep > 0) {
        const cpuPerStepMs = jobsPerStep * (single.node + single.postgres);
        const ceiling = (os.cpus().length * 1000) / cpuPerStepMs;
        report.job_cost_ceiling = {
          jobs_per_step: jobsPerStep,
          cpu_ms_per_job: r2(single.node + single.postgres),
          steps_per_s: r1(ceiling),
          pct_of_one_at_a_time: r1((ceiling / raw.singleRate) * 100),
        };
      }
    }
    if (schedulerDelay) {
      targets.scheduler_delay_p50 = { value_ms: r2(schedulerDelay.p50), target_ms: 100, pass: schedulerDelay.p50 <= 100 };
      targets.scheduler_delay_p99 = { value_ms: r2(schedulerDelay.p99), target_ms: 100, pass: schedulerDelay.p99 <= 100 };
    }
    if (report.findings) Object.assign(targets, findingsTargets(report.findings as FindingsReport));
    if (report.events) Object.assign(targets, eventsTargets(report.events as EventsReport));
    report.targets = targets;
    report.problems = problems;

    printReport(report, { phase1, stepsPerSec: phase2?.stepsPerSec ?? NaN, batchRate: raw?.batchRate ?? NaN, singleRate: raw?.singleRate ?? NaN, ratio, targets });
    return problems.length ? 1 : 0;
  } catch (err) {
    if (err instanceof Misbehaviour) {
      problems.push(err.message);
      out(`MISBEHAVIOUR: ${err.message}`);
      report.problems = problems;
      out(JSON.stringify({ bench: 'scanflow', ...report }));
      return 1;
    }
    throw err;
  } finally {
    progress('cleaning up');
    await cleanup();
  }
}

type Targets = Record<string, { pass: boolean; value_ms?: number; target_ms?: number; value_pct?: number; target_pct?: number; [figure: string]: number | boolean | undefined }>;

function printReport(
  report: Record<string, any>,
  x: {
    phase1: { handoff: Summary; completeRtt: Summary; seg: Record<string, number[]>; elapsedMs: number } | null;
    stepsPerSec: number; batchRate: number; singleRate: number; ratio: number; targets: Targets;
  },
) {
  const e = report.env;
  const t = report.throughput;
  const raw = report.raw_worker;
  const pf = (b: boolean) => (b ? '✔' : '✘');
  out('');
  out('scanflow benchmark');
  out('==================');
  out(`date        ${e.date}`);
  out(`machine     ${e.cpus} CPUs, ${e.cpu_model}`);
  out(`node        ${e.node}`);
  out(`postgres    ${e.postgres} (${e.database}; synchronous_commit=${e.synchronous_commit}, fsync=${e.fsync}, shared_buffers=${e.shared_buffers})`);
  out(`worker      graphile-worker concurrency ${e.worker_concurrency}`);
  out(`load        ${e.load_average_at_start.join(' ')} (1/5/15-min load average at start; other work on the machine skews every figure)`);
  out(`commit      one-row INSERT round trip with commit: p50 ${e.single_insert_commit_ms.p50} ms, p95 ${e.single_insert_commit_ms.p95} ms`);
  out('');
  const p1 = x.phase1;
  if (p1) {
    out(`1. Step handoff latency (X completes A → long-polling Y receives B), ${p1.handoff.n} samples, ${(p1.elapsedMs / 1000).toFixed(1)} s`);
    out(`   p50 ${f1(p1.handoff.p50)} ms   p95 ${f1(p1.handoff.p95)} ms   p99 ${f1(p1.handoff.p99)} ms   max ${f1(p1.handoff.max)} ms   (mean ${f1(p1.handoff.mean)})`);
    out(`   X's complete request: p50 ${f1(p1.completeRtt.p50)} ms, p99 ${f1(p1.completeRtt.p99)} ms; ` +
      `Y parks ${report.handoff_ms.park_ms} ms in its poll before X completes (an empty poll answers in p95 ${f1(report.handoff_ms.empty_poll_ms.p95)} ms)`);
    out('   where the time goes (database timestamps; each is the start of a transaction):      p50      p95');
    const segLine = (label: string, a: number[]) =>
      out(`     ${label.padEnd(78)} ${f1(pct(sorted(a), 50)).padStart(6)}   ${f1(pct(sorted(a), 95)).padStart(6)}`);
    segLine('complete sent → its transaction begins (HTTP, auth, pool)', p1.seg.toFinishTx);
    segLine('complete tx begins → run_advance tx begins (commit, worker NOTIFY, job fetch)', p1.seg.toAdvanceTx);
    segLine('run_advance tx begins → Y\'s claim tx begins (advance, commit, NOTIFY, wake)', p1.seg.toClaimTx);
    segLine('claim tx begins → Y has the response (claim, commit, HTTP)', p1.seg.toResponse);
    out('');
  }
  if (t) {
    out(`2. End-to-end throughput: ${t.runs} runs × 4 steps (diamond, max_parallel_steps 2), ${t.agents} agents`);
    out(`   ${t.steps} steps in ${t.wall_s} s (first trigger → last run completed; triggering took ${t.trigger_s} s)`);
    out(`   ${f1(x.stepsPerSec)} steps/s, ${t.runs_per_s} runs/s`);
    out(`   per step: ${t.per_step.http_requests} HTTP requests, ${t.per_step.db_commits} DB commits, ` +
      `${t.per_step.job_rows_inserted}/${t.per_step.job_rows_updated}/${t.per_step.job_rows_deleted} graphile job rows inserted/updated/deleted`);
    out(`   CPU per step: ${cpuLine(t.cpu)}`);
    out(`   CPU over ${t.cpu.wall_s} s: ${cpuThreads(t.cpu)}; server event loop busy ${t.cpu.server_event_loop_busy_s} s, agents event loop busy ${t.cpu.agents_event_loop_busy_s} s`);
    out('   request latency (ms)          p50     p95     p99     max        n');
    for (const [k, v] of Object.entries(t.request_ms as Record<string, ReturnType<typeof mapSummary>>)) {
      if (k === 'commands per poll') continue;
      out(`     ${k.padEnd(24)} ${f1(v.p50).padStart(7)} ${f1(v.p95).padStart(7)} ${f1(v.p99).padStart(7)} ${f1(v.max).padStart(7)} ${String(v.n).padStart(8)}`);
    }
    const cpp = t.request_ms['commands per poll'];
    if (cpp) out(`     commands per poll: mean ${f1(cpp.mean)}, p50 ${cpp.p50}, max ${cpp.max}`);
    if (report.backend_activity) {
      out('   server backends by state, average number at any moment (pg_stat_activity sampled every 20 ms):');
      for (const [k, n] of Object.entries(report.backend_activity as Record<string, number>)) out(`     ${String(n).padStart(6)}  ${k}`);
    }
    if (report.statements) {
      out(`   statements executed per step (pg_stat_statements calls, nested ones included): ${report.statement_calls_per_step}`);
      out(`   ${process.env.BENCH_STATEMENTS_ORDER === 'calls' ? 'most executed' : 'costliest'} statements during phase 2 (pg_stat_statements, execution time):`);
      out('        total ms   ms/step     calls  mean ms  statement');
      for (const q of report.statements as { query: string; calls: number; total_ms: number; mean_ms: number; ms_per_step: number }[]) {
        out(`     ${f1(q.total_ms).padStart(10)} ${q.ms_per_step.toFixed(2).padStart(9)} ${String(q.calls).padStart(9)} ${q.mean_ms.toFixed(2).padStart(8)}  ${q.query.slice(0, 110)}`);
      }
    }
    out('');
  }
  if (raw) {
    out(`3. Raw graphile-worker, same database, concurrency ${raw.concurrency}, no-op task (orchestrator stopped; ${raw.other_jobs_in_queue} other jobs queued)`);
    out(`   batch-enqueued before start: ${raw.batch.jobs} jobs in ${raw.batch.wall_s} s = ${f1(x.batchRate)} jobs/s ` +
      `(${raw.batch.db_commits_per_job} DB commits per job)`);
    out(`      CPU per job: ${cpuLine(raw.batch.cpu)}`);
    out(`   added one at a time (${raw.one_at_a_time.producers} producers): ${raw.one_at_a_time.jobs} jobs in ${raw.one_at_a_time.wall_s} s = ${f1(x.singleRate)} jobs/s ` +
      `(enqueueing took ${raw.one_at_a_time.enqueue_s} s)`);
    out(`      CPU per job: ${cpuLine(raw.one_at_a_time.cpu)}`);
    out('');
  }
  if (t && raw) {
    out(`Ratio: ${f1(x.stepsPerSec)} steps/s ÷ ${f1(x.singleRate)} raw jobs/s added one at a time = ${f1(x.ratio)}%`);
    out(`   (each step needs at least one job added by the transaction that made it necessary, as each of those jobs is; ` +
      `against the batch-enqueued figure: ${report.ratio_pct_vs_batch}%)`);
    const ceil = report.job_cost_ceiling as { jobs_per_step: number; cpu_ms_per_job: number; steps_per_s: number; pct_of_one_at_a_time: number } | undefined;
    if (ceil) {
      out(`   ceiling set by graphile-worker's own job cost: ${ceil.jobs_per_step} jobs/step × ${ceil.cpu_ms_per_job} ms CPU per job ` +
        `added one at a time = at most ${f1(ceil.steps_per_s)} steps/s on ${os.cpus().length} CPUs even if nothing else cost anything ` +
        `(${f1(ceil.pct_of_one_at_a_time)}% of the one-at-a-time figure)`);
    }
  }
  const sc = report.scheduler;
  if (sc) {
    out(`4. Scheduler: scans due one by one (${sc.delay_ms.n}), delay from due time to run creation`);
    out(`   p50 ${f1(sc.delay_ms.p50)} ms   p95 ${f1(sc.delay_ms.p95)} ms   p99 ${f1(sc.delay_ms.p99)} ms   max ${f1(sc.delay_ms.max)} ms`);
    out('   (a burst of due scans: npm run bench -- scale-burst)');
    out('');
  }
  if (report.findings) {
    printFindings(report.findings as FindingsReport, out);
    out('');
  }
  if (report.events) {
    printEvents(report.events as EventsReport, out);
    out('');
  }
  out('Targets');
  const tg = x.targets;
  if (tg.handoff_p50) {
    out(`   handoff p50 ≤ 20 ms     ${f1(tg.handoff_p50.value_ms ?? NaN).padStart(7)} ms   ${pf(tg.handoff_p50.pass)}`);
    out(`   handoff p99 ≤ 100 ms    ${f1(tg.handoff_p99.value_ms ?? NaN).padStart(7)} ms   ${pf(tg.handoff_p99.pass)}`);
  }
  if (tg.throughput_ratio) out(`   steps/s ≥ 40% of raw jobs/s one at a time ${f1(x.ratio).padStart(7)} %    ${pf(tg.throughput_ratio.pass)}`);
  if (tg.scheduler_delay_p50) {
    out(`   scheduler p50 ≤ 100 ms  ${f1(tg.scheduler_delay_p50.value_ms ?? NaN).padStart(7)} ms   ${pf(tg.scheduler_delay_p50.pass)}`);
    out(`   scheduler p99 ≤ 100 ms  ${f1(tg.scheduler_delay_p99.value_ms ?? NaN).padStart(7)} ms   ${pf(tg.scheduler_delay_p99.pass)}`);
  }
  if (tg.findings_first_ingest) {
    out(`   findings ingest ≥ 5,000/s  ${String(tg.findings_first_ingest.value_per_s).padStart(7)}/s   ${pf(tg.findings_first_ingest.pass)}`);
    out(`   findings re-ingest ≥ 5,000/s ${String(tg.findings_reingest.value_per_s).padStart(5)}/s   ${pf(tg.findings_reingest.pass)}`);
    out(`   ingest RSS growth ≤ 200 MB ${f1(Number(tg.findings_rss_growth.value_mb)).padStart(7)} MB  ${pf(tg.findings_rss_growth.pass)}`);
    out(`   /ingest/check p50 ≤ 100 ms ${f1(tg.findings_check_p50.value_ms ?? NaN).padStart(7)} ms  ${pf(tg.findings_check_p50.pass)}`);
  }
  if (tg.events_delay_p50) {
    out(`   webhook delay p50 ≤ 50 ms ${f1(tg.events_delay_p50.value_ms ?? NaN).padStart(7)} ms  ${pf(tg.events_delay_p50.pass)}`);
  }
  out('');
  const problems = report.problems as string[];
  out(problems.length ? `MISBEHAVIOUR:\n   ${problems.join('\n   ')}` : 'System behaved: every run completed, every step ran exactly once, every ingest stored what it was sent, no HTTP errors.');
  out(JSON.stringify({ bench: 'scanflow', ...report }));
}

if (isMainThread) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(2);
    },
  );
}
