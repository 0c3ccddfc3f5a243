// Row shapes of events out (migrations/0009_channels.sql) and reading the tenant's events in
// feed order: by (xid, id), settled events only (sql/events.sql).
import type { Queryable } from '../db/pool.ts';
import { many, one } from './query.ts';
import { eventsSql, retentionSql } from './queries.ts';
import type { EventView } from '../domain/messages.ts';

export type ChannelRow = {
  id: string;
  tenant_id: string;
  name: string;
  type: 'webhook' | 'slack' | 'email';
  url: string | null;
  email_to: string[];
  events: string[];
  min_severity: string | null;
  pipeline_ids: string[] | null;
  enabled: boolean;
  disabled_reason: string | null;
  disabled_at: Date | null;
  secret: Buffer | null;
  secret_prefix: string | null;
  previous_secret: Buffer | null;
  previous_secret_until: Date | null;
  failing_since: Date | null;
  last_error: string | null;
  last_attempt_at: Date | null;
  last_success_at: Date | null;
  created_at: Date;
  updated_at: Date;
};

export type DeliveryRow = {
  id: string;
  tenant_id: string;
  channel_id: string;
  event_id: number;
  event_type: string;
  /** As text: pg parses scalar int8 only (src/db/pool.ts). */
  event_ids: string[];
  event_count: number;
  severities: Record<string, number> | null;
  reason: 'subscribed' | 'pipeline_notification' | 'test';
  status: 'pending' | 'delivered' | 'failed' | 'cancelled';
  attempts: number;
  next_attempt_at: Date;
  lease_id: string | null;
  lease_until: Date | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
};

export type AttemptRow = {
  id: number;
  tenant_id: string;
  channel_id: string;
  delivery_id: string;
  attempt: number;
  outcome: 'delivered' | 'failed' | 'gone';
  status_code: number | null;
  latency_ms: number;
  error: string | null;
  next_retry_at: Date | null;
  attempted_at: Date;
  event_id: number;
  event_type: string;
  event_count: number;
  reason: DeliveryRow['reason'];
  delivery_status: DeliveryRow['status'];
};

/** An event row with its run's pipeline (sql/events.sql, sql/deliveries.sql). */
export type EventRowWithRun = {
  id: number;
  tenant_id: string;
  type: string;
  data: Record<string, unknown>;
  created_at: Date;
  pipeline_id: string | null;
  pipeline_name: string | null;
};

/** A position in the feed: the event's transaction id (xid8, as text) and its id. */
export type FeedPosition = { xid: bigint; id: number };

export const FEED_START: FeedPosition = { xid: 0n, id: 0 };

export function comparePositions(a: FeedPosition, b: FeedPosition): number {
  if (a.xid !== b.xid) return a.xid < b.xid ? -1 : 1;
  return a.id - b.id;
}

/**
 * An event as the feed, the stream and webhooks show it: seed 001's payload
 * ({event, timestamp, data}) with its id and tenant; run and step events carry their
 * pipeline's id and name, steps their step_id (the step's key), runs their findings_count.
 */
export function eventView(row: EventRowWithRun): EventView {
  const data: Record<string, unknown> = { ...row.data };
  if (row.pipeline_id && data.pipeline_id === undefined) data.pipeline_id = row.pipeline_id;
  if (row.pipeline_name) data.pipeline_name = row.pipeline_name;
  if (row.type.startsWith('pipeline.step.')) data.step_id = data.step_key;
  if (row.type.startsWith('pipeline.run.')) data.findings_count = data.total_findings;
  return { id: row.id, event: row.type, timestamp: row.created_at.toISOString(), tenant_id: row.tenant_id, data };
}

type PositionRow = { xid: string; id: number };
const positionOf = (r: PositionRow): FeedPosition => ({ xid: BigInt(r.xid), id: r.id });

/** Where event $id of the tenant is in the feed; null when the tenant has no such event. */
export async function eventPosition(db: Queryable, tenantId: string, id: number): Promise<FeedPosition | null> {
  if (id === 0) return FEED_START;
  const row = await one<PositionRow>(db, eventsSql.EventPosition, [tenantId, id]);
  return row ? positionOf(row) : null;
}

/**
 * The largest event id retention removed (0: none; sql/retention.sql). A cursor at or below
 * it that names no event of the tenant was taken by retention (or was never the tenant's:
 * event ids are shared by all tenants, and which it was is not kept).
 */
export async function eventsRemovedTo(db: Queryable): Promise<number> {
  const row = await one<{ last_id: string }>(db, retentionSql.EventsRemovedTo, []);
  return Number(row?.last_id ?? 0);
}

/** The position after which only new events come: the tenant's last settled event. */
export async function feedHead(db: Queryable, tenantId: string): Promise<FeedPosition> {
  const row = await one<PositionRow>(db, eventsSql.EventsHead, [tenantId]);
  return row ? positionOf(row) : FEED_START;
}

/** A type filter: exact names and prefixes ('pipeline.run.*' is the prefix 'pipeline.run.'); null: every type. */
export type TypeFilter = { exact: string[]; prefixes: string[] } | null;

export function typeFilterOf(patterns: readonly string[] | null | undefined): TypeFilter {
  if (!patterns || patterns.length === 0 || patterns.includes('*')) return null;
  return {
    exact: patterns.filter((p) => !p.endsWith('.*')),
    prefixes: patterns.filter((p) => p.endsWith('.*')).map((p) => p.slice(0, -1)),
  };
}

export type FeedPage = {
  events: { view: EventView; position: FeedPosition }[];
  /** Events after these exist but belong to transactions that may still be followed by earlier ones: read again shortly. */
  held: boolean;
};

/** The tenant's settled events after a position, in feed order, at most `limit`. */
export async function readEvents(db: Queryable, tenantId: string, after: FeedPosition, types: TypeFilter, limit: number): Promise<FeedPage> {
  const rows = await many<EventRowWithRun & { xid: string; settled: boolean }>(db, eventsSql.ReadEvents, [
    tenantId, after.xid.toString(), after.id, types?.exact ?? null, types?.prefixes ?? null, limit,
  ]);
  const events: FeedPage['events'] = [];
  for (const r of rows) {
    if (!r.settled) return { events, held: true };
    events.push({ view: eventView(r), position: positionOf(r) });
  }
  return { events, held: false };
}
