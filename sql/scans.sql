-- Scans, their fires, and the scheduler's claims.

-- name: InsertScan :one
-- Creates a scan and re-arms the scheduler for the earliest due scan.
WITH scan AS (
  INSERT INTO scans (tenant_id, name, description, pipeline_id, targets, schedule_type, cron_expression, timezone,
                     status, context, max_active_runs, next_run_at, managed_by, trigger_index)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
  RETURNING *
)
SELECT scan.*, arm_scheduler_including(scan.next_run_at) AS armed FROM scan;

-- name: GetScan :one
-- A scan of a tenant.
SELECT * FROM scans WHERE tenant_id = $1 AND id = $2;

-- name: LockScan :one
-- A scan of a tenant, locked for a change or a fire.
SELECT * FROM scans WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: ListScans :many
-- A tenant's scans, newest first.
SELECT *, created_at::text AS cursor_at FROM scans
WHERE tenant_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
  AND ($4::text IS NULL OR status = $4)
  AND ($5::uuid IS NULL OR pipeline_id = $5)
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- name: UpdateScan :one
-- Replaces a scan's fields and re-arms the scheduler.
WITH scan AS (
  UPDATE scans
  SET name = $3, description = $4, pipeline_id = $5, targets = $6, schedule_type = $7, cron_expression = $8,
      timezone = $9, status = $10, context = $11, max_active_runs = $12, next_run_at = $13, updated_at = now()
  WHERE tenant_id = $1 AND id = $2
  RETURNING *
)
SELECT scan.*, arm_scheduler_including(scan.next_run_at) AS armed FROM scan;

-- name: DeleteScan :one
-- Deletes a scan (its runs stay, without the link). The scheduler keeps its schedule: a
-- tick for a deleted scan finds nothing due and re-arms for the next one.
DELETE FROM scans WHERE tenant_id = $1 AND id = $2 RETURNING id;

-- name: ArmScheduler :one
-- Schedules the scheduler_tick job at the earliest due scan.
SELECT arm_scheduler() AS next_at;

-- name: AddSchedulerTicks :exec
-- Extra ticks to share a burst of due scans between workers (claims use SKIP LOCKED). They
-- go before other jobs (priority -1): a burst admits runs, whose thousands of run_advance
-- jobs would otherwise queue ahead of the tick that fires the rest of the burst. $2: the
-- ticks are helpers (which add no helpers of their own).
SELECT graphile_worker.add_job('scheduler_tick', json_build_object('helper', $2::boolean), priority => -1)
FROM generate_series(1, $1::int);

-- name: TargetAssets :many
-- Assets of a tenant that a scan may target: the given ids, or (no ids) every asset that
-- passes the filter's indexable part (type, criticality, tags); expressions are evaluated
-- in the caller.
SELECT * FROM assets
WHERE tenant_id = $1
  AND ($2::uuid[] IS NULL OR id = ANY ($2))
  AND ($3::text[] IS NULL OR type = ANY ($3))
  AND ($4::text[] IS NULL OR criticality = ANY ($4))
  AND ($5::text[] IS NULL OR tags @> $5)
ORDER BY created_at, id;

-- name: ListScanFires :many
-- A scan's fires, newest first.
SELECT * FROM scan_fires WHERE tenant_id = $1 AND scan_id = $2 AND ($3::bigint IS NULL OR id < $3)
ORDER BY id DESC LIMIT $4;

-- name: TriggerScansOfPipeline :many
-- The scans that implement a pipeline's schedule triggers, locked for syncing.
SELECT * FROM scans WHERE pipeline_id = $1 AND managed_by = 'pipeline-trigger' ORDER BY trigger_index FOR UPDATE;

-- name: DeleteScanById :exec
-- Removes a scan (a schedule trigger that is gone, or a config scan no longer declared).
DELETE FROM scans WHERE id = $1;

-- name: ScanNamed :one
-- The scan of a tenant with this name (names are unique per tenant, ignoring case).
SELECT id FROM scans WHERE tenant_id = $1 AND lower(name) = lower($2);

-- name: ScanNamedRow :one
-- A scan of a tenant by name, locked (the config file updates it).
SELECT * FROM scans WHERE tenant_id = $1 AND lower(name) = lower($2) FOR UPDATE;

-- name: ConfigScans :many
-- Every scan the config file manages, with its tenant's name.
SELECT s.*, t.name AS tenant_name FROM scans s JOIN tenants t ON t.id = s.tenant_id WHERE s.managed_by = 'config';
