// Firing scans: one run per target asset, Crossfeed's in-progress rule, admission under the
// limits, and the record of each fire. Used by the scheduler_tick task, the manual trigger,
// webhooks and asset discovery.
import type { Queryable } from '../db/pool.ts';
import { fixedName, type Tx } from '../db/transaction.ts';
import { many, one } from '../store/query.ts';
import { scansSql } from '../store/queries.ts';
import type { AssetRow, RunRow, ScanFireRow, ScanRow } from '../store/rows.ts';
import { TargetsSchema, assetMatches, nextFire, type Targets } from '../domain/scans.ts';
import { assetSnapshot } from '../domain/assets.ts';
import { createRuns } from './runs.ts';
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

/**
 * Fires a scan: a run of its pipeline per target asset, except on assets where a previous
 * run of this scan is still active (the skip is recorded with its reason, as are asset ids
 * that no longer exist); the runs are admitted under the limits or wait; the fire is
 * recorded in scan_fires. The caller holds the scan's row lock.
 */
export async function fireScan(tx: Tx, scan: ScanRow, trigger: FireTrigger, opts: { last?: boolean } = {}): Promise<Fire> {
  const targets = parseTargets(scan.targets);
  const assets = await targetAssets(tx, scan.tenant_id, targets, trigger.onlyAssetIds);
  const skipped: { asset_id: string | null; reason: string }[] = [];
  if (targets.kind === 'assets') {
    const present = new Set(assets.map((a) => a?.id));
    const wanted = trigger.onlyAssetIds ? targets.asset_ids.filter((id) => trigger.onlyAssetIds!.includes(id)) : targets.asset_ids;
    for (const id of wanted) if (!present.has(id)) skipped.push({ asset_id: id, reason: 'the asset does not exist (deleted?)' });
  }
  const active = new Map<string | null, { id: string; status: string }>();
  for (const r of await many<{ id: string; asset_id: string | null; status: string }>(tx, scansSql.ActiveScanRuns, [scan.id])) {
    active.set(r.asset_id, r);
  }
  const context = { ...scan.context, ...trigger.context };
  const toRun = assets.filter((asset) => {
    const previous = active.get(asset?.id ?? null);
    if (!previous) return true;
    skipped.push({
      asset_id: asset?.id ?? null,
      reason: `a previous run of this scan (${previous.id}) is still ${previous.status === 'pending' ? 'waiting' : 'running'} on it`,
    });
    return false;
  });
  const runs = toRun.length === 0 ? [] : await createRuns(tx, toRun.map((asset) => ({
    tenantId: scan.tenant_id,
    pipelineId: scan.pipeline_id,
    assetId: asset?.id ?? null,
    target: asset ? assetSnapshot(asset) : {},
    scanId: scan.id,
    triggerType: trigger.type,
    triggeredBy: trigger.triggeredBy,
    context,
  })));
  const values = [
    scan.tenant_id, scan.id, trigger.type, trigger.triggeredBy, trigger.dueAt ?? null, runs.map((r) => r.id),
    runs.filter((r) => r.admitted_at === null).length, JSON.stringify(skipped),
  ];
  // With `last`, the fire's record commits the caller's transaction in the same round trip.
  const fire = (opts.last ? (await tx.finalRead(scansSql.InsertScanFire, values)).rows[0] as ScanFireRow
    : (await one<ScanFireRow>(tx, scansSql.InsertScanFire, values))!);
  return { fire, runs };
}

const RELEASE_FIRE = { name: fixedName('RELEASE SAVEPOINT fire'), text: 'RELEASE SAVEPOINT fire' };

/** How many due scans one tick fires before it hands the rest to more ticks. */
const TICK_BATCH = 200;

/**
 * One scheduler tick: fires due scans, each in its own transaction (claimed with SKIP
 * LOCKED, its next_run_at advanced with croner in the same transaction), then re-arms the
 * scheduler at the earliest next_run_at. A burst larger than a batch is shared with extra
 * ticks, which other workers pick up. `transaction` runs one transaction.
 */
export async function runSchedulerTick(
  transaction: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>,
  parallelism: number,
): Promise<number> {
  const due = await transaction((tx) => one<{ n: number }>(tx, scansSql.CountDueScans, []));
  const helpers = Math.min(parallelism - 1, Math.floor((due?.n ?? 0) / TICK_BATCH));
  if (helpers > 0) await transaction((tx) => one(tx, scansSql.AddSchedulerTicks, [helpers]));
  let fired = 0;
  for (; fired < TICK_BATCH; fired++) {
    const done = await transaction(async (tx) => {
      const scan = await one<ScanRow & { db_now: Date }>(tx, scansSql.ClaimDueScan, []);
      if (!scan) return true;
      // Missed fires are not replayed: the next fire is the first one after now.
      const next = scan.cron_expression ? nextFire(scan.cron_expression, scan.timezone, scan.db_now) : null;
      tx.later(scansSql.AdvanceSchedule, [scan.id, next]);
      // One scan that cannot fire (its stored targets no longer parse, its pipeline is gone)
      // must not stop the scheduler: the failure is recorded as the fire, and it moves on.
      await tx.query('SAVEPOINT fire');
      try {
        await fireScan(tx, scan, { type: 'schedule', triggeredBy: `schedule:${scan.name}`, dueAt: scan.next_run_at });
        // Goes out with the COMMIT: the tenant's admission lock taken by the fire is held
        // for one round trip less.
        tx.later(RELEASE_FIRE, []);
      } catch (err) {
        // Contention is not the scan's fault: the whole transaction is retried.
        if (['40001', '40P01', '55P03'].includes((err as { code?: string }).code ?? '')) throw err;
        await tx.query('ROLLBACK TO SAVEPOINT fire');
        await one(tx, scansSql.InsertScanFire, [
          scan.tenant_id, scan.id, 'schedule', `schedule:${scan.name}`, scan.next_run_at, [], 0,
          JSON.stringify([{ asset_id: null, reason: `the scan could not fire: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}` }]),
        ]);
      }
      return false;
    });
    if (done) break;
  }
  await transaction((tx) => one(tx, scansSql.ArmScheduler, []));
  // A full batch: more may be due; this tick's successor continues at once.
  if (fired === TICK_BATCH) await transaction((tx) => one(tx, scansSql.AddSchedulerTicks, [1]));
  return fired;
}
