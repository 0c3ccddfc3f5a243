// Pipeline triggers of seed 001 beyond `manual`: a schedule trigger is kept as a scan of its
// pipeline (so the one scheduler serves both), a webhook starts runs on request, and
// on_asset_discovery starts a run when a matching asset is created.
import type { Tx } from '../db/transaction.ts';
import type { Queryable } from '../db/pool.ts';
import { many, one } from '../store/query.ts';
import { assetsSql, pipelinesSql, scansSql } from '../store/queries.ts';
import type { AssetRow, PipelineRow, RunRow, ScanRow } from '../store/rows.ts';
import type { Trigger } from '../domain/pipeline.ts';
import { assetMatches, nextFire, targetsToDocument, type AssetFilter, type Targets } from '../domain/scans.ts';
import { assetSnapshot } from '../domain/assets.ts';
import { nameWithSuffix } from '../domain/names.ts';
import { createRuns } from './runs.ts';
import { targetAssets } from './scans.ts';

function targetsOf(filters: AssetFilter[] | undefined): Targets {
  return filters && filters.length > 0 ? { kind: 'filter', filters } : { kind: 'none' };
}

/**
 * Makes a pipeline's schedule-trigger scans match its current triggers: one scan per
 * schedule trigger (managed_by 'pipeline-trigger'), created, updated or removed. Called by
 * every change that saves a pipeline version, in its transaction.
 */
export async function syncScheduleTriggers(tx: Queryable, pipeline: PipelineRow): Promise<void> {
  const existing = await many<ScanRow>(tx, scansSql.TriggerScansOfPipeline, [pipeline.id]);
  const schedules = (pipeline.triggers as Trigger[])
    .map((t, index) => ({ t, index }))
    .filter((x): x is { t: Extract<Trigger, { type: 'schedule' }>; index: number } => x.t.type === 'schedule');
  const kept = new Set<string>();
  for (const [n, { t, index }] of schedules.entries()) {
    const timezone = t.timezone ?? 'UTC';
    const targets = targetsToDocument(targetsOf(t.targets));
    const suffix = ` (schedule ${n + 1})`;
    const current = existing.find((s) => s.trigger_index === index);
    if (current) {
      kept.add(current.id);
      const same = current.cron_expression === t.cron && current.timezone === timezone;
      const next = same && current.next_run_at ? current.next_run_at : nextFire(t.cron, timezone, new Date());
      await one(tx, scansSql.UpdateScan, [
        pipeline.tenant_id, current.id, await freeName(tx, pipeline, suffix, current.id), null, pipeline.id,
        targets, 'cron', t.cron, timezone, 'active', {}, current.max_active_runs, next,
      ]);
    } else {
      await one(tx, scansSql.InsertScan, [
        pipeline.tenant_id, await freeName(tx, pipeline, suffix, null), null, pipeline.id, targets, 'cron',
        t.cron, timezone, 'active', {}, 10, nextFire(t.cron, timezone, new Date()), 'pipeline-trigger', index,
      ]);
    }
  }
  for (const s of existing) if (!kept.has(s.id)) await one(tx, scansSql.DeleteScanById, [s.id]);
}

/**
 * A name for a pipeline's schedule scan that no other scan of the tenant has: the pipeline's
 * name with `suffix`, or with a number too; the pipeline's name is cut to keep it within the
 * name bound (a 255-character pipeline name made a 269-character scan name, which the
 * table's CHECK refused: a 500).
 */
async function freeName(tx: Queryable, pipeline: PipelineRow, suffix: string, self: string | null): Promise<string> {
  for (let i = 1; ; i++) {
    const candidate = nameWithSuffix(pipeline.name, i === 1 ? suffix : `${suffix} ${i}`);
    const taken = await one<{ id: string }>(tx, scansSql.ScanNamed, [pipeline.tenant_id, candidate]);
    if (!taken || taken.id === self) return candidate;
  }
}

/** Event names as providers send them, compared loosely: GitLab's "Push Hook" is "push". */
export function normalizeEvent(event: string): string {
  return event.trim().toLowerCase().replace(/\s+hook$/, '').replace(/[\s-]+/g, '_');
}

export type WebhookRequest = { event: string | null; assetId: string | null; context: Record<string, unknown>; triggeredBy: string };

export type WebhookOutcome = { runs: RunRow[]; ignored: string | null };

/**
 * A webhook for a pipeline: the first webhook trigger whose event matches (or that names
 * none) starts runs — on the asset the request names, else on the trigger's targets, else
 * one run with no asset.
 */
export async function startWebhookRuns(tx: Tx, pipeline: PipelineRow, req: WebhookRequest): Promise<WebhookOutcome | 'no_trigger' | 'unknown_asset'> {
  const hooks = (pipeline.triggers as Trigger[]).filter((t): t is Extract<Trigger, { type: 'webhook' }> => t.type === 'webhook');
  if (hooks.length === 0) return 'no_trigger';
  const hook = hooks.find((h) => !h.event || normalizeEvent(h.event) === req.event);
  if (!hook) {
    const wanted = hooks.map((h) => `'${h.event}'`).join(', ');
    return { runs: [], ignored: `event ${req.event ? `'${req.event}'` : '(none)'} does not match the pipeline's webhook trigger (${wanted})` };
  }
  let assets: (AssetRow | null)[];
  if (req.assetId) {
    const asset = await one<AssetRow>(tx, assetsSql.GetAsset, [pipeline.tenant_id, req.assetId]);
    if (!asset) return 'unknown_asset';
    assets = [asset];
  } else {
    assets = await targetAssets(tx, pipeline.tenant_id, targetsOf(hook.targets));
  }
  const context = { ...req.context, webhook: { event: req.event, received_at: new Date().toISOString() } };
  const runs = await createRuns(tx, assets.map((asset) => ({
    tenantId: pipeline.tenant_id, pipelineId: pipeline.id, assetId: asset?.id ?? null,
    target: asset ? assetSnapshot(asset) : {}, scanId: null, triggerType: 'webhook', triggeredBy: req.triggeredBy, context,
  })));
  return { runs, ignored: null };
}

/**
 * A new asset: every active pipeline of its tenant with an on_asset_discovery trigger whose
 * filter matches it starts one run on it (at most one per pipeline and asset, however often
 * this runs).
 */
export async function startDiscoveryRuns(tx: Tx, assetId: string): Promise<RunRow[]> {
  const asset = await one<AssetRow>(tx, assetsSql.GetAssetById, [assetId]);
  if (!asset) return [];
  const started: RunRow[] = [];
  for (const p of await many<PipelineRow>(tx, pipelinesSql.PipelinesDiscovering, [asset.tenant_id])) {
    const triggers = (p.triggers as Trigger[]).filter((t): t is Extract<Trigger, { type: 'on_asset_discovery' }> => t.type === 'on_asset_discovery');
    if (!triggers.some((t) => !t.asset_filter || assetMatches(t.asset_filter, asset))) continue;
    if ((await one<{ exists: boolean }>(tx, pipelinesSql.DiscoveryRunExists, [p.id, asset.id]))?.exists) continue;
    started.push(...(await createRuns(tx, [{
      tenantId: asset.tenant_id, pipelineId: p.id, assetId: asset.id, target: assetSnapshot(asset), scanId: null,
      triggerType: 'on_asset_discovery', triggeredBy: `asset:${asset.name}`, context: {},
    }])));
  }
  return started;
}
