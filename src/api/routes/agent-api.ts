// The agent API (seeds 002/003 "Agent API", API.md): heartbeat, poll (claims), and the
// command transitions ack → start → complete | fail. Only the agent holding a command may
// move it; replays answer 200 with the current command; contradictions answer 409.
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireAgent, type AppEnv, type AuthAgent } from '../auth.ts';
import { ApiError, notFound } from '../errors.ts';
import { parseBody, pathId, queryOf, UUID } from '../input.ts';
import { presentCommand } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import type pg from 'pg';
import type { Queryable } from '../../db/pool.ts';
import { finalMany, many, one } from '../../store/query.ts';
import { agentsSql, commandsSql } from '../../store/queries.ts';
import type { CommandRow } from '../../store/rows.ts';
import { JsonObject } from '../../domain/json.ts';

export const MAX_WAIT_SECONDS = 60;
/** How long a cancelled or expired command keeps being reported to its agent's heartbeats. */
const STOP_REPORT_SECONDS = 600;
/** Contact is recorded at most this often per agent (the poll path stays read-mostly). */
const TOUCH_EVERY_MS = 5_000;

const Heartbeat = v.looseObject({
  version: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(100)))),
  hostname: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(255)))),
  active_jobs: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0)))),
  command_ids: v.optional(v.array(v.pipe(v.string(), v.regex(UUID, 'must be a command id')))),
  running_command_ids: v.optional(v.array(v.pipe(v.string(), v.regex(UUID, 'must be a command id')))),
});

const PollQuery = v.object({
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number between 1 and 100'), v.transform(Number), v.minValue(1, 'must be at least 1'), v.maxValue(100, 'must be at most 100')), '10'),
  wait: v.optional(v.pipe(v.string(), v.regex(/^\d+(\.\d+)?$/, `must be a number of seconds between 0 and ${MAX_WAIT_SECONDS}`), v.transform(Number), v.maxValue(MAX_WAIT_SECONDS, `must be at most ${MAX_WAIT_SECONDS}`)), '0'),
});

const Count = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2_147_483_647));
const CompleteBody = v.looseObject({
  findings_count: v.optional(v.nullable(Count)),
  output: v.optional(v.nullable(JsonObject)),
  result: v.optional(v.nullable(v.looseObject({ findings_count: v.optional(v.nullable(Count)), output: v.optional(v.nullable(JsonObject)) }))),
});
const FailBody = v.pipe(
  v.looseObject({
    error_message: v.optional(v.pipe(v.string(), v.maxLength(10_000))),
    error: v.optional(v.pipe(v.string(), v.maxLength(10_000))),
    error_code: v.optional(v.nullable(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'must be a short code like "tool_error"')))),
  }),
  v.forward(
    v.check((b) => typeof (b.error_message ?? b.error) === 'string' && (b.error_message ?? b.error)!.trim() !== '', 'is required: say why the command failed'),
    ['error_message'],
  ),
);

type Action = 'ack' | 'start' | 'complete' | 'fail';

