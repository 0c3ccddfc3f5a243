// A run's expiry timer (job_key command_expire:<run id>, run_at = the earliest deadline an
// in-flight command of the run could reach; see ArmRunTimer in sql/commands.sql): expires
// the commands past their deadline (queue_timeout or step_timeout), advances the run, and
// sets the timer for the next deadline.
import * as v from 'valibot';
import type { Task } from 'graphile-worker';
import { inTransaction } from '../src/db/transaction.ts';
import { expireRunCommands } from '../src/progression/runs.ts';
import type { TaskDeps } from '../src/worker.ts';

const Payload = v.object({ run_id: v.pipe(v.string(), v.uuid()) });

export default function commandExpire(deps: TaskDeps): Task {
  return async (payload, helpers) => {
    const parsed = v.safeParse(Payload, payload);
    if (!parsed.success) {
      helpers.logger.error(`command_expire: invalid payload ${JSON.stringify(payload)}; dropped`);
      return;
    }
    await helpers.withPgClient((client) =>
      inTransaction(client, (tx) => expireRunCommands(tx, parsed.output.run_id, deps.orchestration)),
    );
  };
}
