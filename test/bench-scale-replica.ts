// The bench's scale part "replica" (test/bench-scale.ts; `npm run bench -- scale-replica`):
// what DATABASE_READ_URL moves off the primary and what it costs. A primary and a streaming
// standby of it (test/support/replica.ts: embedded, whatever DATABASE_URL says) hold
// BENCH_REPLICA_HISTORY (20,000) finished runs of the bench's tenant (test/support/history.ts).
// Two orchestrators on that primary, one with DATABASE_READ_URL = the standby, one without,
// answer the same requests, BENCH_REPLICA_READS (2,000) of each kind, BENCH_REPLICA_CONCURRENCY
// (8) at a time:
//   - an API client's run list (GET /api/v1/pipeline-runs?limit=50): plain replica reads;
//   - the dashboard's runs page (GET / with a session: the session, the filters' lists and
//     the runs, each read causal: the primary's WAL position, then the standby's);
//   - a write and its read at once (POST a run, GET it), one client at a time: the read
//     waits for the standby to replay the write, or reads the primary.
// For each: latency p50/p99, the CPU of the primary's and the standby's PostgreSQL per
// request (Linux /proc; for the writes it includes the worker's progression of the runs they
// create, so only their latency compares), and where the reads went (ReadRouting.counts).
// Both servers share this machine with the orchestrators: on 2 cores the latencies move with
// the load, the CPU per request is the figure to compare. Misbehaviour (a problem): an answer that is not a success, a
// write the standby refused (its log says "read-only transaction").
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import os from 'node:os';
import pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import type { ScaleContext } from './bench-scale.ts';
import { call, type CallOptions } from './support/http-client.ts';
import { fillHistory } from './support/history.ts';
import { replicaUnsupported, startReplicaPair } from './support/replica.ts';
import { envInt, f1, procStat, r2, summarize, ticksPerSecond } from './support/measure.ts';
import { READ_WAIT_MS } from '../src/db/reads.ts';

/** The postmaster of the server `url` connects to, when it runs on this machine (Linux /proc). */
async function postmasterOf(url: string): Promise<string | null> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const backend = procStat(String(rows[0].pid));
    if (!backend || backend.comm !== 'postgres') return null;
    return procStat(backend.fields[1])?.comm === 'postgres' ? backend.fields[1] : null;
  } finally {
    await c.end();
  }
}

/** CPU milliseconds of a postmaster and its children (live, and exited through its cutime/cstime). */
function serverCpuMs(postmaster: string | null): number | null {
  if (!postmaster || os.platform() !== 'linux') return null;
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = procStat(entry);
    if (!st) continue;
    if (entry === postmaster) ticks += Number(st.fields[11]) + Number(st.fields[12]) + Number(st.fields[13]) + Number(st.fields[14]);
    else if (st.fields[1] === postmaster) ticks += Number(st.fields[11]) + Number(st.fields[12]);
  }
  return (ticks * 1000) / ticksPerSecond();
}

type Mode = 'primary only' | 'with replica';
type Figures = {
  n: number; p50_ms: number; p99_ms: number; primary_cpu_ms_per_request: number | null; replica_cpu_ms_per_request: number | null;
  /** With the replica: where the API requests' reads went (ReadRouting.counts over the measurement, warm-up included). */
  reads_went?: Record<string, number>;
};

