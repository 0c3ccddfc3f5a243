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
//            added one at a time while it runs. The ratio uses the batch (higher) figure.
//
// The simulated agents run in a worker thread of this process (own event loop), so the
// server's event loop only serves requests; both share the machine's CPUs with PostgreSQL.
//
// Sizes (env): BENCH_SAMPLES (300), BENCH_WARMUP (20), BENCH_RUNS (1000, 4 steps each),
// BENCH_AGENTS (8), BENCH_NOOP_JOBS (20000), BENCH_SINGLE_JOBS (5000, the one-at-a-time
// variant), BENCH_PRODUCERS (8, its concurrent adders), BENCH_PARK_MS (10),
// BENCH_STALL_SECONDS (30: phase 2 fails when no run completes for this long).
// Diagnostics (they change what is measured; not for the headline figures):
// BENCH_STATEMENTS=1 (pg_stat_statements and backend wait states during phase 2; embedded
// PostgreSQL only unless the server preloads pg_stat_statements), BENCH_SYNCHRONOUS_COMMIT=off.
// Exit code: 0 when the system behaved (targets met or not: the figures are the result);
// 1 when it misbehaved (a run failed, a step ran twice, an HTTP error, a timeout).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import http from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { Runner } from 'graphile-worker';
import { freePort } from './support/ports.ts';

// ---------------------------------------------------------------------------------------
// Shared helpers (main thread and client thread)

/** Wall-clock milliseconds with sub-millisecond resolution (comparable with PostgreSQL now()). */
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class Misbehaviour extends Error {}

type Res<T = any> = { status: number; body: T; ms: number };
type CallOptions = { token?: string; apiKey?: string; body?: unknown; signal?: AbortSignal };

// Simulated agents use node:http with a keep-alive agent: real HTTP over loopback, but a
// lighter client than fetch, so less of the shared 2 cores goes to the simulation.
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 256 });

async function call<T = any>(base: string, method: string, p: string, o: CallOptions = {}): Promise<Res<T>> {
  const headers: Record<string, string> = {};
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.apiKey) headers['x-api-key'] = o.apiKey;
  let body: string | undefined;
  if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  const t = now();
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(base + p, { method, headers, agent: keepAlive, signal: o.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status, body: parsed as T, ms: now() - t };
}

