// The bench's findings section (`npm run bench -- findings`): a SARIF log of BENCH_FINDINGS
// results (50,000: about 27 MB, made up deterministically by test/support/synthetic-sarif.ts)
// sent by an agent to /api/v1/agent/ingest/sarif, tied to a command of a run (X-Command-Id)
// on an asset (X-Asset-Id):
//   1. first ingest: every result a new finding;
//   2. the same log again: every finding updated, none created;
//   3. the same log zstd-compressed (as the seed SDK and the reference agent send it): updates;
//   4. /ingest/check of 10,000 fingerprints, half of them existing, BENCH_CHECK_CALLS times;
//   5. the first page of the findings list (default sort, and by severity) and of the run's findings;
//   6. the command completed: the step counts 50,000 findings, the run too.
// For each ingest: wall time (the client's request → answer) and findings/s; the growth of
// the process's RSS over its level just before (peak: the kernel's VmHWM, reset before each
// ingest, and samples every 50 ms from the client thread, whose event loop is free while it
// waits); the time the server's connections spent on the database (timed in this process,
// support/measure.ts watchDatabaseTime) and, with BENCH_STATEMENTS=1, pg_stat_statements'
// execution time per statement; CPU of the server thread and of PostgreSQL.
//
// The client runs in a worker thread of this process (this file is its entry): its RSS is in
// the process's, so it makes the log and its zstd copy before the baseline is taken, and
// holds nothing more while an ingest runs.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import { zstdCompressSync, constants as zlib } from 'node:zlib';
import type pg from 'pg';
import { call, now } from './support/http-client.ts';
import {
  Misbehaviour, cpuMark, cpuReport, cpuSince, f1, mapSummary, ok, r1, r2, sleep, summarize, watchDatabaseTime,
  type CpuOut, type DatabaseTime,
} from './support/measure.ts';
import { syntheticSarif } from './support/synthetic-sarif.ts';

/** A full collection of this thread's heap (V8's gc(), reached without --expose-gc). */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

// ---------------------------------------------------------------------------------------
// Client thread

type ClientData = { section: 'findings'; url: string; apiKey: string; token: string; assetId: string; commandId: string; runId: string; results: number };
type Request =
  | { op: 'ingest'; zstd: boolean }
  | { op: 'check'; fingerprints: string[]; calls: number; warmup: number }
  | { op: 'pages'; calls: number; warmup: number };
type IngestAnswer = {
  ms: number; status: number; body: Record<string, any>;
  /** Process RSS, bytes: VmHWM after its reset (null where /proc cannot do it), and the highest sample. */
  hwmBytes: number | null; sampledPeakBytes: number; samples: number;
};

const kB = (field: string) => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : null;
};

