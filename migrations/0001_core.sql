-- Core schema: tenants, credentials, assets, agents, versioned pipelines, runs, step runs,
-- commands and the append-only event log (seed 001 "Database Schema", extended).
--
-- Conventions: every tenant-owned row carries tenant_id, and references between
-- tenant-owned rows go through (tenant_id, id) so a row can never point at another
-- tenant's row. Statuses are CHECK-constrained; state machines are in README.md.

CREATE TABLE instance_settings (
  key        text PRIMARY KEY,
  value      jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  modules    text[] NOT NULL DEFAULT '{scans}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tenants_name_key ON tenants (lower(name));

-- Tenant tokens for the management API. Only the SHA-256 of a token is stored.
CREATE TABLE api_tokens (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name         text,
  token_hash   bytea NOT NULL UNIQUE,
  token_prefix text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);

CREATE TABLE assets (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  type        text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,62}$'),
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 1024),
  value       text,
  tags        text[] NOT NULL DEFAULT '{}',
  criticality text NOT NULL DEFAULT 'medium'
              CHECK (criticality IN ('critical', 'high', 'medium', 'low', 'info')),
  metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
CREATE INDEX assets_tenant_created_idx ON assets (tenant_id, created_at DESC, id DESC);

CREATE TABLE agents (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  api_key_hash        bytea NOT NULL UNIQUE,
  api_key_prefix      text NOT NULL,
  tools               text[] NOT NULL DEFAULT '{}',
  capabilities        text[] NOT NULL DEFAULT '{}',
  max_concurrent_jobs integer NOT NULL DEFAULT 5 CHECK (max_concurrent_jobs BETWEEN 1 AND 1000),
  labels              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
  -- status is set by people and gates authentication; health is derived from heartbeats.
  status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'revoked')),
  health              text NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown', 'online', 'offline')),
  version             text,
  hostname            text,
  heartbeat_data      jsonb NOT NULL DEFAULT '{}',
  last_heartbeat_at   timestamptz,
  last_seen_at        timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id)
);
CREATE INDEX agents_tenant_created_idx ON agents (tenant_id, created_at DESC, id DESC);

-- A pipeline is a stable identity; every change creates an immutable version whose
-- steps are rows of pipeline_steps. Runs reference the version they started with.
CREATE TABLE pipeline_templates (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  description text,
  version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  triggers    jsonb NOT NULL DEFAULT '[]',
  settings    jsonb NOT NULL DEFAULT '{}',
  is_active   boolean NOT NULL DEFAULT true,
  tags        text[] NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz,
  UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX pipeline_templates_name_key
  ON pipeline_templates (tenant_id, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX pipeline_templates_tenant_created_idx
  ON pipeline_templates (tenant_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE pipeline_versions (
  tenant_id   uuid NOT NULL,
  pipeline_id uuid NOT NULL,
  version     integer NOT NULL CHECK (version >= 1),
  name        text NOT NULL,
  description text,
  triggers    jsonb NOT NULL DEFAULT '[]',
  settings    jsonb NOT NULL DEFAULT '{}',
  tags        text[] NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pipeline_id, version),
  FOREIGN KEY (tenant_id, pipeline_id) REFERENCES pipeline_templates (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE pipeline_steps (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id           uuid NOT NULL,
  pipeline_id         uuid NOT NULL,
  version             integer NOT NULL,
  step_key            text NOT NULL CHECK (step_key ~ '^[A-Za-z0-9_.-]{1,100}$'),
  name                text NOT NULL,
  step_order          integer NOT NULL,
  tool                text,
  capabilities        text[] NOT NULL DEFAULT '{}',
  config              jsonb NOT NULL DEFAULT '{}',
  timeout_seconds     integer NOT NULL DEFAULT 1800 CHECK (timeout_seconds > 0),
  depends_on          text[] NOT NULL DEFAULT '{}',
  -- {type, value} | {type: 'step_result', step, check}; NULL means always.
  condition           jsonb,
  max_retries         integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 100),
  retry_delay_seconds integer NOT NULL DEFAULT 60 CHECK (retry_delay_seconds >= 0),
  created_at          timestamptz NOT NULL DEFAULT now(),
  UNIQUE (pipeline_id, version, step_key),
  CHECK (tool IS NOT NULL OR cardinality(capabilities) > 0),
  FOREIGN KEY (pipeline_id, version) REFERENCES pipeline_versions (pipeline_id, version) ON DELETE CASCADE
);

CREATE TABLE pipeline_runs (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  pipeline_id      uuid NOT NULL,
  pipeline_version integer NOT NULL,
  asset_id         uuid,
  scan_id          uuid,
  trigger_type     text NOT NULL DEFAULT 'manual'
                   CHECK (trigger_type IN ('manual', 'api', 'schedule', 'webhook', 'on_asset_discovery')),
  triggered_by     text,
  status           text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'timeout')),
  context          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
  -- The asset as it was when the run was triggered: conditions and commands see this.
  target           jsonb NOT NULL DEFAULT '{}',
  -- The version's settings, copied so progression never joins back to the template.
  settings         jsonb NOT NULL DEFAULT '{}',
  total_steps      integer NOT NULL DEFAULT 0,
  completed_steps  integer NOT NULL DEFAULT 0,
  failed_steps     integer NOT NULL DEFAULT 0,
  skipped_steps    integer NOT NULL DEFAULT 0,
  total_findings   integer NOT NULL DEFAULT 0,
  started_at       timestamptz,
  completed_at     timestamptz,
  error_message    text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (pipeline_id, pipeline_version) REFERENCES pipeline_versions (pipeline_id, version),
  FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id) ON DELETE SET NULL (asset_id)
);
CREATE INDEX pipeline_runs_tenant_created_idx ON pipeline_runs (tenant_id, created_at DESC, id DESC);
CREATE INDEX pipeline_runs_pipeline_idx ON pipeline_runs (pipeline_id);
CREATE INDEX pipeline_runs_asset_idx ON pipeline_runs (asset_id) WHERE asset_id IS NOT NULL;
CREATE INDEX pipeline_runs_scan_idx ON pipeline_runs (scan_id) WHERE scan_id IS NOT NULL;
-- Hot path: runs in progress.
CREATE INDEX pipeline_runs_active_idx ON pipeline_runs (tenant_id, created_at)
  WHERE status IN ('pending', 'running');

