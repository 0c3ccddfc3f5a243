// What the operators see of a transition: its count (metrics.ts) and, for the meaningful
// ones, one log line at info (runs created, started and finished, agents online and
// offline, scans fired). Called where the process makes the transition, with the
// transaction: nothing is counted or logged before it commits, nor when it rolls back.
// Steps and commands log at debug only: one line per step of every run would drown the
// facts an operator acts on.
import type { Queryable } from '../db/pool.ts';
import { Tx } from '../db/transaction.ts';
import { currentLog } from './context.ts';
import {
  agentCommandsExecutedTotal, commandDuration, commandsExpiredTotal, commandsTotal, findingsIngestedTotal,
  pipelineRunDuration, pipelineRunsTotal, scansScheduledTotal, stepRetryTotal, stepRunDuration, stepRunsTotal,
} from './metrics.ts';

/**
 * Runs fn once what `q` did is committed: after COMMIT for a transaction; at once for a
 * statement sent on the pool (it committed on its own before this is called).
 */
export function whenCommitted(q: Queryable, fn: () => void): void {
  if (q instanceof Tx) q.afterCommit(fn);
  else fn();
}

const seconds = (from: Date | null | undefined, to: Date | null | undefined): number | null =>
  from && to ? Math.max(0, (to.getTime() - from.getTime()) / 1000) : null;

// ---- runs -------------------------------------------------------------------------------

type RunFacts = { id: string; tenant_id: string; pipeline_id: string; trigger_type: string };

/** Runs created (pending): one line for the lot, with their ids (the request's id is on the line). */
export function runsCreated(q: Queryable, runs: RunFacts[]): void {
  if (runs.length === 0) return;
  whenCommitted(q, () => {
    for (const r of runs) pipelineRunsTotal.inc({ tenant_id: r.tenant_id, status: 'pending' });
    const first = runs[0];
    currentLog().info({
      tenant_id: first.tenant_id, pipeline_id: first.pipeline_id, trigger_type: first.trigger_type,
      run_ids: runs.map((r) => r.id),
    }, runs.length === 1 ? 'run created' : `${runs.length} runs created`);
  });
}

/** A finished run sent back to pending by a manual retry. */
export function runReopened(q: Queryable, run: RunFacts): void {
  whenCommitted(q, () => {
    pipelineRunsTotal.inc({ tenant_id: run.tenant_id, status: 'pending' });
    currentLog().info({ tenant_id: run.tenant_id, pipeline_id: run.pipeline_id, run_id: run.id }, 'run retried');
  });
}

export function runStarted(q: Queryable, run: RunFacts): void {
  whenCommitted(q, () => {
    pipelineRunsTotal.inc({ tenant_id: run.tenant_id, status: 'running' });
    currentLog().info({
      tenant_id: run.tenant_id, pipeline_id: run.pipeline_id, run_id: run.id, trigger_type: run.trigger_type,
    }, 'run started');
  });
}

type FinishedRun = RunFacts & {
  status: string; started_at: Date | null; completed_at: Date | null; error_message: string | null;
  completed_steps: number; failed_steps: number; skipped_steps: number; total_steps: number; total_findings: number;
};

/** A run that ended (the row FinishRun returned). */
export function runFinished(q: Queryable, run: FinishedRun): void {
  whenCommitted(q, () => {
    pipelineRunsTotal.inc({ tenant_id: run.tenant_id, status: run.status });
    const duration = seconds(run.started_at, run.completed_at);
    if (duration !== null) pipelineRunDuration.observe(duration);
    currentLog().info({
      tenant_id: run.tenant_id, pipeline_id: run.pipeline_id, run_id: run.id, status: run.status,
      duration_seconds: duration, steps: {
        total: run.total_steps, completed: run.completed_steps, failed: run.failed_steps, skipped: run.skipped_steps,
      },
      findings: run.total_findings, ...(run.error_message ? { error: run.error_message } : {}),
    }, `run ${run.status}`);
  });
}

// ---- steps ------------------------------------------------------------------------------

type StepFacts = { id: string; tenant_id: string; pipeline_run_id: string; step_key: string };

/**
 * A step run entered `status`. `startedAt`/`endedAt`, for a step that ran and ended
 * (completed, failed, timeout), give its duration.
 */
