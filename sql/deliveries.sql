-- Deliveries: one (event, channel) each, made by the events trigger (migrations/0009_channels.sql)
-- or a test send, carried out by the event_deliver task (src/delivery/deliver.ts): claim with
-- a lease, send outside any transaction, record the attempt and what follows from it.

-- name: ClaimDelivery :one
-- Takes delivery $1 for one attempt: pending, due, and not leased by another attempt in
-- flight; the lease ($2) lasts $3 seconds (the attempt's timeout and a margin), so a second
-- process never sends it at the same time. With what the attempt needs of its channel, and
-- the generated secrets key when there is one (src/delivery/secrets.ts).
WITH claimed AS (
  UPDATE deliveries d
  SET lease_id = $2, lease_until = now() + make_interval(secs => $3), updated_at = now()
  WHERE d.id = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
    AND (d.lease_until IS NULL OR d.lease_until <= now())
  RETURNING d.*
)
SELECT d.*, c.name AS channel_name, c.type AS channel_type, c.url, c.email_to, c.enabled AS channel_enabled,
       c.secret, CASE WHEN c.previous_secret_until > now() THEN c.previous_secret END AS previous_secret,
       (SELECT value #>> '{}' FROM instance_settings WHERE key = 'secrets_key_generated') AS generated_key
FROM claimed d JOIN channels c ON c.id = d.channel_id;

-- name: DeliveryState :one
-- Why a delivery could not be claimed: not pending any more, not due yet, or leased until when.
SELECT status, next_attempt_at, lease_until, lease_until > now() AS leased FROM deliveries WHERE id = $1;

-- name: RearmDelivery :one
-- A job for delivery $1 at $2 (its lease's end: if the attempt holding it died, this one goes on).
SELECT graphile_worker.add_job('event_deliver', json_build_object('delivery_id', $1::uuid), run_at => $2::timestamptz) IS NOT NULL AS armed;

-- name: CancelDelivery :exec
-- A delivery that will not be sent (its channel was disabled): cancelled with why.
UPDATE deliveries
SET status = 'cancelled', last_error = $3, lease_id = NULL, lease_until = NULL, finished_at = now(), updated_at = now()
WHERE id = $1 AND lease_id = $2;

-- name: DeliveryEvents :many
-- The events of a delivery ($2, in that order) of tenant $1, with their run's pipeline and,
-- for finding events, the finding and its asset as they are now.
SELECT e.id, e.tenant_id, e.type, e.data, e.created_at, r.pipeline_id, v.name AS pipeline_name,
       f.title AS finding_title, f.severity AS finding_severity, f.tool AS finding_tool, f.rule_id AS finding_rule_id,
       f.status AS finding_status, coalesce(a.name, a.value) AS asset
FROM unnest($2::bigint[]) WITH ORDINALITY AS x(id, ord)
JOIN events e ON e.id = x.id AND e.tenant_id = $1
LEFT JOIN pipeline_runs r ON r.id = coalesce(e.pipeline_run_id, (e.data ->> 'pipeline_run_id')::uuid)
LEFT JOIN pipeline_versions v ON v.pipeline_id = r.pipeline_id AND v.version = r.pipeline_version
LEFT JOIN findings f ON f.id = e.finding_id
LEFT JOIN assets a ON a.id = f.asset_id
ORDER BY x.ord;

-- name: DeliveryRun :one
-- The run a message is about ($2 of tenant $1): its pipeline's name, its counts and the steps
-- that failed, timed out or were cancelled.
SELECT r.id, r.pipeline_id, v.name AS pipeline_name, r.status, r.total_steps, r.completed_steps, r.failed_steps,
       r.skipped_steps, r.total_findings, r.error_message,
       extract(epoch FROM r.completed_at - r.started_at)::float8 AS duration_seconds,
       coalesce((SELECT jsonb_agg(jsonb_build_object('step_key', s.step_key, 'name', s.name, 'status', s.status,
                                                     'error_code', s.error_code, 'error_message', s.error_message)
                                  ORDER BY s.step_order, s.step_key)
                 FROM step_runs s WHERE s.pipeline_run_id = r.id AND s.status IN ('failed', 'timeout', 'cancelled')), '[]') AS failed
FROM pipeline_runs r
JOIN pipeline_versions v ON v.pipeline_id = r.pipeline_id AND v.version = r.pipeline_version
WHERE r.tenant_id = $1 AND r.id = $2;

-- name: RecordAttempt :one
-- The attempt with lease $2 on delivery $1 ended: outcome $3 (delivered, failed, gone),
-- status code $4, latency $5 ms, error $6; $7 seconds until the next attempt (NULL: none).
-- One statement: the attempt logged; the delivery delivered, failed for good, or pending
-- again with a job at its next attempt's time; the channel's health: a success ends its
-- failing streak, a failure starts one, 410 Gone or a streak of 24 hours disables it (with
-- why); last_attempt_at and last_success_at are kept to the second. A test delivery is tried
-- once and leaves the channel as it was.
WITH current AS (
  SELECT d.id, d.reason, c.id AS channel_id, c.failing_since,
         CASE WHEN d.reason = 'test' THEN NULL
              WHEN $3::text = 'gone' THEN format('the receiver answered %s Gone: it asks for no more deliveries', $4::int)
              WHEN $3::text = 'failed' AND c.failing_since <= now() - interval '24 hours'
                THEN format('every delivery failed for 24 hours (since %s); the last: %s',
                            to_char(c.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), $6::text)
         END AS disable_reason
  FROM deliveries d JOIN channels c ON c.id = d.channel_id
  WHERE d.id = $1 AND d.lease_id = $2
  FOR NO KEY UPDATE OF d
), updated AS (
  UPDATE deliveries d
  SET attempts = d.attempts + 1,
      status = CASE WHEN $3::text = 'delivered' THEN 'delivered'
                    WHEN $7::int IS NOT NULL AND cur.reason <> 'test' AND cur.disable_reason IS NULL THEN 'pending'
                    ELSE 'failed' END,
      next_attempt_at = CASE WHEN $3::text <> 'delivered' AND $7::int IS NOT NULL AND cur.reason <> 'test' AND cur.disable_reason IS NULL
                             THEN now() + make_interval(secs => $7::int) ELSE d.next_attempt_at END,
      lease_id = NULL, lease_until = NULL, last_status_code = $4, last_error = $6, updated_at = now(),
      finished_at = CASE WHEN $3::text = 'delivered' OR $7::int IS NULL OR cur.reason = 'test' OR cur.disable_reason IS NOT NULL
                         THEN now() END
  FROM current cur
  WHERE d.id = cur.id
  RETURNING d.*
), logged AS (
  INSERT INTO delivery_attempts (tenant_id, channel_id, delivery_id, attempt, outcome, status_code, latency_ms, error, next_retry_at)
  SELECT u.tenant_id, u.channel_id, u.id, u.attempts, $3, $4, $5, $6, CASE WHEN u.status = 'pending' THEN u.next_attempt_at END
  FROM updated u
  RETURNING id
), channel AS (
  UPDATE channels c
  SET last_attempt_at = now(),
      last_success_at = CASE WHEN $3::text = 'delivered' THEN now() ELSE c.last_success_at END,
      failing_since = CASE WHEN $3::text = 'delivered' THEN NULL ELSE coalesce(c.failing_since, now()) END,
      last_error = CASE WHEN $3::text = 'delivered' THEN c.last_error ELSE $6 END,
      enabled = CASE WHEN cur.disable_reason IS NOT NULL THEN false ELSE c.enabled END,
      disabled_reason = coalesce(cur.disable_reason, c.disabled_reason),
      disabled_at = CASE WHEN cur.disable_reason IS NOT NULL THEN now() ELSE c.disabled_at END,
      updated_at = now()
  FROM current cur
  WHERE c.id = cur.channel_id AND cur.reason <> 'test'
    -- A success on a healthy channel rewrites its row at most once a second: concurrent
    -- deliveries to one channel would otherwise queue on its row lock.
    AND ($3::text <> 'delivered' OR c.failing_since IS NOT NULL OR c.last_success_at IS NULL
         OR c.last_success_at < now() - interval '1 second')
  RETURNING c.enabled
), job AS (
  SELECT graphile_worker.add_job('event_deliver', json_build_object('delivery_id', u.id), run_at => u.next_attempt_at) AS j
  FROM updated u WHERE u.status = 'pending'
)
SELECT u.status, u.attempts, u.next_attempt_at, (SELECT disable_reason FROM current) AS disabled_reason
FROM updated u
WHERE (SELECT count(*) FROM logged) >= 0 AND (SELECT count(*) FROM channel) >= 0 AND (SELECT count(*) FROM job) >= 0;
