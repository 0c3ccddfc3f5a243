// Run progression with I/O. Every function takes the transaction first and expects the
// caller to hold (or take, through lockRun) the run's row lock, which serializes all
// changes to one run's progression across any number of processes.
import type { Queryable } from '../db/pool.ts';
import type { Tx } from '../db/transaction.ts';
import { finalMany, many, one, exec } from '../store/query.ts';
import { commandsSql, runsSql, stepRunsSql } from '../store/queries.ts';
import type { RunRow, StepRunRow } from '../store/rows.ts';
import { planAdvance, TERMINAL_RUN, TERMINAL_STEP, UNSUCCESSFUL_STEP, type StepState } from '../domain/progression.ts';
import type { Condition } from '../domain/conditions.ts';
import { parseDuration } from '../domain/durations.ts';
import type { OrchestrationConfig } from '../config.ts';
import { commandsEntered, runFinished, runReopened, runStarted, runsCreated, stepEntered, stepRetrying } from '../observability/transitions.ts';

type AdvanceRow = StepRunRow & {
  condition: Condition | null;
  tool: string | null;
  capabilities: string[];
  config: Record<string, unknown>;
  timeout_seconds: number;
  retry_delay_seconds: number;
  max_retries: number;
  command_status: string | null;
  command_result: Record<string, unknown> | null;
  command_error_code: string | null;
  command_error_message: string | null;
  command_agent_id: string | null;
  ingested_findings: number | null;
};

export function lockRun(tx: Queryable, runId: string): Promise<(RunRow & { db_now: Date }) | null> {
  return one<RunRow & { db_now: Date }>(tx, runsSql.LockRun, [runId]);
}

/**
 * Moves a run forward as far as it can go now. Idempotent: running it again with nothing
 * new changes nothing.
 */
export async function advanceRun(tx: Tx, runId: string, orchestration: OrchestrationConfig): Promise<void> {
  // The lock, then the steps as of after it (each statement of a pipeline sees what
  // committed before it started), in one round trip.
  const [locked, stepRows] = await tx.batch([
    { q: runsSql.LockRun, values: [runId] },
    { q: stepRunsSql.StepRunsForAdvance, values: [runId] },
  ]);
  const run = (locked.rows[0] as (RunRow & { db_now: Date }) | undefined) ?? null;
  if (!run || TERMINAL_RUN.has(run.status)) return;
  if (run.status === 'pending') {
    if (!run.admitted_at) return; // waiting for a slot: admit_runs advances it when admitted
    tx.later(runsSql.StartRun, [run.id, parseDuration(run.settings.timeout)], (r) => {
      if (r.rowCount) runStarted(tx, run);
    });
  }

  // Every write below is queued: they go out in order with the COMMIT, in one round trip.
  const rows = stepRows.rows as AdvanceRow[];
  const byId = new Map(rows.map((r) => [r.id, r]));
  const actions = planAdvance({
    settings: run.settings as { max_parallel_steps?: number; fail_fast?: boolean },
    target: run.target,
    context: run.context,
    steps: rows.map(toStepState),
    now: run.db_now,
  });

  let dispatched = false;
  let stepsFinished = false; // the run's counters change only when steps finish
  // Each transition is counted by what its guarded statement changed (rowCount).
  const step = (id: string) => byId.get(id)!;
  const ended = (id: string) => ({ startedAt: step(id).started_at, endedAt: run.db_now });
  for (const action of actions) {
    if (action.kind === 'complete' || action.kind === 'fail' || action.kind === 'skip') stepsFinished = true;
    switch (action.kind) {
      case 'complete':
        tx.later(stepRunsSql.CompleteStep, [action.stepId, action.commandId, action.findingsCount, action.output, action.agentId], (r) => {
          if (r.rowCount) stepEntered(tx, step(action.stepId), 'completed', ended(action.stepId));
        });
        break;
      case 'retry':
        tx.later(stepRunsSql.ScheduleStepRetry, [
          action.stepId, action.commandId, action.errorCode, action.errorMessage, action.delaySeconds, action.agentGone,
        ], (r) => {
          if (r.rowCount) stepRetrying(tx, step(action.stepId));
        });
        break;
      case 'fail':
        tx.later(stepRunsSql.FailStep, [action.stepId, action.commandId, action.status, action.errorCode, action.errorMessage], (r) => {
          if (r.rowCount) stepEntered(tx, step(action.stepId), action.status, ended(action.stepId));
        });
        break;
      case 'skip':
        tx.later(stepRunsSql.SkipStep, [action.stepId, action.conditionEvaluated, action.conditionResult, action.reason], (r) => {
          if (r.rowCount) stepEntered(tx, step(action.stepId), 'skipped');
        });
        break;
      case 'condition_met':
        tx.later(stepRunsSql.RecordConditionMet, [action.stepId]);
        break;
      case 'dispatch': {
        const step = byId.get(action.stepId)!;
        dispatchStep(tx, run, step, action.attempt, action.maxAttempts, action.steps, orchestration);
        dispatched = true;
        break;
      }
      case 'fail_fast':
        cancelUnfinished(tx, run.id, 'cancelled by fail_fast after a step failed');
        finishRunLater(tx, run, 'failed', action.errorMessage);
        return;
      case 'finish':
        finishRunLater(tx, run, action.status, action.errorMessage);
        return;
    }
  }
  if (dispatched || stepsFinished) tx.later(runsSql.SettleRun, [run.id, dispatched, stepsFinished]);
}


