// Firing scans: one run per target asset, Crossfeed's in-progress rule, admission under the
// limits, and the record of each fire, for any number of scans at once with one statement
// per step (sql/scheduler.sql). Used by the scheduler_tick task (a batch of a tenant's due
// scans per transaction) and the manual trigger; targetAssets by webhooks and discovery.
import type { Queryable } from '../db/pool.ts';
import { fixedName, type Tx } from '../db/transaction.ts';
import { finalMany, many, one } from '../store/query.ts';
import { runsSql, scansSql, schedulerSql } from '../store/queries.ts';
import { prepared } from '../db/sql.ts';
import type { AssetRow, RunRow, ScanFireRow, ScanRow } from '../store/rows.ts';
import { TargetsSchema, assetMatches, nextFire, type AssetFilter, type Targets } from '../domain/scans.ts';
import { assetSnapshot } from '../domain/assets.ts';
import { runsCreated, scanFired } from '../observability/transitions.ts';
import * as v from 'valibot';

export type FireTrigger = {
  type: 'schedule' | 'manual' | 'webhook' | 'on_asset_discovery';
  triggeredBy: string;
  context?: Record<string, unknown>;
  dueAt?: Date | null;
  /** Fire on these assets only (a webhook naming an asset, a discovered asset). */
  onlyAssetIds?: string[];
};

export type Fire = { fire: ScanFireRow; runs: RunRow[] };

/** The assets a scan's targets name or match, in creation order; [null] for no-asset targets. */
export async function targetAssets(tx: Queryable, tenantId: string, targets: Targets, only?: string[]): Promise<(AssetRow | null)[]> {
  if (targets.kind === 'none') return only ? [] : [null];
  const ids = targets.kind === 'assets' ? targets.asset_ids : null;
  const narrowed = only ? (ids ? ids.filter((id) => only.includes(id)) : only) : ids;
  if (targets.kind === 'assets') {
    return many<AssetRow>(tx, scansSql.TargetAssets, [tenantId, narrowed, null, null, null]);
  }
  // Each filter selects by its indexable part in SQL, then by its expression here.
  const found = new Map<string, AssetRow>();
  for (const f of targets.filters) {
    const rows = await many<AssetRow>(tx, scansSql.TargetAssets, [tenantId, narrowed, f.type ?? null, f.criticality ?? null, f.tags ?? null]);
    for (const a of rows) if (!found.has(a.id) && assetMatches(f, a)) found.set(a.id, a);
  }
  return [...found.values()].sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.id.localeCompare(b.id));
}

export function parseTargets(stored: Record<string, unknown>): Targets {
  return v.parse(TargetsSchema, stored);
}

type FireItem = { scan: ScanRow; trigger: FireTrigger };
type Skip = { asset_id: string | null; reason: string };
type AssetHit = AssetRow & { i: number };

/** Why a scan could not fire, as its fire records it. */
function cannotFire(err: unknown): Skip {
  return { asset_id: null, reason: `the scan could not fire: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}` };
}

/**
 * Fires scans, any number at once, with one statement per step for all of them: a run of
 * each scan's pipeline per target asset, except on assets where a previous run of that scan
 * is still active (the skip is recorded with its reason, as are asset ids that no longer
 * exist); the runs are admitted under the limits (one admit_runs per tenant) or wait; each
 * fire is recorded in scan_fires. The caller holds the scans' row locks.
 *
 * recordErrors: a scan whose targets cannot be evaluated is recorded as a fire that could not
 * fire (with the reason) instead of failing the whole call. read: 'runs' answers each fire
 * with its runs as they are after admission; 'final' does so with the COMMIT in the same round
 * trip; 'fires' answers the fire records only.
 */
