// The agent API (seeds 002/003 "Agent API", API.md): heartbeat, poll (claims), and the
// command transitions ack → start → complete | fail. Only the agent holding a command may
// move it; replays answer 200 with the current command; contradictions answer 409.
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireAgent, type AppEnv, type AuthAgent } from '../auth.ts';
import { ApiError, invalid, notFound } from '../errors.ts';
import { endpoints } from '../contract.ts';
import { pathId, queryOf, readBody } from '../input.ts';
import { presentCommand } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import type pg from 'pg';
import type { Queryable } from '../../db/pool.ts';
import { finalMany, many, one } from '../../store/query.ts';
import { agentsSql, commandsSql } from '../../store/queries.ts';
import type { AgentReport, CommandRow } from '../../store/rows.ts';
import { freeFormProblem } from '../../domain/json.ts';
import { AgentContacts } from '../contacts.ts';
import { currentLog } from '../../observability/context.ts';
import { agentOnline, commandReported, commandsEntered, stepEntered } from '../../observability/transitions.ts';

export const MAX_WAIT_SECONDS = 60;
/** How long a cancelled or expired command keeps being reported to its agent's heartbeats. */
const STOP_REPORT_SECONDS = 600;
/** Contact is recorded at most this often per agent (the poll path stays read-mostly). */
const TOUCH_EVERY_MS = 5_000;

export const PollQuery = v.object({
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number between 1 and 100'), v.transform(Number), v.minValue(1, 'must be at least 1'), v.maxValue(100, 'must be at most 100')), '10'),
  wait: v.optional(v.pipe(v.string(), v.regex(/^\d+(\.\d+)?$/, `must be a number of seconds between 0 and ${MAX_WAIT_SECONDS}`), v.transform(Number), v.maxValue(MAX_WAIT_SECONDS, `must be at most ${MAX_WAIT_SECONDS}`)), '0'),
});

type Action = 'ack' | 'start' | 'complete' | 'fail';

