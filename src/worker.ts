// The graphile-worker runner. Tasks are the files of tasks/: the file name is the task
// identifier and the default export builds the task from its dependencies.
import { EventEmitter } from 'node:events';
import { readdir } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { run, Logger, parseCronItems, type ParsedCronItem, type Runner, type Task, type TaskList, type WorkerEvents } from 'graphile-worker';
import type pg from 'pg';
import * as v from 'valibot';
import { inTransaction, type Tx } from './db/transaction.ts';
import type { Logger as Pino } from 'pino';
import type { OrchestrationConfig } from './config.ts';
import { WorkerLiveness } from './progression/maintenance.ts';
import { RETENTION_CRON } from './progression/retention.ts';
import { withLog } from './observability/context.ts';

export type TaskDeps = { orchestration: OrchestrationConfig; concurrency: number };

/**
 * A task that validates its payload first and then does its work in one transaction. A
 * payload that does not validate is logged and dropped: retrying cannot make it valid.
 */
export function transactionalTask<S extends v.GenericSchema>(
  name: string,
  payloadSchema: S,
  work: (tx: Tx, payload: v.InferOutput<S>, deps: TaskDeps) => Promise<void>,
): (deps: TaskDeps) => Task {
  return (deps) => async (payload, helpers) => {
    const parsed = v.safeParse(payloadSchema, payload);
    if (!parsed.success) {
      helpers.logger.error(`${name}: invalid payload ${JSON.stringify(payload)}; dropped`);
      return;
    }
    await helpers.withPgClient((client) => inTransaction(client, (tx) => work(tx, parsed.output, deps)));
  };
}

const tasksDir = fileURLToPath(new URL('../tasks/', import.meta.url));

export async function loadTasks(deps: TaskDeps): Promise<TaskList> {
  const tasks: TaskList = {};
  for (const file of (await readdir(tasksDir)).sort()) {
    if (!file.endsWith('.ts')) continue;
    const mod = (await import(pathToFileURL(tasksDir + file).href)) as { default: (d: TaskDeps) => Task };
    tasks[file.slice(0, -3)] = mod.default(deps);
  }
  return tasks;
}

/**
 * graphile-worker's log lines through pino. Its line per finished job ("Completed task …
 * with success") goes to debug: at info an operator reads what happened (runs started and
 * finished, agents, scans fired: src/observability/transitions.ts), not that a job ran. A
 * failed job stays an error; the job's row it carries is cut to its id, task and attempts.
 */
export function workerLogger(log: Pino): Logger {
  return new Logger((scope) => (level, message, meta) => {
    const { job, success, ...rest } = (meta ?? {}) as { job?: { id: string; task_identifier: string; attempts: number; max_attempts: number }; success?: boolean };
    const l = success ? 'debug' : level === 'warning' ? 'warn' : level;
    const fields = job ? { ...scope, ...rest, job_id: job.id, task: job.task_identifier, attempts: job.attempts, max_attempts: job.max_attempts } : { ...scope, ...rest };
    (log[l as 'info'] ?? log.info).call(log, fields, message);
  });
}

/** Each job runs with a logger of its own (its task and job id) for whatever it logs. */
function scopedTasks(tasks: TaskList, log: Pino): TaskList {
  const scoped: TaskList = {};
  for (const [name, task] of Object.entries(tasks)) {
    if (!task) continue;
    scoped[name] = (payload, helpers) => withLog(log.child({ task: name, job_id: helpers.job.id }), () => task(payload, helpers));
  }
  return scoped;
}

export type WorkerOptions = {
  pgPool: pg.Pool;
  concurrency: number;
  orchestration: OrchestrationConfig;
  logger: Pino;
};

/**
 * The graphile-worker settings every runner of ours uses (the benchmark's raw no-op
 * baseline too, so the comparison is like for like).
 */
