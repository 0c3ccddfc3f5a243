// The bench's scale part "history" (`npm run bench -- scale-history`; test/bench-scale.ts):
// do months of finished work in the tables slow the hot paths? On its own scratch database
// and orchestrator (startOrchestrator: HTTP, LISTEN, graphile-worker), the same figures are
// measured on the empty database and again after test/support/history.ts has filled it
// (1,000,000 finished runs with their step runs, commands and events; 1,000,000 findings
// sightings; 1 GB of output) and ANALYZEd it; each figure is printed empty vs filled with
// the ratio, ✔ within +20 % (issue 13).
//
//   poll       an agent's poll (wait=0) that gets a command: the claim (sql/commands.sql
//              ClaimCommands) over the tenant's commands
//   handoff    p50/p99, as test/bench.ts phase 1 (test/support/handoff.ts): X completes A while
//              Y long-polls for B
//   advance    the run_advance transaction that dispatches B after A and that completes the run:
//              from its commit timestamp (track_commit_timestamp) minus its start (the events it
//              wrote carry now() and were never updated, so their xmin is its transaction)
//   heartbeat  POST /api/v1/agent/heartbeat
//   pages      the first page of the run list (no filter; status=failed; the chain pipeline),
//              of the findings list (default; status=open&severity=high; sort=severity) and of
//              a run's findings: a run that saw BENCH_HISTORY_RUN_FINDINGS findings (3 ingests
//              of a SARIF log, so 3 sightings each) and a run of the history with a few
//
// Sizes (env): BENCH_HISTORY_RUNS (1,000,000), BENCH_HISTORY_SIGHTINGS (1,000,000),
// BENCH_HISTORY_OUTPUT_MB (1024), BENCH_HISTORY_SAMPLES (200 handoffs, after
// BENCH_HISTORY_WARMUP 20), BENCH_HISTORY_CALLS (50 polls, heartbeats and calls per page),
// BENCH_HISTORY_RUN_FINDINGS (50,000).
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { ScaleContext } from './bench-scale.ts';
import { call, now } from './support/http-client.ts';
import { scratchDatabase } from './support/scratch-db.ts';
import { Misbehaviour, cpuMark, cpuSince, envInt, f1, findPostmaster, mapSummary, ok, r2, sleep, summarize, type Summary } from './support/measure.ts';
import { HANDOFF_CHAIN, HANDOFF_TOOLS, handoffReport, measureHandoff } from './support/handoff.ts';
import { fillHistory, type HistoryReport } from './support/history.ts';
import { syntheticSarif } from './support/synthetic-sarif.ts';

type Figure = { what: string; stat: 'p50' | 'p95' | 'p99'; ms: number };
type Measured = {
  load: number[]; figures: Figure[]; summaries: Record<string, Summary>; handoff: Record<string, unknown>; io: IoPerRun;
  inDatabase: PageStatement[];
};
/** A list page's own statements (run once per call), with their mean execution time inside the database. */
type PageStatement = { key: string; label: string; statements: number; ms: number };

const ALLOWED = 1.2; // filled ≤ empty × 1.2