CREATE TABLE step_runs (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id           uuid NOT NULL,
  pipeline_run_id     uuid NOT NULL,
  step_id             uuid NOT NULL REFERENCES pipeline_steps (id),
  step_key            text NOT NULL,
  name                text NOT NULL,
  step_order          integer NOT NULL,
  depends_on          text[] NOT NULL DEFAULT '{}',
  status              text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed',
                                        'skipped', 'cancelled', 'timeout')),
  agent_id            uuid,
  command_id          uuid,
  condition_evaluated boolean NOT NULL DEFAULT false,
  condition_result    boolean,
  skip_reason         text,
  findings_count      integer NOT NULL DEFAULT 0,
  output              jsonb NOT NULL DEFAULT '{}',
  -- attempt is the number of the latest attempt (0 until the step is first queued).
  attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  max_attempts        integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
  -- Set while a failed attempt waits for its retry; the retry's command is created then.
  retry_at            timestamptz,
  queued_at           timestamptz,
  started_at          timestamptz,
  completed_at        timestamptz,
  error_code          text,
  error_message       text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  UNIQUE (pipeline_run_id, step_key),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, pipeline_run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE SET NULL (agent_id)
);
CREATE INDEX step_runs_active_idx ON step_runs (pipeline_run_id) WHERE status IN ('queued', 'running');

CREATE TABLE commands (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- FIFO order among equal priorities (created_at ties within one transaction).
  seq               bigint GENERATED ALWAYS AS IDENTITY,
  tenant_id         uuid NOT NULL,
  -- NULL while unclaimed. A claim (agent_id set, status pending) must be acknowledged by
  -- claim_expires_at; after that the command is claimable again (by any matching agent).
  agent_id          uuid,
  pipeline_run_id   uuid,
  step_run_id       uuid,
  attempt           integer NOT NULL DEFAULT 1,
  type              text NOT NULL DEFAULT 'scan',
  priority          text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'critical')),
  priority_rank     smallint GENERATED ALWAYS AS (
                      CASE priority WHEN 'critical' THEN 3 WHEN 'high' THEN 2 WHEN 'normal' THEN 1 ELSE 0 END
                    ) STORED,
  status            text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'acknowledged', 'running', 'completed', 'failed',
                                      'cancelled', 'expired')),
  tool              text,
  capabilities      text[] NOT NULL DEFAULT '{}',
  timeout_seconds   integer NOT NULL CHECK (timeout_seconds > 0),
  payload           jsonb NOT NULL DEFAULT '{}',
  result            jsonb,
  error_code        text,
  error_message     text,
  claimed_at        timestamptz,
  claim_expires_at  timestamptz,
  acknowledged_at   timestamptz,
  started_at        timestamptz,
  completed_at      timestamptz,
  -- The deadline of the current phase: the queue deadline while pending, the step
  -- deadline once acknowledged/running. The command_expire job runs at this time.
  expires_at        timestamptz NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  CHECK (status <> 'pending' OR agent_id IS NULL OR claim_expires_at IS NOT NULL),
  CHECK (status NOT IN ('acknowledged', 'running') OR agent_id IS NOT NULL),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id),
  FOREIGN KEY (tenant_id, pipeline_run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, step_run_id) REFERENCES step_runs (tenant_id, id) ON DELETE CASCADE
);
-- Hot path: claimable commands of a tenant, best first (pending: unclaimed, or a claim
-- whose ack deadline passed).
CREATE INDEX commands_claimable_idx ON commands (tenant_id, priority_rank DESC, seq)
  WHERE status = 'pending';
