-- Pipeline runs: creation, reads and the transitions of a run.

-- name: InsertRun :one
-- Creates a pending run of a pipeline's current version with one step run per step. It
-- waits for a slot until AdmitRuns admits it (and enqueues its first advance).
WITH pipeline AS (
  SELECT p.id, p.version, v.settings
  FROM pipeline_templates p JOIN pipeline_versions v ON v.pipeline_id = p.id AND v.version = p.version
  WHERE p.tenant_id = $1 AND p.id = $2 AND p.deleted_at IS NULL
), run AS (
  INSERT INTO pipeline_runs (tenant_id, pipeline_id, pipeline_version, asset_id, scan_id, trigger_type,
                             triggered_by, context, target, settings, total_steps)
  SELECT $1, pipeline.id, pipeline.version, $3, $4, $5, $6, $7, $8, pipeline.settings,
         (SELECT count(*) FROM pipeline_steps s WHERE s.pipeline_id = pipeline.id AND s.version = pipeline.version)
  FROM pipeline
  RETURNING *
), steps AS (
  INSERT INTO step_runs (tenant_id, pipeline_run_id, step_id, step_key, name, step_order, depends_on, max_attempts)
  SELECT $1, run.id, s.id, s.step_key, s.name, s.step_order, s.depends_on, s.max_retries + 1
  FROM run JOIN pipeline_steps s ON s.pipeline_id = run.pipeline_id AND s.version = run.pipeline_version
  RETURNING id
)
SELECT run.* FROM run WHERE (SELECT count(*) FROM steps) >= 0;

-- name: AdmitRuns :one
-- Admits the tenant's waiting runs that fit under its and their scans' limits (admit_runs).
SELECT admit_runs($1) AS admitted;

-- name: GetRunsByIds :many
-- Runs by id (after admission, to answer with their state).
SELECT * FROM pipeline_runs WHERE id = ANY ($1::uuid[]) ORDER BY created_at, id;

-- name: GetRun :one
-- A run of a tenant.
SELECT * FROM pipeline_runs WHERE tenant_id = $1 AND id = $2;

-- The run list (GET /api/v1/pipeline-runs): newest first, any combination of four filters,
-- composed per combination from the fragments below (src/store/lists.ts) and run unprepared,
-- as the findings list is (sql/findings_api.sql). One statement with `($n IS NULL OR …)` per
-- filter was planned generically after five calls: the planner expected 2 rows and chose a
-- parallel sequential scan of pipeline_runs (1.4 s with 1,000,000 runs), and a status no run
-- has walked the tenant's whole index. Each filter has an index in the list's order
-- (migrations/0011_history.sql), so a first page reads about 50 index entries.

-- name: RunListHead :fragment
-- A page of a tenant's runs (every column, and created_at as PostgreSQL prints it, for the cursor).
SELECT r.*, r.created_at::text AS cursor_at FROM pipeline_runs r
WHERE r.tenant_id = $1

-- name: RunWhereStatus :fragment
-- In this status (pipeline_runs_tenant_status_idx).
AND r.status = $1

-- name: RunWherePipeline :fragment
-- Of this pipeline (pipeline_runs_pipeline_created_idx).
AND r.pipeline_id = $1::uuid

-- name: RunWhereAsset :fragment
-- On this asset (pipeline_runs_asset_created_idx).
AND r.asset_id = $1::uuid

-- name: RunWhereScan :fragment
-- Fired by this scan (pipeline_runs_scan_created_idx).
AND r.scan_id = $1::uuid

-- name: RunListAfter :fragment
-- The keyset: after the cursor's row.
AND (r.created_at, r.id) < ($1::timestamptz, $2::uuid)

-- name: RunListOrder :fragment
-- Newest first, at most $1.
ORDER BY r.created_at DESC, r.id DESC
LIMIT $1

-- name: LockRun :one
-- Locks a run: every change to a run's progression holds this lock, so they never interleave.
-- db_now is the transaction's clock, the one every deadline was computed with.
SELECT *, now() AS db_now FROM pipeline_runs WHERE id = $1 FOR UPDATE;

-- name: LockTenantRun :one
-- Locks a run of a tenant (API-side changes: cancel, retry).
SELECT * FROM pipeline_runs WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: StartRun :exec
-- pending → running for an admitted run; with settings.timeout ($2 seconds) it gets its deadline.
UPDATE pipeline_runs
SET status = 'running', started_at = coalesce(started_at, now()),
    deadline_at = CASE WHEN $2::integer IS NULL THEN NULL ELSE now() + make_interval(secs => $2::integer) END,
    updated_at = now()
WHERE id = $1 AND status = 'pending' AND admitted_at IS NOT NULL;

-- name: SettleRun :one
-- The end of an advance that did not finish the run: when steps finished ($3), recomputes
-- the run's step counters from its step runs; when it dispatched commands ($2), moves the
-- run's expiry timer earlier if it must (the job is written only then; see ArmRunTimer).
-- next is MATERIALIZED: inlined, run_next_deadline (two subqueries, a nested statement) ran
-- for each place next.at is read, twice or three times per call.
WITH next AS MATERIALIZED (
  SELECT run_next_deadline($1) AS at WHERE $2::boolean
), armed AS (
  SELECT graphile_worker.add_job('command_expire', json_build_object('run_id', $1::uuid),
           run_at => next.at, job_key => 'command_expire:' || $1) AS job
  FROM next
  WHERE next.at IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM graphile_worker.jobs j
    WHERE j.key = 'command_expire:' || $1 AND j.locked_at IS NULL AND j.run_at <= next.at)
), counted AS (
  UPDATE pipeline_runs r
  SET total_steps = c.total, completed_steps = c.completed, failed_steps = c.failed,
      skipped_steps = c.skipped, total_findings = c.findings, new_findings = c.new_findings, updated_at = now()
  FROM run_step_counts($1) c
  WHERE r.id = $1 AND $3::boolean
  RETURNING r.id
)
SELECT (SELECT count(*) FROM armed) AS armed, (SELECT count(*) FROM counted) AS counted;

-- name: FinishRun :one
-- Ends a run that is still in progress, with its final counters (the event carries them),
-- and removes its expiry timer (nothing of it is in flight any more).
WITH timer AS (
  SELECT graphile_worker.remove_job('command_expire:' || $1::uuid) AS job
)
UPDATE pipeline_runs r
SET status = $2, error_message = $3, completed_at = now(), started_at = coalesce(r.started_at, now()),
    total_steps = c.total, completed_steps = c.completed, failed_steps = c.failed,
    skipped_steps = c.skipped, total_findings = c.findings, new_findings = c.new_findings, updated_at = now()
FROM run_step_counts($1) c
WHERE r.id = $1 AND r.status IN ('pending', 'running') AND (SELECT count(*) FROM timer) >= 0
RETURNING r.*;

-- name: ReopenRun :one
-- A finished, unsuccessful run goes back to pending for a manual retry; it starts again
-- when admitted under the limits (AdmitRuns), with a new deadline.
UPDATE pipeline_runs
SET status = 'pending', admitted_at = NULL, completed_at = NULL, deadline_at = NULL, error_message = NULL,
    updated_at = now()
WHERE id = $1 AND status IN ('failed', 'cancelled', 'timeout')
RETURNING *;

-- name: ListRunEvents :many
-- The events of a run, oldest first.
SELECT id, type, step_run_id, data, created_at FROM events
WHERE tenant_id = $1 AND pipeline_run_id = $2 AND id > $3
ORDER BY id
LIMIT $4;
