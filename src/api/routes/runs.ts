// Pipeline runs of a tenant: read, cancel, retry (seed 001 "Pipeline Runs").
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { conflict, notFound } from '../errors.ts';
import { OptionalUuidQuery, pageOf, pageResult, pathId, queryOf, stepKeyParam } from '../input.ts';
import { presentCommand, presentRun, presentStepRun } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import type { Queryable } from '../../db/pool.ts';
import { many, one } from '../../store/query.ts';
import { commandsSql, runsSql, stepRunsSql } from '../../store/queries.ts';
import type { CommandRow, EventRow, RunRow, StepRunRow } from '../../store/rows.ts';
import { cancelRun, retryRun } from '../../progression/runs.ts';

const RUN_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled', 'timeout'] as const;
const ListQuery = v.object({
  status: v.optional(v.picklist(RUN_STATUSES, `must be one of ${RUN_STATUSES.join(', ')}`)),
  pipeline_id: OptionalUuidQuery,
  asset_id: OptionalUuidQuery,
  scan_id: OptionalUuidQuery,
});
const EventsQuery = v.object({
  after: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be an event id'), v.transform(Number)), '0'),
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.minValue(1), v.maxValue(1000)), '500'),
});

async function getRun(db: Queryable, tenantId: string, id: string): Promise<RunRow> {
  const run = await one<RunRow>(db, runsSql.GetRun, [tenantId, id]);
  if (!run) throw notFound('pipeline run');
  return run;
}

export function runRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.get('/', async (c) => {
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['status', 'pipeline_id', 'asset_id', 'scan_id']);
    const rows = await many<RunRow & { cursor_at: string }>(deps.pool, runsSql.ListRuns, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, f.status ?? null, f.pipeline_id ?? null,
      f.asset_id ?? null, f.scan_id ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, (run) => presentRun(run)));
  });

  r.get('/:id', async (c) => {
    const tenantId = c.get('tenant').id;
    const run = await getRun(deps.pool, tenantId, pathId(c, 'id', 'pipeline run'));
    const steps = await many<StepRunRow>(deps.pool, stepRunsSql.ListStepRuns, [tenantId, run.id]);
    return c.json(presentRun(run, steps));
  });

  r.get('/:id/steps', async (c) => {
    const tenantId = c.get('tenant').id;
    const run = await getRun(deps.pool, tenantId, pathId(c, 'id', 'pipeline run'));
    const steps = await many<StepRunRow>(deps.pool, stepRunsSql.ListStepRuns, [tenantId, run.id]);
    return c.json({ items: steps.map(presentStepRun), next_cursor: null });
  });

  r.get('/:id/steps/:stepKey', async (c) => {
    const tenantId = c.get('tenant').id;
    const run = await getRun(deps.pool, tenantId, pathId(c, 'id', 'pipeline run'));
    const step = await one<StepRunRow>(deps.pool, stepRunsSql.GetStepRun, [tenantId, run.id, stepKeyParam(c, 'step run')]);
    if (!step) throw notFound('step run');
    return c.json(presentStepRun(step));
  });

  // A step's history: every attempt's command and every event of the step, in order.
  r.get('/:id/steps/:stepKey/logs', async (c) => {
    const tenantId = c.get('tenant').id;
    const run = await getRun(deps.pool, tenantId, pathId(c, 'id', 'pipeline run'));
    const step = await one<StepRunRow>(deps.pool, stepRunsSql.GetStepRun, [tenantId, run.id, stepKeyParam(c, 'step run')]);
    if (!step) throw notFound('step run');
    const commands = await many<CommandRow>(deps.pool, commandsSql.ListStepCommands, [tenantId, step.id]);
    const events = (await many<EventRow>(deps.pool, runsSql.ListRunEvents, [tenantId, run.id, 0, 10_000]))
      .filter((e) => e.step_run_id === step.id);
    return c.json({
      step_key: step.step_key,
      status: step.status,
      attempts: commands.map(presentCommand),
      logs: events.map((e) => ({ id: e.id, timestamp: e.created_at.toISOString(), event: e.type, message: describe(e), data: e.data })),
    });
  });

  r.get('/:id/events', async (c) => {
    const tenantId = c.get('tenant').id;
    const run = await getRun(deps.pool, tenantId, pathId(c, 'id', 'pipeline run'));
    const q = queryOf(c, EventsQuery, ['after', 'limit']);
    const events = await many<EventRow>(deps.pool, runsSql.ListRunEvents, [tenantId, run.id, q.after, q.limit]);
    return c.json({
      items: events.map((e) => ({ id: e.id, event: e.type, timestamp: e.created_at.toISOString(), data: e.data })),
      next_cursor: events.length === q.limit ? String(events[events.length - 1].id) : null,
    });
  });

  r.post('/:id/cancel', async (c) => {
    const tenantId = c.get('tenant').id;
    const id = pathId(c, 'id', 'pipeline run');
    const run = await withTransaction(deps.pool, async (tx) => {
      const current = await one<RunRow>(tx, runsSql.LockTenantRun, [tenantId, id]);
      if (!current) throw notFound('pipeline run');
      if (current.status === 'cancelled') return current; // a replayed cancel
      const cancelled = await cancelRun(tx, current, 'cancelled', 'Cancelled by request');
      if (!cancelled) throw conflict('run_finished', `The run already ended as ${current.status}`);
      return cancelled;
    });
    const steps = await many<StepRunRow>(deps.pool, stepRunsSql.ListStepRuns, [tenantId, run.id]);
    return c.json(presentRun(run, steps));
  });

  r.post('/:id/retry', async (c) => {
    const tenantId = c.get('tenant').id;
    const id = pathId(c, 'id', 'pipeline run');
    const run = await withTransaction(deps.pool, async (tx) => {
      const current = await one<RunRow>(tx, runsSql.LockTenantRun, [tenantId, id]);
      if (!current) throw notFound('pipeline run');
      if (current.status === 'pending' || current.status === 'running') {
        throw conflict('run_in_progress', 'The run is still in progress; cancel it or wait for it to end');
      }
      const retried = await retryRun(tx, current);
      if (!retried) throw conflict('nothing_to_retry', 'The run has no failed, timed-out or cancelled steps');
      return retried;
    });
    const steps = await many<StepRunRow>(deps.pool, stepRunsSql.ListStepRuns, [tenantId, run.id]);
    return c.json(presentRun(run, steps));
  });

  return r;
}

function describe(e: EventRow): string {
  const d = e.data as Record<string, unknown>;
  switch (e.type) {
    case 'pipeline.step.queued': return `attempt ${d.attempt} queued`;
    case 'pipeline.step.started': return `attempt ${d.attempt} started on agent ${d.agent_id}`;
    case 'pipeline.step.completed': return `completed with ${d.findings_count} findings`;
    case 'pipeline.step.retrying': return `attempt ${d.attempt} ended (${d.error_code}: ${d.error_message}); retrying at ${d.retry_at}`;
    case 'pipeline.step.skipped': return `skipped: ${d.skip_reason}`;
    default: return d.error_message ? `${e.type.split('.').pop()}: ${d.error_code}: ${d.error_message}` : (e.type.split('.').pop() ?? e.type);
  }
}