/**
 * The run's timer fired. A run past its own deadline (settings.timeout) ends as timeout:
 * its in-flight commands and unfinished steps are cancelled. Otherwise every in-flight
 * command past its deadline expires and the run advances (retry or failure). Then the
 * timer is set for the next deadline.
 */
export async function expireRunCommands(tx: Tx, runId: string, orchestration: OrchestrationConfig): Promise<void> {
  const run = await lockRun(tx, runId);
  if (!run) return;
  if (!TERMINAL_RUN.has(run.status)) {
    if (run.deadline_at && run.deadline_at.getTime() <= run.db_now.getTime()) {
      await cancelRun(tx, run, 'timeout', `the run did not finish within its timeout (${run.settings.timeout})`);
    } else {
      const expired = await many<{ id: string; tenant_id: string; type: string }>(tx, commandsSql.ExpireRunCommands, [run.id]);
      commandsEntered(tx, expired, 'expired');
      if (expired.length > 0) await advanceRun(tx, run.id, orchestration);
    }
  }
  tx.later(commandsSql.ArmRunTimer, [run.id]);
}

/**
 * Ends a run that is in progress (its counters are final, its timer removed) and lets the
 * tenant's waiting runs take the slot it frees.
 */
async function finishRun(tx: Tx, run: RunRow, status: string, message: string | null): Promise<RunRow | null> {
  const finished = await one<RunRow>(tx, runsSql.FinishRun, [run.id, status, message]);
  if (finished) {
    runFinished(tx, finished);
    tx.later(runsSql.AdmitRuns, [run.tenant_id]);
  }
  return finished;
}

/**
 * finishRun with both statements queued: they go out with the COMMIT, so the tenant's
 * admission lock (admit_runs) is held for that one round trip only. The caller holds the
 * run's lock and knows it is in progress; admitting when nothing finished is harmless.
 */
function finishRunLater(tx: Tx, run: RunRow, status: string, message: string | null): void {
  tx.later(runsSql.FinishRun, [run.id, status, message], (r) => {
    if (r.rows[0]) runFinished(tx, r.rows[0] as RunRow);
  });
  tx.later(runsSql.AdmitRuns, [run.tenant_id]);
}

export type NewRun = {
  tenantId: string;
  pipelineId: string;
  assetId: string | null;
  target: Record<string, unknown>;
  scanId: string | null;
  triggerType: 'manual' | 'api' | 'schedule' | 'webhook' | 'on_asset_discovery';
  triggeredBy: string;
  context: Record<string, unknown>;
};

/**
 * Creates runs of a pipeline's current version and admits those that fit under the
 * tenant's and scans' limits (the others wait as pending, oldest first). Returns the runs
 * as they are after admission; none when the pipeline does not exist. With `last`, this
 * is the end of the caller's transaction: admission, the read-back and COMMIT go out in
 * one round trip, so the tenant's admission lock (admit_runs) is held for no round trip.
 */
export async function createRuns(tx: Tx, runs: NewRun[], opts: { last?: boolean } = {}): Promise<RunRow[]> {
  if (runs.length === 0) return [];
  const inserted = await tx.batch(runs.map((r) => ({
    q: runsSql.InsertRun,
    values: [r.tenantId, r.pipelineId, r.assetId, r.scanId, r.triggerType, r.triggeredBy, r.context, r.target],
  })));
  const created = inserted.flatMap((res) => res.rows as RunRow[]);
  const ids = created.map((row) => row.id);
  if (ids.length === 0) return []; // the pipeline does not exist
  if (ids.length !== runs.length) throw new Error('createRuns: runs of several pipelines, some missing, in one call');
  runsCreated(tx, created);
  for (const tenantId of [...new Set(runs.map((r) => r.tenantId))].sort()) tx.later(runsSql.AdmitRuns, [tenantId]);
  return opts.last ? finalMany<RunRow>(tx, runsSql.GetRunsByIds, [ids]) : many<RunRow>(tx, runsSql.GetRunsByIds, [ids]);
}