export async function fireScans(
  tx: Tx, items: FireItem[], opts: { recordErrors?: boolean; read: 'runs' | 'final' | 'fires' },
): Promise<Fire[]> {
  if (items.length === 0) return [];
  // Each scan's targets, and the statements that find their assets.
  const plans = items.map(({ scan, trigger }) => {
    const plan = { targets: null as Targets | null, skipped: [] as Skip[], assets: [] as (AssetRow | null)[], error: null as Skip | null };
    try {
      plan.targets = parseTargets(scan.targets);
    } catch (err) {
      if (!opts.recordErrors) throw err;
      plan.error = cannotFire(err);
    }
    return plan;
  });
  const byId = { i: [] as number[], tenant: [] as string[], id: [] as string[] };
  // A filter's row: its index (i), its scan's (owner) and its place in the scan's list (f).
  const filters: {
    i: number; owner: number; f: number; tenant_id: string; ids: string[] | null; types: string[] | null;
    criticalities: string[] | null; tags: string[] | null;
  }[] = [];
  items.forEach(({ scan, trigger }, i) => {
    const t = plans[i].targets;
    const only = trigger.onlyAssetIds;
    if (!t) return;
    if (t.kind === 'none') {
      if (!only) plans[i].assets = [null];
    } else if (t.kind === 'assets') {
      const wanted = only ? t.asset_ids.filter((id) => only.includes(id)) : t.asset_ids;
      for (const id of wanted) {
        byId.i.push(i);
        byId.tenant.push(scan.tenant_id);
        byId.id.push(id);
      }
    } else {
      t.filters.forEach((f, fi) => filters.push({
        i: filters.length, owner: i, f: fi, tenant_id: scan.tenant_id, ids: only ?? null, types: f.type ?? null,
        criticalities: f.criticality ?? null, tags: f.tags ?? null,
      }));
    }
  });
  const scanIds = items.map((x) => x.scan.id);
  const reads = await tx.batch([
    ...(byId.id.length ? [{ q: schedulerSql.AssetsByIds, values: [byId.i, byId.tenant, byId.id] }] : []),
    ...(filters.length ? [{ q: schedulerSql.AssetsByFilters, values: [JSON.stringify(filters)] }] : []),
    { q: schedulerSql.ActiveRunsOfScans, values: [scanIds] },
  ]);
  let r = 0;
  if (byId.id.length) {
    const found = reads[r++].rows as AssetHit[];
    for (const a of found) plans[a.i].assets.push(a);
    items.forEach(({ trigger }, i) => {
      const t = plans[i].targets;
      if (t?.kind !== 'assets') return;
      const present = new Set(plans[i].assets.map((a) => a?.id));
      const wanted = trigger.onlyAssetIds ? t.asset_ids.filter((id) => trigger.onlyAssetIds!.includes(id)) : t.asset_ids;
      for (const id of wanted) if (!present.has(id)) plans[i].skipped.push({ asset_id: id, reason: 'the asset does not exist (deleted?)' });
    });
  }
  if (filters.length) {
    // Each filter selects by its indexable part in SQL, then by its expression here.
    const found = new Map<number, Map<string, AssetRow>>();
    for (const a of reads[r++].rows as AssetHit[]) {
      const i = filters[a.i].owner;
      const f = (plans[i].targets as { kind: 'filter'; filters: AssetFilter[] }).filters[filters[a.i].f];
      let m = found.get(i);
      if (!m) found.set(i, (m = new Map()));
      try {
        if (!m.has(a.id) && assetMatches(f, a)) m.set(a.id, a);
      } catch (err) {
        if (!opts.recordErrors) throw err;
        plans[i].error ??= cannotFire(err);
      }
    }
    for (const [i, m] of found) {
      plans[i].assets = [...m.values()].sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.id.localeCompare(b.id));
    }
  }
  const active = new Map<string, { id: string; status: string }>();
  for (const a of reads[r++].rows as { scan_id: string; asset_id: string | null; id: string; status: string }[]) {
    active.set(`${a.scan_id}/${a.asset_id ?? ''}`, a);
  }

  // The runs to create: on every target without a run of its scan in progress.
  const newRuns: Record<string, unknown>[] = [];
  items.forEach(({ scan, trigger }, i) => {
    const plan = plans[i];
    if (plan.error) return;
    const context = { ...scan.context, ...trigger.context };
    for (const asset of plan.assets) {
      const previous = active.get(`${scan.id}/${asset?.id ?? ''}`);
      if (previous) {
        plan.skipped.push({
          asset_id: asset?.id ?? null,
          reason: `a previous run of this scan (${previous.id}) is still ${previous.status === 'pending' ? 'waiting' : 'running'} on it`,
        });
        continue;
      }
      newRuns.push({
        ord: newRuns.length, tenant_id: scan.tenant_id, pipeline_id: scan.pipeline_id, asset_id: asset?.id ?? null, scan_id: scan.id,
        trigger_type: trigger.type, triggered_by: trigger.triggeredBy, context, target: asset ? assetSnapshot(asset) : {},
      });
    }
  });
  const created = newRuns.length ? await many<RunRow>(tx, schedulerSql.InsertRuns, [JSON.stringify(newRuns)]) : [];
  const runsOf = new Map<string, RunRow[]>();
  for (const run of created) {
    const list = runsOf.get(run.scan_id!);
    if (list) list.push(run);
    else runsOf.set(run.scan_id!, [run]);
  }
  for (const runs of runsOf.values()) runsCreated(tx, runs);
  const tenants = [...new Set(created.map((run) => run.tenant_id))].sort();
  if (tenants.length) tx.later(schedulerSql.AdmitTenants, [tenants]);

  // The fire records, after admission (how many of each fire's runs wait for a slot).
  const records = items.map(({ scan, trigger }, n) => ({
    tenant_id: scan.tenant_id, scan_id: scan.id, trigger_type: trigger.type, triggered_by: trigger.triggeredBy,
    due_at: trigger.dueAt ?? null, run_ids: (runsOf.get(scan.id) ?? []).map((run) => run.id),
    skipped: plans[n].error ? [plans[n].error] : plans[n].skipped, n,
  }));
  let fires: ScanFireRow[] = [];
  const recordFires = (result: { rows: unknown[] }) => {
    fires = result.rows as ScanFireRow[];
    fires.forEach((fire, n) => scanFired(tx, items[n].scan, items[n].trigger.type, {
      runIds: fire.run_ids, waiting: fire.waiting_runs, skipped: fire.skipped.length,
    }));
  };
  if (opts.read === 'fires') {
    recordFires(await tx.query(prepared(schedulerSql.InsertScanFires, [JSON.stringify(records)])));
    return fires.map((fire) => ({ fire, runs: [] }));
  }
  tx.later(schedulerSql.InsertScanFires, [JSON.stringify(records)], recordFires);
  const ids = created.map((run) => run.id);
  const runs = opts.read === 'final' ? await finalMany<RunRow>(tx, runsSql.GetRunsByIds, [ids]) : await many<RunRow>(tx, runsSql.GetRunsByIds, [ids]);
  const byRun = new Map(runs.map((run) => [run.id, run]));
  return fires.map((fire) => ({ fire, runs: fire.run_ids.map((id) => byRun.get(id)!) }));
}