/** Resets the process's peak RSS (VmHWM) to its current RSS: Linux's clear_refs, value 5. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

async function clientFindings(d: ClientData): Promise<void> {
  const t = now();
  const text = JSON.stringify(syntheticSarif({ results: d.results }));
  const plain = Buffer.from(text, 'utf8');
  const zstd = zstdCompressSync(plain, { params: { [zlib.ZSTD_c_compressionLevel]: 3 } });
  const generateMs = now() - t;
  collectGarbage();
  // A live agent heartbeats (one silent for AGENT_OFFLINE_AFTER loses its running command).
  const heartbeat = setInterval(() => {
    call(d.url, 'POST', '/api/v1/agent/heartbeat', { apiKey: d.apiKey, body: {} }).catch(() => {});
  }, 10_000);
  parentPort!.postMessage({ type: 'ready', bytes: plain.byteLength, zstdBytes: zstd.byteLength, generateMs });

  const ingest = async (useZstd: boolean): Promise<IngestAnswer> => {
    const hwm = resetPeakRss();
    let sampledPeakBytes = process.memoryUsage.rss();
    let samples = 1;
    const sampler = setInterval(() => {
      sampledPeakBytes = Math.max(sampledPeakBytes, process.memoryUsage.rss());
      samples++;
    }, 50);
    const headers: Record<string, string> = {
      'content-type': 'application/sarif+json', 'x-asset-id': d.assetId, 'x-command-id': d.commandId,
    };
    if (useZstd) headers['content-encoding'] = 'zstd';
    try {
      const res = await call(d.url, 'POST', '/api/v1/agent/ingest/sarif', { apiKey: d.apiKey, raw: useZstd ? zstd : plain, headers });
      sampledPeakBytes = Math.max(sampledPeakBytes, process.memoryUsage.rss());
      return { ms: res.ms, status: res.status, body: res.body, hwmBytes: hwm ? kB('VmHWM') : null, sampledPeakBytes, samples };
    } finally {
      clearInterval(sampler);
    }
  };

  const timed = async (calls: number, warmup: number, what: string, fn: () => Promise<{ ms: number; check: () => void }>) => {
    const ms: number[] = [];
    for (let i = 0; i < warmup + calls; i++) {
      const r = await fn();
      r.check();
      if (i >= warmup) ms.push(r.ms);
    }
    return { what, ms };
  };

  try {
    for await (const [m] of on(parentPort!)) {
      const req = m as Request | 'stop';
      if (req === 'stop') break;
      if (req.op === 'ingest') {
        parentPort!.postMessage({ type: 'answer', answer: await ingest(req.zstd) });
      } else if (req.op === 'check') {
        const half = req.fingerprints.length / 2;
        const r = await timed(req.calls, req.warmup, 'check', async () => {
          const res = await call<{ existing: string[]; missing: string[] }>(d.url, 'POST', '/api/v1/agent/ingest/check', {
            apiKey: d.apiKey, body: { fingerprints: req.fingerprints },
          });
          return {
            ms: res.ms,
            check: () => {
              const body = ok(res, '/ingest/check');
              if (body.existing.length !== half || body.missing.length !== half) {
                throw new Misbehaviour(`/ingest/check: ${body.existing.length} existing and ${body.missing.length} missing, expected ${half} each`);
              }
            },
          };
        });
        parentPort!.postMessage({ type: 'answer', answer: r.ms });
      } else {
        const pages: Record<string, number[]> = {};
        for (const [what, path] of [
          ['findings list, first page', '/api/v1/findings'],
          ['findings list by severity, first page', '/api/v1/findings?sort=severity'],
          ["the run's findings, first page", `/api/v1/pipeline-runs/${d.runId}/findings`],
        ]) {
          const r = await timed(req.calls, req.warmup, what, async () => {
            const res = await call<{ items: unknown[]; next_cursor: string | null }>(d.url, 'GET', path, { token: d.token });
            return {
              ms: res.ms,
              check: () => {
                const body = ok(res, what);
                if (body.items.length !== 50 || !body.next_cursor) throw new Misbehaviour(`${what}: ${body.items.length} items, expected a page of 50 and more`);
              },
            };
          });
          pages[what] = r.ms;
        }
        parentPort!.postMessage({ type: 'answer', answer: pages });
      }
    }
  } finally {
    clearInterval(heartbeat);
  }
}

/** The messages of a port as an async iterator (events.on, typed for MessagePort). */
async function* on(port: NonNullable<typeof parentPort>): AsyncGenerator<[unknown]> {
  const queue: unknown[] = [];
  let wake: (() => void) | null = null;
  port.on('message', (m) => {
    queue.push(m);
    wake?.();
  });
  for (;;) {
    while (queue.length) yield [queue.shift()];
    await new Promise<void>((r) => (wake = r));
    wake = null;
  }
}

if (!isMainThread && (workerData as { section?: string } | null)?.section === 'findings') {
  clientFindings(workerData as ClientData).then(
    () => parentPort!.close(),
    (err) => {
      parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err), misbehaviour: err instanceof Misbehaviour });
      parentPort!.close();
    },
  );
}

// ---------------------------------------------------------------------------------------
// Main thread

type Statement = { query: string; calls: number; total_ms: number; mean_ms: number; rows: number };