export default async function run(ctx: ScaleContext): Promise<{ problems: string[]; report: Record<string, unknown> }> {
  const RUNS = envInt('BENCH_HISTORY_RUNS', 1_000_000);
  const SIGHTINGS = envInt('BENCH_HISTORY_SIGHTINGS', 1_000_000);
  const OUTPUT_MB = envInt('BENCH_HISTORY_OUTPUT_MB', 1024);
  const SAMPLES = envInt('BENCH_HISTORY_SAMPLES', 200);
  const WARMUP = envInt('BENCH_HISTORY_WARMUP', 20);
  const CALLS = envInt('BENCH_HISTORY_CALLS', 50);
  const RUN_FINDINGS = envInt('BENCH_HISTORY_RUN_FINDINGS', 50_000);
  const { out, progress } = ctx;
  const problems: string[] = [];

  const { startOrchestrator } = await import('../src/server.ts');
  const { loadConfig } = await import('../src/config.ts');
  const { createPool } = await import('../src/db/pool.ts');
  const pino = (await import('pino')).default;
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));

  const cleanups: (() => Promise<unknown>)[] = [];
  try {
    // Commit timestamps time the advance's transaction (a restart of the embedded server).
    // pg_stat_statements times each list page's statements inside the database (the same
    // restart).
    const scratch = await scratchDatabase('scanflow_history', { serverSettings: { track_commit_timestamp: 'on' }, preloadStatements: true, progress });
    cleanups.push(scratch.drop);
    const adminToken = randomBytes(24).toString('base64url');
    const config = loadConfig({ ...process.env, DATABASE_URL: scratch.url, PORT: '0', ADMIN_TOKEN: adminToken, LOG_LEVEL: 'warn' });
    progress('scale-history: starting the orchestrator');
    const orch = await startOrchestrator(config, logger);
    cleanups.push(orch.stop);
    const base = orch.url;
    const db = createPool(scratch.url, 4);
    cleanups.push(() => db.end());
    await findPostmaster(db);
    const commitTimes = (await db.query<{ on: string }>(`SELECT current_setting('track_commit_timestamp') AS on`)).rows[0].on === 'on';
    const statementTimes = await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements').then(() => true, (err) => {
      progress(`scale-history: pg_stat_statements is not available (${String(err)}): no in-database times`);
      return false;
    });

    // --- setup over HTTP ----------------------------------------------------------------
    const created = ok(await call<{ tenant: { id: string }; token: string }>(base, 'POST', '/api/v1/tenants', { token: adminToken, body: { name: 'bench' } }), 'create tenant');
    const T = created.token;
    const tenantId = created.tenant.id;
    const mkAgent = async (name: string, tools: string[]) =>
      ok(await call<{ agent: { id: string }; api_key: string }>(base, 'POST', '/api/v1/agents', {
        token: T, body: { name, tools, capabilities: [], max_concurrent_jobs: 5 },
      }), `create agent ${name}`).api_key;
    const mkPipeline = async (body: unknown) => ok(await call<{ id: string }>(base, 'POST', '/api/v1/pipelines', { token: T, body }), 'create pipeline').id;
    const chainId = await mkPipeline(HANDOFF_CHAIN);
    const keyX = await mkAgent('bench-x', HANDOFF_TOOLS.x);
    const keyY = await mkAgent('bench-y', HANDOFF_TOOLS.y);
    const pollPipelineId = await mkPipeline({ name: 'bench-poll', steps: [{ id: 'p', name: 'P', tool: 'bench-p', timeout: '10m' }] });
    const keyP = await mkAgent('bench-p', ['bench-p']);

    // A run that saw RUN_FINDINGS findings, three times each (the run's findings page that
    // was slow: 0.3 s for 150,000 sightings).
    progress(`scale-history: a run that sees ${RUN_FINDINGS} findings (a SARIF log ingested 3 times)`);
    const keyS = await mkAgent('bench-sast', ['semgrep']);
    const asset = ok(await call<{ id: string }>(base, 'POST', '/api/v1/assets', {
      token: T, body: { type: 'repository', name: 'monorepo', value: 'https://git.example/acme/monorepo' },
    }), 'create asset');
    const sastId = await mkPipeline({ name: 'bench-sast', steps: [{ id: 'sast', name: 'SAST', tool: 'semgrep', timeout: '60m' }] });
    const bigRun = ok(await call<{ id: string }>(base, 'POST', `/api/v1/pipelines/${sastId}/run`, { token: T, body: { asset_id: asset.id } }), 'trigger run');
    const sast = ok(await call<{ id: string }[]>(base, 'GET', '/api/v1/agent/commands?limit=1&wait=10', { apiKey: keyS }), 'poll');
    if (sast.length !== 1) throw new Misbehaviour('the SAST agent was not given its command');
    ok(await call(base, 'POST', `/api/v1/agent/commands/${sast[0].id}/ack`, { apiKey: keyS }), 'ack');
    ok(await call(base, 'POST', `/api/v1/agent/commands/${sast[0].id}/start`, { apiKey: keyS }), 'start');
    const sarif = Buffer.from(JSON.stringify(syntheticSarif({ results: RUN_FINDINGS })));
    // The agent heartbeats while its ingests run (on a loaded machine they outlast its health check).
    const beating = setInterval(() => {
      call(base, 'POST', '/api/v1/agent/heartbeat', { apiKey: keyS, body: { version: 'bench' } }).catch(() => {});
    }, 5000);
    try {
      for (let i = 0; i < 3; i++) {
        ok(await call(base, 'POST', '/api/v1/agent/ingest/sarif', {
          apiKey: keyS, raw: sarif, headers: { 'content-type': 'application/sarif+json', 'x-asset-id': asset.id, 'x-command-id': sast[0].id },
        }), 'ingest');
      }
    } finally {
      clearInterval(beating);
    }
    ok(await call(base, 'POST', `/api/v1/agent/commands/${sast[0].id}/complete`, { apiKey: keyS, body: {} }), 'complete');
    await waitForRun(db, bigRun.id);

    // Failed runs, so that the run list's status=failed page holds a page of rows on the empty
    // database as on the filled one (compared with no row at all, it measured 1.1 → 1.9 ms).
    const FAILED = 60;
    progress(`scale-history: ${FAILED} failed runs`);
    const failId = await mkPipeline({ name: 'bench-fail', steps: [{ id: 'f', name: 'F', tool: 'bench-f', timeout: '10m', max_retries: 0 }] });
    const keyF = await mkAgent('bench-f', ['bench-f']);
    const failRuns: string[] = [];
    for (let i = 0; i < FAILED; i++) {
      failRuns.push(ok(await call<{ id: string }>(base, 'POST', `/api/v1/pipelines/${failId}/run`, { token: T, body: {} }), 'trigger failing run').id);
    }
    for (let failed = 0; failed < FAILED;) {
      const got = ok(await call<{ id: string }[]>(base, 'GET', '/api/v1/agent/commands?limit=5&wait=10', { apiKey: keyF }), 'poll');
      for (const cmd of got) {
        ok(await call(base, 'POST', `/api/v1/agent/commands/${cmd.id}/ack`, { apiKey: keyF }), 'ack');
        ok(await call(base, 'POST', `/api/v1/agent/commands/${cmd.id}/fail`, { apiKey: keyF, body: { error_message: 'bench: failed on purpose' } }), 'fail');
        failed++;
      }
    }
    for (const id of failRuns) await waitForRun(db, id, 'failed');
    const { rows: [failedRuns] } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pipeline_runs WHERE tenant_id = $1 AND status = 'failed'`, [tenantId]);
    if (failedRuns.n !== FAILED) throw new Misbehaviour(`${FAILED} runs failed on purpose, ${failedRuns.n} are failed`);

    // --- the measurements, run twice ----------------------------------------------------------
    const timed = async (label: string, f: () => Promise<number>, calls: number, warmup = 3): Promise<Summary> => {
      const ms: number[] = [];
      for (let i = 0; i < warmup + calls; i++) {
        const v = await f();
        if (i >= warmup) ms.push(v);
      }
      progress(`scale-history:   ${label}: p50 ${f1(summarize(ms).p50)} ms`);
      return summarize(ms);
    };
    const page = (path: string, expect: (body: any) => boolean) => async () => {
      const r = await call(base, 'GET', path, { token: T });
      if (r.status !== 200 || !expect(r.body)) throw new Misbehaviour(`GET ${path}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      return r.ms;
    };
    const pollOnce = async () => {
      const runId = ok(await call<{ id: string }>(base, 'POST', `/api/v1/pipelines/${pollPipelineId}/run`, { token: T, body: {} }), 'trigger poll run').id;
      // The run's first advance makes the command: poll once it is there to be claimed.
      const until = Date.now() + 10_000;
      while ((await db.query(`SELECT 1 FROM commands WHERE pipeline_run_id = $1 AND status = 'pending'`, [runId])).rowCount === 0) {
        if (Date.now() > until) throw new Misbehaviour(`poll run ${runId}: no command 10 s after its trigger`);
        await sleep(2);
      }
      const t0 = now();
      const got = ok(await call<{ id: string; payload: { pipeline_run_id: string } }[]>(base, 'GET', '/api/v1/agent/commands?limit=1&wait=0', { apiKey: keyP }), 'poll');
      const ms = now() - t0;
      if (got.length !== 1 || got[0].payload.pipeline_run_id !== runId) throw new Misbehaviour(`poll: expected the command of run ${runId}, got ${JSON.stringify(got)}`);
      for (const a of ['ack', 'start', 'complete']) ok(await call(base, 'POST', `/api/v1/agent/commands/${got[0].id}/${a}`, { apiKey: keyP, body: a === 'complete' ? {} : undefined }), a);
      await waitForRun(db, runId);
      return ms;
    };
    let historyRun: string | null = null;

    const measure = async (label: string): Promise<Measured> => {
      const load = os.loadavg().map(r2);
      progress(`scale-history: measuring (${label} database; load ${load.join(' ')})`);
      const s: Record<string, Summary> = {};
      s.poll = await timed('poll that gets a command', pollOnce, CALLS);
      s.heartbeat = await timed('heartbeat', async () => {
        const r = await call(base, 'POST', '/api/v1/agent/heartbeat', { apiKey: keyP, body: { version: 'bench' } });
        ok(r, 'heartbeat');
        return r.ms;
      }, CALLS);
      const startedAt = new Date();
      const io0 = await ioCounters(db);
      const h = await measureHandoff(db, {
        url: base, databaseUrl: scratch.url, tenantToken: T, pipelineId: chainId, keyX, keyY, warmup: WARMUP, samples: SAMPLES, parkMs: 10,
      });
      problems.push(...h.problems.map((p) => `${label}: ${p}`));
      s.handoff = h.handoff;
      // What each handoff (a chain run: 2 commands, their 8 transitions, 2 advances) wrote to the
      // WAL, and read from outside shared buffers.
      const io = ioDelta(io0, await ioCounters(db), WARMUP + SAMPLES);
      progress(`scale-history:   handoff: p50 ${f1(h.handoff.p50)} ms, p99 ${f1(h.handoff.p99)} ms`);
      if (commitTimes) {
        // The advance that dispatched B (step b queued) and the one that completed the run.
        const { rows } = await db.query<{ ms: number }>(`
          SELECT extract(epoch FROM pg_xact_commit_timestamp(e.xmin) - e.created_at) * 1000 AS ms
          FROM events e JOIN pipeline_runs r ON r.id = e.pipeline_run_id
          WHERE r.pipeline_id = $1 AND r.created_at >= $2
            AND ((e.type = 'pipeline.step.queued' AND e.data ->> 'step_key' = 'b') OR e.type = 'pipeline.run.completed')`,
        [chainId, startedAt]);
        s.advance = summarize(rows.map((r) => Number(r.ms)));
        progress(`scale-history:   advance transaction: p50 ${f1(s.advance.p50)} ms (${s.advance.n})`);
      }
      // The pages in rounds, each page once a round, so that whatever else the machine does
      // while they are measured weighs on all of them alike; pg_stat_statements meanwhile
      // times their statements inside the database.
      const pages: [key: string, label: string, f: () => Promise<number>][] = [
        ['runs', 'run list', page('/api/v1/pipeline-runs', (b) => b.items.length > 0)],
        ['runs_failed', 'run list, status=failed', page('/api/v1/pipeline-runs?status=failed', (b) => Array.isArray(b.items))],
        // The pipeline of the failed runs: its 60 runs are the same on both databases (the chain
        // pipeline's grow by each measurement's handoffs, and its list with them).
        ['runs_pipeline', 'run list, one pipeline', page(`/api/v1/pipeline-runs?pipeline_id=${failId}`, (b) => b.items.length > 0)],
        ['findings', 'findings list', page('/api/v1/findings', (b) => b.items.length > 0)],
        ['findings_filtered', 'findings list, open and high', page('/api/v1/findings?status=open&severity=high', (b) => Array.isArray(b.items))],
        ['findings_severity', 'findings list by severity', page('/api/v1/findings?sort=severity', (b) => b.items.length > 0)],
        ['run_findings', `run's findings (${RUN_FINDINGS} findings)`, page(`/api/v1/pipeline-runs/${bigRun.id}/findings`, (b) => b.items.length > 0)],
      ];
      const PAGE_WARMUP = 3;
      const pageMs = new Map<string, number[]>(pages.map(([key]) => [key, []]));
      if (statementTimes) await db.query('SELECT pg_stat_statements_reset()');
      for (let round = 0; round < PAGE_WARMUP + CALLS; round++) {
        for (const [key, , f] of pages) {
          const ms = await f();
          if (round >= PAGE_WARMUP) pageMs.get(key)!.push(ms);
        }
      }
      for (const [key, label] of pages) {
        s[key] = summarize(pageMs.get(key)!);
        progress(`scale-history:   ${label}: p50 ${f1(s[key].p50)} ms`);
      }
      const inDatabase = statementTimes ? await pageStatements(db, pages, PAGE_WARMUP + CALLS) : [];
      if (historyRun) {
        s.run_findings_small = await timed(`run's findings (a run of the history)`, page(`/api/v1/pipeline-runs/${historyRun}/findings`, (b) => b.items.length > 0), CALLS);
      }
      const figures: Figure[] = [
        { what: 'poll that gets a command', stat: 'p50', ms: s.poll.p50 },
        { what: 'heartbeat', stat: 'p50', ms: s.heartbeat.p50 },
        { what: 'handoff', stat: 'p50', ms: s.handoff.p50 },
        { what: 'handoff', stat: 'p99', ms: s.handoff.p99 },
        ...(s.advance ? [{ what: 'advance transaction', stat: 'p50' as const, ms: s.advance.p50 }, { what: 'advance transaction', stat: 'p95' as const, ms: s.advance.p95 }] : []),
        { what: 'run list, first page', stat: 'p50', ms: s.runs.p50 },
        { what: 'run list, status=failed', stat: 'p50', ms: s.runs_failed.p50 },
        { what: 'run list, one pipeline', stat: 'p50', ms: s.runs_pipeline.p50 },
        { what: 'findings list, first page', stat: 'p50', ms: s.findings.p50 },
        { what: 'findings list, open + high', stat: 'p50', ms: s.findings_filtered.p50 },
        { what: 'findings list by severity', stat: 'p50', ms: s.findings_severity.p50 },
        { what: `run's findings (${RUN_FINDINGS})`, stat: 'p50', ms: s.run_findings.p50 },
      ];
      return { load, figures, summaries: s, handoff: handoffReport(h, 10), io, inDatabase };
    };

    // Each measurement starts just after a checkpoint (the first change to each page after one
    // writes the whole page to the WAL: both start from the same point).
    // Statistics as autovacuum would keep them, as for the filled database (history.ts ends
    // with VACUUM ANALYZE): measured right after the 50,000-finding ingest, with the statistics
    // of before it, the open + high findings page and the big run's findings took 35-50 ms.
    await db.query('VACUUM ANALYZE');
    await db.query('CHECKPOINT');
    const empty = await measure('empty');

    // --- history ---------------------------------------------------------------------------
    progress(`scale-history: filling ${RUNS} runs, ${SIGHTINGS} sightings, ${OUTPUT_MB} MB of output`);
    const fillLoad = os.loadavg().map(r2);
    const fillCpu = cpuMark();
    const fill: HistoryReport = await fillHistory(db, {
      runs: RUNS, sightings: SIGHTINGS, outputBytes: OUTPUT_MB * 1048576, tenantId, progress: (l) => progress(`scale-history: ${l}`),
    });
    const fillSpan = cpuSince(fillCpu);
    // What the fill left dirty is written now, not during the measurements (max_wal_size is
    // back to its default: the next checkpoint would come during them).
    await db.query('CHECKPOINT');
    historyRun = (await db.query<{ id: string }>(`
      SELECT r.id FROM pipeline_runs r WHERE r.tenant_id = $1 AND r.total_findings > 0 AND r.pipeline_id <> ALL ($2::uuid[])
      ORDER BY r.created_at DESC LIMIT 1`, [tenantId, [chainId, pollPipelineId, sastId]])).rows[0]?.id ?? null;
    const filled = await measure('filled');

    // --- report ------------------------------------------------------------------------------
    const rows = empty.figures.map((e, i) => {
      const f = filled.figures[i];
      const ratio = f.ms / e.ms;
      return { what: e.what, stat: e.stat, empty_ms: r2(e.ms), filled_ms: r2(f.ms), ratio: r2(ratio), pass: ratio <= ALLOWED };
    });
    out(`History: the hot paths on an empty database and with ${fill.runs.toLocaleString('en')} finished runs in it ` +
      `(${SAMPLES} handoffs, ${CALLS} calls of each other figure, one at a time)`);
    out(`   load average: ${empty.load.join(' ')} while measuring empty, ${filled.load.join(' ')} filled (other work on the machine skews every figure)`);
    out(`   history written in ${fill.fill_s} s (load ${fillLoad.join(' ')} at its start), VACUUM ANALYZE ${fill.analyze_s} s: ` +
      `${fill.runs} runs, ${fill.step_runs} step runs, ${fill.commands} commands, ${fill.events} events, ${fill.findings} findings, ` +
      `${fill.sightings} sightings, ${fill.ingests} ingests, ${fill.output_chunks} output chunks (${Math.round(fill.output_bytes / 1048576)} MB)`);
    const pgCpuS = fillSpan.postgresCpuMs === null ? null : fillSpan.postgresCpuMs / 1000;
    if (pgCpuS !== null) {
      out(`   the fill cost PostgreSQL ${pgCpuS.toFixed(0)} s of CPU (${((pgCpuS * 1000) / fill.runs).toFixed(2)} ms per run with all that hangs off it), ` +
        `on ${os.cpus().length} CPUs ${(pgCpuS / os.cpus().length).toFixed(0)} s at the least; the machine was ${fillSpan.machine?.busyPct.toFixed(0) ?? 'n/a'}% busy`);
    }
    out(`   table sizes (MB, with indexes and TOAST): ${Object.entries(fill.table_mb).map(([t, mb]) => `${t} ${mb}`).join(', ')}`);
    out('                                              empty ms   filled ms   ratio   within +20 %');
    for (const r of rows) {
      out(`     ${(r.what + ' ' + r.stat).padEnd(40)} ${f1(r.empty_ms).padStart(9)} ${f1(r.filled_ms).padStart(11)} ${r.ratio.toFixed(2).padStart(7)}   ${r.pass ? '✔' : '✘'}`);
    }
    out(`   per handoff (a chain run): WAL ${kb(empty.io.walBytes)} → ${kb(filled.io.walBytes)} kB, full-page images ` +
      `${empty.io.fpi.toFixed(1)} → ${filled.io.fpi.toFixed(1)}, blocks read outside shared buffers ${empty.io.blocksRead.toFixed(1)} → ` +
      `${filled.io.blocksRead.toFixed(1)} (of ${empty.io.blocks.toFixed(0)} → ${filled.io.blocks.toFixed(0)} touched)`);
    if (filled.summaries.run_findings_small) {
      out(`     run's findings, a run of the history p50 ${f1(filled.summaries.run_findings_small.p50).padStart(21)}`);
    }
    const inDatabase = empty.inDatabase.flatMap((e) => {
      const f = filled.inDatabase.find((x) => x.key === e.key);
      return f ? [{ what: e.label, statements: e.statements, empty_ms: r2(e.ms), filled_ms: r2(f.ms), ratio: r2(f.ms / e.ms) }] : [];
    });
    if (inDatabase.length > 0) {
      out('   the same pages inside the database: their own statements\' mean execution time (pg_stat_statements)');
      out('                                              empty ms   filled ms   ratio   within +20 %');
      for (const r of inDatabase) {
        out(`     ${r.what.padEnd(40)} ${r.empty_ms.toFixed(2).padStart(9)} ${r.filled_ms.toFixed(2).padStart(11)} ${r.ratio.toFixed(2).padStart(7)}   ${r.ratio <= ALLOWED ? '✔' : '✘'}`);
      }
    }
    return {
      problems,
      report: {
        sizes: { runs: RUNS, sightings: SIGHTINGS, output_mb: OUTPUT_MB, handoff_samples: SAMPLES, calls: CALLS, run_findings: RUN_FINDINGS },
        fill: { ...fill, postgres_cpu_s: pgCpuS === null ? null : r2(pgCpuS), wall_s: r2(fillSpan.wallMs / 1000) },
        load: { empty: empty.load, fill: fillLoad, filled: filled.load },
        figures: rows,
        empty_ms: Object.fromEntries(Object.entries(empty.summaries).map(([k, v]) => [k, mapSummary(v)])),
        filled_ms: Object.fromEntries(Object.entries(filled.summaries).map(([k, v]) => [k, mapSummary(v)])),
        handoff: { empty: empty.handoff, filled: filled.handoff },
        per_handoff_io: { empty: empty.io, filled: filled.io },
        pages_in_database: inDatabase,
        targets: { within_20_pct: rows.every((r) => r.pass) },
      },
    };
  } catch (err) {
    if (err instanceof Misbehaviour) {
      problems.push(err.message);
      return { problems, report: {} };
    }
    throw err;
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err) => progress(`cleanup: ${String(err)}`));
  }
}

