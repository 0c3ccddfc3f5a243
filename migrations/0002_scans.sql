-- Scans (seeds 002/003 "Scan Management", seed 000's Scan/ScanTask): a pipeline bound to
-- targets and a schedule. The scheduler is the scheduler_tick job, run at the earliest
-- next_run_at; every fire (and every skip) is recorded in scan_fires. Runs are admitted
-- under per-scan and per-tenant limits; the rest wait as pending, oldest first.

ALTER TABLE tenants ADD COLUMN max_active_runs integer NOT NULL DEFAULT 100 CHECK (max_active_runs >= 1);

-- Objects declared in the config file are marked so; the API refuses to change them.
ALTER TABLE pipeline_templates ADD COLUMN managed_by text;
-- A pipeline's webhook trigger authenticates with a token; only its SHA-256 is stored.
ALTER TABLE pipeline_templates ADD COLUMN webhook_token_hash bytea UNIQUE;

CREATE TABLE scans (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  description     text,
  pipeline_id     uuid NOT NULL,
  -- {} (one run with no asset) | {asset_id} | {asset_ids: [...]} | {asset_filter: {...}}
  targets         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(targets) = 'object'),
  schedule_type   text NOT NULL DEFAULT 'manual'
                  CHECK (schedule_type IN ('manual', 'daily', 'weekly', 'monthly', 'cron')),
  -- The effective cron expression (derived for daily/weekly/monthly), NULL for manual.
  cron_expression text,
  timezone        text NOT NULL DEFAULT 'UTC',
  status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'disabled')),
  context         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
  max_active_runs integer NOT NULL DEFAULT 10 CHECK (max_active_runs >= 1),
  next_run_at     timestamptz,
  last_run_at     timestamptz,
  -- 'config' for scans declared in the config file; 'pipeline-trigger' for the scans that
  -- implement a pipeline's schedule triggers. The API refuses to change either.
  managed_by      text,
  trigger_index   integer,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, pipeline_id) REFERENCES pipeline_templates (tenant_id, id) ON DELETE CASCADE,
  CHECK (schedule_type = 'manual' OR cron_expression IS NOT NULL),
  CHECK (schedule_type <> 'manual' OR next_run_at IS NULL)
);
CREATE UNIQUE INDEX scans_name_key ON scans (tenant_id, lower(name));
CREATE INDEX scans_tenant_created_idx ON scans (tenant_id, created_at DESC, id DESC);
-- Hot path: the scheduler's next due scan.
CREATE INDEX scans_due_idx ON scans (next_run_at) WHERE status = 'active' AND next_run_at IS NOT NULL;

ALTER TABLE pipeline_runs
  ADD FOREIGN KEY (tenant_id, scan_id) REFERENCES scans (tenant_id, id) ON DELETE SET NULL (scan_id);
-- NULL while the run waits for a slot under its scan's or tenant's limit.
ALTER TABLE pipeline_runs ADD COLUMN admitted_at timestamptz;
-- Runs created by one fan-out are admitted oldest first: in creation order, not at random.
ALTER TABLE pipeline_runs ALTER COLUMN created_at SET DEFAULT clock_timestamp();
-- started_at + settings.timeout: the run times out then (its timer fires; see run_next_deadline).
ALTER TABLE pipeline_runs ADD COLUMN deadline_at timestamptz;
CREATE INDEX pipeline_runs_waiting_idx ON pipeline_runs (tenant_id, created_at)
  WHERE status = 'pending' AND admitted_at IS NULL;
CREATE INDEX pipeline_runs_admitted_idx ON pipeline_runs (tenant_id, scan_id)
  WHERE status IN ('pending', 'running') AND admitted_at IS NOT NULL;
CREATE INDEX pipeline_runs_scan_asset_active_idx ON pipeline_runs (scan_id, asset_id)
  WHERE status IN ('pending', 'running');

