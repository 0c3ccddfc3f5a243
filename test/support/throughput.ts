// The bench's throughput workload (test/bench.ts phase 2, and the scale part with several
// processes, test/bench-scale-processes.ts): simulated agents with every tool, in a worker
// thread of the bench's process (its own event loop, so a server in the main thread only
// serves requests), poll (limit 10, wait 5 s) → ack → start → complete, while concurrent
// triggers create the runs. With several API addresses, agents and triggers are spread over
// them as a load balancer would (agent i and trigger i on address i mod n). From the main
// thread: wait until every run completed (failing on a stall or a failed run), and verify
// from the database that every step ran exactly once.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { call, now, type Res } from './http-client.ts';
import { Misbehaviour, sleep, summarize, type Summary } from './measure.ts';

type Command = { id: string; payload: { pipeline_run_id: string; step_key: string } };

export type ThroughputAgentsData = {
  /** The API addresses: agent i and trigger i talk to urls[i % urls.length]. */
  urls: string[];
  tenantToken: string;
  pipelineId: string;
  agentKeys: string[];
  runs: number;
  triggerConcurrency: number;
};

export type ThroughputAgentsResult = {
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

export type ThroughputMessage = { type: 'started'; t0: number } | { type: 'triggered'; t: number };
type WorkerMessage =
  | ThroughputMessage
  | { type: 'result'; result: ThroughputAgentsResult }
  | { type: 'error'; message: string; misbehaviour: boolean };

/** The agents' side, in the worker thread: runs until the main thread posts 'stop'. */
async function driveAgents(d: ThroughputAgentsData): Promise<ThroughputAgentsResult> {
  const latencies = new Map<string, number[]>();
  const record = (what: string, ms: number) => {
    let a = latencies.get(what);
    if (!a) latencies.set(what, (a = []));
    a.push(ms);
  };
  const urlOf = (i: number) => d.urls[i % d.urls.length];
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

  const work = async (url: string, key: string, c: Command) => {
    if (seen.has(c.id)) duplicates++;
    seen.add(c.id);
    for (const action of ['ack', 'start', 'complete'] as const) {
      requests++;
      const r = await call(url, 'POST', `/api/v1/agent/commands/${c.id}/${action}`, {
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

  const agent = async (url: string, key: string) => {
    while (!stopping) {
      const ac = new AbortController();
      aborters.add(ac);
      let res: Res<Command[]>;
      try {
        requests++;
        res = await call<Command[]>(url, 'GET', '/api/v1/agent/commands?limit=10&wait=5', { apiKey: key, signal: ac.signal });
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
      const commands = res.body;
      record(commands.length ? 'poll (got commands)' : 'poll (empty)', res.ms);
      record('commands per poll', commands.length);
      await Promise.all(commands.map((c) => work(url, key, c)));
    }
  };

  const loops = d.agentKeys.map((k, i) => agent(urlOf(i), k));
  const t0 = now();
  parentPort!.postMessage({ type: 'started', t0 });
  let next = 0;
  const trigger = async (url: string) => {
    while (next < d.runs && !stopping) {
      next++;
      requests++;
      const r = await call(url, 'POST', `/api/v1/pipelines/${d.pipelineId}/run`, { token: d.tenantToken, body: {} });
      record('trigger run', r.ms);
      if (r.status !== 201) error(`trigger: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
    }
  };
  await Promise.all(Array.from({ length: d.triggerConcurrency }, (_, i) => trigger(urlOf(i))));
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

if (!isMainThread && (workerData as { throughputAgents?: boolean } | null)?.throughputAgents) {
  const d = workerData as ThroughputAgentsData;
  try {
    const result = await driveAgents(d);
    parentPort!.postMessage({ type: 'result', result } satisfies WorkerMessage);
  } catch (err) {
    parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err), misbehaviour: err instanceof Misbehaviour } satisfies WorkerMessage);
  }
  parentPort!.close();
}

/**
 * Starts the agents' thread; `onMessage` sees 'started' (t0: the first trigger is about to
 * go) and 'triggered'. Post 'stop' to the worker once every run completed; `result` then
 * resolves with what the agents saw.
 */
export function startThroughputAgents(
  data: ThroughputAgentsData,
  onMessage: (m: ThroughputMessage) => void = () => {},
): { worker: Worker; result: Promise<ThroughputAgentsResult> } {
  const worker = new Worker(new URL(import.meta.url), { workerData: { ...data, throughputAgents: true } });
  const result = new Promise<ThroughputAgentsResult>((resolve, reject) => {
    let settled = false;
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'result') {
        settled = true;
        resolve(m.result);
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
      if (!settled) reject(new Error(`agents thread exited (${code}) without a result`));
    });
  });
  return { worker, result };
}

/**
 * Waits until `runs` runs of the pipeline completed; answers the database time (ms since
 * the epoch) of the last completion. Throws Misbehaviour when a run ends otherwise or none
 * completes for `stallSeconds`; `failure()` (the agents' thread failing) is checked every
 * 100 ms and thrown.
 */
export async function awaitRuns(
  db: pg.Pool,
  o: { pipelineId: string; runs: number; stallSeconds: number; what: string; progress: (m: string) => void; failure?: () => unknown },
): Promise<number> {
  let lastCompleted = -1;
  let lastProgressAt = Date.now();
  let lastPrint = Date.now();
  for (;;) {
    await sleep(100);
    const failure = o.failure?.();
    if (failure) throw failure;
    const c = (await db.query<{ total: string; completed: string; bad: string; last: string | null }>(`
      SELECT count(*) AS total, count(*) FILTER (WHERE status = 'completed') AS completed,
             count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'timeout')) AS bad,
             extract(epoch FROM max(completed_at)) * 1000 AS last
      FROM pipeline_runs WHERE pipeline_id = $1`, [o.pipelineId])).rows[0];
    const completed = Number(c.completed);
    if (Number(c.bad) > 0) throw new Misbehaviour(`${o.what}: ${c.bad} run(s) ended failed/cancelled/timeout`);
    if (completed !== lastCompleted) {
      lastCompleted = completed;
      lastProgressAt = Date.now();
    } else if (Date.now() - lastProgressAt > o.stallSeconds * 1000) {
      throw new Misbehaviour(`${o.what}: no run completed for ${o.stallSeconds} s (${completed}/${o.runs} completed, ${c.total} triggered)`);
    }
    if (Date.now() - lastPrint > 5000) {
      lastPrint = Date.now();
      o.progress(`${o.what}: ${completed}/${o.runs} runs completed`);
    }
    if (completed === o.runs) return Number(c.last);
  }
}

/**
 * From the database: every run of the pipeline completed, every step completed with exactly
 * one command, itself completed; and from the agents: no command delivered twice, no HTTP
 * error, every command completed. Answers the problems and the steps completed.
 */
export async function verifyExactlyOnce(
  db: pg.Pool,
  o: { pipelineId: string; runs: number; stepsPerRun: number; what: string; agents: ThroughputAgentsResult },
): Promise<{ problems: string[]; stepsCompleted: number }> {
  const { runs, stepsPerRun, what, agents } = o;
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
           (SELECT coalesce(sum(n), 0) FROM per_step) AS commands`, [o.pipelineId])).rows[0];
  const problems: string[] = [];
  const stepsCompleted = Number(verify.steps_completed);
  if (Number(verify.runs) !== runs || Number(verify.runs_completed) !== runs) problems.push(`${what}: ${verify.runs_completed}/${verify.runs} runs completed (expected ${runs})`);
  if (Number(verify.steps) !== runs * stepsPerRun || stepsCompleted !== runs * stepsPerRun) problems.push(`${what}: ${stepsCompleted}/${verify.steps} step runs completed (expected ${runs * stepsPerRun})`);
  if (Number(verify.steps_not_once) !== 0) problems.push(`${what}: ${verify.steps_not_once} step run(s) without exactly one completed command`);
  if (agents.duplicates !== 0) problems.push(`${what}: ${agents.duplicates} command(s) delivered to agents more than once`);
  if (agents.errorCount !== 0) problems.push(`${what}: ${agents.errorCount} HTTP error(s), e.g. ${agents.errors.slice(0, 3).join(' | ')}`);
  if (agents.commandsCompleted !== runs * stepsPerRun) problems.push(`${what}: agents completed ${agents.commandsCompleted} commands (expected ${runs * stepsPerRun})`);
  return { problems, stepsCompleted };
}

/** The diamond pipeline of the throughput workload: root → (left, right) → final, one tool each. */
export const DIAMOND = {
  name: 'bench-diamond',
  steps: [
    { id: 'root', name: 'Root', tool: 'bench-a', depends_on: [], timeout: '10m' },
    { id: 'left', name: 'Left', tool: 'bench-b', depends_on: ['root'], timeout: '10m' },
    { id: 'right', name: 'Right', tool: 'bench-c', depends_on: ['root'], timeout: '10m' },
    { id: 'final', name: 'Final', tool: 'bench-d', depends_on: ['left', 'right'], timeout: '10m' },
  ],
  settings: { max_parallel_steps: 2 },
};
export const DIAMOND_TOOLS = ['bench-a', 'bench-b', 'bench-c', 'bench-d'];
export const DIAMOND_STEPS = 4;

/**
 * The baseline of the ratio (bench.ts phase 3b): a graphile-worker runner with the
 * orchestrator's settings (runnerSettings) and a no-op task, on the given database, while
 * `producers` connections add `jobs` jobs one at a time (one transaction each, with a job
 * key, like our add_job calls). A warm-up of 200 jobs first, untimed. Nothing else may run
 * jobs on that database meanwhile.
 */
export async function rawJobsOneAtATime(
  databaseUrl: string,
  o: { jobs: number; producers: number; concurrency: number },
): Promise<{ jobsPerSec: number; wallMs: number; failed: number }> {
  const { run } = await import('graphile-worker');
  const { runnerSettings, workerLogger } = await import('../../src/worker.ts');
  const { createPool } = await import('../../src/db/pool.ts');
  const pino = (await import('pino')).default;
  const logger = workerLogger(pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2)));
  const workerPool = createPool(databaseUrl, o.concurrency + 2);
  const producerPool = createPool(databaseUrl, o.producers);
  let succeeded = 0;
  let failed = 0;
  let target = 0;
  let reached: (() => void) | null = null;
  const runner = await run({ ...runnerSettings(o.concurrency), pgPool: workerPool, logger, taskList: { bench_noop: async () => {} } });
  try {
    runner.events.on('job:success', ({ job }) => {
      if (job.task_identifier !== 'bench_noop') return;
      succeeded++;
      if (succeeded >= target) reached?.();
    });
    runner.events.on('job:error', () => {
      failed++;
    });
    const addAll = async (n: number, prefix: string) => {
      const done = new Promise<void>((resolve, reject) => {
        target = succeeded + n;
        const timer = setTimeout(() => reject(new Misbehaviour(`raw graphile-worker: ${succeeded}/${target} no-op jobs done after 600 s`)), 600_000);
        reached = () => {
          clearTimeout(timer);
          reached = null;
          resolve();
        };
      });
      let next = 0;
      const producer = async () => {
        while (next < n) {
          const i = next++;
          await producerPool.query(`SELECT graphile_worker.add_job('bench_noop', '{}'::json, job_key => $1)`, [`${prefix}:${i}`]);
        }
      };
      await Promise.all(Array.from({ length: o.producers }, producer));
      await done;
    };
    await addAll(Math.min(200, o.jobs), 'bench_noop_warmup');
    const t = now();
    await addAll(o.jobs, 'bench_noop');
    const wallMs = now() - t;
    return { jobsPerSec: o.jobs / (wallMs / 1000), wallMs, failed };
  } finally {
    await runner.stop();
    await producerPool.end();
    await workerPool.end();
  }
}
