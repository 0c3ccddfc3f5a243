// Runs when an agent's grace ends (job_key agent_health:<agent id>, pushed forward by each
// heartbeat or other contact): a silent agent goes offline and its work is recovered.
import * as v from 'valibot';
import type { Task } from 'graphile-worker';
import { inTransaction } from '../src/db/transaction.ts';
import { checkAgentHealth } from '../src/progression/commands.ts';
import type { TaskDeps } from '../src/worker.ts';

const Payload = v.object({ agent_id: v.pipe(v.string(), v.uuid()) });

export default function agentHealth(deps: TaskDeps): Task {
  return async (payload, helpers) => {
    const parsed = v.safeParse(Payload, payload);
    if (!parsed.success) {
      helpers.logger.error(`agent_health: invalid payload ${JSON.stringify(payload)}; dropped`);
      return;
    }
    await helpers.withPgClient((client) =>
      inTransaction(client, (tx) => checkAgentHealth(tx, parsed.output.agent_id, deps.orchestration)),
    );
  };
}