export function stepEntered(q: Queryable, step: StepFacts, status: string, ran?: { startedAt: Date | null; endedAt: Date }): void {
  whenCommitted(q, () => {
    stepRunsTotal.inc({ tenant_id: step.tenant_id, step_key: step.step_key, status });
    const duration = ran ? seconds(ran.startedAt, ran.endedAt) : null;
    if (duration !== null) stepRunDuration.observe(duration);
    currentLog().debug({ run_id: step.pipeline_run_id, step_run_id: step.id, step_key: step.step_key, status }, `step ${status}`);
  });
}

/** A failed attempt that will be retried: the step is queued again. */
export function stepRetrying(q: Queryable, step: StepFacts): void {
  whenCommitted(q, () => {
    stepRetryTotal.inc();
    stepRunsTotal.inc({ tenant_id: step.tenant_id, step_key: step.step_key, status: 'queued' });
    currentLog().debug({ run_id: step.pipeline_run_id, step_run_id: step.id, step_key: step.step_key }, 'step retrying');
  });
}

// ---- commands ---------------------------------------------------------------------------

type CommandFacts = { id: string; tenant_id: string; type: string };

export function commandsEntered(q: Queryable, commands: CommandFacts[], status: string): void {
  if (commands.length === 0) return;
  whenCommitted(q, () => {
    for (const c of commands) commandsTotal.inc({ tenant_id: c.tenant_id, type: c.type, status });
    if (status === 'expired') for (const c of commands) commandsExpiredTotal.inc({ tenant_id: c.tenant_id });
    currentLog().debug({ command_ids: commands.map((c) => c.id), status }, `command ${status}`);
  });
}

/** A command its agent reported on (the row FinishCommand returned). */
export function commandReported(
  q: Queryable,
  c: CommandFacts & { status: string; agent_id: string | null; acknowledged_at: Date | null; completed_at: Date | null },
): void {
  whenCommitted(q, () => {
    commandsTotal.inc({ tenant_id: c.tenant_id, type: c.type, status: c.status });
    if (c.agent_id) agentCommandsExecutedTotal.inc({ tenant_id: c.tenant_id, agent_id: c.agent_id, status: c.status });
    const duration = seconds(c.acknowledged_at, c.completed_at);
    if (duration !== null) commandDuration.observe(duration);
    currentLog().debug({ command_id: c.id, agent_id: c.agent_id, status: c.status, duration_seconds: duration }, `command ${c.status}`);
  });
}

// ---- agents, scans, findings ------------------------------------------------------------

type AgentFacts = { id: string; tenant_id: string; name: string };

/** An agent that was not online made contact (a heartbeat or any request). */
export function agentOnline(q: Queryable, agent: AgentFacts, previousHealth: string): void {
  whenCommitted(q, () => {
    currentLog().info({ tenant_id: agent.tenant_id, agent_id: agent.id, agent_name: agent.name, previous_health: previousHealth }, 'agent online');
  });
}

export function agentOffline(q: Queryable, agent: AgentFacts & { last_seen_at: Date | null }, reason: string): void {
  whenCommitted(q, () => {
    currentLog().info({
      tenant_id: agent.tenant_id, agent_id: agent.id, agent_name: agent.name,
      last_seen_at: agent.last_seen_at?.toISOString() ?? null, reason,
    }, 'agent offline');
  });
}

/** A scan fired: its runs (created or skipped) and why. */
export function scanFired(
  q: Queryable,
  scan: { id: string; tenant_id: string; name: string },
  trigger: string,
  outcome: { runIds: string[]; waiting: number; skipped: number },
): void {
  whenCommitted(q, () => {
    if (trigger === 'schedule') scansScheduledTotal.inc({ tenant_id: scan.tenant_id });
    currentLog().info({
      tenant_id: scan.tenant_id, scan_id: scan.id, scan_name: scan.name, trigger, run_ids: outcome.runIds,
      waiting: outcome.waiting, skipped: outcome.skipped,
    }, 'scan fired');
  });
}

/** Findings an ingest stored (created or seen again), by severity. */
export function findingsIngested(q: Queryable, tenantId: string, severities: readonly string[]): void {
  if (severities.length === 0) return;
  const counts = new Map<string, number>();
  for (const s of severities) counts.set(s, (counts.get(s) ?? 0) + 1);
  whenCommitted(q, () => {
    for (const [severity, n] of counts) findingsIngestedTotal.inc({ tenant_id: tenantId, severity }, n);
  });
}
