// Lost-agent recovery, used by the agent_health task (and by deactivating an agent).
import type { Queryable } from '../db/pool.ts';
import { many, one } from '../store/query.ts';
import { agentsSql, commandsSql } from '../store/queries.ts';
import type { AgentRow } from '../store/rows.ts';
import type { OrchestrationConfig } from '../config.ts';
import { agentOffline, commandsEntered } from '../observability/transitions.ts';

/**
 * An agent's health check. An agent seen within the grace stays as it is (the check is
 * re-armed for the end of its grace); otherwise it is offline, the commands it was running
 * fail as agent_lost (their runs advance: retry or failure) and its un-acknowledged claims
 * return to the queue.
 */
export async function checkAgentHealth(tx: Queryable, agentId: string, orchestration: OrchestrationConfig): Promise<void> {
  const agent = await one<AgentRow & { db_now: Date }>(tx, agentsSql.LockAgentById, [agentId]);
  if (!agent) return;
  const grace = orchestration.agentOfflineAfterSeconds * 1000;
  const seen = agent.last_seen_at?.getTime() ?? 0;
  if (agent.status === 'active' && seen + grace > agent.db_now.getTime()) {
    await one(tx, agentsSql.RearmAgentHealth, [agent.id, new Date(seen + grace)]);
    return;
  }
  const reason = `agent '${agent.name}' stopped responding (no contact for ${orchestration.agentOfflineAfterSeconds}s)`;
  if (await one(tx, agentsSql.MarkAgentOffline, [agent.id])) {
    agentOffline(tx, agent, agent.status === 'active' ? `no contact for ${orchestration.agentOfflineAfterSeconds}s` : `agent ${agent.status}`);
  }
  await releaseAgentWork(tx, agent.id, reason);
}

/** The agent's running commands fail as agent_lost (and are retried); its claims return to the queue. */
export async function releaseAgentWork(tx: Queryable, agentId: string, reason: string): Promise<void> {
  const lost = await many<{ id: string; tenant_id: string; type: string }>(tx, commandsSql.FailLostAgentCommands, [agentId, reason]);
  commandsEntered(tx, lost, 'failed');
}
