// Command expiry and lost-agent recovery, used by the command_expire and agent_health tasks.
import type { Queryable } from '../db/pool.ts';
import { many, one, exec } from '../store/query.ts';
import { agentsSql, commandsSql } from '../store/queries.ts';
import type { AgentRow, CommandRow } from '../store/rows.ts';
import type { OrchestrationConfig } from '../config.ts';
import { advanceRun, lockRun } from './runs.ts';

/**
 * A command's deadline passed: a pending command nobody acknowledged expires as
 * queue_timeout, an acknowledged or running one as step_timeout; then its run advances
 * (retry or failure). A deadline that moved (the command was acknowledged) is re-armed.
 */
export async function expireCommand(tx: Queryable, commandId: string, orchestration: OrchestrationConfig): Promise<void> {
  const peek = await one<CommandRow>(tx, commandsSql.GetCommandById, [commandId]);
  if (!peek) return;
  // Lock order: run, then command (the same order every progression path uses).
  if (peek.pipeline_run_id) await lockRun(tx, peek.pipeline_run_id);
  const command = await one<CommandRow & { db_now: Date }>(tx, commandsSql.LockCommand, [commandId]);
  if (!command || !['pending', 'acknowledged', 'running'].includes(command.status)) return;
  if (command.expires_at.getTime() > command.db_now.getTime()) {
    await exec(tx, commandsSql.RearmCommandExpiry, [command.id]);
    return;
  }
  const queued = command.status === 'pending';
  await one(tx, commandsSql.ExpireCommand, [
    command.id,
    queued ? 'queue_timeout' : 'step_timeout',
    queued
      ? 'no agent acknowledged the command before its queue deadline'
      : `the step did not finish within ${command.timeout_seconds}s`,
  ]);
  if (command.pipeline_run_id) await advanceRun(tx, command.pipeline_run_id, orchestration);
}

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
  await one(tx, agentsSql.MarkAgentOffline, [agent.id]);
  await many(tx, commandsSql.FailLostAgentCommands, [
    agent.id,
    `agent '${agent.name}' stopped responding (no contact for ${orchestration.agentOfflineAfterSeconds}s)`,
  ]);
}
