// Measuring for the bench: percentiles, CPU time of this process's threads and of the
// benchmark's PostgreSQL (Linux /proc), and the misbehaviour that fails a benchmark run.
import { performance } from 'node:perf_hooks';
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { now, type Res } from './http-client.ts';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Misbehaviour extends Error {}

export function ok<T>(res: Res<T>, what: string): T {
  if (res.status < 200 || res.status > 299) {
    throw new Misbehaviour(`${what}: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  }
  return res.body;
}

/** Nearest-rank percentile of an ascending-sorted array. */
export function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export type Summary = { n: number; p50: number; p95: number; p99: number; max: number; mean: number };
export function summarize(values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return { n: s.length, p50: pct(s, 50), p95: pct(s, 95), p99: pct(s, 99), max: s[s.length - 1] ?? NaN, mean };
}

export const r1 = (x: number) => Math.round(x * 10) / 10;
export const r2 = (x: number) => Math.round(x * 100) / 100;
export const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');

export function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive whole number`);
  return n;
}


let clockTicks = 0;
export function ticksPerSecond(): number {
  if (!clockTicks) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export function procStat(pid: string): { comm: string; fields: string[] } | null {
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
export async function findPostmaster(db: pg.Pool): Promise<void> {
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
export function postgresCpuMs(): number | null {
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
export function threadCpuMs(): Record<string, number> {
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
export function machineCpuMs(): { busy: number; idle: number; iowait: number; steal: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const k = 1000 / ticksPerSecond();
    // user nice system idle iowait irq softirq steal
    return { busy: (f[0] + f[1] + f[2] + f[5] + f[6]) * k, idle: f[3] * k, iowait: f[4] * k, steal: (f[7] ?? 0) * k };
  } catch {
    return null;
  }
}

export type CpuMark = {
  t: number;
  node: NodeJS.CpuUsage;
  pg: number | null;
  threads: Record<string, number>;
  machine: ReturnType<typeof machineCpuMs>;
  elu: ReturnType<typeof performance.eventLoopUtilization>;
};
export const cpuMark = (): CpuMark => ({
  t: now(), node: process.cpuUsage(), pg: postgresCpuMs(), threads: threadCpuMs(), machine: machineCpuMs(),
  elu: performance.eventLoopUtilization(),
});
export type CpuSpan = {
  wallMs: number;
  nodeCpuMs: number;
  postgresCpuMs: number | null;
  threadsCpuMs: Record<string, number>;
  mainLoopBusyMs: number;
  /** Whole machine over the span, % of all cores (other processes included). */
  machine: { busyPct: number; idlePct: number; iowaitPct: number; stealPct: number } | null;
};
export function cpuSince(m: CpuMark): CpuSpan {
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
export function cpuReport(c: CpuSpan, units: number) {
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

export type CpuOut = ReturnType<typeof cpuReport>;
export function cpuLine(c: CpuOut): string {
  const m = c.machine_pct;
  return `node ${c.per_unit_ms.node} ms (server thread ${c.per_unit_ms.main_thread ?? 'n/a'} ms), postgres ${c.per_unit_ms.postgres ?? 'n/a'} ms` +
    (m ? `; machine ${m.busy}% busy, ${m.idle}% idle, ${m.iowait}% iowait, ${m.steal}% steal` : '');
}
export function cpuThreads(c: CpuOut): string {
  const th = Object.entries(c.node_threads_cpu_s).map(([k, v]) => `${k} ${v} s`).join(', ');
  return `node ${c.node_cpu_s} s CPU (${th}), postgres ${c.postgres_cpu_s ?? 'n/a'} s CPU`;
}

export function sorted(a: number[]): number[] {
  return [...a].sort((x, y) => x - y);
}

export function mapSummary(s: Summary) {
  return { p50: r2(s.p50), p95: r2(s.p95), p99: r2(s.p99), max: r2(s.max), mean: r2(s.mean), n: s.n };
}

export type DatabaseTime = {
  /** Summed over connections: time with a statement sent and not yet answered (network, execution, parsing the answer). */
  statementsMs: number;
  /** Summed over checkouts: time a client was out of its pool (a transaction, with the Node work done while holding it). */
  heldMs: number;
  /** Round trips (a pipeline of statements is one). */
  roundTrips: number;
  checkouts: number;
};

/**
 * How long the process's PostgreSQL connections were busy, timed in this process (the
 * server runs in it), from install() until read(). Patches pg's Client.prototype.query and
 * Pool.prototype.emit ('acquire', 'release'): for a bench only. Not counted: the pools in
 * `exclude` (the bench's own connections) and graphile-worker's own statements (its
 * polling for jobs; scanflow's tasks run on its connections and count).
 */
export function watchDatabaseTime(exclude: pg.Pool[]): { reset(): void; read(): DatabaseTime; uninstall(): void } {
  type Busy = { inflight: number; since: number; checkedOut: number | null; ours: boolean };
  const state = new WeakMap<object, Busy>();
  const excludedClients = new WeakSet<object>();
  let t: DatabaseTime = { statementsMs: 0, heldMs: 0, roundTrips: 0, checkouts: 0 };
  const busy = (client: object) => {
    let b = state.get(client);
    if (!b) state.set(client, (b = { inflight: 0, since: 0, checkedOut: null, ours: false }));
    return b;
  };
  const Client = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const Pool = pg.Pool.prototype as unknown as { emit: (event: string, ...args: unknown[]) => boolean };
  const query = Client.query;
  const emit = Pool.emit;

  Client.query = function (this: object, ...args: unknown[]) {
    const config = args[0] as { text?: string; submit?: unknown; callback?: (...a: unknown[]) => void } | string;
    const text = typeof config === 'string' ? config : config?.text ?? '';
    if (excludedClients.has(this) || text.includes('graphile_worker')) return query.apply(this, args);
    const b = busy(this);
    b.ours = true;
    if (b.inflight++ === 0) b.since = now();
    t.roundTrips++;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      if (--b.inflight === 0) t.statementsMs += now() - b.since;
    };
    // A submittable (db/pipeline.ts) answers through its callback; others through the
    // callback given last, or the promise returned.
    if (typeof config === 'object' && config !== null && typeof config.submit === 'function' && typeof config.callback === 'function') {
      const cb = config.callback;
      config.callback = (...a: unknown[]) => {
        end();
        cb(...a);
      };
      return query.apply(this, args);
    }
    const last = args.length - 1;
    if (typeof args[last] === 'function') {
      const cb = args[last] as (...a: unknown[]) => void;
      args[last] = (...a: unknown[]) => {
        end();
        cb(...a);
      };
      return query.apply(this, args);
    }
    const result = query.apply(this, args);
    if (result && typeof (result as Promise<unknown>).then === 'function') (result as Promise<unknown>).then(end, end);
    else end();
    return result;
  };

  Pool.emit = function (this: pg.Pool, event: string, ...args: unknown[]) {
    if (event === 'acquire' || event === 'release') {
      const client = (event === 'acquire' ? args[0] : args[1]) as object;
      if (exclude.includes(this)) excludedClients.add(client);
      else if (event === 'acquire') {
        const b = busy(client);
        b.checkedOut = now();
        b.ours = false;
      } else {
        const b = busy(client);
        // A checkout that only ran graphile-worker's statements is its polling.
        if (b.checkedOut !== null && b.ours) {
          t.heldMs += now() - b.checkedOut;
          t.checkouts++;
        }
        b.checkedOut = null;
      }
    }
    return emit.call(this, event, ...args);
  };

  return {
    reset: () => {
      t = { statementsMs: 0, heldMs: 0, roundTrips: 0, checkouts: 0 };
    },
    read: () => ({ ...t }),
    uninstall: () => {
      Client.query = query;
      Pool.emit = emit;
    },
  };
}