function dispatchStep(
  tx: Tx,
  run: RunRow,
  step: AdvanceRow,
  attempt: number,
  maxAttempts: number,
  steps: Record<string, unknown>,
  orchestration: OrchestrationConfig,
): void {
  const queueTimeout = parseDuration(run.settings.queue_timeout) ?? orchestration.queueTimeoutSeconds;
  const payload = {
    pipeline_run_id: run.id,
    step_run_id: step.id,
    step_key: step.step_key,
    step_id: step.step_key, // seed 001's name for the step key
    step_name: step.name,
    tool: step.tool,
    capabilities: step.capabilities,
    step_config: { ...(step.tool ? { tool: step.tool } : {}), ...step.config },
    timeout_seconds: step.timeout_seconds,
    attempt,
    max_attempts: maxAttempts,
    target: run.target,
    context: run.context,
    steps,
  };
  tx.later(commandsSql.DispatchStep, [
    run.tenant_id, run.id, step.id, attempt, priorityOf(run), step.tool, step.capabilities, step.timeout_seconds,
    queueTimeout, payload,
  ], (r) => {
    const command = r.rows[0] as { id: string; type: string } | undefined;
    if (!command) return;
    commandsEntered(tx, [{ id: command.id, tenant_id: run.tenant_id, type: command.type }], 'pending');
    // A retry's command leaves its step queued (it waited there): no new status.
    if (step.status !== 'queued') stepEntered(tx, step, 'queued');
  });
}

function priorityOf(run: RunRow): string {
  const p = run.settings.priority;
  return p === 'low' || p === 'high' || p === 'critical' ? p : 'normal';
}

/** Cancels every unfinished step of a run and its in-flight commands (commands first: lock order). */
export function cancelUnfinished(tx: Tx, runId: string, reason: string): void {
  tx.later(commandsSql.CancelRunCommands, [runId, reason], (r) => {
    commandsEntered(tx, r.rows as { id: string; tenant_id: string; type: string }[], 'cancelled');
  });
  tx.later(stepRunsSql.CancelRunSteps, [runId, reason], (r) => {
    for (const s of r.rows as StepRunRow[]) stepEntered(tx, s, 'cancelled');
  });
}

/** Cancels a run (the API's cancel; issue-3 run timeouts end a run the same way with 'timeout'). */
export async function cancelRun(
  tx: Tx,
  run: RunRow,
  status: 'cancelled' | 'timeout',
  reason: string,
): Promise<RunRow | null> {
  if (TERMINAL_RUN.has(run.status)) return null;
  cancelUnfinished(tx, run.id, reason);
  return finishRun(tx, run, status, reason);
}

/**
 * A manual retry of a finished, unsuccessful run: failed, timed-out and cancelled steps,
 * and every step downstream of them that did not complete, start over.
 * Returns null when there is nothing to retry.
 */
export async function retryRun(tx: Queryable, run: RunRow): Promise<RunRow | null> {
  if (run.status !== 'failed' && run.status !== 'cancelled' && run.status !== 'timeout') return null;
  const steps = await many<StepRunRow>(tx, stepRunsSql.ListStepRuns, [run.tenant_id, run.id]);
  const reset = new Set(steps.filter((s) => UNSUCCESSFUL_STEP.has(s.status)).map((s) => s.step_key));
  if (reset.size === 0) return null;
  for (let grew = true; grew; ) {
    grew = false;
    for (const s of steps) {
      if (reset.has(s.step_key) || s.status === 'completed') continue;
      if (s.depends_on.some((d) => reset.has(d)) || !TERMINAL_STEP.has(s.status)) {
        reset.add(s.step_key);
        grew = true;
      }
    }
  }
  const ids = steps.filter((s) => reset.has(s.step_key)).map((s) => s.id);
  await exec(tx, stepRunsSql.ResetStepsForRetry, [run.id, ids]);
  if (await one<RunRow>(tx, runsSql.ReopenRun, [run.id])) runReopened(tx, run);
  await one(tx, runsSql.AdmitRuns, [run.tenant_id]);
  // Admitted at once (a slot was free): it is running again; otherwise it waits as pending.
  if (await exec(tx, runsSql.StartRun, [run.id, parseDuration(run.settings.timeout)])) runStarted(tx, run);
  return one<RunRow>(tx, runsSql.GetRun, [run.tenant_id, run.id]);
}

function toStepState(r: AdvanceRow): StepState {
  return {
    id: r.id,
    step_key: r.step_key,
    step_order: r.step_order,
    status: r.status,
    depends_on: r.depends_on,
    condition: r.condition,
    condition_evaluated: r.condition_evaluated,
    condition_result: r.condition_result,
    attempt: r.attempt,
    max_attempts: r.max_attempts,
    agent_retries: r.agent_retries,
    retry_at: r.retry_at,
    retry_delay_seconds: r.retry_delay_seconds,
    command_id: r.command_id,
    command_status: r.command_status,
    command_result: r.command_result,
    command_error_code: r.command_error_code,
    command_error_message: r.command_error_message,
    command_agent_id: r.command_agent_id,
    ingested_findings: r.ingested_findings,
    findings_count: r.findings_count,
    output: r.output,
    error_message: r.error_message,
    skip_reason: r.skip_reason,
  };
}