export function runnerSettings(concurrency: number) {
  const batching = process.env.WORKER_BATCHING !== 'off';
  return {
    concurrency,
    noHandleSignals: true,
    // Jobs arrive by NOTIFY; polling only catches jobs whose run_at arrives (the scheduler's
    // next fire, deadlines, retry delays). 50 ms keeps a scan's fire within ~60 ms of its due
    // time (npm run bench); an idle poll is one indexed query, ~20 a second per process.
    pollInterval: 50,
    // Scans' schedules are our own job (scheduler_tick), not graphile-worker cron; the
    // progression runner adds the retention item (startWorker).
    parsedCronItems: [] as ParsedCronItem[],
    preset: batching
      ? {
          worker: {
            // Fetch due jobs for the whole pool in one query, and delete finished jobs in
            // batches: under load most run_advance jobs wait behind others.
            localQueue: { size: concurrency + 1 },
            completeJobBatchDelay: 0,
            failJobBatchDelay: 0,
          },
        }
      : {},
  };
}

/**
 * Tasks that run on the delivery runner, apart from progression: a receiver that takes its
 * whole timeout (10 s) holds a delivery slot, never a slot that advances runs.
 */
const DELIVERY_TASKS = new Set(['event_deliver']);

/**
 * The worker of a process: two graphile-worker runners on one connection pool, each a pool
 * of its own with its liveness. Progression (every task but deliveries) at `concurrency`;
 * deliveries (event_deliver) at DELIVERY_CONCURRENCY, polling once a second for retries that
 * come due (new deliveries arrive by NOTIFY at once). stop() stops both.
 */
export async function startWorker(opts: WorkerOptions): Promise<Runner> {
  const tasks: TaskList = scopedTasks(await loadTasks({ orchestration: opts.orchestration, concurrency: opts.concurrency }), opts.logger.child({ component: 'worker' }));
  const some = (delivery: boolean): TaskList =>
    Object.fromEntries(Object.entries(tasks).filter(([name]) => DELIVERY_TASKS.has(name) === delivery));
  // Retention (tasks/retention.ts) is graphile-worker's cron: every process registers the
  // item, and graphile-worker's known_crontabs makes each tick one job across all of them. The
  // job key keeps at most one pass waiting; a failed pass is not retried (the next tick is).
  const cron = parseCronItems([{
    task: 'retention', identifier: 'retention', match: RETENTION_CRON, options: { jobKey: 'retention', maxAttempts: 1 },
  }]);
  const runner = await startRunner(opts, some(false), { ...runnerSettings(opts.concurrency), parsedCronItems: cron });
  let deliveries: Runner;
  try {
    deliveries = await startRunner(opts, some(true), { ...runnerSettings(opts.orchestration.delivery.concurrency), pollInterval: 1000 });
  } catch (err) {
    await runner.stop();
    throw err;
  }
  const stopProgression = runner.stop.bind(runner);
  runner.stop = async () => {
    await Promise.all([stopProgression(), deliveries.stop()]);
  };
  return runner;
}

/**
 * A graphile-worker runner with its liveness: the pool heartbeats into worker_processes and
 * sweeps (src/progression/maintenance.ts), so if this process dies, any other releases the
 * jobs it held. stop() stops graphile-worker first (it finishes or returns its jobs), then
 * the heartbeats, and records the clean stop.
 */
async function startRunner(opts: WorkerOptions, taskList: TaskList, settings: ReturnType<typeof runnerSettings>): Promise<Runner> {
  const events: WorkerEvents = new EventEmitter();
  let poolId: string | null = null;
  events.on('pool:create', ({ workerPool }) => {
    poolId = workerPool.id;
  });
  const runner = await run({
    ...settings,
    pgPool: opts.pgPool,
    events,
    logger: workerLogger(opts.logger.child({ component: 'worker' })),
    taskList,
  });
  if (!poolId) throw new Error('graphile-worker did not report its worker pool');
  const liveness = new WorkerLiveness(opts.pgPool, poolId, opts.orchestration, opts.logger.child({ component: 'liveness', poolId }));
  try {
    await liveness.start();
  } catch (err) {
    await runner.stop();
    throw err;
  }
  const stopRunner = runner.stop.bind(runner);
  runner.stop = async () => {
    await stopRunner();
    await liveness.stop();
  };
  return runner;
}
