// Advances one pipeline run: applies finished commands, retries, skips, dispatches ready
// steps, finishes the run. Enqueued (job_key run_advance:<run id>, coalescing bursts) by
// every transaction that makes progress possible; serialized per run by the run's row lock.
import * as v from 'valibot';
import type { Task } from 'graphile-worker';
import { inTransaction } from '../src/db/transaction.ts';
import { advanceRun } from '../src/progression/runs.ts';
import type { TaskDeps } from '../src/worker.ts';

const Payload = v.object({ run_id: v.pipe(v.string(), v.uuid()) });

export default function runAdvance(deps: TaskDeps): Task {
  return async (payload, helpers) => {
    const parsed = v.safeParse(Payload, payload);
    if (!parsed.success) {
      helpers.logger.error(`run_advance: invalid payload ${JSON.stringify(payload)}; dropped`);
      return;
    }
    await helpers.withPgClient((client) =>
      inTransaction(client, (tx) => advanceRun(tx, parsed.output.run_id, deps.orchestration)),
    );
  };
}