-- Every fire of a scan: when, why (schedule, manual, webhook, on_asset_discovery), which runs
-- it created, and which targets it skipped and why (Crossfeed's in-progress rule).
CREATE TABLE scan_fires (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     uuid NOT NULL,
  scan_id       uuid NOT NULL,
  trigger_type  text NOT NULL CHECK (trigger_type IN ('schedule', 'manual', 'webhook', 'on_asset_discovery')),
  triggered_by  text,
  due_at        timestamptz,
  fired_at      timestamptz NOT NULL DEFAULT now(),
  run_ids       uuid[] NOT NULL DEFAULT '{}',
  waiting_runs  integer NOT NULL DEFAULT 0,
  -- [{asset_id, reason}]
  skipped       jsonb NOT NULL DEFAULT '[]',
  FOREIGN KEY (tenant_id, scan_id) REFERENCES scans (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX scan_fires_scan_idx ON scan_fires (scan_id, id DESC);

-- Admits waiting runs of a tenant, oldest first, while the tenant has fewer than its
-- max_active_runs admitted runs in progress and each run's scan fewer than its own. An
-- admitted run is advanced (it starts). One admission at a time per tenant: the advisory
-- lock is taken before the counts are read, so two admissions never both take the last slot.
-- The walk stops when the free slots are filled: after a run finishes, usually at the first
-- waiting run (a window over every waiting run measured 10 ms with 900 waiting).
CREATE FUNCTION admit_runs(p_tenant_id uuid) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  admitted integer := 0;
  free integer;
  scan_limit integer;
  scan_active integer;
  waiting record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('scanflow.admit.' || p_tenant_id::text, 0));
  SELECT t.max_active_runs - (SELECT count(*) FROM pipeline_runs r
                              WHERE r.tenant_id = p_tenant_id AND r.status IN ('pending', 'running')
                                AND r.admitted_at IS NOT NULL)
  INTO free FROM tenants t WHERE t.id = p_tenant_id;
  IF coalesce(free, 0) <= 0 THEN
    RETURN 0;
  END IF;
  FOR waiting IN
    SELECT r.id, r.scan_id FROM pipeline_runs r
    WHERE r.tenant_id = p_tenant_id AND r.status = 'pending' AND r.admitted_at IS NULL
    ORDER BY r.created_at, r.id
  LOOP
    EXIT WHEN free <= 0;
    IF waiting.scan_id IS NOT NULL THEN
      SELECT s.max_active_runs INTO scan_limit FROM scans s WHERE s.id = waiting.scan_id;
      SELECT count(*) INTO scan_active FROM pipeline_runs r
      WHERE r.tenant_id = p_tenant_id AND r.scan_id = waiting.scan_id
        AND r.status IN ('pending', 'running') AND r.admitted_at IS NOT NULL;
      CONTINUE WHEN scan_active >= coalesce(scan_limit, 1);
    END IF;
    UPDATE pipeline_runs SET admitted_at = now(), updated_at = now() WHERE id = waiting.id;
    PERFORM request_run_advance(waiting.id);
    admitted := admitted + 1;
    free := free - 1;
  END LOOP;
  RETURN admitted;
END $$;

-- A run's timer also covers the run's own deadline (settings.timeout from its start).
CREATE OR REPLACE FUNCTION run_next_deadline(p_run_id uuid) RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT least(
    (SELECT min(CASE WHEN c.status = 'pending'
                     THEN least(c.expires_at, now() + make_interval(secs => c.timeout_seconds))
                     ELSE c.expires_at END)
     FROM commands c
     WHERE c.pipeline_run_id = p_run_id AND c.status IN ('pending', 'acknowledged', 'running')),
    (SELECT r.deadline_at FROM pipeline_runs r WHERE r.id = p_run_id AND r.status IN ('pending', 'running')))
$$;

-- Schedules the scheduler: the scheduler_tick job at the earliest next_run_at of an active
-- scan (job_key scheduler_tick, one for the whole instance). When a worker is locking that
-- job at this moment (graphile/worker#580), a second, unkeyed tick is added instead: ticks
-- claim scans with SKIP LOCKED, so an extra one never fires a scan twice.
-- p_also: a next fire the caller is writing in this same statement (not visible yet).
CREATE FUNCTION arm_scheduler(p_also timestamptz DEFAULT NULL) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
  next_at timestamptz;
BEGIN
  SELECT least(min(next_run_at), p_also) INTO next_at FROM scans WHERE status = 'active' AND next_run_at IS NOT NULL;
  IF next_at IS NULL THEN
    RETURN NULL;
  END IF;
  IF (graphile_worker.add_job('scheduler_tick', '{}'::json, run_at => next_at, job_key => 'scheduler_tick')).id IS NULL THEN
    PERFORM graphile_worker.add_job('scheduler_tick', '{}'::json, run_at => next_at);
  END IF;
  RETURN next_at;
END $$;

-- Re-arms the scheduler when a scan's next fire is earlier than the tick is set for (or no
-- tick is set); used by every statement that changes a scan's next_run_at.
CREATE FUNCTION arm_scheduler_including(p_next_run_at timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  IF p_next_run_at IS NULL OR EXISTS (
       SELECT 1 FROM graphile_worker.jobs j
       WHERE j.key = 'scheduler_tick' AND j.locked_at IS NULL AND j.run_at <= p_next_run_at) THEN
    RETURN NULL;
  END IF;
  RETURN arm_scheduler(p_next_run_at);
END $$;
