-- Notification channels of a tenant (migrations/0009_channels.sql) and their delivery log.
-- Secrets are stored encrypted (src/delivery/secrets.ts); nothing here returns them to the
-- API, which reads channels through these queries.

-- name: InsertChannel :one
-- A new channel.
INSERT INTO channels (id, tenant_id, name, type, url, email_to, events, min_severity, pipeline_ids, enabled, secret, secret_prefix)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING *;

-- name: GetChannel :one
-- A channel of the tenant.
SELECT * FROM channels WHERE tenant_id = $1 AND id = $2;

-- name: LockChannel :one
-- A channel of the tenant, locked for a change.
SELECT * FROM channels WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: ListChannels :many
-- The tenant's channels, newest first, after the cursor ($2 created_at, $3 id); at most $4.
SELECT c.*, c.created_at::text AS cursor_at
FROM channels c
WHERE c.tenant_id = $1 AND ($2::timestamptz IS NULL OR (c.created_at, c.id) < ($2, $3::uuid))
ORDER BY c.created_at DESC, c.id DESC
LIMIT $4;

-- name: UpdateChannel :one
-- New settings for a channel. Enabling it again clears why it was disabled and its failing streak.
UPDATE channels
SET name = $3, url = $4, email_to = $5, events = $6, min_severity = $7, pipeline_ids = $8, enabled = $9,
    disabled_reason = CASE WHEN $9 THEN NULL WHEN enabled THEN 'disabled by request' ELSE disabled_reason END,
    disabled_at = CASE WHEN $9 THEN NULL WHEN enabled THEN now() ELSE disabled_at END,
    failing_since = CASE WHEN $9 AND NOT enabled THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING *;

-- name: DeleteChannel :one
-- Removes a channel with its deliveries and their attempts; jobs still queued for them find nothing.
DELETE FROM channels WHERE tenant_id = $1 AND id = $2 RETURNING id;

-- name: SetChannelSecret :one
-- A new signing secret ($3, encrypted; $4 its prefix); the current one keeps signing as the
-- previous one until $5 (NULL: it stops at once).
UPDATE channels
SET previous_secret = CASE WHEN $5::timestamptz IS NULL THEN NULL ELSE secret END,
    previous_secret_until = $5::timestamptz,
    secret = $3, secret_prefix = $4, updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING *;

-- name: KnownPipelines :many
-- Of the pipeline ids given ($2), those the tenant has (not deleted).
SELECT id FROM pipeline_templates WHERE tenant_id = $1 AND id = ANY ($2::uuid[]) AND deleted_at IS NULL;

-- name: SendTestEvent :one
-- POST /channels/{id}/test: a channel.test event and its one delivery to this channel ($2),
-- enqueued now (test deliveries are tried once and change nothing on the channel).
WITH event AS (
  INSERT INTO events (tenant_id, type, data)
  VALUES ($1, 'channel.test', jsonb_build_object('channel_id', $2::uuid, 'channel_name', $3::text, 'channel_type', $4::text,
                                                 'message', 'A test notification from scanflow'))
  RETURNING id, created_at
), delivery AS (
  INSERT INTO deliveries (tenant_id, channel_id, event_id, event_type, event_ids, reason)
  SELECT $1, $2, event.id, 'channel.test', ARRAY[event.id], 'test' FROM event
  RETURNING *
), job AS (
  SELECT graphile_worker.add_job('event_deliver', json_build_object('delivery_id', d.id)) AS j FROM delivery d
)
SELECT d.*, event.created_at AS event_at FROM delivery d, event WHERE (SELECT count(*) FROM job) >= 0;

-- name: ListChannelAttempts :many
-- A channel's delivery log, newest first, before attempt id $3 (NULL: from the newest); at most $4.
SELECT a.*, d.event_id, d.event_type, d.event_count, d.reason, d.status AS delivery_status
FROM delivery_attempts a
JOIN deliveries d ON d.id = a.delivery_id
WHERE a.channel_id = $2 AND a.tenant_id = $1 AND ($3::bigint IS NULL OR a.id < $3)
ORDER BY a.id DESC
LIMIT $4;