function ok<T>(res: Res<T>, what: string): T {
  if (res.status < 200 || res.status > 299) {
    throw new Misbehaviour(`${what}: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  }
  return res.body;
}

/** Nearest-rank percentile of an ascending-sorted array. */
function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

type Summary = { n: number; p50: number; p95: number; p99: number; max: number; mean: number };
function summarize(values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return { n: s.length, p50: pct(s, 50), p95: pct(s, 95), p99: pct(s, 99), max: s[s.length - 1] ?? NaN, mean };
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');

type Command = { id: string; payload: { pipeline_run_id: string; step_key: string } };

async function poll(base: string, apiKey: string, limit: number, wait: number, signal?: AbortSignal): Promise<Res<{ commands: Command[] }>> {
  return call<{ commands: Command[] }>(base, 'GET', `/api/v1/agent/commands?limit=${limit}&wait=${wait}`, { apiKey, signal });
}

// ---------------------------------------------------------------------------------------
// Client thread: the simulated agents

type Phase1Data = {
  phase: 1;
  url: string;
  databaseUrl: string;
  tenantToken: string;
  pipelineId: string;
  keyX: string;
  keyY: string;
  warmup: number;
  samples: number;
  parkMs: number;
};
type Phase1Sample = { runId: string; t0: number; t1: number; completeMs: number };
type Phase1Result = { samples: Phase1Sample[]; elapsedMs: number; emptyPollMs: Summary };

type Phase2Data = {
  phase: 2;
  url: string;
  tenantToken: string;
  pipelineId: string;
  agentKeys: string[];
  runs: number;
  triggerConcurrency: number;
};
type Phase2Result = {
  t0: number;
  tTriggered: number;
  latencies: Record<string, Summary>;
  commandsReceived: number;
  commandsCompleted: number;
  duplicates: number;
  errors: string[];
  errorCount: number;
  requests: number;
  clientBusyMs: number;
  clientElapsedMs: number;
};

async function clientPhase1(d: Phase1Data): Promise<Phase1Result> {
  const db = new pg.Client({ connectionString: d.databaseUrl });
  await db.connect();
  const samples: Phase1Sample[] = [];
  const started = now();
  // How long an empty poll takes to answer (wait=0): Y's park time must exceed it, so that Y
  // is inside its wait (subscribed, first claim done) when X completes A.
  const emptyPolls: number[] = [];
  try {
    for (let i = 0; i < 30; i++) {
      const r = await poll(d.url, d.keyY, 1, 0);
      if (ok(r, 'Y empty poll').commands.length) throw new Misbehaviour('Y got a command before any run existed');
      emptyPolls.push(r.ms);
    }
    for (let i = 0; i < d.warmup + d.samples; i++) {
      // X is long-polling before the run exists; the run's first advance dispatches A.
      const xPoll = poll(d.url, d.keyX, 1, 30);
      const run = ok(await call<{ id: string }>(d.url, 'POST', `/api/v1/pipelines/${d.pipelineId}/run`, { token: d.tenantToken, body: {} }), 'trigger run');
      const xCommands = ok(await xPoll, 'X poll').commands;
      const a = xCommands[0];
      if (xCommands.length !== 1 || a.payload.pipeline_run_id !== run.id || a.payload.step_key !== 'a') {
        throw new Misbehaviour(`X expected step a of run ${run.id}, got ${JSON.stringify(xCommands.map((c) => c.payload))}`);
      }
      ok(await call(d.url, 'POST', `/api/v1/agent/commands/${a.id}/ack`, { apiKey: d.keyX }), 'ack a');
      ok(await call(d.url, 'POST', `/api/v1/agent/commands/${a.id}/start`, { apiKey: d.keyX }), 'start a');

      // Y starts its long poll and is given time to park in it (its first claim finds nothing).
      const yPoll = poll(d.url, d.keyY, 1, 30).then((r) => ({ r, t1: now() }));
      await sleep(d.parkMs);
      const t0 = now();
      const [complete, y] = await Promise.all([
        call(d.url, 'POST', `/api/v1/agent/commands/${a.id}/complete`, { apiKey: d.keyX, body: { findings_count: 1, output: { i } } }),
        yPoll,
      ]);
      ok(complete, 'complete a');
      const yCommands = ok(y.r, 'Y poll').commands;
      const b = yCommands[0];
      if (yCommands.length !== 1 || b.payload.pipeline_run_id !== run.id || b.payload.step_key !== 'b') {
        throw new Misbehaviour(`Y expected step b of run ${run.id} within its 30 s poll, got ${JSON.stringify(yCommands.map((c) => c.payload))}`);
      }
      if (i >= d.warmup) samples.push({ runId: run.id, t0, t1: y.t1, completeMs: complete.ms });

      ok(await call(d.url, 'POST', `/api/v1/agent/commands/${b.id}/ack`, { apiKey: d.keyY }), 'ack b');
      ok(await call(d.url, 'POST', `/api/v1/agent/commands/${b.id}/start`, { apiKey: d.keyY }), 'start b');
      ok(await call(d.url, 'POST', `/api/v1/agent/commands/${b.id}/complete`, { apiKey: d.keyY, body: { findings_count: 0 } }), 'complete b');
      // The run finishing is the worker's next advance; wait for it so samples do not overlap.
      const until = Date.now() + 10_000;
      for (;;) {
        const { rows } = await db.query<{ status: string }>('SELECT status FROM pipeline_runs WHERE id = $1', [run.id]);
        if (rows[0]?.status === 'completed') break;
        if (rows[0] && rows[0].status !== 'running' && rows[0].status !== 'pending') {
          throw new Misbehaviour(`chain run ${run.id} ended as ${rows[0].status}`);
        }
        if (Date.now() > until) throw new Misbehaviour(`chain run ${run.id} not completed 10 s after its last step`);
        await sleep(2);
      }
    }
  } finally {
    await db.end();
  }
  return { samples, elapsedMs: now() - started, emptyPollMs: summarize(emptyPolls.slice(5)) };
}

async function clientPhase2(d: Phase2Data): Promise<Phase2Result> {
  const latencies = new Map<string, number[]>();
  const record = (what: string, ms: number) => {
    let a = latencies.get(what);
    if (!a) latencies.set(what, (a = []));
    a.push(ms);
  };
  const seen = new Set<string>();
  let duplicates = 0;
  let completed = 0;
  let requests = 0;
  const errors: string[] = [];
  let errorCount = 0;
  const error = (m: string) => {
    errorCount++;
    if (errors.length < 20) errors.push(m);
  };
  let stopping = false;
  const aborters = new Set<AbortController>();
  parentPort!.on('message', (m) => {
    if (m === 'stop') {
      stopping = true;
      for (const a of aborters) a.abort();
    }
  });
  const elu0 = performance.eventLoopUtilization();

  const work = async (key: string, c: Command) => {
    if (seen.has(c.id)) duplicates++;
    seen.add(c.id);
    for (const action of ['ack', 'start', 'complete'] as const) {
      requests++;
      const r = await call(d.url, 'POST', `/api/v1/agent/commands/${c.id}/${action}`, {
        apiKey: key,
        body: action === 'complete' ? { findings_count: 1, output: { step: c.payload.step_key } } : undefined,
      });
      record(action, r.ms);
      if (r.status !== 200) {
        error(`${action} ${c.id}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        return;
      }
    }
    completed++;
  };

  const agent = async (key: string) => {
    while (!stopping) {
      const ac = new AbortController();
      aborters.add(ac);
      let res: Res<{ commands: Command[] }>;
      try {
        requests++;
        res = await poll(d.url, key, 10, 5, ac.signal);
      } catch (err) {
        if (stopping) break;
        error(`poll: ${String(err)}`);
        await sleep(100);
        continue;
      } finally {
        aborters.delete(ac);
      }
      if (res.status !== 200) {
        error(`poll: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        await sleep(100);
        continue;
      }
      const commands = res.body.commands;
      record(commands.length ? 'poll (got commands)' : 'poll (empty)', res.ms);
      record('commands per poll', commands.length);
      await Promise.all(commands.map((c) => work(key, c)));
    }
  };

  const loops = d.agentKeys.map((k) => agent(k));
  const t0 = now();
  parentPort!.postMessage({ type: 'started', t0 });
  let next = 0;
  const trigger = async () => {
    while (next < d.runs && !stopping) {
      next++;
      requests++;
      const r = await call(d.url, 'POST', `/api/v1/pipelines/${d.pipelineId}/run`, { token: d.tenantToken, body: {} });
      record('trigger run', r.ms);
      if (r.status !== 201) error(`trigger: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
    }
  };
  await Promise.all(Array.from({ length: d.triggerConcurrency }, trigger));
  const tTriggered = now();
  parentPort!.postMessage({ type: 'triggered', t: tTriggered });
  await Promise.all(loops);
  const elu = performance.eventLoopUtilization(elu0);
  return {
    t0,
    tTriggered,
    latencies: Object.fromEntries([...latencies].map(([k, v]) => [k, summarize(v)])),
    commandsReceived: seen.size + duplicates,
    commandsCompleted: completed,
    duplicates,
    errors,
    errorCount,
    requests,
    clientBusyMs: elu.active,
    clientElapsedMs: now() - t0,
  };
}

if (!isMainThread) {
  const d = workerData as Phase1Data | Phase2Data;
  try {
    const result = d.phase === 1 ? await clientPhase1(d) : await clientPhase2(d);
    parentPort!.postMessage({ type: 'result', result });
  } catch (err) {
    parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err), misbehaviour: err instanceof Misbehaviour });
  }
  parentPort!.close();
}