export function agentApiRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  const o = deps.orchestration;

  // Contact is written in batches (contacts.ts): one statement for every agent of a short window.
  const contacts = new AgentContacts(deps.pool, o.agentOfflineAfterSeconds);

  /**
   * Records that the agent is alive (any request counts), at most every few seconds. An agent
   * that is not online waits for its batch (its transition to online is made there, before it
   * is answered); an online one does not: its contact is written beside the request, never on
   * the path of a claim or a transition (losing it in a crash loses only a moment of "last seen").
   */
  const touch = async (agent: AuthAgent): Promise<void> => {
    if (agent.health === 'online' && agent.last_seen_at && Date.now() - agent.last_seen_at.getTime() < TOUCH_EVERY_MS) return;
    agent.last_seen_at = new Date(); // the cached credential carries it until it is looked up again
    const recorded = contacts.touch(agent.id, agent.health === 'online').then((previous) => {
      if (previous !== null && previous !== 'online') agentOnline(deps.pool, agent, previous);
    });
    if (agent.health === 'online') {
      const log = currentLog(deps.logger);
      recorded.catch((err) => log.warn({ err, agent_id: agent.id }, 'recording agent contact failed'));
      return;
    }
    await recorded;
    agent.health = 'online';
  };

  // Heartbeat needs no module: agents report health even when the tenant's plan lapsed.
  r.post('/heartbeat', requireAgent(deps, null), async (c) => {
    const agent = c.get('agent');
    const body = await readBody(c, endpoints.heartbeat);
    const {
      version, hostname, command_ids, running_command_ids, scanners, collectors,
      name, status, message, uptime_seconds, total_scans, errors, cpu_percent, memory_percent, active_jobs, region, ...rest
    } = body;
    const named = [...(command_ids ?? []), ...(running_command_ids ?? [])];
    const report: AgentReport = {
      name: name ?? null, status: status ?? null, message: message ?? null, uptime_seconds: uptime_seconds ?? null,
      total_scans: total_scans ?? null, errors: errors ?? null, cpu_percent: cpu_percent ?? null,
      memory_percent: memory_percent ?? null, active_jobs: active_jobs ?? null, region: region ?? null,
    };
    // Written with the other contact of its batch; the commands to stop are read meanwhile.
    const [previous, stop] = await Promise.all([
      contacts.heartbeat(agent.id, { version: version ?? null, hostname: hostname ?? null, data: rest, scanners: scanners ?? [], collectors: collectors ?? [], report }, agent.health === 'online'),
      many<{ id: string }>(deps.pool, agentsSql.CommandsToStop, [agent.id, STOP_REPORT_SECONDS, named, agent.tenant_id]),
    ]);
    if (previous !== null && previous !== 'online') agentOnline(deps.pool, agent, previous);
    agent.last_seen_at = new Date();
    agent.health = 'online';
    return c.json({
      status: 'ok',
      agent_id: agent.id,
      tenant_id: agent.tenant_id,
      heartbeat_interval_seconds: o.heartbeatIntervalSeconds,
      poll_interval_seconds: o.pollIntervalSeconds,
      cancel_command_ids: stop.map((s) => s.id),
      // What the tenant set for this agent, which an agent cannot read otherwise: the
      // commands it will be sent (tools, capabilities) and how many at once.
      max_concurrent_jobs: agent.max_concurrent_jobs,
      tools: agent.tools,
      capabilities: agent.capabilities,
    });
  });

  // '/commands/*' also matches '/commands' itself.
  r.use('/commands/*', requireAgent(deps, 'scans'));

  // Poll: claims up to `limit` commands for this agent in one transaction. With `wait`, an
  // empty poll sleeps until a NOTIFY says a command of this tenant became claimable.
  r.get('/commands', async (c) => {
    const agent = c.get('agent');
    const q = queryOf(c, PollQuery, ['limit', 'wait']);
    await touch(agent);
    const deadline = Date.now() + q.wait * 1000;
    // Subscribe before the first query, so a command announced meanwhile is not missed.
    const subscription = q.wait > 0 ? deps.signals.subscribe(agent.tenant_id, agent) : null;
    let commands: CommandRow[] = [];
    let wokenFor: Awaited<ReturnType<NonNullable<typeof subscription>['wait']>> = null;
    try {
      for (;;) {
        // BEGIN, the agent's lock, the claim and COMMIT: one round trip.
        commands = await withTransaction(deps.pool, async (tx) => {
          tx.later(agentsSql.LockAgentForClaim, [agent.id]);
          return finalMany<CommandRow>(tx, commandsSql.ClaimCommands, [agent.id, agent.tenant_id, q.limit, o.ackTimeoutSeconds]);
        });
        const remaining = deadline - Date.now();
        if (commands.length > 0 || !subscription || remaining <= 0 || deps.signals.stopping || c.req.raw.signal?.aborted) break;
        // A claim that lapses changes no row and so sends no NOTIFY: wake when the earliest
        // one of this tenant lapses, as well as on notifications.
        const after = await one<{ lapse_ms: number | null; claimable: boolean }>(deps.pool, commandsSql.AfterEmptyClaim, [agent.tenant_id, agent.id]);
        // Woken for a command that is still claimable but not by this agent (at capacity):
        // let another waiting agent have it.
        if (wokenFor && after?.claimable) subscription.handOff(wokenFor);
        wokenFor = await subscription.wait(Math.min(remaining, after?.lapse_ms != null ? after.lapse_ms + 5 : remaining), c.req.raw.signal);
      }
    } finally {
      subscription?.close();
    }
    // A bare array, as the seed system's server answers and its SDK decodes it (PollCommands:
    // json.Unmarshal into []Command); the poll interval travels in a header.
    c.header('X-Poll-Interval-Seconds', String(o.pollIntervalSeconds));
    return c.json(commands.map(presentCommand));
  });

  const transition = (action: Action) => async (c: Context<AppEnv>) => {
    const agent = c.get('agent');
    const id = pathId(c, 'id', 'command');
    const params = action === 'complete' ? completion(await readBody(c, endpoints.completeCommand))
      : action === 'fail' ? failure(await readBody(c, endpoints.failCommand))
      : null;
    await touch(agent);
    // Each transition is one guarded statement (with its job changes in CTEs), atomic on
    // its own: no explicit transaction, so no extra round trips on the hot path.
    const command = await move(deps.pool, action, id, agent.id, params);
    return c.json(presentCommand(command));
  };

  r.post('/commands/:id/ack', transition('ack'));
  r.post('/commands/:id/acknowledge', transition('ack'));
  r.post('/commands/:id/start', transition('start'));
  r.post('/commands/:id/complete', transition('complete'));
  r.post('/commands/:id/fail', transition('fail'));

  return r;
}

/** What the agent says of the run of a command (the seed SDK's CommandResult), recorded beside our own times. */
type RunReport = { exitCode: number | null; durationMs: number | null; status: string | null; completedAt: string | null };

type Outcome = {
  status: 'completed' | 'failed';
  result: Record<string, unknown> | null;
  errorCode: string | null;
  errorMessage: string | null;
  report: RunReport;
};

const NO_REPORT: RunReport = { exitCode: null, durationMs: null, status: null, completedAt: null };

function completion(body: v.InferOutput<typeof endpoints.completeCommand.body>): Outcome {
  const { result: nested, findings_count, output, ...extra } = body;
  const {
    findings_count: nestedCount, output: nestedOutput, status, completed_at, duration_ms, exit_code, error, metadata, ...nestedExtra
  } = nested ?? {};
  const report: RunReport = {
    exitCode: exit_code ?? null,
    durationMs: duration_ms ?? null,
    status: status ?? null,
    completedAt: agentTime(completed_at),
  };
  // The step's output: `output` if given; else the SDK's `metadata` ("can be used for output
  // data"); else whatever else the result carries, its duration and exit code included
  // (seed 001's worker response: {findings_count, duration_ms, scan_id}).
  const rest = { ...stripCommandFields(extra), ...nestedExtra, ...defined({ duration_ms, exit_code }) };
  if (output == null && nestedOutput == null && metadata == null) {
    const problem = freeFormProblem(rest);
    if (problem) throw invalid([{ path: '(body)', message: `the fields that make the step's output (all but findings_count) together ${problem}` }]);
  }
  const result = {
    // null when the agent gives none: the step then counts the findings ingested for the command.
    findings_count: findings_count ?? nestedCount ?? null,
    output: output ?? nestedOutput ?? metadata ?? rest,
  };
  // Clients other than the SDK's ReportCommandResult (which sends failures to /fail) may
  // complete with a failed result: that is a failure, kept with what it carried.
  if (status?.trim().toLowerCase() === 'failed') {
    return {
      status: 'failed',
      result,
      errorCode: 'agent_error',
      errorMessage: error?.trim() || 'The agent reported the command failed (result.status "failed", no error given)',
      report,
    };
  }
  return { status: 'completed', result, errorCode: null, errorMessage: null, report };
}