export type IngestFigures = {
  upload_bytes: number;
  created: number;
  updated: number;
  wall_s: number;
  findings_per_s: number;
  rss_mb: { before: number; peak: number; growth: number; peak_from: string };
  database: {
    statements_s: number; connections_held_s: number; round_trips: number; transactions: number;
    statements?: Statement[];
  };
  cpu: CpuOut;
};

export type FindingsReport = {
  results: number;
  sarif_bytes: number;
  zstd_bytes: number;
  generate_s: number;
  rules: number;
  first: IngestFigures;
  again: IngestFigures;
  zstd: IngestFigures;
  check: { fingerprints: number; existing: number; calls: number; ms: ReturnType<typeof mapSummary>; db_ms_per_call: number };
  pages_ms: Record<string, ReturnType<typeof mapSummary>>;
  /** The three pages' statements, per call on average. */
  pages_db_ms_per_call: number;
  complete_to_run_completed_ms: number;
};

export type FindingsOptions = {
  base: string;
  adminToken: string;
  db: pg.Pool;
  /** pg_stat_statements is loaded: list each ingest's costliest statements. */
  statements: boolean;
  results: number;
  checkCalls: number;
  progress: (line: string) => void;
};

/** Runs the findings section against the running orchestrator; a Misbehaviour when the system misbehaves. */
export async function benchFindings(o: FindingsOptions): Promise<FindingsReport> {
  const { base, db, progress } = o;
  const N = o.results;

  // --- setup over HTTP: a tenant, its agent, an asset, a one-step run whose command the agent holds
  const created = ok(await call<{ tenant: { id: string }; token: string }>(base, 'POST', '/api/v1/tenants', {
    token: o.adminToken, body: { name: 'bench-findings' },
  }), 'create tenant');
  const T = created.token;
  const agent = ok(await call<{ agent: { id: string }; api_key: string }>(base, 'POST', '/api/v1/agents', {
    token: T, body: { name: 'bench-sast', tools: ['semgrep'], capabilities: [], max_concurrent_jobs: 1 },
  }), 'create agent');
  const asset = ok(await call<{ id: string }>(base, 'POST', '/api/v1/assets', {
    token: T, body: { type: 'repository', name: 'monorepo', value: 'https://git.example/acme/monorepo' },
  }), 'create asset');
  const pipeline = ok(await call<{ id: string }>(base, 'POST', '/api/v1/pipelines', {
    token: T, body: { name: 'bench-sast', steps: [{ id: 'sast', name: 'SAST', tool: 'semgrep', timeout: '60m' }] },
  }), 'create pipeline');
  const run = ok(await call<{ id: string }>(base, 'POST', `/api/v1/pipelines/${pipeline.id}/run`, { token: T, body: { asset_id: asset.id } }), 'trigger run');
  const commands = ok(await call<{ id: string; payload: { pipeline_run_id: string } }[]>(base, 'GET', '/api/v1/agent/commands?limit=1&wait=10', {
    apiKey: agent.api_key,
  }), 'poll');
  if (commands.length !== 1 || commands[0].payload.pipeline_run_id !== run.id) throw new Misbehaviour(`the SAST agent was not given the run's command: ${JSON.stringify(commands)}`);
  const commandId = commands[0].id;
  ok(await call(base, 'POST', `/api/v1/agent/commands/${commandId}/ack`, { apiKey: agent.api_key }), 'ack');
  ok(await call(base, 'POST', `/api/v1/agent/commands/${commandId}/start`, { apiKey: agent.api_key }), 'start');

  // --- the client thread makes the log
  progress(`findings: making a SARIF log of ${N} results`);
  const worker = new Worker(new URL(import.meta.url), {
    workerData: { section: 'findings', url: base, apiKey: agent.api_key, token: T, assetId: asset.id, commandId, runId: run.id, results: N } satisfies ClientData,
  });
  let pending: { resolve: (v: any) => void; reject: (e: unknown) => void } | null = null;
  let failure: unknown = null;
  const fail = (err: unknown) => {
    failure ??= err;
    pending?.reject(err);
    pending = null;
  };
  let ready: { bytes: number; zstdBytes: number; generateMs: number } | null = null;
  const readyPromise = new Promise<void>((resolve, reject) => {
    worker.on('message', (m: { type: string; answer?: unknown; message?: string; misbehaviour?: boolean } & Record<string, any>) => {
      if (m.type === 'ready') {
        ready = m as unknown as typeof ready;
        resolve();
      } else if (m.type === 'answer') {
        pending?.resolve(m.answer);
        pending = null;
      } else if (m.type === 'error') {
        const err = m.misbehaviour ? new Misbehaviour(m.message!) : new Error(m.message);
        reject(err);
        fail(err);
      }
    });
    worker.on('error', (err) => {
      reject(err);
      fail(err);
    });
    worker.on('exit', (code) => fail(new Error(`the findings client thread exited (${code})`)));
  });
  const ask = <T>(req: Request): Promise<T> => {
    if (failure) return Promise.reject(failure);
    return new Promise<T>((resolve, reject) => {
      pending = { resolve, reject };
      worker.postMessage(req);
    });
  };

  const dbTime = watchDatabaseTime([db]);
  try {
    await readyPromise;
    const made = ready!;

    const ingest = async (label: string, useZstd: boolean, expect: { created: number; updated: number }): Promise<IngestFigures> => {
      progress(`findings: ${label}`);
      collectGarbage();
      await sleep(300);
      const before = process.memoryUsage.rss();
      if (o.statements) await db.query('SELECT pg_stat_statements_reset()');
      const cpu = cpuMark();
      dbTime.reset();
      const a = await ask<IngestAnswer>({ op: 'ingest', zstd: useZstd });
      const time: DatabaseTime = dbTime.read();
      const cpuSpan = cpuSince(cpu);
      const body = ok({ status: a.status, body: a.body, ms: a.ms, headers: {} }, label);
      if (body.findings_created !== expect.created || body.findings_updated !== expect.updated || body.findings_skipped !== 0 || body.errors.length !== 0) {
        throw new Misbehaviour(`${label}: created ${body.findings_created}, updated ${body.findings_updated}, skipped ${body.findings_skipped} ` +
          `(${JSON.stringify(body.errors.slice(0, 3))}); expected ${expect.created} created and ${expect.updated} updated`);
      }
      const peak = Math.max(a.hwmBytes ?? 0, a.sampledPeakBytes);
      let statements: Statement[] | undefined;
      if (o.statements) {
        const { rows } = await db.query<{ query: string; calls: string; total: number; mean: number; rows: string }>(`
          SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, total_exec_time AS total, mean_exec_time AS mean, rows
          FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query NOT LIKE '%pg_stat_statements%'
          ORDER BY total_exec_time DESC LIMIT 8`);
        statements = rows.map((r) => ({ query: r.query.slice(0, 160), calls: Number(r.calls), total_ms: r1(r.total), mean_ms: r2(r.mean), rows: Number(r.rows) }));
      }
      const MB = 1024 * 1024;
      return {
        upload_bytes: useZstd ? made.zstdBytes : made.bytes,
        created: body.findings_created,
        updated: body.findings_updated,
        wall_s: r2(a.ms / 1000),
        findings_per_s: Math.round(N / (a.ms / 1000)),
        rss_mb: {
          before: r1(before / MB), peak: r1(peak / MB), growth: r1((peak - before) / MB),
          peak_from: a.hwmBytes !== null && a.hwmBytes >= a.sampledPeakBytes ? 'VmHWM' : `${a.samples} samples`,
        },
        database: {
          statements_s: r2(time.statementsMs / 1000), connections_held_s: r2(time.heldMs / 1000), round_trips: time.roundTrips,
          transactions: time.checkouts, statements,
        },
        cpu: cpuReport(cpuSpan, N / 1000),
      };
    };

    const first = await ingest(`first ingest of ${N} results`, false, { created: N, updated: 0 });
    const again = await ingest('the same log again', false, { created: 0, updated: N });
    const zstd = await ingest('the same log zstd-compressed', true, { created: 0, updated: N });

    // --- /ingest/check: half fingerprints of stored findings, half unknown, interleaved
    // (10,000, the most one check takes; fewer when the log is smaller than 5,000 results)
    const CHECK = 2 * Math.min(5_000, N);
    const tenantId = created.tenant.id;
    const existing = (await db.query<{ fingerprint: string }>(
      `SELECT fingerprint FROM findings WHERE tenant_id = $1 ORDER BY md5(fingerprint) LIMIT $2`, [tenantId, CHECK / 2])).rows.map((r) => r.fingerprint);
    if (existing.length !== CHECK / 2) throw new Misbehaviour(`findings: ${existing.length} findings stored, expected at least ${CHECK / 2}`);
    const fingerprints = existing.flatMap((fp, i) => [fp, createHash('sha256').update(`missing ${i}`).digest('hex')]);
    progress(`findings: /ingest/check of ${CHECK} fingerprints, ${o.checkCalls} calls`);
    dbTime.reset();
    const checkMs = await ask<number[]>({ op: 'check', fingerprints, calls: o.checkCalls, warmup: 3 });
    const checkDbMs = dbTime.read().statementsMs / (o.checkCalls + 3);

    progress('findings: list pages');
    dbTime.reset();
    const pages = await ask<Record<string, number[]>>({ op: 'pages', calls: o.checkCalls, warmup: 3 });
    const pagesDbMs = dbTime.read().statementsMs / (3 * (o.checkCalls + 3));

    // --- the command completes without a findings_count: the step counts what was ingested
    const t0 = now();
    ok(await call(base, 'POST', `/api/v1/agent/commands/${commandId}/complete`, { apiKey: agent.api_key, body: {} }), 'complete');
    let runRow: { status: string; total_findings: number; new_findings: number; findings_count: number } | undefined;
    for (const until = Date.now() + 60_000; ;) {
      runRow = (await db.query(`SELECT r.status, r.total_findings, r.new_findings, s.findings_count
                                FROM pipeline_runs r JOIN step_runs s ON s.pipeline_run_id = r.id WHERE r.id = $1`, [run.id])).rows[0];
      if (runRow?.status === 'completed') break;
      if (runRow && !['pending', 'running'].includes(runRow.status)) throw new Misbehaviour(`findings: the run ended ${runRow.status}`);
      if (Date.now() > until) throw new Misbehaviour('findings: the run was not completed 60 s after its command');
      await sleep(20);
    }
    const completeMs = now() - t0;
    if (runRow!.findings_count !== N || runRow!.total_findings !== N || runRow!.new_findings !== N) {
      throw new Misbehaviour(`findings: the step counts ${runRow!.findings_count} findings, the run ${runRow!.total_findings} (${runRow!.new_findings} new); expected ${N}`);
    }

    return {
      results: N,
      sarif_bytes: made.bytes,
      zstd_bytes: made.zstdBytes,
      generate_s: r2(made.generateMs / 1000),
      rules: 300,
      first,
      again,
      zstd,
      check: { fingerprints: CHECK, existing: CHECK / 2, calls: checkMs.length, ms: mapSummary(summarize(checkMs)), db_ms_per_call: r1(checkDbMs) },
      pages_ms: Object.fromEntries(Object.entries(pages).map(([k, v]) => [k, mapSummary(summarize(v))])),
      pages_db_ms_per_call: r1(pagesDbMs),
      complete_to_run_completed_ms: r1(completeMs),
    };
  } finally {
    dbTime.uninstall();
    worker.postMessage('stop');
    await worker.terminate();
  }
}

