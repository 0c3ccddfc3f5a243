// The scheduler: runs at the earliest next_run_at of an active scan (job_key scheduler_tick,
// re-armed by every change to a scan and at the end of each tick), fires the due scans in
// batches (one transaction each), and re-arms itself. Not a loop: between fires nothing runs.
// A burst is shared with helper ticks ({helper: true}), which add no helpers of their own.
import type { Task } from 'graphile-worker';
import { inTransaction } from '../src/db/transaction.ts';
import { runSchedulerTick } from '../src/progression/scans.ts';
import type { TaskDeps } from '../src/worker.ts';

export default function schedulerTick(deps: TaskDeps): Task {
  return async (payload, helpers) => {
    await runSchedulerTick(
      (fn) => helpers.withPgClient((client) => inTransaction(client, fn)),
      deps.concurrency,
      { helper: (payload as { helper?: unknown } | null)?.helper === true },
    );
  };
}