function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value != null));
}

/** The agent's completion time; Go's zero time (0001-01-01, a CommandResult never given one) is none. */
function agentTime(value: string | null | undefined): string | null {
  if (!value) return null;
  const at = new Date(Date.parse(value));
  return at.getUTCFullYear() <= 1 ? null : at.toISOString();
}

function stripCommandFields(extra: Record<string, unknown>): Record<string, unknown> {
  const { command_id: _id, status: _status, ...rest } = extra;
  return rest;
}

function failure(body: v.InferOutput<typeof endpoints.failCommand.body>): Outcome {
  return {
    status: 'failed',
    result: null,
    errorCode: body.error_code ?? 'agent_error',
    errorMessage: (body.error_message ?? body.error)!.trim(),
    report: { ...NO_REPORT, exitCode: body.exit_code ?? null, durationMs: body.duration_ms ?? null },
  };
}

/** Where each command status may go: replays of a done transition are fine, others are 409. */
const REPLAY: Record<Action, Set<string>> = {
  ack: new Set(['acknowledged', 'running', 'completed']),
  start: new Set(['running', 'completed']),
  complete: new Set(['completed']),
  fail: new Set(['failed']),
};

/** pending → acknowledged, and its step queued → running (counted once committed). */
async function ackCommand(tx: Queryable, id: string, agentId: string): Promise<CommandRow | null> {
  const acked = await one<CommandRow & { started_step_key: string | null }>(tx, commandsSql.AckCommand, [id, agentId]);
  if (!acked) return null;
  commandsEntered(tx, [acked], 'acknowledged');
  if (acked.started_step_key && acked.step_run_id && acked.pipeline_run_id) {
    stepEntered(tx, { id: acked.step_run_id, tenant_id: acked.tenant_id, pipeline_run_id: acked.pipeline_run_id, step_key: acked.started_step_key }, 'running');
  }
  return acked;
}

async function startCommand(tx: Queryable, id: string, agentId: string): Promise<CommandRow | null> {
  const started = await one<CommandRow>(tx, commandsSql.StartCommand, [id, agentId]);
  if (started) commandsEntered(tx, [started], 'running');
  return started;
}

async function move(pool: pg.Pool, action: Action, id: string, agentId: string, outcome: Outcome | null): Promise<CommandRow> {
  const tx: Queryable = pool;
  const attempt = async (): Promise<CommandRow | null> => {
    switch (action) {
      case 'ack':
        return ackCommand(tx, id, agentId);
      case 'start':
        return startCommand(tx, id, agentId);
      default: {
        const finished = await one<CommandRow>(tx, commandsSql.FinishCommand, [
          id, agentId, outcome!.status, outcome!.result, outcome!.errorCode, outcome!.errorMessage,
          outcome!.report.exitCode, outcome!.report.durationMs, outcome!.report.status, outcome!.report.completedAt,
        ]);
        if (finished) commandReported(tx, finished);
        return finished;
      }
    }
  };
  const moved = await attempt();
  if (moved) return moved;
  const current = await one<CommandRow>(tx, commandsSql.GetAgentCommand, [id, agentId]);
  if (!current) throw notFound('command');
  // A completion that reports a failure replays like a failure.
  if ((outcome?.status === 'failed' ? REPLAY.fail : REPLAY[action]).has(current.status)) return current;
  if (action === 'start' && current.status === 'pending') {
    // An agent that starts without acknowledging: acknowledge, then start, together.
    const started = await withTransaction(pool, async (tx) =>
      (await ackCommand(tx, id, agentId)) ? startCommand(tx, id, agentId) : null,
    );
    if (started) return started;
    return move(pool, action, id, agentId, outcome);
  }
  throw contradiction(action, current);
}

function contradiction(action: Action, current: CommandRow): ApiError {
  const verb = { ack: 'acknowledge', start: 'start', complete: 'complete', fail: 'fail' }[action];
  const why = current.status === 'cancelled' ? ' (its run was cancelled)'
    : current.status === 'expired' ? ` (${current.error_code === 'queue_timeout' ? 'its queue deadline passed' : 'its step timeout passed'})`
    : current.error_code === 'agent_lost' ? ' (it was taken back when this agent stopped responding)'
    : '';
  return new ApiError(409, `command_${current.status}`, `The command is ${current.status}${why}; cannot ${verb} it`);
}