/** Fires a scan (see fireScans); with `last`, the runs' read commits the caller's transaction. */
export async function fireScan(tx: Tx, scan: ScanRow, trigger: FireTrigger, opts: { last?: boolean } = {}): Promise<Fire> {
  const [fire] = await fireScans(tx, [{ scan, trigger }], { read: opts.last ? 'final' : 'runs' });
  return fire;
}

const RELEASE_FIRE = { name: fixedName('RELEASE SAVEPOINT fire'), text: 'RELEASE SAVEPOINT fire' };

/** Due scans fired per transaction: one statement per step for all of them. */
const FIRE_BATCH = 500;
/** How long one tick fires batches before it hands the rest to its successor. */
const TICK_MS = 20_000;

/**
 * A batch commits without waiting for its WAL to reach the disk (synchronous_commit off, this
 * transaction only). Its commit holds PostgreSQL's notification lock (add_jobs notifies the
 * workers) while it waits, which every other notifying commit queues behind: in a burst the
 * runs it admits start by thousands, and a batch waited behind their commits (every run of
 * 10,000 scans after 12.5 s with it on, 8.2 s with it off, back to back). Nothing is lost
 * that was relied on: a batch lost in a crash before its WAL was written never happened (its
 * scans are still due and fire once after the restart, as missed fires do), and any later
 * synchronous commit (an advance of one of its runs, an agent's claim) writes the WAL up to
 * it first. Only what left the database before such a commit (a webhook of its scan.fired
 * event) could tell of a fire that a crash then takes back.
 */
const ASYNC_COMMIT = { name: fixedName('SET LOCAL synchronous_commit = off'), text: 'SET LOCAL synchronous_commit = off' };

/** Contention is not the scans' fault: the whole transaction is retried. */
const retryable = (err: unknown) => ['40001', '40P01', '55P03'].includes((err as { code?: string }).code ?? '');

/**
 * Claims up to `limit` due scans of one tenant (SKIP LOCKED), advances their next fires with
 * croner and fires them together. When the set fails (a statement refused one scan's data), they are
 * fired one at a time, each in a savepoint, so one scan that cannot fire does not stop the
 * others: its failure is recorded as its fire. Answers how many scans it claimed.
 */
