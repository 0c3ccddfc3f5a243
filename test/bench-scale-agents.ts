// The bench's scale part "agents" (test/bench-scale.ts; issue 13 item 3): 1,000 agents of 100
// tenants long-polling ONE API process, which runs as a child process of its own, started as
// `npm start` starts it (`node <its flags> src/main.ts`, ROLE=api) beside a worker process
// (ROLE=worker), both on a scratch database. The simulated agents live in a worker thread of this process (one http.Agent
// with keep-alive: a socket per concurrent request, 1,000 long polls with wait=30 at all
// times), so nothing they do counts in the server's figures.
//
//   1. every agent heartbeats once (it goes online), then long-polls without pause;
//   2. with all of them waiting: the API process's RSS (VmRSS, VmHWM from /proc) and the
//      database connections of the two server processes (pg_stat_activity: no connection
//      per waiting agent, one LISTEN per process);
//   3. an idle window (polls only, no heartbeats) and a heartbeat window (every agent
//      heartbeats every 15 s, spread evenly): PostgreSQL's CPU in each, from /proc of the
//      postmaster and its children; the heartbeats' cost is the difference, in % of one core;
//      heartbeat latency, seen by the agents and by the server (its /metrics histogram); the
//      RSS and V8 heap after the heartbeat window;
//   4. handoff with all of them waiting and heartbeating (as test/bench.ts phase 1: agent X
//      completes step A of a chain A → B while agent Y long-polls for B): p50/p99.
//
// Sizes (env): BENCH_SCALE_AGENTS (1000), BENCH_SCALE_TENANTS (100), BENCH_SCALE_IDLE_SECONDS
// (30), BENCH_SCALE_HEARTBEAT_SECONDS (60), BENCH_SCALE_HEARTBEAT_INTERVAL (15 s),
// BENCH_SCALE_HANDOFF_SAMPLES (200), BENCH_SCALE_HANDOFF_WARMUP (20); BENCH_SCALE_ROLE=all runs
// the API and the worker in one process instead of two. Diagnostics: BENCH_STATEMENTS=1 (the
// heartbeat window's costliest statements, pg_stat_statements).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import type { ScaleContext } from './bench-scale.ts';
import { now } from './support/http-client.ts';
import { scratchDatabase } from './support/scratch-db.ts';
import { freePort } from './support/ports.ts';
import {
  Misbehaviour, envInt, f1, findPostmaster, mapSummary, postgresCpuMs, procStat, r1, r2, sleep, summarize, ticksPerSecond,
} from './support/measure.ts';

/** The application_name of the bench's own connections (left out of the server's count). */
const BENCH_APP = 'scanflow-bench';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// ---------------------------------------------------------------------------------------
// The agents' thread

type Res<T = any> = { status: number; body: T; ms: number };

type ClientData = {
  url: string;
  databaseUrl: string;
  tenantToken: string;
  pipelineId: string;
  keyX: string;
  keyY: string;
  keys: string[];
  heartbeatIntervalMs: number;
};

type ToClient =
  | { cmd: 'heartbeats'; on: boolean }
  | { cmd: 'stats' }
  | { cmd: 'handoff'; warmup: number; samples: number }
  | { cmd: 'stop' };

type FromClient =
  | { type: 'waiting'; polls: number }
  | { type: 'stats'; heartbeatMs: number[]; heartbeats: number; pollsAnswered: number; pollsWaiting: number; errors: string[]; errorCount: number; networkErrors: number }
  | { type: 'handoff'; handoffMs: number[]; completeMs: number[] }
  | { type: 'stopped' }
  | { type: 'error'; message: string; misbehaviour: boolean };

