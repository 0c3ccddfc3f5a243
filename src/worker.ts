// The graphile-worker runner. Tasks are the files of tasks/: the file name is the task
// identifier and the default export builds the task from its dependencies.
import { readdir } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { run, Logger, type Runner, type Task, type TaskList } from 'graphile-worker';
import type pg from 'pg';
import * as v from 'valibot';
import { inTransaction, type Tx } from './db/transaction.ts';
import type { Logger as Pino } from 'pino';
import type { OrchestrationConfig } from './config.ts';

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

export function workerLogger(log: Pino): Logger {
  return new Logger((scope) => (level, message, meta) => {
    const l = level === 'warning' ? 'warn' : level;
    (log[l as 'info'] ?? log.info).call(log, { ...scope, ...meta }, message);
  });
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
    parsedCronItems: [], // schedules are our own job (scheduler_tick), not graphile-worker cron
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

export async function startWorker(opts: WorkerOptions): Promise<Runner> {
  return run({
    ...runnerSettings(opts.concurrency),
    pgPool: opts.pgPool,
    logger: workerLogger(opts.logger.child({ component: 'worker' })),
    taskList: await loadTasks({ orchestration: opts.orchestration, concurrency: opts.concurrency }),
  });
}
