// The bench's handoff measurement (test/bench.ts phase 1, and the scale part on a database
// full of history, test/bench-scale-history.ts): agent X completes step A of a chain A → B
// while agent Y is already long-polling (wait=30); latency = X sends complete → Y's poll
// answers with B. Sequential samples after a warm-up, driven from a worker thread of the
// bench's process (its own event loop, so a server in the main thread only serves requests),
// with a breakdown taken from the database's own timestamps (same machine, same clock).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import { call, now, type Res } from './http-client.ts';
import { Misbehaviour, mapSummary, ok, pct, r2, sleep, sorted, summarize, type Summary } from './measure.ts';

type Command = { id: string; payload: { pipeline_run_id: string; step_key: string } };

/** The chain (POST /api/v1/pipelines body): X runs A's tool, Y runs B's. */
export const HANDOFF_CHAIN = {
  name: 'bench-chain',
  steps: [
    { id: 'a', name: 'A', tool: 'bench-a', depends_on: [], timeout: '10m' },
    { id: 'b', name: 'B', tool: 'bench-b', depends_on: ['a'], timeout: '10m' },
  ],
  settings: { max_parallel_steps: 1 },
};
export const HANDOFF_TOOLS = { x: ['bench-a'], y: ['bench-b'] };

export type HandoffData = {
  url: string;
  databaseUrl: string;
  tenantToken: string;
  /** The chain's id (HANDOFF_CHAIN). */
  pipelineId: string;
  keyX: string;
  keyY: string;
  warmup: number;
  samples: number;
  /** How long Y is in its poll before X completes A. */
  parkMs: number;
};
type Sample = { runId: string; t0: number; t1: number; completeMs: number };
type ThreadResult = { samples: Sample[]; elapsedMs: number; emptyPollMs: Summary };

export type Handoff = {
  handoff: Summary;
  completeRtt: Summary;
  /** Per sample, in ms: the segments between the database's transaction starts. */
  seg: { toFinishTx: number[]; toAdvanceTx: number[]; toClaimTx: number[]; toResponse: number[] };
  elapsedMs: number;
  emptyPollMs: Summary;
  /** Misbehaviour seen: a chain run not completed, a step without exactly one command. */
  problems: string[];
};

function poll(base: string, apiKey: string, limit: number, wait: number): Promise<Res<Command[]>> {
  return call<Command[]>(base, 'GET', `/api/v1/agent/commands?limit=${limit}&wait=${wait}`, { apiKey });
}

/** The agents' side, in the worker thread. */
async function driveHandoff(d: HandoffData): Promise<ThreadResult> {
  const db = new pg.Client({ connectionString: d.databaseUrl });
  await db.connect();
  const samples: Sample[] = [];
  const started = now();
  // How long an empty poll takes to answer (wait=0): Y's park time must exceed it, so that Y
  // is inside its wait (subscribed, first claim done) when X completes A.
  const emptyPolls: number[] = [];
  try {
    for (let i = 0; i < 30; i++) {
      const r = await poll(d.url, d.keyY, 1, 0);
      if (ok(r, 'Y empty poll').length) throw new Misbehaviour('Y got a command before any run existed');
      emptyPolls.push(r.ms);
    }
    for (let i = 0; i < d.warmup + d.samples; i++) {
      // X is long-polling before the run exists; the run's first advance dispatches A.
      const xPoll = poll(d.url, d.keyX, 1, 30);
      const run = ok(await call<{ id: string }>(d.url, 'POST', `/api/v1/pipelines/${d.pipelineId}/run`, { token: d.tenantToken, body: {} }), 'trigger run');
      const xCommands = ok(await xPoll, 'X poll');
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
      const yCommands = ok(y.r, 'Y poll');
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

if (!isMainThread && (workerData as { handoff?: boolean } | null)?.handoff) {
  try {
    const result = await driveHandoff(workerData as HandoffData);
    parentPort!.postMessage({ type: 'result', result });
  } catch (err) {
    parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err), misbehaviour: err instanceof Misbehaviour });
  } finally {
    parentPort!.close();
  }
}

