-- Firing scans in sets (src/progression/scans.ts fireScans): a scheduler tick claims a batch
-- of one tenant's due scans and fires them with one statement per step, whatever the batch's
-- size (a burst of 10,000 due scans was one transaction and about a dozen statements per
-- scan, and every fire waited for its tenant's admission lock).

-- name: SchedulerBurst :one
-- How many scans are due, of how many tenants, and how many helper ticks exist (queued or
-- running; the unkeyed ticks): a tick adds helpers for a burst only up to what it can use.
SELECT count(*)::int AS due, count(DISTINCT tenant_id)::int AS tenants,
       (SELECT count(*)::int FROM graphile_worker.jobs j
        WHERE j.task_identifier = 'scheduler_tick' AND j.key IS NULL) AS helpers
FROM scans WHERE status = 'active' AND next_run_at <= now();

-- name: TryLockDueTenant :one
-- A tenant with due scans whose admission lock (admit_runs) no one holds, now locked by this
-- transaction: a batch fires one tenant's scans and admits their runs, so ticks running at
-- the same time take different tenants and never wait for each other. (The lock is tried on
-- one tenant after another until one is free: a volatile condition is not pushed below the
-- DISTINCT, and LIMIT stops the scan at the first success.) No row: none is free.
WITH due AS MATERIALIZED (
  SELECT DISTINCT tenant_id FROM scans WHERE status = 'active' AND next_run_at <= now()
)
SELECT tenant_id FROM due
WHERE pg_try_advisory_xact_lock(hashtextextended('scanflow.admit.' || tenant_id::text, 0))
LIMIT 1;

-- name: LockDueTenant :one
-- The first tenant with due scans, its admission lock awaited (when every one is taken).
WITH due AS MATERIALIZED (
  SELECT tenant_id FROM scans WHERE status = 'active' AND next_run_at <= now() ORDER BY next_run_at LIMIT 1
)
SELECT tenant_id, pg_advisory_xact_lock(hashtextextended('scanflow.admit.' || tenant_id::text, 0))::text AS locked FROM due;

-- name: ClaimDueScans :many
-- The scheduler claims a batch of a tenant's due scans; SKIP LOCKED lets any number of
-- ticks, in any number of processes, share the due scans without firing one twice.
SELECT *, now() AS db_now FROM scans
WHERE status = 'active' AND next_run_at <= now() AND tenant_id = $2
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: AdvanceSchedules :exec
-- The fired scans' next fires (computed with croner in the claiming transaction).
UPDATE scans s SET next_run_at = x.next_run_at, last_run_at = now(), updated_at = now()
FROM unnest($1::uuid[], $2::timestamptz[]) AS x (id, next_run_at)
WHERE s.id = x.id;

-- name: AssetsByIds :many
-- The assets that fires name by id ($1: the fire's index, $2: its tenant, $3: an asset id),
-- in creation order per fire. An id of another tenant or of a deleted asset finds nothing.
SELECT q.i, a.* FROM unnest($1::int[], $2::uuid[], $3::uuid[]) AS q (i, tenant_id, id)
JOIN assets a ON a.id = q.id AND a.tenant_id = q.tenant_id
ORDER BY q.i, a.created_at, a.id;

-- name: AssetsByFilters :many
-- The assets that pass each filter's indexable part ($1: [{i, tenant_id, ids, types,
-- criticalities, tags}], a null field not filtering); expressions are evaluated in the caller.
SELECT q.i, a.* FROM jsonb_to_recordset($1::jsonb) AS q (i int, tenant_id uuid, ids uuid[], types text[], criticalities text[], tags text[])
CROSS JOIN LATERAL (
  SELECT * FROM assets a
  WHERE a.tenant_id = q.tenant_id
    AND (q.ids IS NULL OR a.id = ANY (q.ids))
    AND (q.types IS NULL OR a.type = ANY (q.types))
    AND (q.criticalities IS NULL OR a.criticality = ANY (q.criticalities))
    AND (q.tags IS NULL OR a.tags @> q.tags)
) a
ORDER BY q.i, a.created_at, a.id;