// ---------------------------------------------------------------------------------------
// Main thread

type ClientMessage =
  | { type: 'started'; t0: number }
  | { type: 'triggered'; t: number }
  | { type: 'result'; result: unknown }
  | { type: 'error'; message: string; misbehaviour: boolean };

/** Starts the client thread for one phase; `onMessage` sees progress messages; resolves with its result. */
function startClient<R>(data: Phase1Data | Phase2Data, onMessage: (m: ClientMessage) => void = () => {}): { worker: Worker; result: Promise<R> } {
  const worker = new Worker(new URL(import.meta.url), { workerData: data });
  const result = new Promise<R>((resolve, reject) => {
    let settled = false;
    worker.on('message', (m: ClientMessage) => {
      if (m.type === 'result') {
        settled = true;
        resolve(m.result as R);
      } else if (m.type === 'error') {
        settled = true;
        reject(m.misbehaviour ? new Misbehaviour(m.message) : new Error(m.message));
      } else onMessage(m);
    });
    worker.on('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.on('exit', (code) => {
      if (!settled) reject(new Error(`client thread exited (${code}) without a result`));
    });
  });
  return { worker, result };
}

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive whole number`);
  return n;
}


let clockTicks = 0;
function ticksPerSecond(): number {
  if (!clockTicks) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

function procStat(pid: string): { comm: string; fields: string[] } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    return { comm: stat.slice(stat.indexOf('(') + 1, close), fields: stat.slice(close + 2).split(' ') };
  } catch {
    return null;
  }
}

/** The postmaster of the benchmark's database when it runs on this machine (Linux /proc), else null. */
let postmasterPid: string | null = null;
async function findPostmaster(db: pg.Pool): Promise<void> {
  const { rows } = await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const backend = procStat(String(rows[0].pid));
  if (!backend || backend.comm !== 'postgres') return;
  const parent = procStat(backend.fields[1]);
  if (parent?.comm === 'postgres') postmasterPid = backend.fields[1];
}

/**
 * CPU milliseconds used so far by the benchmark's PostgreSQL: the postmaster, its live
 * children, and (through the postmaster's cutime/cstime) its children that exited.
 */
function postgresCpuMs(): number | null {
  if (!postmasterPid) return null;
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = procStat(entry);
    if (!st) continue;
    if (entry === postmasterPid) {
      ticks += Number(st.fields[11]) + Number(st.fields[12]) + Number(st.fields[13]) + Number(st.fields[14]);
    } else if (st.fields[1] === postmasterPid) {
      ticks += Number(st.fields[11]) + Number(st.fields[12]);
    }
  }
  return (ticks * 1000) / ticksPerSecond();
}

/** CPU milliseconds of this process's threads, by thread name (MainThread = the server, WorkerThread = the agents). */
function threadCpuMs(): Record<string, number> {
  const byName: Record<string, number> = {};
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      const st = procStat(`self/task/${tid}`);
      if (!st) continue;
      const name = st.comm === 'MainThread' || st.comm === 'WorkerThread' ? st.comm : st.comm.startsWith('V8') ? 'V8 (GC, compiler)' : 'other';
      byName[name] = (byName[name] ?? 0) + ((Number(st.fields[11]) + Number(st.fields[12])) * 1000) / ticksPerSecond();
    }
  } catch {
    // not Linux
  }
  return byName;
}

/** Whole-machine CPU time (ms, all cores) from /proc/stat: busy, idle, iowait, steal. */
function machineCpuMs(): { busy: number; idle: number; iowait: number; steal: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const k = 1000 / ticksPerSecond();
    // user nice system idle iowait irq softirq steal
    return { busy: (f[0] + f[1] + f[2] + f[5] + f[6]) * k, idle: f[3] * k, iowait: f[4] * k, steal: (f[7] ?? 0) * k };
  } catch {
    return null;
  }
}

type CpuMark = {
  t: number;
  node: NodeJS.CpuUsage;
  pg: number | null;
  threads: Record<string, number>;
  machine: ReturnType<typeof machineCpuMs>;
  elu: ReturnType<typeof performance.eventLoopUtilization>;
};
const cpuMark = (): CpuMark => ({
  t: now(), node: process.cpuUsage(), pg: postgresCpuMs(), threads: threadCpuMs(), machine: machineCpuMs(),
  elu: performance.eventLoopUtilization(),
});
type CpuSpan = {
  wallMs: number;
  nodeCpuMs: number;
  postgresCpuMs: number | null;
  threadsCpuMs: Record<string, number>;
  mainLoopBusyMs: number;
  /** Whole machine over the span, % of all cores (other processes included). */
  machine: { busyPct: number; idlePct: number; iowaitPct: number; stealPct: number } | null;
};
function cpuSince(m: CpuMark): CpuSpan {
  const wallMs = now() - m.t;
  const node = process.cpuUsage(m.node);
  const pgNow = postgresCpuMs();
  const threadsNow = threadCpuMs();
  const machineNow = machineCpuMs();
  let machine: CpuSpan['machine'] = null;
  if (machineNow && m.machine) {
    const d = {
      busy: machineNow.busy - m.machine.busy, idle: machineNow.idle - m.machine.idle,
      iowait: machineNow.iowait - m.machine.iowait, steal: machineNow.steal - m.machine.steal,
    };
    const total = d.busy + d.idle + d.iowait + d.steal || 1;
    machine = { busyPct: (d.busy / total) * 100, idlePct: (d.idle / total) * 100, iowaitPct: (d.iowait / total) * 100, stealPct: (d.steal / total) * 100 };
  }
  return {
    wallMs,
    nodeCpuMs: (node.user + node.system) / 1000,
    postgresCpuMs: pgNow !== null && m.pg !== null ? pgNow - m.pg : null,
    threadsCpuMs: Object.fromEntries(Object.entries(threadsNow).map(([k, v]) => [k, v - (m.threads[k] ?? 0)])),
    mainLoopBusyMs: performance.eventLoopUtilization(m.elu).active,
    machine,
  };
}

/** CPU over a span, in seconds, and per unit of work (a step, a job) in milliseconds. */
function cpuReport(c: CpuSpan, units: number) {
  const th = c.threadsCpuMs;
  const pgMs = c.postgresCpuMs;
  return {
    wall_s: r2(c.wallMs / 1000),
    node_cpu_s: r2(c.nodeCpuMs / 1000),
    node_threads_cpu_s: Object.fromEntries(Object.entries(th).map(([k, v]) => [k, r2(v / 1000)])),
    server_event_loop_busy_s: r2(c.mainLoopBusyMs / 1000),
    postgres_cpu_s: pgMs === null ? null : r2(pgMs / 1000),
    machine_pct: c.machine && {
      busy: r1(c.machine.busyPct), idle: r1(c.machine.idlePct), iowait: r1(c.machine.iowaitPct), steal: r1(c.machine.stealPct),
    },
    per_unit_ms: {
      node: r2(c.nodeCpuMs / units),
      main_thread: th.MainThread === undefined ? null : r2(th.MainThread / units),
      postgres: pgMs === null ? null : r2(pgMs / units),
    },
  };
}

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

async function main(): Promise<number> {
  const SAMPLES = envInt('BENCH_SAMPLES', 300);
  const WARMUP = envInt('BENCH_WARMUP', 20);
  const RUNS = envInt('BENCH_RUNS', 1000);
  const AGENTS = envInt('BENCH_AGENTS', 8);
  const NOOP_JOBS = envInt('BENCH_NOOP_JOBS', 20000);
  const SINGLE_JOBS = envInt('BENCH_SINGLE_JOBS', 5000);
  const PRODUCERS = envInt('BENCH_PRODUCERS', 8);
  const PARK_MS = envInt('BENCH_PARK_MS', 10);
  const SCHED_SCANS = envInt('BENCH_SCHEDULED_SCANS', 50);
  const SCHED_BURST = envInt('BENCH_SCHEDULE_BURST', 10_000);
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
  const STEPS_PER_RUN = 4;

  const { startOrchestrator } = await import('../src/server.ts');
  const { loadConfig } = await import('../src/config.ts');
  const { startEmbeddedPostgres } = await import('../src/db/embedded.ts');
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
    let databaseUrl: string;
    let databaseKind: string;
    if (process.env.DATABASE_URL) {
      const name = `scanflow_bench_${process.pid}`;
      const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      cleanups.push(async () => {
        const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
        await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await c.end();
      });
      const u = new URL(process.env.DATABASE_URL);
      u.pathname = `/${name}`;
      databaseUrl = u.toString();
      databaseKind = `database ${name} on DATABASE_URL's server`;
    } else {
      const tmp = await mkdtemp(path.join(tmpdir(), 'scanflow-bench-'));
      cleanups.push(() => rm(tmp, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }));
      progress('starting an embedded PostgreSQL');
      const opts = { dataDir: tmp, port: await freePort(), database: 'scanflow_bench', persistent: true };
      let embedded = await startEmbeddedPostgres(opts);
      if (STATEMENTS) {
        const c = new pg.Client({ connectionString: embedded.url });
        await c.connect();
        await c.query(`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`);
        await c.query(`ALTER SYSTEM SET pg_stat_statements.track = 'all'`); // statements inside functions and triggers too
        await c.end();
        await embedded.stop();
        embedded = await startEmbeddedPostgres(opts);
      }
      cleanups.push(embedded.stop);
      databaseUrl = embedded.url;
      databaseKind = `embedded PostgreSQL in ${tmp}`;
    }

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

    const chainId = await mkPipeline({
      name: 'bench-chain',
      steps: [
        { id: 'a', name: 'A', tool: 'bench-a', depends_on: [], timeout: '10m' },
        { id: 'b', name: 'B', tool: 'bench-b', depends_on: ['a'], timeout: '10m' },
      ],
      settings: { max_parallel_steps: 1 },
    });
    const diamondId = await mkPipeline({
      name: 'bench-diamond',
      steps: [
        { id: 'root', name: 'Root', tool: 'bench-a', depends_on: [], timeout: '10m' },
        { id: 'left', name: 'Left', tool: 'bench-b', depends_on: ['root'], timeout: '10m' },
        { id: 'right', name: 'Right', tool: 'bench-c', depends_on: ['root'], timeout: '10m' },
        { id: 'final', name: 'Final', tool: 'bench-d', depends_on: ['left', 'right'], timeout: '10m' },
      ],
      settings: { max_parallel_steps: 2 },
    });
    const keyX = await mkAgent('bench-x', ['bench-a'], 5);
    const keyY = await mkAgent('bench-y', ['bench-b'], 5);
    const workerKeys: string[] = [];
    for (let i = 0; i < AGENTS; i++) {
      workerKeys.push(await mkAgent(`bench-agent-${i}`, ['bench-a', 'bench-b', 'bench-c', 'bench-d'], 20));
    }

    // --- phase 1: handoff latency -----------------------------------------------------
    progress(`phase 1: handoff latency, ${WARMUP} warm-up + ${SAMPLES} samples`);
    if (os.loadavg()[0] > 0.5) progress(`the machine is not idle (load average ${os.loadavg()[0].toFixed(2)}): figures will be skewed`);
    const p1 = await startClient<Phase1Result>({
      phase: 1, url: base, databaseUrl, tenantToken: T, pipelineId: chainId, keyX, keyY,
      warmup: WARMUP, samples: SAMPLES, parkMs: PARK_MS,
    }).result;
    const handoff = summarize(p1.samples.map((s) => s.t1 - s.t0));
    const completeRtt = summarize(p1.samples.map((s) => s.completeMs));
    // Breakdown by the database's timestamps (now() = the start of each transaction).
    const ts = await db.query<{ run_id: string; a_done: string; b_created: string; b_claimed: string }>(`
      SELECT r.id AS run_id,
             extract(epoch FROM a.completed_at) * 1000 AS a_done,
             extract(epoch FROM b.created_at) * 1000 AS b_created,
             extract(epoch FROM b.claimed_at) * 1000 AS b_claimed
      FROM pipeline_runs r
      JOIN step_runs sa ON sa.pipeline_run_id = r.id AND sa.step_key = 'a' JOIN commands a ON a.id = sa.command_id
      JOIN step_runs sb ON sb.pipeline_run_id = r.id AND sb.step_key = 'b' JOIN commands b ON b.id = sb.command_id
      WHERE r.id = ANY ($1::uuid[])`, [p1.samples.map((s) => s.runId)]);
    const byRun = new Map(ts.rows.map((r) => [r.run_id, r]));
    const seg = { toFinishTx: [] as number[], toAdvanceTx: [] as number[], toClaimTx: [] as number[], toResponse: [] as number[] };
    for (const s of p1.samples) {
      const r = byRun.get(s.runId);
      if (!r) continue;
      const aDone = Number(r.a_done), bCreated = Number(r.b_created), bClaimed = Number(r.b_claimed);
      seg.toFinishTx.push(aDone - s.t0);
      seg.toAdvanceTx.push(bCreated - aDone);
      seg.toClaimTx.push(bClaimed - bCreated);
      seg.toResponse.push(s.t1 - bClaimed);
    }
    const p1check = (await db.query<{ runs: string; completed: string; bad: string }>(`
      SELECT count(*) AS runs, count(*) FILTER (WHERE status = 'completed') AS completed,
             (SELECT count(*) FROM step_runs s JOIN pipeline_runs r2 ON r2.id = s.pipeline_run_id
              WHERE r2.pipeline_id = $1 AND (SELECT count(*) FROM commands c WHERE c.step_run_id = s.id) <> 1) AS bad
      FROM pipeline_runs WHERE pipeline_id = $1`, [chainId])).rows[0];
    if (Number(p1check.completed) !== Number(p1check.runs) || Number(p1check.bad) !== 0) {
      problems.push(`phase 1: ${p1check.completed}/${p1check.runs} chain runs completed, ${p1check.bad} step runs without exactly one command`);
    }
    report.handoff_ms = {
      ...mapSummary(handoff),
      samples: handoff.n,
      park_ms: PARK_MS,
      empty_poll_ms: mapSummary(p1.emptyPollMs),
      complete_request_ms: mapSummary(completeRtt),
      breakdown_p50_ms: {
        complete_request_to_finish_tx: r2(pct(sorted(seg.toFinishTx), 50)),
        finish_tx_to_advance_tx: r2(pct(sorted(seg.toAdvanceTx), 50)),
        advance_tx_to_claim_tx: r2(pct(sorted(seg.toClaimTx), 50)),
        claim_tx_to_poll_response: r2(pct(sorted(seg.toResponse), 50)),
      },
      breakdown_p95_ms: {
        complete_request_to_finish_tx: r2(pct(sorted(seg.toFinishTx), 95)),
        finish_tx_to_advance_tx: r2(pct(sorted(seg.toAdvanceTx), 95)),
        advance_tx_to_claim_tx: r2(pct(sorted(seg.toClaimTx), 95)),
        claim_tx_to_poll_response: r2(pct(sorted(seg.toResponse), 95)),
      },
    };

    // --- phase 2: throughput ------------------------------------------------------------
    progress(`phase 2: ${RUNS} runs × ${STEPS_PER_RUN} steps, ${AGENTS} agents`);
    let statements = false;
    if (STATEMENTS) {
      try {
        await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
        await db.query('SELECT pg_stat_statements_reset()');
        statements = true;
      } catch (err) {
        progress(`pg_stat_statements is not available: ${String(err)}`);
      }
    }
    const c2a = await settledCounters(db);
    const cpu2 = cpuMark();
    let t0Phase2 = 0;
    const client2 = startClient<Phase2Result>(
      { phase: 2, url: base, tenantToken: T, pipelineId: diamondId, agentKeys: workerKeys, runs: RUNS, triggerConcurrency: 4 },
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
    let lastCompleted = -1;
    let lastProgressAt = Date.now();
    let lastPrint = Date.now();
    let finishedAt = 0;
    for (;;) {
      await sleep(100);
      if (clientFailure) throw clientFailure;
      const c = (await db.query<{ total: string; completed: string; bad: string; last: string | null }>(`
        SELECT count(*) AS total, count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'timeout')) AS bad,
               extract(epoch FROM max(completed_at)) * 1000 AS last
        FROM pipeline_runs WHERE pipeline_id = $1`, [diamondId])).rows[0];
      const completed = Number(c.completed);
      if (Number(c.bad) > 0) throw new Misbehaviour(`phase 2: ${c.bad} run(s) ended failed/cancelled/timeout`);
      if (completed !== lastCompleted) {
        lastCompleted = completed;
        lastProgressAt = Date.now();
      } else if (Date.now() - lastProgressAt > STALL_S * 1000) {
        throw new Misbehaviour(`phase 2: no run completed for ${STALL_S} s (${completed}/${RUNS} completed, ${c.total} triggered)`);
      }
      if (Date.now() - lastPrint > 5000) {
        lastPrint = Date.now();
        progress(`phase 2: ${completed}/${RUNS} runs completed`);
      }
      if (completed === RUNS) {
        finishedAt = Number(c.last);
        break;
      }
    }
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
    const verify = (await db.query<Record<string, string>>(`
      WITH runs AS (SELECT id, status FROM pipeline_runs WHERE pipeline_id = $1),
           steps AS (SELECT s.id, s.status FROM step_runs s JOIN runs ON runs.id = s.pipeline_run_id),
           per_step AS (SELECT steps.id, count(c.id) AS n, count(c.id) FILTER (WHERE c.status = 'completed') AS done
                        FROM steps LEFT JOIN commands c ON c.step_run_id = steps.id GROUP BY steps.id)
      SELECT (SELECT count(*) FROM runs) AS runs,
             (SELECT count(*) FROM runs WHERE status = 'completed') AS runs_completed,
             (SELECT count(*) FROM steps) AS steps,
             (SELECT count(*) FROM steps WHERE status = 'completed') AS steps_completed,
             (SELECT count(*) FROM per_step WHERE n <> 1 OR done <> 1) AS steps_not_once,
             (SELECT coalesce(sum(n), 0) FROM per_step) AS commands`, [diamondId])).rows[0];
    const stepsCompleted = Number(verify.steps_completed);
    if (Number(verify.runs) !== RUNS || Number(verify.runs_completed) !== RUNS) problems.push(`phase 2: ${verify.runs_completed}/${verify.runs} runs completed (expected ${RUNS})`);
    if (Number(verify.steps) !== RUNS * STEPS_PER_RUN || stepsCompleted !== RUNS * STEPS_PER_RUN) problems.push(`phase 2: ${stepsCompleted}/${verify.steps} step runs completed (expected ${RUNS * STEPS_PER_RUN})`);
    if (Number(verify.steps_not_once) !== 0) problems.push(`phase 2: ${verify.steps_not_once} step run(s) without exactly one completed command`);
    if (p2.duplicates !== 0) problems.push(`phase 2: ${p2.duplicates} command(s) delivered to agents more than once`);
    if (p2.errorCount !== 0) problems.push(`phase 2: ${p2.errorCount} HTTP error(s), e.g. ${p2.errors.slice(0, 3).join(' | ')}`);
    if (p2.commandsCompleted !== RUNS * STEPS_PER_RUN) problems.push(`phase 2: agents completed ${p2.commandsCompleted} commands (expected ${RUNS * STEPS_PER_RUN})`);
    const c2 = counterDelta(c2a, await settledCounters(db));
    const stepsPerSec = stepsCompleted / (wallMs / 1000);
    if (statements) {
      const { rows } = await db.query<{ query: string; calls: string; total: number; mean: number; rows: string }>(`
        SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, total_exec_time AS total, mean_exec_time AS mean, rows
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY total_exec_time DESC LIMIT 30`);
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

    // --- phase 4: the scheduler ------------------------------------------------------------
    // (a) delay: scans created over HTTP, each due at its own instant a few seconds ahead;
    // the delay of a fire is its run's creation (the fire transaction's clock) minus the due
    // time. (b) burst: SCHED_BURST scans due at the same instant (inserted with SQL, the
    // scheduler armed as an API change would): how long until every one has its run.
    const schedPipelineId = await mkPipeline({ name: 'bench-scheduled', steps: [{ id: 'x', tool: 'bench-unclaimed' }] });
    const dueBase = Date.now() + 3000;
    progress(`phase 4a: ${SCHED_SCANS} scans due one by one, 100 ms apart`);
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

    progress(`phase 4b: ${SCHED_BURST} scans due at the same instant`);
    const burstDue = new Date(Date.now() + 4000);
    const tenantId = (await db.query<{ id: string }>(`SELECT id FROM tenants WHERE name = 'bench'`)).rows[0].id;
    await db.query(
      `INSERT INTO scans (tenant_id, name, pipeline_id, targets, schedule_type, cron_expression, timezone, next_run_at)
       SELECT $1, 'bench-burst-' || g, $2, '{}', 'cron', '0 0 1 1 *', 'UTC', $3 FROM generate_series(1, $4::int) g`,
      [tenantId, schedPipelineId, burstDue, SCHED_BURST]);
    await db.query(`SELECT arm_scheduler()`);
    const burstCpu = cpuMark();
    let burstRuns = 0;
    for (;;) {
      const { rows } = await db.query<{ n: string; last: Date | null }>(
        `SELECT count(*) AS n, max(r.created_at) AS last FROM pipeline_runs r JOIN scans s ON s.id = r.scan_id
         WHERE s.name LIKE 'bench-burst-%'`);
      burstRuns = Number(rows[0].n);
      if (burstRuns >= SCHED_BURST) break;
      if (Date.now() > burstDue.getTime() + 600_000) throw new Misbehaviour(`scheduler burst: ${burstRuns}/${SCHED_BURST} runs after 10 min`);
      await sleep(200);
    }
    const burst = (await db.query<{ first: Date; last: Date; fires: string; twice: string }>(
      `SELECT min(r.created_at) AS first, max(r.created_at) AS last,
              (SELECT count(*) FROM scan_fires f JOIN scans s ON s.id = f.scan_id WHERE s.name LIKE 'bench-burst-%') AS fires,
              (SELECT count(*) FROM (SELECT scan_id FROM scan_fires f JOIN scans s ON s.id = f.scan_id
                                     WHERE s.name LIKE 'bench-burst-%' GROUP BY scan_id HAVING count(*) > 1) x) AS twice
       FROM pipeline_runs r JOIN scans s ON s.id = r.scan_id WHERE s.name LIKE 'bench-burst-%'`)).rows[0];
    const burstCpuSpan = cpuSince(burstCpu);
    if (Number(burst.twice) > 0) problems.push(`scheduler burst: ${burst.twice} scan(s) fired more than once`);
    if (Number(burst.fires) !== SCHED_BURST) problems.push(`scheduler burst: ${burst.fires} fires for ${SCHED_BURST} scans`);
    report.scheduler = {
      delay_ms: mapSummary(schedDelay),
      burst: {
        scans: SCHED_BURST,
        runs: burstRuns,
        first_run_after_due_ms: r1(burst.first.getTime() - burstDue.getTime()),
        all_runs_after_due_s: r2((burst.last.getTime() - burstDue.getTime()) / 1000),
        fires_per_s: r1(SCHED_BURST / ((burst.last.getTime() - burstDue.getTime()) / 1000)),
        cpu: cpuReport(burstCpuSpan, SCHED_BURST),
      },
    };

    // --- phase 3: raw graphile-worker on the same database --------------------------------
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

    // --- verdict ----------------------------------------------------------------------------
    const ratio = (stepsPerSec / batchRate) * 100;
    const targets = {
      handoff_p50: { value_ms: r2(handoff.p50), target_ms: 20, pass: handoff.p50 <= 20 },
      handoff_p99: { value_ms: r2(handoff.p99), target_ms: 100, pass: handoff.p99 <= 100 },
      throughput_ratio: { value_pct: r1(ratio), target_pct: 25, pass: ratio >= 25 },
      scheduler_delay_p50: { value_ms: r2(schedDelay.p50), target_ms: 100, pass: schedDelay.p50 <= 100 },
      scheduler_delay_p99: { value_ms: r2(schedDelay.p99), target_ms: 100, pass: schedDelay.p99 <= 100 },
    };
    report.ratio_pct = r1(ratio);
    report.ratio_pct_vs_one_at_a_time = r1((stepsPerSec / singleRate) * 100);
    // What graphile-worker's own cost per job allows: a step needs its jobs added one at a
    // time by the transactions that made them necessary, so each costs what a job of the
    // one-at-a-time variant cost (Node + PostgreSQL CPU); with nothing else costing anything,
    // the machine's CPUs could run at most this many steps per second.
    const single = cpuReport(cpuP3b, singleJobs).per_unit_ms;
    const jobsPerStep = r2(c2.jobs_ins / stepsCompleted);
    if (single.postgres !== null && jobsPerStep > 0) {
      const cpuPerStepMs = jobsPerStep * (single.node + single.postgres);
      const ceiling = (os.cpus().length * 1000) / cpuPerStepMs;
      report.job_cost_ceiling = {
        jobs_per_step: jobsPerStep,
        cpu_ms_per_job: r2(single.node + single.postgres),
        steps_per_s: r1(ceiling),
        pct_of_batch: r1((ceiling / batchRate) * 100),
      };
    }
    report.targets = targets;
    report.problems = problems;

    printReport(report, {
      handoff, completeRtt, seg, p1ElapsedMs: p1.elapsedMs, stepsPerSec, batchRate, singleRate, ratio, targets,
    });
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

type CpuOut = ReturnType<typeof cpuReport>;
function cpuLine(c: CpuOut): string {
  const m = c.machine_pct;
  return `node ${c.per_unit_ms.node} ms (server thread ${c.per_unit_ms.main_thread ?? 'n/a'} ms), postgres ${c.per_unit_ms.postgres ?? 'n/a'} ms` +
    (m ? `; machine ${m.busy}% busy, ${m.idle}% idle, ${m.iowait}% iowait, ${m.steal}% steal` : '');
}
function cpuThreads(c: CpuOut): string {
  const th = Object.entries(c.node_threads_cpu_s).map(([k, v]) => `${k} ${v} s`).join(', ');
  return `node ${c.node_cpu_s} s CPU (${th}), postgres ${c.postgres_cpu_s ?? 'n/a'} s CPU`;
}

function sorted(a: number[]): number[] {
  return [...a].sort((x, y) => x - y);
}

function mapSummary(s: Summary) {
  return { p50: r2(s.p50), p95: r2(s.p95), p99: r2(s.p99), max: r2(s.max), mean: r2(s.mean), n: s.n };
}

type Targets = Record<string, { pass: boolean; value_ms?: number; target_ms?: number; value_pct?: number; target_pct?: number }>;

function printReport(
  report: Record<string, any>,
  x: {
    handoff: Summary; completeRtt: Summary; seg: Record<string, number[]>; p1ElapsedMs: number;
    stepsPerSec: number; batchRate: number; singleRate: number; ratio: number; targets: Targets;
  },
) {
  const e = report.env;
  const t = report.throughput;
  const raw = report.raw_worker;
  const pf = (b: boolean) => (b ? 'PASS' : 'FAIL');
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
  out(`1. Step handoff latency (X completes A → long-polling Y receives B), ${x.handoff.n} samples, ${(x.p1ElapsedMs / 1000).toFixed(1)} s`);
  out(`   p50 ${f1(x.handoff.p50)} ms   p95 ${f1(x.handoff.p95)} ms   p99 ${f1(x.handoff.p99)} ms   max ${f1(x.handoff.max)} ms   (mean ${f1(x.handoff.mean)})`);
  out(`   X's complete request: p50 ${f1(x.completeRtt.p50)} ms, p99 ${f1(x.completeRtt.p99)} ms; ` +
    `Y parks ${report.handoff_ms.park_ms} ms in its poll before X completes (an empty poll answers in p95 ${f1(report.handoff_ms.empty_poll_ms.p95)} ms)`);
  out('   where the time goes (database timestamps; each is the start of a transaction):      p50      p95');
  const segLine = (label: string, a: number[]) =>
    out(`     ${label.padEnd(78)} ${f1(pct(sorted(a), 50)).padStart(6)}   ${f1(pct(sorted(a), 95)).padStart(6)}`);
  segLine('complete sent → its transaction begins (HTTP, auth, pool)', x.seg.toFinishTx);
  segLine('complete tx begins → run_advance tx begins (commit, worker NOTIFY, job fetch)', x.seg.toAdvanceTx);
  segLine('run_advance tx begins → Y\'s claim tx begins (advance, commit, NOTIFY, wake)', x.seg.toClaimTx);
  segLine('claim tx begins → Y has the response (claim, commit, HTTP)', x.seg.toResponse);
  out('');
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
    out('   costliest statements during phase 2 (pg_stat_statements, execution time):');
    out('        total ms   ms/step     calls  mean ms  statement');
    for (const q of report.statements as { query: string; calls: number; total_ms: number; mean_ms: number; ms_per_step: number }[]) {
      out(`     ${f1(q.total_ms).padStart(10)} ${q.ms_per_step.toFixed(2).padStart(9)} ${String(q.calls).padStart(9)} ${q.mean_ms.toFixed(2).padStart(8)}  ${q.query.slice(0, 110)}`);
    }
  }
  out('');
  out(`3. Raw graphile-worker, same database, concurrency ${raw.concurrency}, no-op task (orchestrator stopped; ${raw.other_jobs_in_queue} other jobs queued)`);
  out(`   batch-enqueued before start: ${raw.batch.jobs} jobs in ${raw.batch.wall_s} s = ${f1(x.batchRate)} jobs/s ` +
    `(${raw.batch.db_commits_per_job} DB commits per job)`);
  out(`      CPU per job: ${cpuLine(raw.batch.cpu)}`);
  out(`   added one at a time (${raw.one_at_a_time.producers} producers): ${raw.one_at_a_time.jobs} jobs in ${raw.one_at_a_time.wall_s} s = ${f1(x.singleRate)} jobs/s ` +
    `(enqueueing took ${raw.one_at_a_time.enqueue_s} s)`);
  out(`      CPU per job: ${cpuLine(raw.one_at_a_time.cpu)}`);
  out('');
  out(`Ratio: ${f1(x.stepsPerSec)} steps/s ÷ ${f1(x.batchRate)} raw jobs/s = ${f1(x.ratio)}%`);
  out(`   (against the batch-enqueued figure, the higher of the two, so the comparison is conservative; ` +
    `against one-at-a-time: ${report.ratio_pct_vs_one_at_a_time}%)`);
  const ceil = report.job_cost_ceiling as { jobs_per_step: number; cpu_ms_per_job: number; steps_per_s: number; pct_of_batch: number } | undefined;
  if (ceil) {
    out(`   ceiling set by graphile-worker's own job cost: ${ceil.jobs_per_step} jobs/step × ${ceil.cpu_ms_per_job} ms CPU per job ` +
      `added one at a time = at most ${f1(ceil.steps_per_s)} steps/s on ${os.cpus().length} CPUs even if nothing else cost anything ` +
      `(${f1(ceil.pct_of_batch)}% of the batch figure)`);
  }
  const sc = report.scheduler;
  out(`4. Scheduler: scans due one by one (${sc.delay_ms.n}), delay from due time to run creation`);
  out(`   p50 ${f1(sc.delay_ms.p50)} ms   p95 ${f1(sc.delay_ms.p95)} ms   p99 ${f1(sc.delay_ms.p99)} ms   max ${f1(sc.delay_ms.max)} ms`);
  out(`   ${sc.burst.scans} scans due at the same instant: first run ${f1(sc.burst.first_run_after_due_ms)} ms after the due time, ` +
    `all ${sc.burst.runs} runs ${sc.burst.all_runs_after_due_s} s after it (${f1(sc.burst.fires_per_s)} fires/s)`);
  out(`      CPU per fire: ${cpuLine(sc.burst.cpu)}`);
  out('');
  out('Targets');
  out(`   handoff p50 ≤ 20 ms     ${f1(x.handoff.p50).padStart(7)} ms   ${pf(x.targets.handoff_p50.pass)}`);
  out(`   handoff p99 ≤ 100 ms    ${f1(x.handoff.p99).padStart(7)} ms   ${pf(x.targets.handoff_p99.pass)}`);
  out(`   steps/s ≥ 25% of raw    ${f1(x.ratio).padStart(7)} %    ${pf(x.targets.throughput_ratio.pass)}`);
  out(`   scheduler p50 ≤ 100 ms  ${f1(x.targets.scheduler_delay_p50.value_ms ?? NaN).padStart(7)} ms   ${pf(x.targets.scheduler_delay_p50.pass)}`);
  out(`   scheduler p99 ≤ 100 ms  ${f1(x.targets.scheduler_delay_p99.value_ms ?? NaN).padStart(7)} ms   ${pf(x.targets.scheduler_delay_p99.pass)}`);
  out('');
  const problems = report.problems as string[];
  out(problems.length ? `MISBEHAVIOUR:\n   ${problems.join('\n   ')}` : 'System behaved: every run completed, every step ran exactly once, no HTTP errors.');
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
