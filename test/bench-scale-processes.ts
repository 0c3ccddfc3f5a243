// The bench's scale part "processes" (`npm run bench -- scale-processes`, issue 13 item 7):
// the throughput phase (test/bench.ts phase 2: the diamond pipeline, simulated agents doing
// poll → ack → start → complete, test/support/throughput.ts) with the roles split over
// several processes on one database: BENCH_API_PROCESSES (2) `ROLE=api` and
// BENCH_WORKER_PROCESSES (2) `ROLE=worker` children (`node src/main.ts`, as an operator runs
// them, with npm start's node flags), agents and triggers spread over the API processes as a
// load balancer would. Then, on the same database with the children stopped, raw
// graphile-worker jobs added one at a time (the baseline of bench.ts phase 3) for the ratio.
//
// Prints steps/s, the ratio, CPU per step of the API processes, the worker processes, the
// agents' thread and PostgreSQL, commits and job rows per step, request latencies and each
// child's RSS. Misbehaviour (a problem): a run that did not complete, a step without exactly
// one completed command, a command delivered twice, an HTTP error, a graphile-worker job
// that failed, a child that exited.
//
// Sizes (env): BENCH_RUNS (1000), BENCH_AGENTS (8), BENCH_API_PROCESSES (2),
// BENCH_WORKER_PROCESSES (2), BENCH_SINGLE_JOBS (5000), BENCH_PRODUCERS (8),
// BENCH_STALL_SECONDS (30). The children run with the default settings (WORKER_CONCURRENCY 8
// each); LOG_LEVEL (warn) reaches them, their output goes to a file in the temp directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { ScaleContext } from './bench-scale.ts';
import { call } from './support/http-client.ts';
import { freePort } from './support/ports.ts';
import { scratchDatabase } from './support/scratch-db.ts';
import {
  Misbehaviour, envInt, f1, findPostmaster, mapSummary, ok, postgresCpuMs, procStat, r1, r2, sleep, threadCpuMs, ticksPerSecond,
} from './support/measure.ts';
import {
  DIAMOND, DIAMOND_STEPS, DIAMOND_TOOLS, awaitRuns, rawJobsOneAtATime, startThroughputAgents, verifyExactlyOnce,
  type ThroughputAgentsResult,
} from './support/throughput.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const mainTs = fileURLToPath(new URL('../src/main.ts', import.meta.url));

/** node's flags for the children: those `npm start` gives (package.json), so each process runs as an operator's would. */
function startFlags(): string[] {
  const start = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  return (/^node\s+(.*?)\s*src\/main\.ts/.exec(start)?.[1] ?? '').split(/\s+/).filter(Boolean);
}

type Child = { name: string; role: 'api' | 'worker'; url: string; proc: ChildProcess; exited: boolean };

/** CPU milliseconds (user + system) of a process so far, from /proc; null once it is gone. */
function processCpuMs(pid: number): number | null {
  const st = procStat(String(pid));
  return st ? ((Number(st.fields[11]) + Number(st.fields[12])) * 1000) / ticksPerSecond() : null;
}