async function clientThread(d: ClientData): Promise<void> {
  // One socket per concurrent request (1,000 polls and the heartbeats beside them), all kept.
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 4096 });
  const request = <T = any>(method: string, p: string, o: { apiKey?: string; token?: string; body?: unknown; signal?: AbortSignal } = {}) =>
    new Promise<Res<T>>((resolve, reject) => {
      const headers: Record<string, string> = {};
      if (o.apiKey) headers['x-api-key'] = o.apiKey;
      if (o.token) headers.authorization = `Bearer ${o.token}`;
      let body: string | undefined;
      if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(Buffer.byteLength(body));
      }
      const t = now();
      const req = http.request(d.url + p, { method, headers, agent, signal: o.signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T, ms: now() - t });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  const ok = <T>(r: Res<T>, what: string): T => {
    if (r.status < 200 || r.status > 299) throw new Misbehaviour(`${what}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
    return r.body;
  };
  const send = (m: FromClient) => parentPort!.postMessage(m);

  const errors: string[] = [];
  let errorCount = 0;
  const error = (m: string) => {
    errorCount++;
    if (errors.length < 20) errors.push(m);
  };
  // Network errors (a keep-alive connection the server closed as a request went out on it):
  // retried, as agents do, and counted apart from HTTP errors.
  let networkErrors = 0;
  let stopping = false;
  const stop = new AbortController();

  // What a seed-SDK agent sends: its scanners, status and system figures (changing each time).
  const started = Date.now();
  const beat = (i: number) => ({
    version: '1.4.2', hostname: `scanner-${i}.example.net`, status: 'idle', scanners: ['semgrep', 'trivy', 'gitleaks'],
    collectors: ['sarif'], uptime_seconds: Math.round((Date.now() - started) / 1000) + i, total_scans: i % 50, errors: 0,
    cpu_percent: Math.round(Math.random() * 400) / 10, memory_percent: Math.round(Math.random() * 600) / 10, active_jobs: 0,
    region: `eu-${i % 3}`, running_command_ids: [],
  });

  // 1. Every agent heartbeats once: it is online before it waits.
  {
    let next = 0;
    await Promise.all(Array.from({ length: 50 }, async () => {
      while (next < d.keys.length) {
        const i = next++;
        ok(await request('POST', '/api/v1/agent/heartbeat', { apiKey: d.keys[i], body: beat(i) }), `first heartbeat of agent ${i}`);
      }
    }));
  }

  // 2. Long polls, each renewed at once.
  let waiting = 0;
  let answered = 0;
  let announced = false;
  const pollLoop = async (key: string, i: number) => {
    while (!stopping) {
      let r: Res<unknown[]>;
      waiting++;
      if (!announced && waiting === d.keys.length) {
        announced = true;
        send({ type: 'waiting', polls: waiting });
      }
      try {
        r = await request('GET', '/api/v1/agent/commands?limit=10&wait=30', { apiKey: key, signal: stop.signal });
      } catch {
        if (stopping) break;
        networkErrors++;
        await sleep(100);
        continue;
      } finally {
        waiting--;
      }
      answered++;
      if (r.status !== 200) {
        error(`poll of agent ${i}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        await sleep(500);
      } else if (Array.isArray(r.body) && r.body.length > 0) {
        error(`agent ${i} was given ${r.body.length} command(s) for a tool it does not have`);
      }
    }
  };
  const polls = d.keys.map((k, i) => pollLoop(k, i));

  // 3. Heartbeats every interval, spread evenly (agent i at its own phase of the interval).
  let heartbeatMs: number[] = [];
  let heartbeats = 0;
  let beating: NodeJS.Timeout | null = null;
  const heartbeatsOn = () => {
    if (beating) return;
    const t0 = Date.now();
    let sent = 0; // heartbeats scheduled so far since t0
    const n = d.keys.length;
    beating = setInterval(() => {
      const due = Math.floor(((Date.now() - t0) / d.heartbeatIntervalMs) * n);
      for (; sent < due; sent++) {
        const i = sent % n;
        const send = () => request('POST', '/api/v1/agent/heartbeat', { apiKey: d.keys[i], body: beat(i) });
        send().catch(() => {
          networkErrors++;
          return send();
        }).then((r) => {
          heartbeats++;
          heartbeatMs.push(r.ms);
          const b = r.body as { status?: string; cancel_command_ids?: unknown[] } | null;
          if (r.status !== 200 || b?.status !== 'ok' || !Array.isArray(b.cancel_command_ids)) {
            error(`heartbeat of agent ${i}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
          }
        }, (err) => error(`heartbeat of agent ${i}: ${String(err)}`));
      }
    }, 10);
  };

  // 4. Handoff, as test/bench.ts phase 1: X completes A while Y long-polls for B.
  const handoff = async (warmup: number, samples: number) => {
    const db = new pg.Client({ connectionString: d.databaseUrl, application_name: BENCH_APP });
    await db.connect();
    try {
      return await handoffWith(db, warmup, samples);
    } finally {
      await db.end();
    }
  };
  const handoffWith = async (db: pg.Client, warmup: number, samples: number) => {
    const handoffMs: number[] = [];
    const completeMs: number[] = [];
    const poll = (key: string) => request<{ id: string; payload: { pipeline_run_id: string; step_key: string } }[]>(
      'GET', '/api/v1/agent/commands?limit=1&wait=30', { apiKey: key });
    for (let i = 0; i < warmup + samples; i++) {
      const xPoll = poll(d.keyX);
      const run = ok(await request<{ id: string }>('POST', `/api/v1/pipelines/${d.pipelineId}/run`, { token: d.tenantToken, body: {} }), 'trigger run');
      const xCommands = ok(await xPoll, 'X poll');
      const a = xCommands[0];
      if (xCommands.length !== 1 || a.payload.pipeline_run_id !== run.id || a.payload.step_key !== 'a') {
        throw new Misbehaviour(`X expected step a of run ${run.id}, got ${JSON.stringify(xCommands.map((c) => c.payload))}`);
      }
      ok(await request('POST', `/api/v1/agent/commands/${a.id}/ack`, { apiKey: d.keyX }), 'ack a');
      ok(await request('POST', `/api/v1/agent/commands/${a.id}/start`, { apiKey: d.keyX }), 'start a');
      const yPoll = poll(d.keyY).then((r) => ({ r, t1: now() }));
      await sleep(10); // Y parks in its poll
      const t0 = now();
      const [complete, y] = await Promise.all([
        request('POST', `/api/v1/agent/commands/${a.id}/complete`, { apiKey: d.keyX, body: { findings_count: 1, output: { i } } }),
        yPoll,
      ]);
      ok(complete, 'complete a');
      const yCommands = ok(y.r, 'Y poll');
      const b = yCommands[0];
      if (yCommands.length !== 1 || b.payload.pipeline_run_id !== run.id || b.payload.step_key !== 'b') {
        throw new Misbehaviour(`Y expected step b of run ${run.id} within its 30 s poll, got ${JSON.stringify(yCommands.map((c) => c.payload))}`);
      }
      if (i >= warmup) {
        handoffMs.push(y.t1 - t0);
        completeMs.push(complete.ms);
      }
      for (const action of ['ack', 'start', 'complete'] as const) {
        ok(await request('POST', `/api/v1/agent/commands/${b.id}/${action}`, { apiKey: d.keyY, body: action === 'complete' ? { findings_count: 0 } : undefined }), `${action} b`);
      }
      // The run finishing is the worker's next advance; wait for it (in the database, as
      // bench.ts does, not through the API process) so samples do not overlap.
      const until = Date.now() + 10_000;
      for (;;) {
        const { rows } = await db.query<{ status: string }>('SELECT status FROM pipeline_runs WHERE id = $1', [run.id]);
        if (rows[0]?.status === 'completed') break;
        if (rows[0] && rows[0].status !== 'running' && rows[0].status !== 'pending') throw new Misbehaviour(`chain run ${run.id} ended as ${rows[0].status}`);
        if (Date.now() > until) throw new Misbehaviour(`chain run ${run.id} not completed 10 s after its last step`);
        await sleep(2);
      }
    }
    return { handoffMs, completeMs };
  };

  parentPort!.on('message', (m: ToClient) => {
    const fail = (err: unknown) => send({ type: 'error', message: err instanceof Error ? err.message : String(err), misbehaviour: err instanceof Misbehaviour });
    if (m.cmd === 'heartbeats') {
      if (m.on) heartbeatsOn();
      else if (beating) {
        clearInterval(beating);
        beating = null;
      }
    } else if (m.cmd === 'stats') {
      send({ type: 'stats', heartbeatMs, heartbeats, pollsAnswered: answered, pollsWaiting: waiting, errors: [...errors], errorCount, networkErrors });
      heartbeatMs = [];
      heartbeats = 0;
      answered = 0;
    } else if (m.cmd === 'handoff') {
      handoff(m.warmup, m.samples).then((r) => send({ type: 'handoff', ...r }), fail);
    } else if (m.cmd === 'stop') {
      stopping = true;
      if (beating) clearInterval(beating);
      stop.abort();
      Promise.all(polls).then(() => {
        agent.destroy();
        send({ type: 'stopped' });
      }, fail);
    }
  });
}

if (!isMainThread && (workerData as { benchScaleAgents?: boolean } | null)?.benchScaleAgents) {
  clientThread(workerData as ClientData).catch((err) => {
    parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err), misbehaviour: err instanceof Misbehaviour });
  });
}

// ---------------------------------------------------------------------------------------
// Main thread

/** Memory of a process from /proc/<pid>/status, in MB. */
function memoryOf(pid: number): { rss_mb: number; hwm_mb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss_mb: r1(kb('VmRSS') / 1024), hwm_mb: r1(kb('VmHWM') / 1024) };
}

/** The API process's own view of its memory (GET /metrics, prom-client's default metrics), in MB. */
async function heapOf(url: string): Promise<{ heap_used_mb: number; heap_total_mb: number; external_mb: number } | null> {
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    const mb = (name: string) => r1(Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(text)?.[1] ?? NaN) / 1048576);
    return { heap_used_mb: mb('nodejs_heap_size_used_bytes'), heap_total_mb: mb('nodejs_heap_size_total_bytes'), external_mb: mb('nodejs_external_memory_bytes') };
  } catch {
    return null;
  }
}

/** The server's own histogram of heartbeat durations (GET /metrics): cumulative count per bucket bound (s). */
async function heartbeatBuckets(url: string): Promise<Map<number, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const buckets = new Map<number, number>();
  const re = /^http_request_duration_seconds_bucket\{([^}]*)\} (\S+)$/gm;
  for (const m of text.matchAll(re)) {
    if (!m[1].includes('route="/api/v1/agent/heartbeat"') || !m[1].includes('status="200"')) continue;
    const le = /le="([^"]+)"/.exec(m[1])?.[1];
    if (le) buckets.set(le === '+Inf' ? Infinity : Number(le), Number(m[2]));
  }
  return buckets;
}

/** The bucket bound under which p % of the heartbeats between two readings fell (seconds → ms). */
function bucketPercentile(before: Map<number, number>, after: Map<number, number>, p: number): number {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  for (const b of bounds) if ((after.get(b) ?? 0) - (before.get(b) ?? 0) >= (p / 100) * total) return b * 1000;
  return NaN;
}

/** CPU milliseconds a process used so far (its threads; not its children). */
function processCpuMs(pid: number): number {
  const st = procStat(String(pid));
  return st ? ((Number(st.fields[11]) + Number(st.fields[12])) * 1000) / ticksPerSecond() : NaN;
}

/**
 * node's flags for the server processes: those `npm start` gives (package.json), so the bench
 * measures the process as it is run; BENCH_SCALE_NODE_FLAGS adds more (diagnostics, e.g.
 * "--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=/tmp").
 */
function serverFlags(): string[] {
  const start = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  const own = /^node\s+(.*?)\s*src\/main\.ts/.exec(start)?.[1] ?? '';
  return [...own.split(/\s+/), ...(process.env.BENCH_SCALE_NODE_FLAGS ?? '').split(/\s+/)].filter(Boolean);
}

type Proc = { name: string; child: ChildProcess; log: string[] };

function startProcess(name: string, env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [...serverFlags(), path.join(root, 'src/main.ts')], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p: Proc = { name, child, log: [] };
  const keep = (d: Buffer) => {
    p.log.push(d.toString('utf8'));
    if (p.log.length > 200) p.log.shift();
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return p;
}

async function stopProcess(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(t);
}

export default async function run(ctx: ScaleContext): Promise<{ problems: string[]; report: Record<string, unknown> }> {
  const { out, progress } = ctx;
  const AGENTS = envInt('BENCH_SCALE_AGENTS', 1000);
  const TENANTS = envInt('BENCH_SCALE_TENANTS', 100);
  const IDLE_S = envInt('BENCH_SCALE_IDLE_SECONDS', 30);
  const HB_S = envInt('BENCH_SCALE_HEARTBEAT_SECONDS', 60);
  const HB_INTERVAL_S = envInt('BENCH_SCALE_HEARTBEAT_INTERVAL', 15);
  const SAMPLES = envInt('BENCH_SCALE_HANDOFF_SAMPLES', 200);
  const WARMUP = envInt('BENCH_SCALE_HANDOFF_WARMUP', 20);
  const ONE_PROCESS = process.env.BENCH_SCALE_ROLE === 'all';
  const STATEMENTS = process.env.BENCH_STATEMENTS === '1';
  const problems: string[] = [];
  const report: Record<string, unknown> = {};
  const cleanups: (() => Promise<void>)[] = [];
  let api: Proc | null = null;
  try {
    const scratch = await scratchDatabase('scanflow_scale_agents', { preloadStatements: STATEMENTS && !process.env.DATABASE_URL, progress });
    cleanups.push(scratch.drop);
    const db = createPool(scratch.url, 2, { application_name: BENCH_APP });
    db.on('error', () => {});
    cleanups.push(() => db.end());
    await findPostmaster(db);

    const adminToken = randomBytes(24).toString('base64url');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const common = {
      DATABASE_URL: scratch.url, ADMIN_TOKEN: adminToken, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
      HEARTBEAT_INTERVAL: `${HB_INTERVAL_S}s`,
    };
    progress(`starting the API process${ONE_PROCESS ? ' (ROLE=all)' : ' (ROLE=api) and a worker process (ROLE=worker)'}`);
    api = startProcess('api', { ...common, PORT: String(port), ROLE: ONE_PROCESS ? 'all' : 'api', PGAPPNAME: 'scanflow-api' });
    const apiProc = api;
    cleanups.push(() => stopProcess(apiProc));
    const request = async <T = any>(method: string, p: string, o: { token?: string; body?: unknown } = {}): Promise<T> => {
      const res = await fetch(url + p, {
        method, headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(o.body ? { 'content-type': 'application/json' } : {}) },
        body: o.body ? JSON.stringify(o.body) : undefined,
      });
      const body = await res.json();
      if (!res.ok) throw new Misbehaviour(`${method} ${p}: HTTP ${res.status} ${JSON.stringify(body).slice(0, 300)}`);
      return body as T;
    };
    for (let until = Date.now() + 60_000; ;) {
      if (api.child.exitCode !== null) throw new Error(`the API process exited: ${api.log.join('').slice(-2000)}`);
      try {
        if ((await fetch(`${url}/healthz`)).ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > until) throw new Error(`the API process did not start: ${api.log.join('').slice(-2000)}`);
      await sleep(100);
    }
    if (!ONE_PROCESS) {
      const worker = startProcess('worker', { ...common, ROLE: 'worker', PGAPPNAME: 'scanflow-worker' });
      cleanups.push(() => stopProcess(worker));
      for (let until = Date.now() + 60_000; ;) {
        if (worker.child.exitCode !== null) throw new Error(`the worker process exited: ${worker.log.join('').slice(-2000)}`);
        const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM worker_processes WHERE pid = $1 AND stopped_at IS NULL', [worker.child.pid]);
        if (rows[0].n > 0) break;
        if (Date.now() > until) throw new Error(`the worker process did not start: ${worker.log.join('').slice(-2000)}`);
        await sleep(100);
      }
    }
    const pid = api.child.pid!;

    // --- tenants and agents over HTTP ----------------------------------------------------
    progress(`creating ${TENANTS} tenants and ${AGENTS} agents`);
    const tenants: string[] = [];
    for (let t = 0; t < TENANTS; t++) {
      tenants.push((await request<{ token: string }>('POST', '/api/v1/tenants', { token: adminToken, body: { name: `scale-tenant-${t}` } })).token);
    }
    const keys: string[] = new Array(AGENTS);
    let nextAgent = 0;
    await Promise.all(Array.from({ length: 20 }, async () => {
      while (nextAgent < AGENTS) {
        const i = nextAgent++;
        // Tools no command needs: they wait, as idle agents of a large installation do.
        keys[i] = (await request<{ api_key: string }>('POST', '/api/v1/agents', {
          token: tenants[i % TENANTS], body: { name: `scale-agent-${i}`, tools: ['semgrep', 'trivy', 'gitleaks'], max_concurrent_jobs: 5 },
        })).api_key;
      }
    }));
    // The handoff's chain and its two agents, in the first tenant (beside its waiting agents).
    const pipelineId = (await request<{ id: string }>('POST', '/api/v1/pipelines', {
      token: tenants[0], body: {
        name: 'scale-chain',
        steps: [
          { id: 'a', name: 'A', tool: 'bench-a', depends_on: [], timeout: '10m' },
          { id: 'b', name: 'B', tool: 'bench-b', depends_on: ['a'], timeout: '10m' },
        ],
        settings: { max_parallel_steps: 1 },
      },
    })).id;
    const keyX = (await request<{ api_key: string }>('POST', '/api/v1/agents', { token: tenants[0], body: { name: 'scale-x', tools: ['bench-a'], max_concurrent_jobs: 5 } })).api_key;
    const keyY = (await request<{ api_key: string }>('POST', '/api/v1/agents', { token: tenants[0], body: { name: 'scale-y', tools: ['bench-b'], max_concurrent_jobs: 5 } })).api_key;

    // --- the agents' thread ---------------------------------------------------------------
    const data: ClientData & { benchScaleAgents: true } = {
      benchScaleAgents: true, url, databaseUrl: scratch.url, tenantToken: tenants[0], pipelineId, keyX, keyY, keys, heartbeatIntervalMs: HB_INTERVAL_S * 1000,
    };
    const thread = new Worker(new URL(import.meta.url), { workerData: data });
    const inbox: FromClient[] = [];
    let wake: (() => void) | null = null;
    let threadError: Error | null = null;
    thread.on('message', (m: FromClient) => {
      inbox.push(m);
      wake?.();
    });
    thread.on('error', (err) => {
      threadError = err;
      wake?.();
    });
    cleanups.push(async () => {
      await thread.terminate();
    });
    const next = async <K extends FromClient['type']>(type: K, ms: number): Promise<Extract<FromClient, { type: K }>> => {
      const until = Date.now() + ms;
      for (;;) {
        const i = inbox.findIndex((m) => m.type === type || m.type === 'error');
        if (i >= 0) {
          const m = inbox.splice(i, 1)[0];
          if (m.type === 'error') throw m.misbehaviour ? new Misbehaviour(m.message) : new Error(m.message);
          return m as Extract<FromClient, { type: K }>;
        }
        if (threadError) throw threadError;
        if (Date.now() > until) throw new Error(`the agents' thread sent no ${type} within ${ms} ms`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
        wake = null;
      }
    };
    const tell = (m: ToClient) => thread.postMessage(m);

    progress(`${AGENTS} agents heartbeat once, then long-poll`);
    await next('waiting', 120_000);
    await sleep(3000); // every poll parked in its wait

    // Connections of the server processes (the bench's own two excluded), sampled as it goes.
    const ownPids = new Set<number>();
    const connections = async () => {
      const c = await db.connect();
      try {
        ownPids.add((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid);
        const { rows } = await c.query<{ state: string | null; listen: boolean; app: string; n: number }>(
          `SELECT state, query ILIKE 'LISTEN%' AS listen, application_name AS app, count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND backend_type = 'client backend' AND NOT (pid = ANY ($1::int[]))
             AND application_name IS DISTINCT FROM $2
           GROUP BY 1, 2, 3 ORDER BY 4 DESC`, [[...ownPids], BENCH_APP]);
        return { total: rows.reduce((a, r) => a + r.n, 0), listening: rows.filter((r) => r.listen).reduce((a, r) => a + r.n, 0), rows };
      } finally {
        c.release();
      }
    };
    let maxConnections = 0;
    // What the server's busy connections wait for, sampled every 500 ms (in the heartbeat window).
    const waits = new Map<string, number>();
    let sampleWaits = false;
    const sampleWaitsOnce = async () => {
      const { rows } = await db.query<{ what: string }>(
        `SELECT application_name || ' ' || coalesce(wait_event_type || ':' || wait_event, 'on CPU') || ' ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS what
         FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND state = 'active'
           AND application_name IS DISTINCT FROM $1 AND query NOT ILIKE 'LISTEN%'`, [BENCH_APP]);
      for (const r of rows) waits.set(r.what, (waits.get(r.what) ?? 0) + 1);
    };
    let ticks = 0;
    const sampler = setInterval(() => {
      if (sampleWaits) sampleWaitsOnce().catch(() => {});
      if (ticks++ % 4 === 0) connections().then((c) => (maxConnections = Math.max(maxConnections, c.total)), () => {});
    }, 500);
    cleanups.push(async () => clearInterval(sampler));

    const waitingMem = { ...memoryOf(pid), ...(await heapOf(url)) };
    progress(`API process pid ${pid}`);
    const waitingConn = await connections();
    maxConnections = Math.max(maxConnections, waitingConn.total);
    progress(`all waiting: RSS ${waitingMem.rss_mb} MB, ${waitingConn.total} connections`);

    // --- idle window, then heartbeats ------------------------------------------------------
    const window = async (seconds: number) => {
      tell({ cmd: 'stats' });
      const before = await next('stats', 10_000);
      const t0 = now();
      const pg0 = postgresCpuMs();
      const api0 = processCpuMs(pid);
      await sleep(seconds * 1000);
      const wallMs = now() - t0;
      const pgMs = (postgresCpuMs() ?? NaN) - (pg0 ?? NaN);
      const apiMs = processCpuMs(pid) - api0;
      tell({ cmd: 'stats' });
      const stats = await next('stats', 10_000);
      return { wallMs, pgMs, apiMs, stats, before };
    };
    progress(`idle window: ${IDLE_S} s of long polls without heartbeats`);
    const idle = await window(IDLE_S);
    tell({ cmd: 'heartbeats', on: true });
    progress(`heartbeat window: ${HB_S} s, each agent every ${HB_INTERVAL_S} s`);
    if (STATEMENTS) await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements').then(() => db.query('SELECT pg_stat_statements_reset()'));
    const serverBefore = await heartbeatBuckets(url);
    sampleWaits = true;
    const beating = await window(HB_S);
    sampleWaits = false;
    const serverAfter = await heartbeatBuckets(url);
    const serverHb = { p50_le_ms: bucketPercentile(serverBefore, serverAfter, 50), p99_le_ms: bucketPercentile(serverBefore, serverAfter, 99) };
    let statements: { calls: number; ms: number; max_ms: number; query: string }[] = [];
    if (STATEMENTS) {
      statements = (await db.query<{ calls: number; ms: number; max_ms: number; query: string }>(
        `SELECT calls::int, round(total_exec_time::numeric, 1)::float AS ms, round(max_exec_time::numeric, 1)::float AS max_ms,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS query
         FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15`)).rows;
    }
    const afterHeartbeatsMem = { ...memoryOf(pid), ...(await heapOf(url)) };
    progress(`after the heartbeat window: RSS ${afterHeartbeatsMem.rss_mb} MB (peak ${afterHeartbeatsMem.hwm_mb} MB)`);

    // --- handoff with every agent waiting (and heartbeating) --------------------------------
    progress(`handoff: ${WARMUP} warm-up + ${SAMPLES} samples with ${AGENTS} agents waiting`);
    tell({ cmd: 'handoff', warmup: WARMUP, samples: SAMPLES });
    const h = await next('handoff', (WARMUP + SAMPLES) * 15_000);
    const endMem = { ...memoryOf(pid), ...(await heapOf(url)) };
    const endConn = await connections();
    maxConnections = Math.max(maxConnections, endConn.total);
    tell({ cmd: 'stats' });
    const last = await next('stats', 10_000);
    tell({ cmd: 'heartbeats', on: false });
    const offline = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM agents WHERE health <> 'online' AND name LIKE 'scale-agent-%'`)).rows[0].n;
    tell({ cmd: 'stop' });
    await next('stopped', 30_000);

    // --- figures ----------------------------------------------------------------------------
    const pct1 = (ms: number, wall: number) => (ms / wall) * 100;
    const idlePgPct = pct1(idle.pgMs, idle.wallMs);
    const hbPgPct = pct1(beating.pgMs, beating.wallMs);
    const costPct = hbPgPct - idlePgPct;
    const hb = summarize(beating.stats.heartbeatMs);
    const handoff = summarize(h.handoffMs);
    const complete = summarize(h.completeMs);
    const errorCount = beating.stats.errorCount; // cumulative in the thread
    const errors = [...new Set([...idle.stats.errors, ...beating.stats.errors, ...last.errors])];
    if (last.errorCount > 0) problems.push(`${last.errorCount} agent request(s) failed: ${errors.slice(0, 5).join('; ')}`);
    if (offline > 0) problems.push(`${offline} waiting agent(s) not online at the end`);
    const load = os.loadavg().map(r2);

    report.env = { agents: AGENTS, tenants: TENANTS, roles: ONE_PROCESS ? 'all' : 'api + worker', node_flags: serverFlags(), database: scratch.kind, load_average: load };
    report.rss_mb = { waiting: waitingMem, after_heartbeats: afterHeartbeatsMem, after_handoff: endMem };
    report.connections = { waiting: waitingConn.total, listening: waitingConn.listening, max_seen: maxConnections, by_state: waitingConn.rows };
    report.postgres_cpu_pct_of_core = { idle: r1(idlePgPct), heartbeats: r1(hbPgPct), heartbeat_cost: r1(costPct) };
    report.api_cpu_pct_of_core = { idle: r1(pct1(idle.apiMs, idle.wallMs)), heartbeats: r1(pct1(beating.apiMs, beating.wallMs)) };
    report.heartbeat_server_ms = serverHb;
    report.heartbeats = { per_s: r1(beating.stats.heartbeats / (beating.wallMs / 1000)), ms: mapSummary(hb), network_errors_retried: last.networkErrors };
    report.polls_answered_per_s = { idle: r1(idle.stats.pollsAnswered / (idle.wallMs / 1000)), heartbeats: r1(beating.stats.pollsAnswered / (beating.wallMs / 1000)) };
    report.handoff_ms = mapSummary(handoff);
    report.complete_ms = mapSummary(complete);
    if (STATEMENTS) report.statements = statements;
    void errorCount;

    out(`${AGENTS} agents of ${TENANTS} tenants long-polling (wait=30) one API process (node ${[...serverFlags(), 'src/main.ts'].join(' ')}, ${ONE_PROCESS ? 'ROLE=all' : 'ROLE=api, a worker process beside it'}); ${scratch.kind}; load ${load.join(' ')}`);
    out(`   API process RSS: waiting ${waitingMem.rss_mb} MB (peak ${waitingMem.hwm_mb}); after ${HB_S} s of heartbeats ${afterHeartbeatsMem.rss_mb} MB (peak ${afterHeartbeatsMem.hwm_mb}); after the handoff ${endMem.rss_mb} MB (peak ${endMem.hwm_mb})`);
    const heapLine = (m: { heap_used_mb?: number; heap_total_mb?: number; external_mb?: number }) => `${m.heap_used_mb} of ${m.heap_total_mb} MB heap, ${m.external_mb} MB external`;
    out(`   its V8 heap: waiting ${heapLine(waitingMem)}; after the heartbeats ${heapLine(afterHeartbeatsMem)}; after the handoff ${heapLine(endMem)}`);
    out(`   database connections of the server processes: ${waitingConn.total} with all waiting (${waitingConn.listening} LISTEN), at most ${maxConnections} seen: ` +
      waitingConn.rows.map((r) => `${r.n} ${r.listen ? 'listening' : r.state ?? '?'}${r.app ? ` (${r.app})` : ''}`).join(', '));
    out(`   PostgreSQL CPU: idle (polls only) ${f1(idlePgPct)} % of a core, with heartbeats ${f1(hbPgPct)} %: heartbeats cost ${f1(costPct)} % ` +
      `(${r1(beating.stats.heartbeats / (beating.wallMs / 1000))} heartbeats/s; API process ${f1(pct1(idle.apiMs, idle.wallMs))} → ${f1(pct1(beating.apiMs, beating.wallMs))} %)`);
    out(`   heartbeat: p50 ${f1(hb.p50)} ms   p95 ${f1(hb.p95)} ms   p99 ${f1(hb.p99)} ms   max ${f1(hb.max)} ms   (${hb.n}; ${last.networkErrors} network errors retried in all); in the server: p50 ≤ ${serverHb.p50_le_ms} ms, p99 ≤ ${serverHb.p99_le_ms} ms`);
    out(`   handoff with all waiting: p50 ${f1(handoff.p50)} ms   p95 ${f1(handoff.p95)} ms   p99 ${f1(handoff.p99)} ms   max ${f1(handoff.max)} ms   (${handoff.n}; complete p50 ${f1(complete.p50)} ms)`);
    const topWaits = [...waits].sort((a, b) => b[1] - a[1]).slice(0, 8);
    report.busy_connections_sampled = Object.fromEntries(topWaits);
    out(`   the server's busy connections in the heartbeat window (sampled every 500 ms; ${HB_S * 2} samples): ${topWaits.length ? '' : 'none'}`);
    for (const [what, n] of topWaits) out(`     ${String(n).padStart(5)}×  ${what}`);
    if (STATEMENTS) {
      out('   costliest statements of the heartbeat window (pg_stat_statements):');
      for (const s of statements) out(`     ${String(s.ms).padStart(9)} ms ${String(s.calls).padStart(7)}× (max ${String(s.max_ms).padStart(7)} ms)  ${s.query}`);
    }
    const pf = (pass: boolean) => (pass ? '✔' : '✘');
    // The issue's two moments: all waiting, and after a minute of heartbeats (after the handoff: printed).
    const rssMax = Math.max(waitingMem.rss_mb, afterHeartbeatsMem.rss_mb);
    const targets = {
      rss: { value_mb: rssMax, target_mb: 300, pass: rssMax <= 300 },
      handoff_p99: { value_ms: r2(handoff.p99), target_ms: 100, pass: handoff.p99 <= 100 },
      // No connection per waiting agent: the pool's 20, the LISTENs and the worker's, far from one per agent.
      connections: { value: maxConnections, target: 50, pass: maxConnections <= 50 },
      heartbeat_cost: { value_pct: r1(costPct), target_pct: 10, pass: costPct <= 10 },
    };
    report.targets = targets;
    out('   targets:');
    out(`     API RSS ≤ 300 MB (waiting, after the heartbeats) ${f1(rssMax).padStart(7)} MB   ${pf(targets.rss.pass)}`);
    out(`     handoff p99 ≤ 100 ms        ${f1(handoff.p99).padStart(7)} ms   ${pf(targets.handoff_p99.pass)}`);
    out(`     connections ≤ 50            ${String(maxConnections).padStart(7)}      ${pf(targets.connections.pass)}`);
    out(`     heartbeat cost ≤ 10 % core  ${f1(costPct).padStart(7)} %    ${pf(targets.heartbeat_cost.pass)}`);
  } catch (err) {
    if (!(err instanceof Misbehaviour)) throw err;
    problems.push(err.message);
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err) => progress(`cleanup: ${String(err)}`));
  }
  return { problems, report };
}