export const FINDINGS_TARGETS = { findingsPerS: 5_000, rssGrowthMb: 200, checkP50Ms: 100 };

export function findingsTargets(f: FindingsReport) {
  const t = FINDINGS_TARGETS;
  return {
    findings_first_ingest: { value_per_s: f.first.findings_per_s, target_per_s: t.findingsPerS, pass: f.first.findings_per_s >= t.findingsPerS },
    findings_reingest: { value_per_s: f.again.findings_per_s, target_per_s: t.findingsPerS, pass: f.again.findings_per_s >= t.findingsPerS },
    findings_rss_growth: {
      value_mb: Math.max(f.first.rss_mb.growth, f.again.rss_mb.growth, f.zstd.rss_mb.growth), target_mb: t.rssGrowthMb,
      pass: Math.max(f.first.rss_mb.growth, f.again.rss_mb.growth, f.zstd.rss_mb.growth) <= t.rssGrowthMb,
    },
    findings_check_p50: { value_ms: f.check.ms.p50, target_ms: t.checkP50Ms, pass: f.check.ms.p50 <= t.checkP50Ms },
  };
}

export function printFindings(f: FindingsReport, out: (line?: string) => void): void {
  const MB = (b: number) => (b / 1024 / 1024).toFixed(1);
  out(`5. Findings ingestion: a SARIF 2.1.0 log of ${f.results} results (${MB(f.sarif_bytes)} MB, ${f.rules} rules; zstd ${MB(f.zstd_bytes)} MB), ` +
    `one request to /agent/ingest/sarif, tied to a command (X-Command-Id) on an asset (X-Asset-Id)`);
  out('                          wall      findings/s   RSS growth (peak)      DB statements  connections held  txns  server thread CPU  postgres CPU');
  const line = (label: string, x: IngestFigures) =>
    out(`   ${label.padEnd(22)} ${(x.wall_s.toFixed(2) + ' s').padStart(8)} ${String(x.findings_per_s).padStart(10)}   ` +
      `${(x.rss_mb.growth.toFixed(1) + ' MB').padStart(9)} (${x.rss_mb.peak.toFixed(0)} MB)   ` +
      `${(x.database.statements_s.toFixed(2) + ' s').padStart(10)}  ${(x.database.connections_held_s.toFixed(2) + ' s').padStart(12)}      ` +
      `${String(x.database.transactions).padStart(4)}  ${(String(x.cpu.node_threads_cpu_s.MainThread ?? 'n/a') + ' s').padStart(12)}  ` +
      `${(String(x.cpu.postgres_cpu_s ?? 'n/a') + ' s').padStart(10)}`);
  line(`first (${f.first.created} created)`, f.first);
  line(`again (${f.again.updated} updated)`, f.again);
  line('again, zstd body', f.zstd);
  out('   RSS: the whole process (the server, the client thread holding the log it sends, V8 of both), ' +
    'peak while the ingest ran (VmHWM, and samples every 50 ms) minus RSS just before it, after a GC.');
  out('   DB statements: time the server\'s connections had a statement in flight (round trip, execution, answer), ' +
    'summed over connections; connections held: time they were checked out (transactions, with the Node work done inside them).');
  for (const [label, x] of [['first', f.first], ['again', f.again]] as const) {
    if (!x.database.statements) continue;
    out(`   costliest statements, ${label} ingest (pg_stat_statements, execution time):`);
    for (const q of x.database.statements) {
      out(`     ${f1(q.total_ms).padStart(9)} ms ${String(q.calls).padStart(6)} calls  ${q.query.slice(0, 110)}`);
    }
  }
  const c = f.check.ms;
  out(`   /ingest/check of ${f.check.fingerprints} fingerprints (${f.check.existing} existing), ${f.check.calls} calls: ` +
    `p50 ${f1(c.p50)} ms, p95 ${f1(c.p95)} ms, max ${f1(c.max)} ms (its statement: ${f1(f.check.db_ms_per_call)} ms per call on average)`);
  for (const [k, v] of Object.entries(f.pages_ms)) out(`   ${k} (50 of ${f.results}): p50 ${f1(v.p50)} ms, p95 ${f1(v.p95)} ms`);
  out(`      (the three pages' statements: ${f1(f.pages_db_ms_per_call)} ms per call on average)`);
  out(`   the command completed → its run completed, counting ${f.results} findings: ${f1(f.complete_to_run_completed_ms)} ms`);
}