function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? r1(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

type Counters = { commits: number; jobsInserted: number };
async function counters(db: pg.Pool): Promise<Counters> {
  await sleep(1200); // backends report their statistics about once a second
  const { rows } = await db.query<{ commits: string; ins: string }>(`
    SELECT d.xact_commit AS commits, coalesce(t.n_tup_ins, 0) AS ins
    FROM pg_stat_database d
    LEFT JOIN pg_stat_user_tables t ON t.schemaname = 'graphile_worker' AND t.relname = '_private_jobs'
    WHERE d.datname = current_database()`);
  return { commits: Number(rows[0].commits), jobsInserted: Number(rows[0].ins) };
}

export default async function run(ctx: ScaleContext): Promise<{ problems: string[]; report: Record<string, unknown> }> {
  const { out, progress } = ctx;
  const RUNS = envInt('BENCH_RUNS', 1000);
  const AGENTS = envInt('BENCH_AGENTS', 8);
  const APIS = envInt('BENCH_API_PROCESSES', 2);
  const WORKERS = envInt('BENCH_WORKER_PROCESSES', 2);
  const SINGLE_JOBS = envInt('BENCH_SINGLE_JOBS', 5000);
  const PRODUCERS = envInt('BENCH_PRODUCERS', 8);
  const STALL_S = envInt('BENCH_STALL_SECONDS', 30);
  const problems: string[] = [];
  const report: Record<string, unknown> = {};
  const cleanups: (() => Promise<void>)[] = [];
  const children: Child[] = [];
  const loadAtStart = os.loadavg().map(r2);

  try {
    const scratch = await scratchDatabase('scanflow_procs', { progress });
    cleanups.push(scratch.drop);
    const { migrate } = await import('../src/db/migrate.ts');
    const { createPool } = await import('../src/db/pool.ts');
    await migrate(scratch.url);
    const db = createPool(scratch.url, 2);
    cleanups.push(() => db.end());
    await findPostmaster(db);

    // --- the children -----------------------------------------------------------------
    const adminToken = randomBytes(24).toString('base64url');
    const logFile = path.join(tmpdir(), `scanflow-bench-processes-${process.pid}.log`);
    const log = createWriteStream(logFile);
    cleanups.push(() => new Promise<void>((r) => log.end(r)));
    let stopping = false;
    const startChild = async (role: 'api' | 'worker', i: number): Promise<Child> => {
      const port = role === 'api' ? await freePort() : 0;
      const name = `${role}-${i}`;
      const proc = spawn(process.execPath, [...startFlags(), mainTs], {
        cwd: root,
        env: {
          PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '',
          DATABASE_URL: scratch.url, ROLE: role, PORT: String(port), ADMIN_TOKEN: adminToken, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const child: Child = { name, role, url: `http://127.0.0.1:${port}`, proc, exited: false };
      proc.stdout!.on('data', (d) => log.write(`[${name}] ${d}`));
      proc.stderr!.on('data', (d) => log.write(`[${name}] ${d}`));
      proc.on('exit', (code, signal) => {
        child.exited = true;
        if (!stopping) problems.push(`${name} exited (${signal ?? code}) during the run; see ${logFile}`);
      });
      children.push(child);
      return child;
    };
    const stopChildren = async () => {
      stopping = true;
      await Promise.all(children.map(async (c) => {
        if (c.exited) return;
        const exited = new Promise((r) => c.proc.once('exit', r));
        c.proc.kill('SIGTERM');
        const timer = setTimeout(() => c.proc.kill('SIGKILL'), 35_000);
        await exited;
        clearTimeout(timer);
      }));
    };
    cleanups.push(stopChildren);

    progress(`starting ${APIS} API and ${WORKERS} worker processes (logs in ${logFile})`);
    const apis: Child[] = [];
    for (let i = 0; i < APIS; i++) apis.push(await startChild('api', i));
    for (let i = 0; i < WORKERS; i++) await startChild('worker', i);
    const until = Date.now() + 60_000;
    for (const api of apis) {
      for (;;) {
        if (api.exited) throw new Misbehaviour(`${api.name} exited while starting; see ${logFile}`);
        if (Date.now() > until) throw new Misbehaviour(`${api.name} did not answer /healthz within 60 s; see ${logFile}`);
        const up = await call(api.url, 'GET', '/healthz').then((r) => r.status === 200, () => false);
        if (up) break;
        await sleep(100);
      }
    }
    // Each worker process registers two pools (progression and deliveries: src/worker.ts).
    for (;;) {
      const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM worker_processes WHERE stopped_at IS NULL');
      if (Number(rows[0].n) >= 2 * WORKERS) break;
      if (children.some((c) => c.exited)) throw new Misbehaviour(`a worker process exited while starting; see ${logFile}`);
      if (Date.now() > until) throw new Misbehaviour(`the worker processes did not register within 60 s (${rows[0].n} pools); see ${logFile}`);
      await sleep(100);
    }

    // --- setup over HTTP (the first API process) --------------------------------------------
    const base = apis[0].url;
    const T = ok(await call<{ token: string }>(base, 'POST', '/api/v1/tenants', { token: adminToken, body: { name: 'bench' } }), 'create tenant').token;
    const pipelineId = ok(await call<{ id: string }>(base, 'POST', '/api/v1/pipelines', { token: T, body: DIAMOND }), 'create pipeline').id;
    const agentKeys: string[] = [];
    for (let i = 0; i < AGENTS; i++) {
      agentKeys.push(ok(await call<{ api_key: string }>(base, 'POST', '/api/v1/agents', {
        token: T, body: { name: `bench-agent-${i}`, tools: DIAMOND_TOOLS, capabilities: [], max_concurrent_jobs: 20 },
      }), `create agent ${i}`).api_key);
    }

    // --- the throughput phase over the processes ---------------------------------------------
    progress(`throughput: ${RUNS} runs × ${DIAMOND_STEPS} steps, ${AGENTS} agents over ${APIS} API processes, ${WORKERS} worker processes`);
    const c0 = await counters(db);
    const cpu0 = {
      children: children.map((c) => processCpuMs(c.proc.pid!) ?? 0),
      agents: threadCpuMs().WorkerThread ?? 0,
      pg: postgresCpuMs(),
      t: Date.now(),
    };
    let t0 = 0;
    const agents = startThroughputAgents(
      { urls: apis.map((a) => a.url), tenantToken: T, pipelineId, agentKeys, runs: RUNS, triggerConcurrency: 4 },
      (m) => {
        if (m.type === 'started') t0 = m.t0;
      },
    );
    let agentsFailure: unknown = null;
    agents.result.catch((err) => {
      agentsFailure = err;
    });
    const finishedAt = await awaitRuns(db, {
      pipelineId, runs: RUNS, stallSeconds: STALL_S, what: 'processes', progress,
      failure: () => agentsFailure ?? (children.some((c) => c.exited) ? new Misbehaviour(`a process exited; see ${logFile}`) : null),
    });
    const cpuMs = {
      children: children.map((c, i) => (processCpuMs(c.proc.pid!) ?? NaN) - cpu0.children[i]),
      agents: (threadCpuMs().WorkerThread ?? 0) - cpu0.agents,
      pg: cpu0.pg === null ? null : postgresCpuMs()! - cpu0.pg,
      wallMs: Date.now() - cpu0.t,
    };
    const rss = Object.fromEntries(children.map((c) => [c.name, rssMb(c.proc.pid!)]));
    agents.worker.postMessage('stop');
    const p: ThroughputAgentsResult = await agents.result;
    const wallMs = finishedAt - t0;
    const verified = await verifyExactlyOnce(db, { pipelineId, runs: RUNS, stepsPerRun: DIAMOND_STEPS, what: 'processes', agents: p });
    problems.push(...verified.problems);
    const steps = verified.stepsCompleted;
    const failedJobs = Number((await db.query<{ n: string }>(
      `SELECT count(*) AS n FROM graphile_worker.jobs WHERE last_error IS NOT NULL`)).rows[0].n);
    if (failedJobs > 0) problems.push(`processes: ${failedJobs} graphile-worker job(s) with an error`);
    const c1 = await counters(db);
    const stepsPerSec = steps / (wallMs / 1000);
    const sumOf = (role: 'api' | 'worker') => children.reduce((s, c, i) => s + (c.role === role ? cpuMs.children[i] : 0), 0);
    const perStep = (ms: number | null) => (ms === null ? null : r2(ms / steps));
    const throughput = {
      api_processes: APIS,
      worker_processes: WORKERS,
      runs: RUNS,
      steps,
      agents: AGENTS,
      wall_s: r2(wallMs / 1000),
      trigger_s: r2((p.tTriggered - p.t0) / 1000),
      steps_per_s: r1(stepsPerSec),
      runs_per_s: r1(RUNS / (wallMs / 1000)),
      per_step: {
        http_requests: r2(p.requests / steps),
        db_commits: r2((c1.commits - c0.commits) / steps),
        job_rows_inserted: r2((c1.jobsInserted - c0.jobsInserted) / steps),
      },
      cpu_ms_per_step: {
        api_processes: perStep(sumOf('api')),
        worker_processes: perStep(sumOf('worker')),
        agents_thread: perStep(cpuMs.agents),
        postgres: perStep(cpuMs.pg),
      },
      cpu_s: {
        ...Object.fromEntries(children.map((c, i) => [c.name, r2(cpuMs.children[i] / 1000)])),
        agents_thread: r2(cpuMs.agents / 1000),
        postgres: cpuMs.pg === null ? null : r2(cpuMs.pg / 1000),
        over_wall_s: r2(cpuMs.wallMs / 1000),
      },
      rss_mb: rss,
      request_ms: Object.fromEntries(Object.entries(p.latencies).map(([k, v]) => [k, mapSummary(v)])),
    };
    report.throughput = throughput;

    // --- the baseline: raw graphile-worker jobs added one at a time, same database ----------------
    progress('stopping the processes for the raw graphile-worker baseline');
    await stopChildren();
    progress(`raw graphile-worker: ${SINGLE_JOBS} no-op jobs added one at a time by ${PRODUCERS} producers`);
    const raw = await rawJobsOneAtATime(scratch.url, { jobs: SINGLE_JOBS, producers: PRODUCERS, concurrency: 8 });
    if (raw.failed > 0) problems.push(`raw graphile-worker: ${raw.failed} no-op job(s) errored`);
    const ratio = (stepsPerSec / raw.jobsPerSec) * 100;
    report.raw_one_at_a_time = { jobs: SINGLE_JOBS, producers: PRODUCERS, concurrency: 8, wall_s: r2(raw.wallMs / 1000), jobs_per_s: r1(raw.jobsPerSec) };
    report.ratio_pct = r1(ratio);
    report.load_average_at_start = loadAtStart;
    report.targets = { throughput_ratio: { value_pct: r1(ratio), target_pct: 40, pass: ratio >= 40 } };

    // --- the report ------------------------------------------------------------------------
    const t = throughput;
    out(`load        ${loadAtStart.join(' ')} at start, ${os.loadavg().map(r2).join(' ')} now (1/5/15-min load average; other work on the machine skews every figure)`);
    out(`Throughput with ${APIS} API processes and ${WORKERS} worker processes (ROLE=api|worker, node src/main.ts) on one database, ` +
      `${AGENTS} agents spread over the API processes`);
    out(`   ${t.runs} runs × ${DIAMOND_STEPS} steps (diamond, max_parallel_steps 2): ${t.steps} steps in ${t.wall_s} s (triggering took ${t.trigger_s} s)`);
    out(`   ${f1(stepsPerSec)} steps/s, ${t.runs_per_s} runs/s`);
    out(`   per step: ${t.per_step.http_requests} HTTP requests, ${t.per_step.db_commits} DB commits, ${t.per_step.job_rows_inserted} graphile job rows inserted`);
    out(`   CPU per step: API processes ${t.cpu_ms_per_step.api_processes} ms, worker processes ${t.cpu_ms_per_step.worker_processes} ms, ` +
      `agents' thread ${t.cpu_ms_per_step.agents_thread} ms, postgres ${t.cpu_ms_per_step.postgres ?? 'n/a'} ms`);
    out(`   CPU over ${t.cpu_s.over_wall_s} s: ${children.map((c) => `${c.name} ${t.cpu_s[c.name as keyof typeof t.cpu_s]} s`).join(', ')}, ` +
      `agents ${t.cpu_s.agents_thread} s, postgres ${t.cpu_s.postgres ?? 'n/a'} s`);
    out(`   RSS at the end: ${Object.entries(rss).map(([k, v]) => `${k} ${v ?? 'n/a'} MB`).join(', ')}`);
    out('   request latency (ms)          p50     p95     p99     max        n');
    for (const [k, v] of Object.entries(t.request_ms)) {
      if (k === 'commands per poll') continue;
      out(`     ${k.padEnd(24)} ${f1(v.p50).padStart(7)} ${f1(v.p95).padStart(7)} ${f1(v.p99).padStart(7)} ${f1(v.max).padStart(7)} ${String(v.n).padStart(8)}`);
    }
    out(`   raw graphile-worker, same database, jobs added one at a time (${PRODUCERS} producers, concurrency 8): ` +
      `${SINGLE_JOBS} jobs in ${r2(raw.wallMs / 1000)} s = ${f1(raw.jobsPerSec)} jobs/s`);
    out(`   Ratio: ${f1(stepsPerSec)} steps/s ÷ ${f1(raw.jobsPerSec)} raw jobs/s = ${f1(ratio)}%   (target ≥ 40%) ${ratio >= 40 ? '✔' : '✘'}`);
    out(problems.length ? `   MISBEHAVIOUR:\n     ${problems.join('\n     ')}` : '   Behaved: every run completed, every step ran exactly once, no HTTP error, no job failed.');
  } catch (err) {
    if (!(err instanceof Misbehaviour)) throw err;
    problems.push(err.message);
    out(`   MISBEHAVIOUR: ${err.message}`);
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err) => progress(`cleanup: ${String(err)}`));
  }
  return { problems, report };
}
