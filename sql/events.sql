-- Events as the tenant reads them: the feed (GET /api/v1/events) and the stream's reads
-- (src/api/event-stream.ts). Readers page by (xid, id) and take only events of transactions
-- older than the oldest one of this database still in progress (events_horizon(), sql/views.sql),
-- so a page never has an event that a later commit would insert before it; see
-- migrations/0009_channels.sql. Each event comes with its run's pipeline name and id.

-- name: EventPosition :one
-- The (xid, id) position of an event of the tenant ($1) with id $2; no row when it has none.
SELECT xid::text AS xid, id FROM events WHERE id = $2 AND tenant_id = $1;

-- name: EventsHead :one
-- Where a reader that wants only what comes next starts: the tenant's last settled event
-- (no row when there is none, which reads from the start).
SELECT xid::text AS xid, id FROM events
WHERE tenant_id = $1 AND xid < (SELECT events_horizon())
ORDER BY xid DESC, id DESC
LIMIT 1;

-- name: ReadEvents :many
-- The tenant's ($1) events after position ($2 xid, $3 id), in order, at most $6; only the
-- types given: exact names $4 and prefixes $5 (both NULL: every type). `settled` is false
-- for an event of a transaction at or after the oldest one in progress: those come last
-- (they sort after every settled one), and a reader stops before them.
WITH horizon AS (SELECT events_horizon() AS h)
SELECT e.id, e.tenant_id, e.type, e.data, e.created_at, e.xid::text AS xid,
       e.xid < (SELECT h FROM horizon) AS settled,
       r.pipeline_id, v.name AS pipeline_name
FROM events e
LEFT JOIN pipeline_runs r ON r.id = coalesce(e.pipeline_run_id, (e.data ->> 'pipeline_run_id')::uuid)
LEFT JOIN pipeline_versions v ON v.pipeline_id = r.pipeline_id AND v.version = r.pipeline_version
WHERE e.tenant_id = $1 AND (e.xid, e.id) > ($2::xid8, $3::bigint)
  AND (($4::text[] IS NULL AND $5::text[] IS NULL)
       OR e.type = ANY ($4::text[])
       OR EXISTS (SELECT 1 FROM unnest($5::text[]) p WHERE starts_with(e.type, p)))
ORDER BY e.xid, e.id
LIMIT $6;

-- name: ListenForTenant :exec
-- This process ($2) streams tenant $1's events for $3 seconds more: its transactions NOTIFY.
INSERT INTO event_listeners (tenant_id, listener, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (tenant_id, listener) DO UPDATE SET expires_at = EXCLUDED.expires_at;

-- name: RefreshListener :exec
-- This process ($1) streams exactly the tenants $2, for $3 seconds more; rows of processes
-- long gone are removed with it.
WITH dropped AS (
  DELETE FROM event_listeners
  WHERE (listener = $1 AND tenant_id <> ALL ($2::uuid[])) OR expires_at < now() - interval '1 hour'
)
INSERT INTO event_listeners (tenant_id, listener, expires_at)
SELECT t, $1, now() + make_interval(secs => $3) FROM unnest($2::uuid[]) t
ON CONFLICT (tenant_id, listener) DO UPDATE SET expires_at = EXCLUDED.expires_at;

-- name: StopListening :exec
-- This process ($1) streams nothing any more.
DELETE FROM event_listeners WHERE listener = $1;