export default async function run(ctx: ScaleContext): Promise<{ problems: string[]; report: Record<string, unknown> }> {
  const unsupported = replicaUnsupported();
  if (unsupported) {
    ctx.out(`scale-replica: skipped, no replica on this platform (${unsupported})`);
    return { problems: [], report: { skipped: unsupported } };
  }
  const HISTORY = envInt('BENCH_REPLICA_HISTORY', 20_000);
  const READS = envInt('BENCH_REPLICA_READS', 2_000);
  const CONCURRENCY = envInt('BENCH_REPLICA_CONCURRENCY', 8);
  const WRITES = envInt('BENCH_REPLICA_WRITES', 200);
  const problems: string[] = [];
  const report: Record<string, unknown> = { history_runs: HISTORY, reads: READS, concurrency: CONCURRENCY, writes: WRITES, load_average_before: os.loadavg().map(r2) };
  const cleanups: (() => Promise<void>)[] = [];
  try {
    ctx.progress('scale-replica: a primary and a standby (cold copy)');
    const pair = await startReplicaPair('scanflow_bench_replica');
    cleanups.push(pair.stop);
    const { startOrchestrator } = await import('../src/server.ts');
    const { loadConfig } = await import('../src/config.ts');
    const pino = (await import('pino')).default;
    const logger = pino({ level: 'warn' }, pino.destination(2));
    const adminToken = randomBytes(24).toString('base64url');
    const base = { DATABASE_URL: pair.primaryUrl, PORT: '0', ADMIN_TOKEN: adminToken, LOG_LEVEL: 'warn' };
    const withReplica = await startOrchestrator(loadConfig({ ...base, DATABASE_READ_URL: pair.replicaUrl }), logger);
    cleanups.push(withReplica.stop);
    const primaryOnly = await startOrchestrator(loadConfig({ ...base, ROLE: 'api' }), logger);
    cleanups.push(primaryOnly.stop);
    const urls: Record<Mode, string> = { 'primary only': primaryOnly.url, 'with replica': withReplica.url };

    const must = async <T = any>(url: string, method: string, path: string, o: CallOptions, what: string): Promise<T> => {
      const res = await call<T>(url, method, path, o);
      if (res.status >= 300) throw new Error(`${what}: ${method} ${path} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`);
      return res.body;
    };
    const tenant = await must(withReplica.url, 'POST', '/api/v1/tenants', { token: adminToken, body: { name: 'replica-bench' } }, 'tenant');
    const token = tenant.token as string;
    const asset = await must(withReplica.url, 'POST', '/api/v1/assets', { token, body: { type: 'web_application', name: 'shop', value: 'https://shop.example.com' } }, 'asset');
    const pipeline = await must(withReplica.url, 'POST', '/api/v1/pipelines', { token, body: { name: 'nightly', steps: [{ id: 'x', tool: 'bench-unclaimed', timeout: '1h' }] } }, 'pipeline');

    ctx.progress(`scale-replica: ${HISTORY} finished runs of history`);
    const fillPool = createPool(pair.primaryUrl, 2);
    await fillHistory(fillPool, { runs: HISTORY, sightings: HISTORY, outputBytes: 0, tenants: 1, tenantId: tenant.tenant.id, share: 50, progress: ctx.progress });
    await fillPool.query('VACUUM ANALYZE');
    await fillPool.end();
    await pair.caughtUp(120_000);
    const primaryPm = await postmasterOf(pair.primaryUrl);
    const replicaPm = await postmasterOf(pair.replicaUrl);

    const cookieOf = async (url: string): Promise<string> => {
      const res = await call(url, 'POST', '/api/v1/session', { body: { token } });
      if (res.status !== 204) throw new Error(`sign-in answered ${res.status}`);
      return /^(scanflow_session=[^;]+)/.exec(String(res.headers['set-cookie']))![1];
    };

    /** `count` requests made by `request`, `concurrency` at a time: latency and the servers' CPU per request. */
    const measure = async (count: number, concurrency: number, request: (i: number) => Promise<number>): Promise<Figures> => {
      for (let i = 0; i < Math.min(50, count); i++) await request(i); // warm: connections, plans
      const pg0 = serverCpuMs(primaryPm);
      const rp0 = serverCpuMs(replicaPm);
      const times: number[] = [];
      let next = 0;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < count) times.push(await request(next++));
      }));
      const pg1 = serverCpuMs(primaryPm);
      const rp1 = serverCpuMs(replicaPm);
      const s = summarize(times);
      return {
        n: count, p50_ms: r2(s.p50), p99_ms: r2(s.p99),
        primary_cpu_ms_per_request: pg0 === null || pg1 === null ? null : r2((pg1 - pg0) / count),
        replica_cpu_ms_per_request: rp0 === null || rp1 === null ? null : r2((rp1 - rp0) / count),
      };
    };
    const timed = async (url: string, method: string, path: string, o: CallOptions): Promise<{ ms: number; body: any }> => {
      const res = await call(url, method, path, o);
      if (res.status >= 300) {
        const problem = `${method} ${path} answered ${res.status}`;
        if (!problems.includes(problem)) problems.push(problem);
      }
      return { ms: res.ms, body: res.body };
    };

    const kinds: { name: string; figures: Record<Mode, Figures> }[] = [];
    const line = (f: Figures) =>
      `p50 ${f1(f.p50_ms)} ms p99 ${f1(f.p99_ms)} ms │ CPU per request: primary ${f.primary_cpu_ms_per_request ?? 'n/a'} ms, standby ${f.replica_cpu_ms_per_request ?? 'n/a'} ms`;
    const print = (name: string, figures: Record<Mode, Figures>) => {
      kinds.push({ name, figures });
      ctx.out(`${name}`);
      for (const mode of ['primary only', 'with replica'] as Mode[]) ctx.out(`  ${mode.padEnd(13)}: ${line(figures[mode])}`);
      const went = figures['with replica'].reads_went;
      if (went) {
        ctx.out(`  reads went to: the standby at once ${went.replica}, after waiting for its replay ${went.replicaAfterWait}, ` +
          `the primary (standby behind ${READ_WAIT_MS} ms) ${went.primaryBehind}, the primary (standby failing) ${went.primaryFailing}`);
      }
    };
    /** measure(), and with the replica where the reads went. */
    const measured = async (mode: Mode, count: number, concurrency: number, request: (i: number) => Promise<number>): Promise<Figures> => {
      const before = { ...withReplica.reads!.counts };
      const figures = await measure(count, concurrency, request);
      if (mode === 'with replica') {
        const after = withReplica.reads!.counts;
        figures.reads_went = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]]));
      }
      return figures;
    };

    ctx.out(`scale-replica: ${HISTORY.toLocaleString('en')} finished runs (half the bench tenant's); ${READS.toLocaleString('en')} requests of each kind, ${CONCURRENCY} at a time; load average before ${os.loadavg().map(r2).join(' ')}`);
    for (const [name, path] of [
      ['API client: GET /api/v1/pipeline-runs?limit=50', '/api/v1/pipeline-runs?limit=50'],
      ['API client: GET /api/v1/pipeline-runs?status=failed&limit=50', '/api/v1/pipeline-runs?status=failed&limit=50'],
    ] as const) {
      const figures = {} as Record<Mode, Figures>;
      for (const mode of ['primary only', 'with replica'] as Mode[]) {
        ctx.progress(`scale-replica: ${name}, ${mode}`);
        figures[mode] = await measured(mode, READS, CONCURRENCY, async () => (await timed(urls[mode], 'GET', path, { token })).ms);
      }
      print(name, figures);
    }
    {
      const name = 'dashboard: GET / (runs page, session: every read causal)';
      const figures = {} as Record<Mode, Figures>;
      for (const mode of ['primary only', 'with replica'] as Mode[]) {
        ctx.progress(`scale-replica: ${name}, ${mode}`);
        const cookie = await cookieOf(urls[mode]);
        figures[mode] = await measured(mode, Math.ceil(READS / 4), CONCURRENCY, async () => (await timed(urls[mode], 'GET', '/', { headers: { cookie } })).ms);
      }
      print(name, figures);
    }
    {
      const name = 'a write and its read at once (POST a run; the GET timed), one client';
      const figures = {} as Record<Mode, Figures>;
      for (const mode of ['primary only', 'with replica'] as Mode[]) {
        ctx.progress(`scale-replica: ${name}, ${mode}`);
        figures[mode] = await measured(mode, WRITES, 1, async () => {
          const created = await timed(urls[mode], 'POST', `/api/v1/pipelines/${pipeline.id}/run`, { token, body: { asset_id: asset.id } });
          const read = await timed(urls[mode], 'GET', `/api/v1/pipeline-runs/${created.body.id}`, { token });
          if (read.body?.id !== created.body.id) problems.push(`a run read back at once was not found (${mode})`);
          return read.ms;
        });
      }
      print(name, figures);
    }
    const lag = new pg.Client({ connectionString: pair.primaryUrl });
    await lag.connect();
    const { rows } = await lag.query<{ replay_lag_ms: number | null }>(
      `SELECT extract(epoch FROM replay_lag) * 1000 AS replay_lag_ms FROM pg_stat_replication WHERE application_name = 'scanflow_standby'`);
    await lag.end();
    report.replay_lag_ms_at_end = rows[0]?.replay_lag_ms ?? null;
    ctx.out(`standby replay lag at the end (pg_stat_replication.replay_lag): ${rows[0]?.replay_lag_ms === null || rows[0] === undefined ? 'none pending' : `${f1(Number(rows[0].replay_lag_ms))} ms`}`);
    if (/read-only transaction|cannot execute/.test(pair.replicaLog())) problems.push('a write was sent to the standby (its log says so)');
    const ok = problems.length === 0;
    ctx.out(`${ok ? '✔' : '✘'} every answer a success, no write sent to the standby${ok ? '' : `: ${problems.join('; ')}`}`);
    report.kinds = kinds;
    report.load_average_after = os.loadavg().map(r2);
    return { problems, report };
  } catch (err) {
    problems.push(`scale-replica failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    return { problems, report };
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err) => ctx.progress(`cleanup: ${String(err)}`));
  }
}
