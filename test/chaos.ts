// `npm run chaos`: correctness when processes die. Two real orchestrator processes
// (src/main.ts, API + worker each) share one fresh database; simulated agents, spread over
// both, long-poll, acknowledge, work and report (some attempts fail and are retried; some
// agents vanish mid-command and come back later); every few seconds one process is killed
// with SIGKILL and restarted. Then the killing stops and every run must settle.
//
// At the end, from the database: every run is terminal and completed; no step has two
// completed commands; no (step, attempt) has two commands; nothing is in flight; no
// graphile-worker job failed for good. It prints its figures and exits 1 on any violation.
//
// Sizes and timings (env): CHAOS_RUNS (200), CHAOS_AGENTS (8), CHAOS_SECONDS (60: how long
// processes are killed), CHAOS_SETTLE_SECONDS (90: the bound on settling afterwards).
// The orchestrator runs with short liveness settings so the check takes about two minutes
// (WORKER_HEARTBEAT_INTERVAL=1s, WORKER_DEAD_AFTER=3s, AGENT_OFFLINE_AFTER=5s,
// HEARTBEAT_INTERVAL=1s, ACK_TIMEOUT=5s; override any of them in the environment); the
// recovery bound scales with them (README: "When a process dies").
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/db/migrate.ts';
import { call, type Res } from './support/http-client.ts';
import { freePort } from './support/ports.ts';
import { scratchDatabase } from './support/scratch-db.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const mainTs = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const rand = (lo: number, hi: number) => lo + Math.random() * (hi - lo);
const envInt = (name: string, dflt: number) => (process.env[name] ? Number(process.env[name]) : dflt);

const RUNS = envInt('CHAOS_RUNS', 200);
const AGENTS = envInt('CHAOS_AGENTS', 8);
const CHAOS_MS = envInt('CHAOS_SECONDS', 60) * 1000;
const SETTLE_MS = envInt('CHAOS_SETTLE_SECONDS', 90) * 1000;
const SETTINGS: Record<string, string> = {
  WORKER_HEARTBEAT_INTERVAL: '1s',
  WORKER_DEAD_AFTER: '3s',
  AGENT_OFFLINE_AFTER: '5s',
  HEARTBEAT_INTERVAL: '1s',
  ACK_TIMEOUT: '5s',
  WORKER_CONCURRENCY: '4',
};
for (const k of Object.keys(SETTINGS)) if (process.env[k]) SETTINGS[k] = process.env[k]!;
const ADMIN_TOKEN = randomBytes(24).toString('base64url');

const out = (m: string) => process.stdout.write(m + '\n');
const t0 = Date.now();
const progress = (m: string) => process.stderr.write(`[chaos ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);

// ---------------------------------------------------------------------------------------
// The two orchestrator processes

type Proc = { name: string; port: number; url: string; child: ChildProcess | null; up: boolean; kills: number; starts: number };

const logFile = path.join(tmpdir(), `scanflow-chaos-${process.pid}.log`);
const log = createWriteStream(logFile);

function startProc(p: Proc, databaseUrl: string): void {
  p.starts++;
  const child = spawn(process.execPath, [mainTs], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '',
      ...SETTINGS, DATABASE_URL: databaseUrl, PORT: String(p.port), ADMIN_TOKEN, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  p.child = child;
  child.stdout!.on('data', (d) => log.write(`[${p.name}] ${d}`));
  child.stderr!.on('data', (d) => log.write(`[${p.name}] ${d}`));
  child.on('exit', () => {
    if (p.child === child) {
      p.child = null;
      p.up = false;
    }
  });
}

async function waitUp(p: Proc, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!p.child) throw new Error(`${p.name} exited while starting (see ${logFile})`);
    try {
      if ((await call(p.url, 'GET', '/healthz')).status === 200) {
        p.up = true;
        return;
      }
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${p.name} did not start within ${ms} ms (see ${logFile})`);
}

async function kill(p: Proc): Promise<void> {
  const child = p.child;
  if (!child) return;
  p.up = false;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  p.kills++;
}

// ---------------------------------------------------------------------------------------
// Talking to "the service": either process, the way a load balancer would spread requests

const procs: Proc[] = [];
let httpErrors = 0; // network errors (connection refused or reset by a kill), retried