async function fireDueBatch(tx: Tx, limit: number, wait: boolean): Promise<number> {
  // One tenant per batch, whose admission lock no other tick holds: ticks never wait for each
  // other. When every due tenant is taken, a helper stops; the tick itself waits for one.
  const tenant = await one<{ tenant_id: string }>(tx, schedulerSql.TryLockDueTenant, [])
    ?? (wait ? await one<{ tenant_id: string }>(tx, schedulerSql.LockDueTenant, []) : null);
  if (!tenant) return 0;
  tx.later(ASYNC_COMMIT, []);
  const scans = await many<ScanRow & { db_now: Date }>(tx, schedulerSql.ClaimDueScans, [limit, tenant.tenant_id]);
  if (scans.length === 0) return 0;
  // Missed fires are not replayed: the next fire is the first one after now.
  const nextOf = new Map<string, Date | null>();
  const next = scans.map((s) => {
    if (!s.cron_expression) return null;
    const key = `${s.cron_expression}\n${s.timezone}`;
    if (!nextOf.has(key)) nextOf.set(key, nextFire(s.cron_expression, s.timezone, s.db_now));
    return nextOf.get(key)!;
  });
  tx.later(schedulerSql.AdvanceSchedules, [scans.map((s) => s.id), next]);
  const items = scans.map((scan) => ({
    scan, trigger: { type: 'schedule' as const, triggeredBy: `schedule:${scan.name}`, dueAt: scan.next_run_at },
  }));
  await tx.query('SAVEPOINT fire');
  try {
    await fireScans(tx, items, { recordErrors: true, read: 'fires' });
    // Goes out with the COMMIT: the tenants' admission locks are held one round trip less.
    tx.later(RELEASE_FIRE, []);
    return scans.length;
  } catch (err) {
    if (retryable(err)) throw err;
    await tx.query('ROLLBACK TO SAVEPOINT fire');
    tx.later(RELEASE_FIRE, []);
  }
  for (const item of items) {
    await tx.query('SAVEPOINT fire');
    try {
      await fireScans(tx, [item], { recordErrors: true, read: 'fires' });
    } catch (err) {
      if (retryable(err)) throw err;
      await tx.query('ROLLBACK TO SAVEPOINT fire');
      await tx.query(prepared(schedulerSql.InsertScanFires, [JSON.stringify([{
        tenant_id: item.scan.tenant_id, scan_id: item.scan.id, trigger_type: 'schedule', triggered_by: item.trigger.triggeredBy,
        due_at: item.trigger.dueAt, run_ids: [], skipped: [cannotFire(err)], n: 0,
      }])]));
    }
    tx.later(RELEASE_FIRE, []);
  }
  return scans.length;
}

/**
 * One scheduler tick: fires due scans in batches, each batch in its own transaction (claimed
 * with SKIP LOCKED, their next_run_at advanced with croner in the same transaction), then
 * re-arms the scheduler at the earliest next_run_at. A burst larger than a batch is shared
 * with helper ticks, which other workers (and other processes) pick up; they go before other
 * jobs, so the runs a burst admits do not hold back the rest of the burst.
 * `transaction` runs one transaction.
 */
export async function runSchedulerTick(
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>,
  parallelism: number,
  opts: { helper?: boolean } = {},
): Promise<number> {
  // A tick (not a helper) shares a large burst with helpers, which add none of their own.
  if (!opts.helper) {
    const burst = await transaction((tx) => one<{ due: number; tenants: number; helpers: number }>(tx, schedulerSql.SchedulerBurst, []));
    // A batch is one tenant's: more ticks than due tenants would find nothing to take.
    const wanted = Math.min(parallelism - 1, burst!.tenants - 1, Math.floor(burst!.due / 100));
    if (wanted > burst!.helpers) await transaction((tx) => one(tx, scansSql.AddSchedulerTicks, [wanted - burst!.helpers, true]));
  }
  let fired = 0;
  let more = false;
  // Batches until none is left to take (nothing due, or every due tenant taken by another
  // tick), or until TICK_MS have passed.
  for (const until = Date.now() + TICK_MS; ;) {
    const n = await transaction((tx) => fireDueBatch(tx, FIRE_BATCH, !opts.helper));
    fired += n;
    if (n === 0) break;
    if (Date.now() >= until) {
      more = true;
      break;
    }
  }
  await transaction((tx) => one(tx, scansSql.ArmScheduler, []));
  // Out of time: more may be due; this tick's successor continues at once.
  if (more) await transaction((tx) => one(tx, scansSql.AddSchedulerTicks, [1, opts.helper === true]));
  return fired;
}