function runThread(data: HandoffData): Promise<ThreadResult> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { ...data, handoff: true } });
  return new Promise<ThreadResult>((resolve, reject) => {
    let settled = false;
    worker.on('message', (m: { type: 'result'; result: ThreadResult } | { type: 'error'; message: string; misbehaviour: boolean }) => {
      settled = true;
      if (m.type === 'result') resolve(m.result);
      else reject(m.misbehaviour ? new Misbehaviour(m.message) : new Error(m.message));
    });
    worker.on('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.on('exit', (code) => {
      if (!settled) reject(new Error(`handoff thread exited (${code}) without a result`));
    });
  });
}

/** Measures the handoff (see the head of this file); `db` reads the breakdown and checks the runs. */
export async function measureHandoff(db: pg.Pool, d: HandoffData): Promise<Handoff> {
  const p = await runThread(d);
  const handoff = summarize(p.samples.map((s) => s.t1 - s.t0));
  const completeRtt = summarize(p.samples.map((s) => s.completeMs));
  // Breakdown by the database's timestamps (now() = the start of each transaction).
  const ts = await db.query<{ run_id: string; a_done: string; b_created: string; b_claimed: string }>(`
    SELECT r.id AS run_id,
           extract(epoch FROM a.completed_at) * 1000 AS a_done,
           extract(epoch FROM b.created_at) * 1000 AS b_created,
           extract(epoch FROM b.claimed_at) * 1000 AS b_claimed
    FROM pipeline_runs r
    JOIN step_runs sa ON sa.pipeline_run_id = r.id AND sa.step_key = 'a' JOIN commands a ON a.id = sa.command_id
    JOIN step_runs sb ON sb.pipeline_run_id = r.id AND sb.step_key = 'b' JOIN commands b ON b.id = sb.command_id
    WHERE r.id = ANY ($1::uuid[])`, [p.samples.map((s) => s.runId)]);
  const byRun = new Map(ts.rows.map((r) => [r.run_id, r]));
  const seg: Handoff['seg'] = { toFinishTx: [], toAdvanceTx: [], toClaimTx: [], toResponse: [] };
  for (const s of p.samples) {
    const r = byRun.get(s.runId);
    if (!r) continue;
    const aDone = Number(r.a_done), bCreated = Number(r.b_created), bClaimed = Number(r.b_claimed);
    seg.toFinishTx.push(aDone - s.t0);
    seg.toAdvanceTx.push(bCreated - aDone);
    seg.toClaimTx.push(bClaimed - bCreated);
    seg.toResponse.push(s.t1 - bClaimed);
  }
  const problems: string[] = [];
  const check = (await db.query<{ runs: string; completed: string; bad: string }>(`
    SELECT count(*) AS runs, count(*) FILTER (WHERE status = 'completed') AS completed,
           (SELECT count(*) FROM step_runs s JOIN pipeline_runs r2 ON r2.id = s.pipeline_run_id
            WHERE r2.pipeline_id = $1 AND (SELECT count(*) FROM commands c WHERE c.step_run_id = s.id) <> 1) AS bad
    FROM pipeline_runs WHERE pipeline_id = $1`, [d.pipelineId])).rows[0];
  if (Number(check.completed) !== Number(check.runs) || Number(check.bad) !== 0) {
    problems.push(`handoff: ${check.completed}/${check.runs} chain runs completed, ${check.bad} step runs without exactly one command`);
  }
  return { handoff, completeRtt, seg, elapsedMs: p.elapsedMs, emptyPollMs: p.emptyPollMs, problems };
}

/** The handoff's figures for a report's JSON. */
export function handoffReport(h: Handoff, parkMs: number) {
  const at = (p: number) => ({
    complete_request_to_finish_tx: r2(pct(sorted(h.seg.toFinishTx), p)),
    finish_tx_to_advance_tx: r2(pct(sorted(h.seg.toAdvanceTx), p)),
    advance_tx_to_claim_tx: r2(pct(sorted(h.seg.toClaimTx), p)),
    claim_tx_to_poll_response: r2(pct(sorted(h.seg.toResponse), p)),
  });
  return {
    ...mapSummary(h.handoff),
    samples: h.handoff.n,
    park_ms: parkMs,
    empty_poll_ms: mapSummary(h.emptyPollMs),
    complete_request_ms: mapSummary(h.completeRtt),
    breakdown_p50_ms: at(50),
    breakdown_p95_ms: at(95),
  };
}
