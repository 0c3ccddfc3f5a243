// Scans of a tenant (seeds 002/003 "Scan Management"): a pipeline, targets and a schedule.
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { conflict, invalid, notFound } from '../errors.ts';
import { idempotent } from '../idempotency.ts';
import { endpoints } from '../contract.ts';
import { OptionalUuidQuery, limitOf, pageOf, pageResult, parseInput, pathId, queryOf, readBody, readBodyJson } from '../input.ts';
import { presentRun } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import type { Queryable } from '../../db/pool.ts';
import { composed, many, one } from '../../store/query.ts';
import { listRunsStatement } from '../../store/lists.ts';
import { assetsSql, pipelinesSql, runsSql, scansSql } from '../../store/queries.ts';
import type { RunRow, ScanFireRow, ScanRow } from '../../store/rows.ts';
import {
  SCAN_STATUSES, ScanInput, nextFire, scheduleOf, scheduleProblems, targetsToDocument, type ScanInputValue,
} from '../../domain/scans.ts';
import { fireScan, parseTargets } from '../../progression/scans.ts';
import type { Problem } from '../../domain/problems.ts';

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function presentScan(s: ScanRow) {
  return {
    id: s.id, tenant_id: s.tenant_id, name: s.name, description: s.description, pipeline_id: s.pipeline_id,
    targets: s.targets, schedule_type: s.schedule_type, cron_expression: s.cron_expression, timezone: s.timezone,
    status: s.status, context: s.context, max_active_runs: s.max_active_runs, next_run_at: iso(s.next_run_at),
    last_run_at: iso(s.last_run_at), managed_by: s.managed_by, created_at: iso(s.created_at), updated_at: iso(s.updated_at),
  };
}

function presentFire(f: ScanFireRow) {
  return {
    id: f.id, scan_id: f.scan_id, trigger_type: f.trigger_type, triggered_by: f.triggered_by, due_at: iso(f.due_at),
    fired_at: iso(f.fired_at), run_ids: f.run_ids, waiting_runs: f.waiting_runs, skipped: f.skipped,
  };
}

export const ListQuery = v.object({
  status: v.optional(v.picklist(SCAN_STATUSES, `must be one of ${SCAN_STATUSES.join(', ')}`)),
  pipeline_id: OptionalUuidQuery,
});

/** The scan's references exist in the tenant: its pipeline and any asset it names. */
async function referenceProblems(tx: Queryable, tenantId: string, scan: ScanInputValue): Promise<Problem[]> {
  const problems: Problem[] = [];
  if (!(await one(tx, pipelinesSql.GetPipeline, [tenantId, scan.pipeline_id]))) {
    problems.push({ path: 'pipeline_id', message: 'unknown pipeline' });
  }
  if (scan.targets.kind === 'assets') {
    for (const [i, id] of scan.targets.asset_ids.entries()) {
      if (!(await one(tx, assetsSql.GetAsset, [tenantId, id]))) {
        problems.push({ path: scan.targets.asset_ids.length === 1 ? 'targets.asset_id' : `targets.asset_ids[${i}]`, message: 'unknown asset' });
      }
    }
  }
  return problems;
}

/**
 * The schedule after a change. An explicit next_run_at is the next fire (and the new anchor
 * of a daily/weekly/monthly time of day). Otherwise a daily/weekly/monthly scan keeps its
 * time of day (its derived cron), also across pause, resume or a new time zone, unless its
 * type changes; and a change of schedule, time zone or status counts from now (a resumed
 * scan does not replay what it missed). An untouched schedule keeps its pending fire.
 */
function nextSchedule(current: ScanRow, input: ScanInputValue, explicitNext: boolean, scheduleChanged: boolean): { cron: string | null; next: Date | null } {
  if (explicitNext) return scheduleOf(input, new Date());
  const sameType = input.schedule_type === current.schedule_type;
  const derived = input.schedule_type !== 'cron' && input.schedule_type !== 'manual';
  const cron = sameType && derived
    ? current.cron_expression
    : scheduleOf({ ...input, next_run_at: derived ? current.next_run_at : null }, new Date()).cron;
  if (!cron || input.status !== 'active') return { cron, next: null };
  if (!scheduleChanged && sameType && current.next_run_at) return { cron, next: current.next_run_at };
  return { cron, next: nextFire(cron, input.timezone, new Date()) };
}

function refuseManaged(scan: ScanRow): void {
  if (scan.managed_by === 'config') {
    throw conflict('managed_by_config', `Scan '${scan.name}' is declared in the config file; change it there and apply it`);
  }
  if (scan.managed_by === 'pipeline-trigger') {
    throw conflict('managed_by_pipeline', `Scan '${scan.name}' implements a schedule trigger of its pipeline; change the pipeline's triggers`);
  }
}