async function waitForRun(db: import('pg').Pool, runId: string, want = 'completed'): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    const { rows } = await db.query<{ status: string }>('SELECT status FROM pipeline_runs WHERE id = $1', [runId]);
    const status = rows[0]?.status;
    if (status === want) return;
    if (status && !['pending', 'running'].includes(status)) throw new Misbehaviour(`run ${runId} ended ${status}`);
    if (Date.now() > until) throw new Misbehaviour(`run ${runId} not ${want} within 30 s`);
    await sleep(2);
  }
}

type IoCounters = { walBytes: number; fpi: number; blocksRead: number; blocks: number };
type IoPerRun = IoCounters;
const kb = (bytes: number) => (bytes / 1024).toFixed(1);

/** The server's WAL and this database's block counters (statistics settle about once a second). */
async function ioCounters(db: import('pg').Pool): Promise<IoCounters> {
  await sleep(1200);
  const { rows } = await db.query<{ wal_bytes: string; wal_fpi: string; blks_read: string; blks_hit: string }>(`
    SELECT w.wal_bytes, w.wal_fpi, d.blks_read, d.blks_hit
    FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()`);
  const r = rows[0];
  return { walBytes: Number(r.wal_bytes), fpi: Number(r.wal_fpi), blocksRead: Number(r.blks_read), blocks: Number(r.blks_read) + Number(r.blks_hit) };
}

