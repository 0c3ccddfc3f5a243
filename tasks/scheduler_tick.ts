// The scheduler: runs at the earliest next_run_at of an active scan (job_key scheduler_tick,
// re-armed by every change to a scan and at the end of each tick), fires every due scan in
// its own transaction, and re-arms itself. Not a loop: between fires nothing runs.
import type { Task } from 'graphile-worker';
import { inTransaction } from '../src/db/transaction.ts';
import { runSchedulerTick } from '../src/progression/scans.ts';
import type { TaskDeps } from '../src/worker.ts';

export default function schedulerTick(deps: TaskDeps): Task {
  return async (_payload, helpers) => {
    await runSchedulerTick(
      (fn) => helpers.withPgClient((client) => inTransaction(client, fn)),
      deps.concurrency,
    );
  };
}
