// Pipeline runs of a tenant: read, cancel, retry (seed 001 "Pipeline Runs").
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { conflict, notFound } from '../errors.ts';
import { OptionalUuidQuery, pageOf, pageResult, pathId, queryOf, stepKeyParam } from '../input.ts';
import { presentRun, presentStepRun } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import type { Queryable } from '../../db/pool.ts';
import { composed, many, one } from '../../store/query.ts';
import { listRunsStatement } from '../../store/lists.ts';
import { commandOutputSql, runsSql, stepRunsSql } from '../../store/queries.ts';
import type { EventRow, RunRow, StepRunRow } from '../../store/rows.ts';
import { prefersText, readWindow } from '../../domain/output.ts';
import { cancelRun, retryRun } from '../../progression/runs.ts';
import { runFindingsPage } from './findings.ts';

const RUN_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled', 'timeout'] as const;
export const ListQuery = v.object({
  status: v.optional(v.picklist(RUN_STATUSES, `must be one of ${RUN_STATUSES.join(', ')}`)),
  pipeline_id: OptionalUuidQuery,
  asset_id: OptionalUuidQuery,
  scan_id: OptionalUuidQuery,
});
const MiB = 1024 * 1024;
export const OutputQuery = v.object({
  attempt: v.optional(v.pipe(v.string(), v.regex(/^\d{1,9}$/, 'must be an attempt number'), v.transform(Number), v.minValue(1, 'must be at least 1'))),
  offset: v.optional(v.pipe(v.string(), v.regex(/^\d{1,15}$/, 'must be a byte offset (a whole number)'), v.transform(Number)), '0'),
  // Bytes per read; at least 16, so a window always holds a whole character after the cuts.
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,9}$/, `must be a number of bytes between 16 and ${4 * MiB}`), v.transform(Number),
    v.minValue(16, 'must be at least 16'), v.maxValue(4 * MiB, `must be at most ${4 * MiB}`)), String(MiB)),
});
type StepOutputRow = {
  step_run_id: string;
  step_key: string;
  step_status: string;
  step_attempt: number;
  command_id: string | null;
  attempt: number | null;
  stored_bytes: number;
  truncated: boolean;
  purged_at: Date | null;
  data: Buffer;
};
// Output is bytes; JSON carries it as text, invalid UTF-8 as U+FFFD, a leading BOM kept.
const UTF8 = new TextDecoder('utf-8', { ignoreBOM: true });
export const EventsQuery = v.object({
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
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['status', 'pipeline_id', 'asset_id', 'scan_id']);
    const rows = await composed<RunRow & { cursor_at: string }>(db, listRunsStatement(c.get('tenant').id, f, page.after, page.limit + 1));
    return c.json(pageResult(rows, page, (run) => presentRun(run)));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const run = await getRun(db, tenantId, pathId(c, 'id', 'pipeline run'));
    const steps = await many<StepRunRow>(db, stepRunsSql.ListStepRuns, [tenantId, run.id]);
    return c.json(presentRun(run, steps));
  });

  r.get('/:id/steps', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const run = await getRun(db, tenantId, pathId(c, 'id', 'pipeline run'));
    const steps = await many<StepRunRow>(db, stepRunsSql.ListStepRuns, [tenantId, run.id]);
    return c.json({ items: steps.map(presentStepRun), next_cursor: null });
  });

  r.get('/:id/steps/:stepKey', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const run = await getRun(db, tenantId, pathId(c, 'id', 'pipeline run'));
    const step = await one<StepRunRow>(db, stepRunsSql.GetStepRun, [tenantId, run.id, stepKeyParam(c, 'step run')]);
    if (!step) throw notFound('step run');
    return c.json(presentStepRun(step));
  });

  // A step's output (one attempt's, the latest by default) and its events. Accept:
  // text/plain answers the output bytes themselves, with the window in headers.
  r.get('/:id/steps/:stepKey/logs', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const runId = pathId(c, 'id', 'pipeline run');
    const stepKey = stepKeyParam(c, 'step run');
    const q = queryOf(c, OutputQuery, ['attempt', 'offset', 'limit']);
    const row = await one<StepOutputRow>(db, commandOutputSql.ReadStepOutput, [
      tenantId, runId, stepKey, q.attempt ?? null, q.offset, q.limit,
    ]);
    if (!row) throw notFound('step run');
    if (q.attempt !== undefined && !row.command_id) throw notFound(`attempt ${q.attempt} of the step`);
    // An offset past the end reads from the end.
    const window = q.offset >= row.stored_bytes
      ? { start: row.stored_bytes, bytes: new Uint8Array(0) }
      : readWindow(row.data, q.offset);
    const output = {
      offset: window.start,
      next_offset: window.start + window.bytes.byteLength,
      truncated: row.truncated,
    };
    const attempt = row.attempt ?? row.step_attempt;
    if (prefersText(c.req.header('accept'))) {
      return c.body(new Uint8Array(window.bytes), 200, {
        'Content-Type': 'text/plain; charset=utf-8',
        'X-Attempt': String(attempt),
        'X-Output-Offset': String(output.offset),
        'X-Next-Offset': String(output.next_offset),
        'X-Output-Length': String(row.stored_bytes),
        'X-Output-Truncated': String(output.truncated),
        ...(row.purged_at ? { 'X-Output-Removed-At': row.purged_at.toISOString() } : {}),
      });
    }
    const events = (await many<EventRow>(db, runsSql.ListRunEvents, [tenantId, runId, 0, 10_000]))
      .filter((e) => e.step_run_id === row.step_run_id);
    return c.json({
      step_key: row.step_key,
      status: row.step_status,
      attempt,
      output: {
        text: UTF8.decode(window.bytes),
        ...output,
        ...(row.purged_at ? { removed_at: row.purged_at.toISOString() } : {}),
      },
      events: events.map((e) => ({ id: e.id, timestamp: e.created_at.toISOString(), event: e.type, message: describe(e), data: e.data })),
    });
  });

  // What the run saw: each finding once, `new: true` when this run first saw it.
  r.get('/:id/findings', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const run = await getRun(db, tenantId, pathId(c, 'id', 'pipeline run'));
    return c.json(await runFindingsPage(db, c, tenantId, run.id));
  });

  r.get('/:id/events', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const run = await getRun(db, tenantId, pathId(c, 'id', 'pipeline run'));
    const q = queryOf(c, EventsQuery, ['after', 'limit']);
    const events = await many<EventRow>(db, runsSql.ListRunEvents, [tenantId, run.id, q.after, q.limit]);
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

