// Runs when an agent's grace ends (job_key agent_health:<agent id>, pushed forward by each
// heartbeat or other contact): a silent agent goes offline and its work is recovered.
import * as v from 'valibot';
import { checkAgentHealth } from '../src/progression/commands.ts';
import { transactionalTask } from '../src/worker.ts';

export default transactionalTask('agent_health', v.object({ agent_id: v.pipe(v.string(), v.uuid()) }), (tx, { agent_id }, deps) =>
  checkAgentHealth(tx, agent_id, deps.orchestration),
);