export function agentApiRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  const o = deps.orchestration;

  /** Records that the agent is alive (any request counts), at most every few seconds. */
  const touch = async (agent: AuthAgent) => {
    if (agent.last_seen_at && Date.now() - agent.last_seen_at.getTime() < TOUCH_EVERY_MS) return;
    await many(deps.pool, agentsSql.TouchAgent, [agent.id, o.agentOfflineAfterSeconds]);
    agent.last_seen_at = new Date(); // the cached credential carries it until it is looked up again
  };

  // Heartbeat needs no module: agents report health even when the tenant's plan lapsed.
  r.post('/heartbeat', requireAgent(deps, null), async (c) => {
    const agent = c.get('agent');
    const body = await parseBody(c, Heartbeat);
    const { version, hostname, command_ids, running_command_ids, ...rest } = body;
    const named = [...(command_ids ?? []), ...(running_command_ids ?? [])];
    await one(deps.pool, agentsSql.RecordHeartbeat, [agent.id, version ?? null, hostname ?? null, rest, o.agentOfflineAfterSeconds]);
    agent.last_seen_at = new Date();
    const stop = await many<{ id: string }>(deps.pool, agentsSql.CommandsToStop, [agent.id, STOP_REPORT_SECONDS, named, agent.tenant_id]);
    return c.json({
      status: 'ok',
      agent_id: agent.id,
      tenant_id: agent.tenant_id,
      heartbeat_interval_seconds: o.heartbeatIntervalSeconds,
      cancel_command_ids: stop.map((s) => s.id),
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
    return c.json({ commands: commands.map(presentCommand), poll_interval_seconds: o.pollIntervalSeconds });
  });

  const transition = (action: Action) => async (c: Context<AppEnv>) => {
    const agent = c.get('agent');
    const id = pathId(c, 'id', 'command');
    const params = action === 'complete' ? completion(await parseBody(c, CompleteBody))
      : action === 'fail' ? failure(await parseBody(c, FailBody))
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

type Outcome = { status: 'completed' | 'failed'; result: Record<string, unknown> | null; errorCode: string | null; errorMessage: string | null };

function completion(body: v.InferOutput<typeof CompleteBody>): Outcome {
  const { result: nested, findings_count, output, ...extra } = body;
  const { findings_count: nestedCount, output: nestedOutput, ...nestedExtra } = nested ?? {};
  // The step's output: `output` if given; otherwise whatever else the result carries
  // (seed 001's worker response: {findings_count, duration_ms, scan_id}).
  const rest = { ...stripCommandFields(extra), ...nestedExtra };
  return {
    status: 'completed',
    result: {
      findings_count: findings_count ?? nestedCount ?? 0,
      output: output ?? nestedOutput ?? rest,
    },
    errorCode: null,
    errorMessage: null,
  };
}

function stripCommandFields(extra: Record<string, unknown>): Record<string, unknown> {
  const { command_id: _id, status: _status, ...rest } = extra;
  return rest;
}

function failure(body: v.InferOutput<typeof FailBody>): Outcome {
  return {
    status: 'failed',
    result: null,
    errorCode: body.error_code ?? 'agent_error',
    errorMessage: (body.error_message ?? body.error)!.trim(),
  };
}

/** Where each command status may go: replays of a done transition are fine, others are 409. */
const REPLAY: Record<Action, Set<string>> = {
  ack: new Set(['acknowledged', 'running', 'completed']),
  start: new Set(['running', 'completed']),
  complete: new Set(['completed']),
  fail: new Set(['failed']),
};

async function move(pool: pg.Pool, action: Action, id: string, agentId: string, outcome: Outcome | null): Promise<CommandRow> {
  const tx: Queryable = pool;
  const attempt = async (): Promise<CommandRow | null> => {
    switch (action) {
      case 'ack':
        return one<CommandRow>(tx, commandsSql.AckCommand, [id, agentId]);
      case 'start':
        return one<CommandRow>(tx, commandsSql.StartCommand, [id, agentId]);
      default:
        return one<CommandRow>(tx, commandsSql.FinishCommand, [
          id, agentId, outcome!.status, outcome!.result, outcome!.errorCode, outcome!.errorMessage,
        ]);
    }
  };
  const moved = await attempt();
  if (moved) return moved;
  const current = await one<CommandRow>(tx, commandsSql.GetAgentCommand, [id, agentId]);
  if (!current) throw notFound('command');
  if (REPLAY[action].has(current.status)) return current;
  if (action === 'start' && current.status === 'pending') {
    // An agent that starts without acknowledging: acknowledge, then start, together.
    const started = await withTransaction(pool, async (tx) =>
      (await one(tx, commandsSql.AckCommand, [id, agentId])) ? one<CommandRow>(tx, commandsSql.StartCommand, [id, agentId]) : null,
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