-- Hot path: what an agent holds (free capacity, heartbeat, lost-agent recovery).
CREATE INDEX commands_held_idx ON commands (agent_id)
  WHERE status IN ('pending', 'acknowledged', 'running');
CREATE INDEX commands_tenant_created_idx ON commands (tenant_id, created_at DESC, id DESC);
CREATE INDEX commands_step_run_idx ON commands (step_run_id);
CREATE INDEX commands_run_idx ON commands (pipeline_run_id);
CREATE INDEX commands_agent_recent_idx ON commands (agent_id, updated_at DESC)
  WHERE status IN ('cancelled', 'expired', 'failed');

ALTER TABLE step_runs
  ADD FOREIGN KEY (tenant_id, command_id) REFERENCES commands (tenant_id, id) ON DELETE SET NULL (command_id);

-- Append-only record of every run and step transition, written by triggers in the
-- transaction that made the transition (see below). No foreign keys: the rows are written
-- by triggers from rows that exist, and a key check per event would lock the tenant's and
-- the run's rows several times per step (the hottest rows there are).
CREATE TABLE events (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       uuid NOT NULL,
  pipeline_run_id uuid,
  step_run_id     uuid,
  type            text NOT NULL CHECK (type IN (
                    'pipeline.run.started', 'pipeline.run.completed', 'pipeline.run.failed',
                    'pipeline.run.cancelled', 'pipeline.run.timeout',
                    'pipeline.step.queued', 'pipeline.step.started', 'pipeline.step.completed',
                    'pipeline.step.failed', 'pipeline.step.skipped', 'pipeline.step.retrying',
                    'pipeline.step.cancelled', 'pipeline.step.timeout')),
  data            jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_run_idx ON events (pipeline_run_id, id);
CREATE INDEX events_tenant_idx ON events (tenant_id, id);

-- Asks for a run to be advanced. The job_key coalesces bursts (many completions of one run,
-- one advance). When a worker is locking the keyed job at that very moment, graphile-worker's
-- add_job neither updates it nor adds a job and returns no id (graphile/worker#580); the
-- advance already running may have read the run before this transaction commits, so an
-- unkeyed job is added instead. Advancing is idempotent: an extra job costs a no-op.
CREATE FUNCTION request_run_advance(p_run_id uuid, p_run_at timestamptz DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF (graphile_worker.add_job('run_advance', json_build_object('run_id', p_run_id),
        run_at => p_run_at, job_key => 'run_advance:' || p_run_id)).id IS NULL THEN
    PERFORM graphile_worker.add_job('run_advance', json_build_object('run_id', p_run_id), run_at => p_run_at);
  END IF;
END $$;

-- When a run's expiry timer (the command_expire job, one per run) must fire: the earliest
-- moment an in-flight command of the run could pass its deadline. A pending command counts
-- at most its step timeout from now, because it may be acknowledged at any moment and
-- acknowledging does not touch the timer; a timer that fires early just re-arms.
CREATE FUNCTION run_next_deadline(p_run_id uuid) RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT min(CASE WHEN c.status = 'pending'
                  THEN least(c.expires_at, now() + make_interval(secs => c.timeout_seconds))
                  ELSE c.expires_at END)
  FROM commands c
  WHERE c.pipeline_run_id = p_run_id AND c.status IN ('pending', 'acknowledged', 'running')
$$;

-- A run's step counters, from its step runs (failed counts timed-out steps too; findings
-- count completed steps only).
CREATE FUNCTION run_step_counts(p_run_id uuid)
RETURNS TABLE (total integer, completed integer, failed integer, skipped integer, findings integer)
LANGUAGE sql STABLE AS $$
  SELECT count(*)::int,
         count(*) FILTER (WHERE status = 'completed')::int,
         count(*) FILTER (WHERE status IN ('failed', 'timeout'))::int,
         count(*) FILTER (WHERE status = 'skipped')::int,
         coalesce(sum(findings_count) FILTER (WHERE status = 'completed'), 0)::int
  FROM step_runs WHERE pipeline_run_id = p_run_id
$$;

-- Run transitions → events. pending → running is 'started'; a terminal status is named as is.
CREATE FUNCTION pipeline_runs_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO events (tenant_id, pipeline_run_id, type, data)
  VALUES (NEW.tenant_id, NEW.id,
          CASE NEW.status WHEN 'running' THEN 'pipeline.run.started' ELSE 'pipeline.run.' || NEW.status END,
          jsonb_build_object(
            'pipeline_run_id', NEW.id, 'pipeline_id', NEW.pipeline_id,
            'pipeline_version', NEW.pipeline_version, 'asset_id', NEW.asset_id,
            'status', NEW.status, 'previous_status', OLD.status,
            'total_steps', NEW.total_steps, 'completed_steps', NEW.completed_steps,
            'failed_steps', NEW.failed_steps, 'skipped_steps', NEW.skipped_steps,
            'total_findings', NEW.total_findings, 'error_message', NEW.error_message,
            'duration_seconds', extract(epoch FROM NEW.completed_at - NEW.started_at)));
  RETURN NULL;
END $$;

CREATE TRIGGER pipeline_runs_event AFTER UPDATE OF status ON pipeline_runs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status <> 'pending')
  EXECUTE FUNCTION pipeline_runs_record_event();

-- Step transitions → events. A failed or timed-out attempt that will be retried goes back
-- to 'queued' with retry_at set: that is 'retrying'. Creating the retry's command keeps
-- the status 'queued' and records nothing new.
CREATE FUNCTION step_runs_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  event_type text;
BEGIN
  IF NEW.retry_at IS NOT NULL AND OLD.retry_at IS NULL THEN
    event_type := 'pipeline.step.retrying';
  ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
    event_type := CASE NEW.status WHEN 'running' THEN 'pipeline.step.started'
                                  ELSE 'pipeline.step.' || NEW.status END;
  ELSE
    RETURN NULL;
  END IF;
  IF NEW.status = 'pending' THEN
    RETURN NULL; -- a manual retry resets steps to pending; the run's events tell that story
  END IF;
  INSERT INTO events (tenant_id, pipeline_run_id, step_run_id, type, data)
  VALUES (NEW.tenant_id, NEW.pipeline_run_id, NEW.id, event_type,
          jsonb_build_object(
            'pipeline_run_id', NEW.pipeline_run_id, 'step_run_id', NEW.id,
            'step_key', NEW.step_key, 'step_name', NEW.name, 'status', NEW.status,
            'previous_status', OLD.status, 'attempt', NEW.attempt,
            'max_attempts', NEW.max_attempts, 'agent_id', NEW.agent_id,
            'command_id', NEW.command_id, 'findings_count', NEW.findings_count,
            'skip_reason', NEW.skip_reason, 'error_code', NEW.error_code,
            'error_message', NEW.error_message, 'retry_at', NEW.retry_at,
            'duration_seconds', extract(epoch FROM NEW.completed_at - NEW.started_at)));
  RETURN NULL;
END $$;

CREATE TRIGGER step_runs_event AFTER UPDATE ON step_runs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR (OLD.retry_at IS NULL AND NEW.retry_at IS NOT NULL))
  EXECUTE FUNCTION step_runs_record_event();

-- A command that becomes claimable wakes one long-polling agent of its tenant that can run
-- it: the payload carries what the listener needs to choose (tenant, tool, capabilities)
-- and the command id, which also keeps PostgreSQL from folding several commands of one
-- transaction into one notification. Delivered at commit, so it never announces a row
-- that rolled back.
CREATE FUNCTION commands_notify_claimable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('scanflow_commands', json_build_object(
    't', NEW.tenant_id, 'c', NEW.id, 'tool', NEW.tool, 'caps', NEW.capabilities)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER commands_claimable_insert AFTER INSERT ON commands
  FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.agent_id IS NULL)
  EXECUTE FUNCTION commands_notify_claimable();
CREATE TRIGGER commands_claimable_update AFTER UPDATE OF agent_id, status ON commands
  FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.agent_id IS NULL AND OLD.agent_id IS NOT NULL)
  EXECUTE FUNCTION commands_notify_claimable();
