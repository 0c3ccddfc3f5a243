// The decisions of one advance of a run, as a pure function of the run's step states:
// apply finished commands (complete, retry or fail), fail fast, start due retries, skip
// or ready pending steps whose dependencies are done, dispatch ready steps into free
// slots, and finish the run when every step is terminal. The caller applies the actions
// in order, in one transaction, holding the run's lock.
import { assetScope, evaluateCondition, type Condition, type StepResult } from './conditions.ts';

export const TERMINAL_STEP = new Set(['completed', 'failed', 'skipped', 'cancelled', 'timeout']);
export const UNSUCCESSFUL_STEP = new Set(['failed', 'timeout', 'cancelled']);
export const TERMINAL_RUN = new Set(['completed', 'failed', 'cancelled', 'timeout']);

export type StepState = {
  id: string;
  step_key: string;
  step_order: number;
  status: string;
  depends_on: string[];
  condition: Condition | null;
  condition_evaluated: boolean;
  condition_result: boolean | null;
  attempt: number;
  max_attempts: number;
  /** Attempts lost with their agent and tried again without spending a retry. */
  agent_retries: number;
  retry_at: Date | null;
  retry_delay_seconds: number;
  command_id: string | null;
  command_status: string | null;
  command_result: Record<string, unknown> | null;
  command_error_code: string | null;
  command_error_message: string | null;
  command_agent_id: string | null;
  /** The distinct findings ingested for the command: its findings_count when the agent gave none. */
  ingested_findings?: number | null;
  findings_count: number;
  output: Record<string, unknown>;
  error_message: string | null;
  skip_reason: string | null;
};

export type Action =
  | { kind: 'complete'; stepId: string; commandId: string; findingsCount: number; output: Record<string, unknown>; agentId: string | null }
  | { kind: 'retry'; stepId: string; commandId: string; errorCode: string; errorMessage: string; delaySeconds: number; agentGone: boolean }
  | { kind: 'fail'; stepId: string; commandId: string; status: 'failed' | 'timeout' | 'cancelled'; errorCode: string; errorMessage: string }
  | { kind: 'skip'; stepId: string; conditionEvaluated: boolean; conditionResult: boolean | null; reason: string }
  | { kind: 'condition_met'; stepId: string }
  | { kind: 'dispatch'; stepId: string; stepKey: string; attempt: number; maxAttempts: number; steps: Record<string, StepResult> }
  | { kind: 'fail_fast'; errorMessage: string }
  | { kind: 'finish'; status: 'completed' | 'failed'; errorMessage: string | null };

export type AdvanceInput = {
  settings: { max_parallel_steps?: number; fail_fast?: boolean };
  target: Record<string, unknown>;
  context: Record<string, unknown>;
  steps: StepState[];
  now: Date;
};

/**
 * The error codes of an attempt lost with its agent, not failed by its tool: the agent went
 * silent (agent_lost, set by the server) or was stopped and gave the command back
 * (agent_shutdown, sent by the agent).
 */
export const AGENT_GONE = new Set(['agent_lost', 'agent_shutdown']);
/**
 * How many attempts of a step lost with their agent are tried again at once, on another
 * agent, without spending the step's retries; past that a lost attempt counts as a failure
 * (a tool that takes its agent down every time must not run forever).
 */
export const AGENT_RETRIES = 3;

const ERROR_FOR_COMMAND: Record<string, { status: 'failed' | 'timeout' | 'cancelled'; code: string; message: string }> = {
  failed: { status: 'failed', code: 'agent_error', message: 'the agent reported a failure' },
  expired: { status: 'timeout', code: 'step_timeout', message: 'the command expired' },
  cancelled: { status: 'cancelled', code: 'cancelled', message: 'the command was cancelled' },
};