-- name: ActiveRunsOfScans :many
-- The scans' runs still in progress (or waiting for a slot), by scan and asset: a scan does
-- not start another run on an asset while one is active (Crossfeed's in-progress rule).
SELECT scan_id, asset_id, id, status FROM pipeline_runs
WHERE scan_id = ANY ($1::uuid[]) AND status IN ('pending', 'running');

-- name: InsertRuns :many
-- Creates pending runs of their pipelines' current versions with one step run per step, in
-- the order given ($1: [{ord, tenant_id, pipeline_id, asset_id, scan_id, trigger_type,
-- triggered_by, context, target}]); a run of a pipeline that is gone is not created. They
-- wait for a slot until admit_runs admits them. InsertRun (sql/pipeline_runs.sql), for many.
WITH input AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x (ord int, tenant_id uuid, pipeline_id uuid, asset_id uuid, scan_id uuid,
                                                   trigger_type text, triggered_by text, context jsonb, target jsonb)
), pipeline AS (
  SELECT p.tenant_id, p.id, p.version, v.settings,
         (SELECT count(*) FROM pipeline_steps s WHERE s.pipeline_id = p.id AND s.version = p.version) AS total_steps
  FROM pipeline_templates p JOIN pipeline_versions v ON v.pipeline_id = p.id AND v.version = p.version
  WHERE p.id IN (SELECT i.pipeline_id FROM input i) AND p.deleted_at IS NULL
), run AS (
  INSERT INTO pipeline_runs (tenant_id, pipeline_id, pipeline_version, asset_id, scan_id, trigger_type,
                             triggered_by, context, target, settings, total_steps)
  SELECT i.tenant_id, p.id, p.version, i.asset_id, i.scan_id, i.trigger_type, i.triggered_by, i.context, i.target,
         p.settings, p.total_steps
  FROM input i JOIN pipeline p ON p.id = i.pipeline_id AND p.tenant_id = i.tenant_id
  ORDER BY i.ord
  RETURNING *
), steps AS (
  INSERT INTO step_runs (tenant_id, pipeline_run_id, step_id, step_key, name, step_order, depends_on, max_attempts)
  SELECT run.tenant_id, run.id, s.id, s.step_key, s.name, s.step_order, s.depends_on, s.max_retries + 1
  FROM run JOIN pipeline_steps s ON s.pipeline_id = run.pipeline_id AND s.version = run.pipeline_version
  RETURNING id
)
SELECT run.* FROM run WHERE (SELECT count(*) FROM steps) >= 0;

-- name: AdmitTenants :exec
-- Admits the waiting runs of each tenant ($1, sorted: every admission takes its tenants'
-- locks in one order, so two never deadlock) under the limits (admit_runs).
SELECT admit_runs(t) FROM unnest($1::uuid[]) WITH ORDINALITY AS x (t, n) ORDER BY n;

-- name: InsertScanFires :many
-- Records fires: their runs (and how many of them wait for a slot, after admission) and
-- their skips with reasons ($1: [{tenant_id, scan_id, trigger_type, triggered_by, due_at,
-- run_ids, skipped, n}], n their order).
INSERT INTO scan_fires (tenant_id, scan_id, trigger_type, triggered_by, due_at, run_ids, waiting_runs, skipped)
SELECT x.tenant_id, x.scan_id, x.trigger_type, x.triggered_by, x.due_at, x.run_ids,
       (SELECT count(*) FROM pipeline_runs r WHERE r.id = ANY (x.run_ids) AND r.admitted_at IS NULL),
       x.skipped
FROM jsonb_to_recordset($1::jsonb) AS x (tenant_id uuid, scan_id uuid, trigger_type text, triggered_by text,
                                         due_at timestamptz, run_ids uuid[], skipped jsonb, n int)
ORDER BY x.n
RETURNING *;