export function scanRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  const lockScan = async (tx: Queryable, c: Context<AppEnv>) => {
    const scan = await one<ScanRow>(tx, scansSql.LockScan, [c.get('tenant').id, pathId(c, 'id', 'scan')]);
    if (!scan) throw notFound('scan');
    return scan;
  };

  r.post('/', idempotent(deps), async (c) => {
    const tenantId = c.get('tenant').id;
    const input = await readBody(c, endpoints.createScan);
    const problems = scheduleProblems(input);
    if (problems.length) throw invalid(problems);
    const scan = await withTransaction(deps.pool, async (tx) => {
      const missing = await referenceProblems(tx, tenantId, input);
      if (missing.length) throw invalid(missing);
      const { cron, next } = scheduleOf(input, new Date());
      try {
        return (await one<ScanRow>(tx, scansSql.InsertScan, [
          tenantId, input.name, input.description ?? null, input.pipeline_id.toLowerCase(), targetsToDocument(input.targets),
          input.schedule_type, cron, input.timezone, input.status, input.context, input.max_active_runs, next, null, null,
        ]))!;
      } catch (err) {
        if ((err as { constraint?: string }).constraint === 'scans_name_key') throw conflict('name_taken', `A scan named '${input.name}' already exists`);
        throw err;
      }
    });
    return c.json(presentScan(scan), 201);
  });

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['status', 'pipeline_id']);
    const rows = await many<ScanRow & { cursor_at: string }>(db, scansSql.ListScans, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, f.status ?? null, f.pipeline_id ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentScan));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const scan = await one<ScanRow>(db, scansSql.GetScan, [c.get('tenant').id, pathId(c, 'id', 'scan')]);
    if (!scan) throw notFound('scan');
    return c.json(presentScan(scan));
  });

  // PUT merges: fields left out keep their value. A change of schedule, time zone or status
  // recomputes the next fire from now (a resumed scan does not replay what it missed).
  r.put('/:id', async (c) => {
    const tenantId = c.get('tenant').id;
    const patch = await readBodyJson(c, endpoints.updateScan);
    const scan = await withTransaction(deps.pool, async (tx) => {
      const current = await lockScan(tx, c);
      refuseManaged(current);
      const scheduleChanged = ['schedule_type', 'cron_expression', 'timezone', 'status', 'next_run_at'].some((k) => patch[k] !== undefined);
      const merged = {
        name: current.name, description: current.description, pipeline_id: current.pipeline_id, targets: current.targets,
        schedule_type: current.schedule_type,
        cron_expression: current.schedule_type === 'cron' ? current.cron_expression : undefined,
        timezone: current.timezone, status: current.status, context: current.context,
        max_active_runs: current.max_active_runs, ...patch,
      };
      if (merged.schedule_type !== 'cron' && patch.cron_expression === undefined) delete merged.cron_expression;
      const input = parseInput(ScanInput, merged);
      const problems = [...scheduleProblems(input), ...(await referenceProblems(tx, tenantId, input))];
      if (problems.length) throw invalid(problems);
      const { cron, next } = nextSchedule(current, input, patch.next_run_at !== undefined, scheduleChanged);
      try {
        const updated = (await one<ScanRow>(tx, scansSql.UpdateScan, [
          tenantId, current.id, input.name, input.description ?? null, input.pipeline_id.toLowerCase(),
          targetsToDocument(input.targets), input.schedule_type, cron, input.timezone, input.status, input.context,
          input.max_active_runs, next,
        ]))!;
        // A raised limit lets waiting runs start now.
        if (updated.max_active_runs > current.max_active_runs) await one(tx, runsSql.AdmitRuns, [tenantId]);
        return updated;
      } catch (err) {
        if ((err as { constraint?: string }).constraint === 'scans_name_key') throw conflict('name_taken', `A scan named '${input.name}' already exists`);
        throw err;
      }
    });
    return c.json(presentScan(scan));
  });

  r.delete('/:id', async (c) => {
    await withTransaction(deps.pool, async (tx) => {
      const current = await lockScan(tx, c);
      refuseManaged(current);
      await one(tx, scansSql.DeleteScan, [current.tenant_id, current.id]);
    });
    return c.body(null, 204);
  });

  // A manual run of the scan on all its targets now (allowed while paused, not disabled).
  r.post('/:id/trigger', idempotent(deps), async (c) => {
    const body = await readBody(c, endpoints.triggerScan);
    const { fire, runs } = await withTransaction(deps.pool, async (tx) => {
      const scan = await lockScan(tx, c);
      if (scan.status === 'disabled') throw conflict('scan_disabled', `Scan '${scan.name}' is disabled`);
      parseTargets(scan.targets);
      return fireScan(tx, scan, { type: 'manual', triggeredBy: 'api', context: body.context }, { last: true });
    });
    return c.json({ fire_id: fire.id, runs: runs.map((run) => presentRun(run)), skipped: fire.skipped }, 201);
  });

  r.get('/:id/runs', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const scan = await one<ScanRow>(db, scansSql.GetScan, [tenantId, pathId(c, 'id', 'scan')]);
    if (!scan) throw notFound('scan');
    const page = pageOf(c);
    const rows = await composed<RunRow & { cursor_at: string }>(db, listRunsStatement(tenantId, { scan_id: scan.id }, page.after, page.limit + 1));
    return c.json(pageResult(rows, page, (run) => presentRun(run)));
  });

  // What fired, when, which runs it made and what it skipped (and why).
  r.get('/:id/fires', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const scan = await one<ScanRow>(db, scansSql.GetScan, [tenantId, pathId(c, 'id', 'scan')]);
    if (!scan) throw notFound('scan');
    const limit = limitOf(c);
    const before = c.req.query('cursor');
    if (before !== undefined && !/^\d+$/.test(before)) throw invalid([{ path: 'cursor', message: 'is not a cursor returned by this API' }]);
    const rows = await many<ScanFireRow>(db, scansSql.ListScanFires, [tenantId, scan.id, before ?? null, limit + 1]);
    const more = rows.length > limit;
    const items = rows.slice(0, limit);
    return c.json({ items: items.map(presentFire), next_cursor: more ? String(items[items.length - 1].id) : null });
  });

  return r;
}