export function planAdvance(input: AdvanceInput): Action[] {
  const actions: Action[] = [];
  // Working copies: decisions below see the effect of earlier ones.
  const steps = input.steps.map((s) => ({ ...s }));
  const byKey = new Map(steps.map((s) => [s.step_key, s]));

  // 1. Finished commands of active steps.
  for (const s of steps) {
    if ((s.status !== 'queued' && s.status !== 'running') || s.retry_at !== null || !s.command_id) continue;
    if (s.command_status === 'completed') {
      const result = s.command_result ?? {};
      s.status = 'completed';
      s.findings_count = result.findings_count == null ? toCount(s.ingested_findings) : toCount(result.findings_count);
      s.output = toObject(result.output);
      actions.push({
        kind: 'complete', stepId: s.id, commandId: s.command_id, findingsCount: s.findings_count,
        output: s.output, agentId: s.command_agent_id,
      });
    } else if (s.command_status && s.command_status in ERROR_FOR_COMMAND) {
      const fallback = ERROR_FOR_COMMAND[s.command_status];
      const errorCode = s.command_error_code ?? fallback.code;
      const errorMessage = s.command_error_message ?? fallback.message;
      const agentGone = fallback.status === 'failed' && AGENT_GONE.has(errorCode) && s.agent_retries < AGENT_RETRIES;
      if (agentGone) {
        // Not the step's failure: at once, and the attempt it takes is added.
        s.retry_at = input.now;
        s.max_attempts += 1;
        s.agent_retries += 1;
        actions.push({ kind: 'retry', stepId: s.id, commandId: s.command_id, errorCode, errorMessage, delaySeconds: 0, agentGone });
      } else if (fallback.status !== 'cancelled' && s.attempt < s.max_attempts) {
        s.retry_at = new Date(input.now.getTime() + s.retry_delay_seconds * 1000);
        actions.push({ kind: 'retry', stepId: s.id, commandId: s.command_id, errorCode, errorMessage, delaySeconds: s.retry_delay_seconds, agentGone });
      } else {
        // An agent that stopped the tool at the step's timeout itself says so (error_code
        // timeout): the step timed out, as when the server's deadline passed first.
        const status = fallback.status === 'failed' && errorCode === 'timeout' ? 'timeout' : fallback.status;
        s.status = status;
        s.error_message = errorMessage;
        actions.push({ kind: 'fail', stepId: s.id, commandId: s.command_id, status, errorCode, errorMessage });
      }
    }
  }

  // 2. Fail fast: the first final failure ends the run; the caller cancels the rest.
  if (input.settings.fail_fast) {
    const failed = steps.find((s) => s.status === 'failed' || s.status === 'timeout');
    if (failed && steps.some((s) => !TERMINAL_STEP.has(s.status))) {
      actions.push({ kind: 'fail_fast', errorMessage: `${describeFailure(failed)} (fail_fast)` });
      return actions;
    }
  }

  // 3. Retries whose delay has passed get their new command.
  for (const s of steps) {
    if (s.status === 'queued' && s.retry_at !== null && s.retry_at.getTime() <= input.now.getTime()) {
      s.attempt += 1;
      s.retry_at = null;
      actions.push({ kind: 'dispatch', stepId: s.id, stepKey: s.step_key, attempt: s.attempt, maxAttempts: s.max_attempts, steps: resultsOf(steps) });
    }
  }

  // 4. Pending steps whose dependencies are all terminal: skip them (upstream failure or
  // a false condition) or mark them ready. A skip can make further steps ready.
  const asset = assetScope(input.target);
  const ready: typeof steps = [];
  const newlyMet = new Set<StepState>();
  for (let changed = true; changed; ) {
    changed = false;
    for (const s of steps) {
      if (s.status !== 'pending' || ready.includes(s)) continue;
      const deps = s.depends_on.map((k) => byKey.get(k)).filter((d) => d !== undefined);
      if (deps.some((d) => !TERMINAL_STEP.has(d.status))) continue;
      // A dependency that failed, timed out or was cancelled breaks this step, and so does
      // one that was itself skipped for that reason (the failure carries down the chain). A
      // dependency skipped by its own false condition does not.
      const broken = deps.find((d) => UNSUCCESSFUL_STEP.has(d.status) || skippedUpstream(d));
      if (broken) {
        s.status = 'skipped';
        s.skip_reason = skippedUpstream(broken) ? broken.skip_reason : `Upstream step '${broken.step_key}' ${pastTense(broken.status)}`;
        actions.push({ kind: 'skip', stepId: s.id, conditionEvaluated: false, conditionResult: null, reason: s.skip_reason! });
        changed = true;
        continue;
      }
      if (!s.condition_evaluated) {
        const outcome = evaluateCondition(s.condition, { asset, steps: resultsOf(steps), context: input.context });
        s.condition_evaluated = true;
        s.condition_result = outcome.result;
        if (!outcome.result) {
          s.status = 'skipped';
          s.skip_reason = outcome.reason;
          actions.push({ kind: 'skip', stepId: s.id, conditionEvaluated: true, conditionResult: false, reason: outcome.reason });
          changed = true;
          continue;
        }
        newlyMet.add(s);
      }
      ready.push(s);
    }
  }

  // 5. Ready steps take the free slots, lowest order first.
  const active = steps.filter((s) => s.status === 'queued' || s.status === 'running').length;
  const limit = input.settings.max_parallel_steps ?? Number.POSITIVE_INFINITY;
  const slots = Math.max(0, limit - active);
  ready.sort((a, b) => a.step_order - b.step_order || a.step_key.localeCompare(b.step_key));
  for (const [i, s] of ready.entries()) {
    if (i < slots) {
      // Dispatching records the condition as met too.
      s.status = 'queued';
      s.attempt += 1;
      actions.push({ kind: 'dispatch', stepId: s.id, stepKey: s.step_key, attempt: s.attempt, maxAttempts: s.max_attempts, steps: resultsOf(steps) });
    } else if (newlyMet.has(s)) {
      actions.push({ kind: 'condition_met', stepId: s.id }); // waits for a slot, evaluated once
    }
  }

  // 6. Every step terminal: the run is over. It succeeds only if no step failed, timed out
  // or was cancelled.
  if (steps.every((s) => TERMINAL_STEP.has(s.status))) {
    const broken = steps.find((s) => UNSUCCESSFUL_STEP.has(s.status));
    actions.push(
      broken
        ? { kind: 'finish', status: 'failed', errorMessage: describeFailure(broken) }
        : { kind: 'finish', status: 'completed', errorMessage: null },
    );
  }
  return actions;
}

/** Skipped because something upstream failed (not by its own condition). */
function skippedUpstream(s: StepState): boolean {
  return s.status === 'skipped' && !s.condition_evaluated;
}

function describeFailure(s: { step_key: string; status: string; error_message: string | null }): string {
  const what = `Step '${s.step_key}' ${pastTense(s.status)}`;
  return s.error_message ? `${what}: ${s.error_message}` : what;
}

function pastTense(status: string): string {
  return status === 'timeout' ? 'timed out' : status === 'cancelled' ? 'was cancelled' : status;
}

function resultsOf(steps: StepState[]): Record<string, StepResult> {
  const out: Record<string, StepResult> = {};
  for (const s of steps) out[s.step_key] = { status: s.status, findings_count: s.findings_count, output: s.output };
  return out;
}

function toCount(value: unknown): number {
  const n = typeof value === 'string' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.min(Math.floor(n), 2_147_483_647) : 0;
}

function toObject(value: unknown): Record<string, unknown> {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}