function ioDelta(a: IoCounters, b: IoCounters, runs: number): IoPerRun {
  return {
    walBytes: (b.walBytes - a.walBytes) / runs, fpi: (b.fpi - a.fpi) / runs,
    blocksRead: (b.blocksRead - a.blocksRead) / runs, blocks: (b.blocks - a.blocks) / runs,
  };
}

type StatementStats = Map<string, { calls: number; total_ms: number }>;

async function statementStats(db: import('pg').Pool): Promise<StatementStats> {
  const { rows } = await db.query<{ queryid: string; calls: number; total_ms: number }>(`
    SELECT queryid::text, calls::int, total_exec_time AS total_ms FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel`);
  return new Map(rows.map((r) => [r.queryid, { calls: r.calls, total_ms: r.total_ms }]));
}

/**
 * Each page's own statements and their mean execution time over the rounds (pg_stat_statements
 * reset before them). A page's own statements are those one more call of it alone runs once
 * more that ran `rounds` times in the rounds: its list, not the per-request lookups every page
 * shares.
 */
async function pageStatements(
  db: import('pg').Pool, pages: [key: string, label: string, f: () => Promise<number>][], rounds: number,
): Promise<PageStatement[]> {
  const inRounds = await statementStats(db);
  let before = inRounds;
  const result: PageStatement[] = [];
  for (const [key, label, f] of pages) {
    await f();
    const after = await statementStats(db);
    const own = [...after].filter(([id, a]) => inRounds.get(id)?.calls === rounds && a.calls === (before.get(id)?.calls ?? 0) + 1);
    result.push({ key, label, statements: own.length, ms: own.reduce((sum, [id]) => sum + inRounds.get(id)!.total_ms / rounds, 0) });
    before = after;
  }
  return result;
}