/** A request to the preferred process, failing over to the other; retried until it gets an answer. */
async function send<T = any>(prefer: number, method: string, p: string, o: Parameters<typeof call>[3] = {}, giveUpMs = 60_000): Promise<Res<T>> {
  const until = Date.now() + giveUpMs;
  for (let i = 0; ; i++) {
    const proc = procs[(prefer + i) % procs.length];
    try {
      return await call<T>(proc.url, method, p, o);
    } catch {
      httpErrors++;
      if (Date.now() > until) throw new Error(`${method} ${p}: no process answered for ${giveUpMs} ms`);
      await sleep(i % procs.length === procs.length - 1 ? 200 : 0);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Simulated agents

type Command = { id: string; payload: { pipeline_run_id: string; step_key: string; attempt: number } };
const acked = new Map<string, string>(); // command id → the agent whose ack succeeded
const violations: string[] = [];
const stats = { keyRetries: 0, answersLost: 0, commands: 0, completed: 0, failedOnPurpose: 0, abandoned: 0, agentDeaths: 0, cancelsSeen: 0 };

class Agent {
  readonly index: number;
  readonly key: string;
  dead = false;
  private generation = 0; // bumped when the agent dies: work of an earlier life stops
  private readonly cancelled = new Set<string>();
  private holding = 0;
  constructor(index: number, key: string) {
    this.index = index;
    this.key = key;
  }

  async heartbeatLoop(done: () => boolean): Promise<void> {
    while (!done()) {
      if (!this.dead) {
        try {
          const r = await send(this.index, 'POST', '/api/v1/agent/heartbeat', { apiKey: this.key, body: { version: 'chaos', active_jobs: this.holding } }, 5_000);
          for (const id of (r.body?.cancel_command_ids as string[] | undefined) ?? []) {
            if (!this.cancelled.has(id)) stats.cancelsSeen++;
            this.cancelled.add(id);
          }
        } catch {
          // no process up right now
        }
      }
      await sleep(1000);
    }
  }

  async pollLoop(done: () => boolean): Promise<void> {
    while (!done()) {
      if (this.dead || this.holding >= 4) {
        await sleep(100);
        continue;
      }
      let res: Res<Command[]>;
      try {
        res = await send(this.index, 'GET', `/api/v1/agent/commands?limit=${4 - this.holding}&wait=2`, { apiKey: this.key }, 5_000);
      } catch {
        continue;
      }
      if (res.status !== 200) {
        violations.push(`poll answered ${res.status}: ${JSON.stringify(res.body).slice(0, 200)}`);
        await sleep(500);
        continue;
      }
      const life = this.generation;
      for (const c of res.body) {
        stats.commands++;
        this.holding++;
        void this.work(c, life).finally(() => this.holding--);
      }
    }
  }

  /** ack → start → work → complete (or fail, on some first attempts). Replays are safe. */
  private async work(c: Command, life: number): Promise<void> {
    const alive = () => !this.dead && this.generation === life && !this.cancelled.has(c.id);
    for (const action of ['ack', 'start'] as const) {
      if (!alive()) return void stats.abandoned++;
      const r = await send(this.index, 'POST', `/api/v1/agent/commands/${c.id}/${action}`, { apiKey: this.key });
      if (r.status === 409 || r.status === 404) return void stats.abandoned++; // taken back meanwhile
      if (r.status !== 200) return void violations.push(`${action} answered ${r.status}: ${JSON.stringify(r.body).slice(0, 200)}`);
      if (action === 'ack') {
        const holder = acked.get(c.id);
        if (holder && holder !== this.key) violations.push(`command ${c.id} acknowledged by two agents`);
        acked.set(c.id, this.key);
      }
    }
    await sleep(rand(20, 300)); // the "tool"
    if (!alive()) return void stats.abandoned++;
    const failing = c.payload.attempt === 1 && Math.random() < 0.15;
    const r = failing
      ? await send(this.index, 'POST', `/api/v1/agent/commands/${c.id}/fail`, { apiKey: this.key, body: { error_message: 'chaos: tool exited 1', error_code: 'tool_error' } })
      : await send(this.index, 'POST', `/api/v1/agent/commands/${c.id}/complete`, { apiKey: this.key, body: { findings_count: 1, output: { step: c.payload.step_key } } });
    if (r.status === 409 || r.status === 404) return void stats.abandoned++;
    if (r.status !== 200) return void violations.push(`report answered ${r.status}: ${JSON.stringify(r.body).slice(0, 200)}`);
    if (failing) stats.failedOnPurpose++;
    else stats.completed++;
  }

  /** The agent vanishes (its host died): no heartbeats, no reports; back after `ms`. */
  async vanish(ms: number): Promise<void> {
    this.dead = true;
    this.generation++;
    stats.agentDeaths++;
    await sleep(ms);
    this.dead = false;
  }
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const scratch = await scratchDatabase('scanflow_chaos', { progress });
  let code = 1;
  try {
    await migrate(scratch.url);
    for (const name of ['A', 'B']) {
      const port = await freePort();
      procs.push({ name, port, url: `http://127.0.0.1:${port}`, child: null, up: false, kills: 0, starts: 0 });
    }
    for (const p of procs) startProc(p, scratch.url);
    await Promise.all(procs.map((p) => waitUp(p)));
    progress(`two processes up (${procs.map((p) => p.url).join(', ')}); logs in ${logFile}`);

    // A tenant, agents with every tool, and the diamond a → (b, c) → d with retries.
    const tenant = await send(0, 'POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name: 'chaos' } });
    const token = tenant.body.token as string;
    const agents: Agent[] = [];
    for (let i = 0; i < AGENTS; i++) {
      const r = await send(i, 'POST', '/api/v1/agents', { token, body: { name: `chaos-${i}`, tools: ['ta', 'tb', 'tc', 'td'], max_concurrent_jobs: 4 } });
      agents.push(new Agent(i, r.body.api_key));
    }
    const retry = { max_retries: 6, retry_delay_seconds: 1, timeout: '2m' };
    const pipeline = await send(0, 'POST', '/api/v1/pipelines', {
      token,
      body: {
        name: 'Chaos diamond',
        settings: { max_parallel_steps: 4 },
        steps: [
          { id: 'a', tool: 'ta', ...retry },
          { id: 'b', tool: 'tb', depends_on: ['a'], ...retry },
          { id: 'c', tool: 'tc', depends_on: ['a'], ...retry },
          { id: 'd', tool: 'td', depends_on: ['b', 'c'], ...retry },
        ],
      },
    });
    if (pipeline.status !== 201) throw new Error(`pipeline: ${JSON.stringify(pipeline.body)}`);

    let agentsDone = false;
    const loops = agents.flatMap((a) => [a.heartbeatLoop(() => agentsDone), a.pollLoop(() => agentsDone)]);

    // Triggers in bursts of 10 over most of the chaos (a burst queues many advance jobs at
    // once, so a kill often finds a process holding some). Each is retried with the same
    // Idempotency-Key until a process answers: a retried trigger must not make a second run.
    const BURST = 10;
    let burstSent = () => {};
    const nextBurst = () => new Promise<void>((resolve) => (burstSent = resolve));
    const triggers = (async () => {
      for (let i = 0; i < RUNS; i += BURST) {
        await Promise.all(Array.from({ length: Math.min(BURST, RUNS - i) }, async (_, j) => {
          const n = i + j;
          // The run carries its trigger's number, so the verdict can find each trigger's run.
          const body = { context: { chaos_trigger: n } };
          let r = await send(n, 'POST', `/api/v1/pipelines/${pipeline.body.id}/run`, { token, body, headers: { 'idempotency-key': `chaos-run-${n}` } });
          // The first try died with its process mid-request: retry until the key's lease lapses.
          for (let k = 0; r.status === 409 && r.body?.error?.code === 'idempotency_key_in_progress' && k < 120; k++) {
            stats.keyRetries++;
            await sleep(500);
            r = await send(n, 'POST', `/api/v1/pipelines/${pipeline.body.id}/run`, { token, body, headers: { 'idempotency-key': `chaos-run-${n}` } });
          }
          // Killed after its transaction committed and before its answer was stored: the run
          // exists, and a retry is told so rather than carried out again (src/api/idempotency.ts).
          // As a client would, the verdict looks the run up: it must exist exactly once.
          if (r.status === 409 && r.body?.error?.code === 'idempotency_key_response_lost') stats.answersLost++;
          else if (r.status !== 201) violations.push(`trigger answered ${r.status}: ${JSON.stringify(r.body).slice(0, 200)}`);
        }));
        burstSent();
        await sleep((CHAOS_MS * 0.8) / Math.ceil(RUNS / BURST));
      }
    })();

    // The chaos: kill either process every 2–6 s, or just after a burst of triggers (while
    // it holds the burst's jobs), restart it 0.5–2 s later; an agent vanishes for longer
    // than AGENT_OFFLINE_AFTER every ~8 s.
    const chaosEnd = Date.now() + CHAOS_MS;
    const killer = (async () => {
      while (Date.now() < chaosEnd) {
        await Promise.race([sleep(rand(2000, 6000)), nextBurst().then(() => sleep(rand(0, 150)))]);
        const p = procs[Math.floor(Math.random() * procs.length)];
        await kill(p);
        progress(`killed ${p.name} (SIGKILL)`);
        await sleep(rand(500, 2000));
        startProc(p, scratch.url);
        await waitUp(p);
      }
    })();
    const vanisher = (async () => {
      while (Date.now() < chaosEnd) {
        await sleep(rand(6000, 10000));
        if (Date.now() >= chaosEnd) break;
        void agents[Math.floor(Math.random() * agents.length)].vanish(7000);
      }
    })();
    await Promise.all([killer, vanisher, triggers]);
    const calm = Date.now();
    progress(`chaos over: ${procs.map((p) => `${p.name} killed ${p.kills}×`).join(', ')}; waiting for every run to settle`);

    // Settling: every run terminal.
    const db = new pg.Client({ connectionString: scratch.url });
    await db.connect();
    let settledAt: number | null = null;
    while (Date.now() - calm < SETTLE_MS) {
      const { rows } = await db.query<{ active: number }>(`SELECT count(*)::int AS active FROM pipeline_runs WHERE status IN ('pending', 'running')`);
      if (rows[0].active === 0) {
        settledAt = Date.now();
        break;
      }
      await sleep(250);
    }
    agentsDone = true;
    await Promise.all(loops);

    // The verdict, from the database.
    const q = async (sql: string) => (await db.query(sql)).rows;
    const byStatus = Object.fromEntries((await q(`SELECT status, count(*)::int AS n FROM pipeline_runs GROUP BY status`)).map((r) => [r.status, r.n]));
    const twiceCompleted = await q(`SELECT step_run_id FROM commands WHERE status = 'completed' GROUP BY step_run_id HAVING count(*) > 1`);
    const twiceAttempted = await q(`SELECT step_run_id, attempt FROM commands GROUP BY step_run_id, attempt HAVING count(*) > 1`);
    const inFlight = await q(`SELECT (SELECT count(*) FROM commands WHERE status IN ('pending', 'acknowledged', 'running'))::int AS commands,
                                     (SELECT count(*) FROM step_runs WHERE status IN ('pending', 'queued', 'running'))::int AS steps`);
    const failedJobs = await q(`SELECT t.identifier, j.key, j.attempts, j.payload, j.last_error, j.locked_by
                                FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks t ON t.id = j.task_id
                                WHERE j.attempts >= j.max_attempts`);
    const jobErrors = await q(`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE last_error IS NOT NULL`);
    const steps = await q(`SELECT count(*)::int AS steps, max(attempt)::int AS max_attempt,
                                  count(*) FILTER (WHERE attempt > 1)::int AS retried FROM step_runs`);
    const durations = await q(`SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99, max(d) AS max
                               FROM (SELECT extract(epoch FROM completed_at - created_at)::float AS d FROM pipeline_runs) x`);
    const lost = await q(`SELECT count(*)::int AS n FROM commands WHERE error_code = 'agent_lost'`);
    // Each trigger made exactly one run (its answer lost to a kill or not).
    const perTrigger = await q(`SELECT count(DISTINCT context ->> 'chaos_trigger')::int AS triggers,
                                       count(*) FILTER (WHERE context ->> 'chaos_trigger' IS NULL)::int AS unnamed,
                                       (SELECT count(*) FROM (SELECT 1 FROM pipeline_runs GROUP BY context ->> 'chaos_trigger' HAVING count(*) > 1) d)::int AS twice
                                FROM pipeline_runs`);
    const workers = await q(`SELECT count(*) FILTER (WHERE declared_dead_at IS NOT NULL)::int AS dead,
                                    coalesce(sum(released_jobs), 0)::int AS released FROM worker_processes`);
    await db.end();

    const runs = Object.values(byStatus).reduce((a: number, b) => a + (b as number), 0);
    if (runs !== RUNS) violations.push(`${runs} runs exist, ${RUNS} were triggered (a retried trigger made a second run, or one was lost)`);
    if (perTrigger[0].triggers !== RUNS || perTrigger[0].unnamed || perTrigger[0].twice) {
      violations.push(`runs per trigger: ${JSON.stringify(perTrigger[0])} (each of the ${RUNS} triggers must have made exactly one run)`);
    }
    if (byStatus.completed !== RUNS) violations.push(`runs by status: ${JSON.stringify(byStatus)} (every run must complete)`);
    if (twiceCompleted.length) violations.push(`${twiceCompleted.length} steps have two completed commands`);
    if (twiceAttempted.length) violations.push(`${twiceAttempted.length} (step, attempt) pairs have two commands`);
    if (inFlight[0].commands || inFlight[0].steps) violations.push(`left in flight: ${JSON.stringify(inFlight[0])}`);
    if (failedJobs.length) violations.push(`graphile-worker jobs failed for good: ${JSON.stringify(failedJobs).slice(0, 500)}`);
    if (settledAt === null) violations.push(`runs still in progress ${SETTLE_MS / 1000} s after the chaos ended`);

    out('');
    out('scanflow chaos check');
    out(`  processes: 2 (API + worker each) on ${scratch.kind}; settings ${Object.entries(SETTINGS).map(([k, v]) => `${k}=${v}`).join(' ')}`);
    out(`  chaos: ${CHAOS_MS / 1000} s; SIGKILLs: ${procs.map((p) => `${p.name} ${p.kills}`).join(', ')} (total ${procs.reduce((a, p) => a + p.kills, 0)}); ` +
      `worker processes declared dead by a sweep: ${workers[0].dead}, jobs released from them: ${workers[0].released}`);
    out(`  agents: ${AGENTS}, vanished mid-work ${stats.agentDeaths}×; commands taken back as agent_lost: ${lost[0].n}; ` +
      `network errors retried: ${httpErrors}; cancels seen in heartbeats: ${stats.cancelsSeen}`);
    out(`  triggers retried while their Idempotency-Key was held by a request that died: ${stats.keyRetries}; ` +
      `answers lost to a kill between the commit and the stored answer (409 idempotency_key_response_lost, the run found once): ${stats.answersLost}`);
    out(`  runs: ${runs} (${JSON.stringify(byStatus)}); steps ${steps[0].steps}, retried ${steps[0].retried} (max attempt ${steps[0].max_attempt}); ` +
      `attempts failed on purpose ${stats.failedOnPurpose}`);
    out(`  run duration, trigger to completion (4 steps, retries included): p50 ${durations[0].p50?.toFixed(1)} s, ` +
      `p99 ${durations[0].p99?.toFixed(1)} s, max ${durations[0].max?.toFixed(1)} s`);
    out(`  settle time after the last kill: ${settledAt === null ? 'did not settle' : `${((settledAt - calm) / 1000).toFixed(1)} s`}; ` +
      `total ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    out(`  duplicates: steps completed twice ${twiceCompleted.length}, (step, attempt) with two commands ${twiceAttempted.length}, ` +
      `commands acknowledged by two agents ${violations.filter((v) => v.includes('two agents')).length}`);
    out(`  graphile-worker: jobs failed for good ${failedJobs.length}, jobs with a transient error ${jobErrors[0].n}`);
    if (violations.length) {
      out(`\nVIOLATIONS (${violations.length}):`);
      for (const v of violations.slice(0, 30)) out(`  - ${v}`);
      out(`process logs: ${logFile}`);
    } else {
      out('\nOK: every run completed, nothing ran twice, nothing left in flight.');
    }
    code = violations.length ? 1 : 0;
  } finally {
    await Promise.all(procs.map((p) => kill(p)));
    await scratch.drop().catch(() => {});
    log.end();
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
