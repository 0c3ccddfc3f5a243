// Runs at a command's deadline (job run_at = commands.expires_at, job_key
// command_expire:<command id>, re-armed when the deadline moves, removed when the command
// finishes): expires it as queue_timeout or step_timeout and advances its run.
import * as v from 'valibot';
import type { Task } from 'graphile-worker';
import { inTransaction } from '../src/db/transaction.ts';
import { expireCommand } from '../src/progression/commands.ts';
import type { TaskDeps } from '../src/worker.ts';

const Payload = v.object({ command_id: v.pipe(v.string(), v.uuid()) });

export default function commandExpire(deps: TaskDeps): Task {
  return async (payload, helpers) => {
    const parsed = v.safeParse(Payload, payload);
    if (!parsed.success) {
      helpers.logger.error(`command_expire: invalid payload ${JSON.stringify(payload)}; dropped`);
      return;
    }
    await helpers.withPgClient((client) =>
      inTransaction(client, (tx) => expireCommand(tx, parsed.output.command_id, deps.orchestration)),
    );
  };
}
