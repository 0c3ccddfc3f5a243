-- History at scale (issue 13): a database with months of finished runs, commands, events,
-- sightings and output must answer the hot paths as fast as an empty one, and history is
-- kept bounded by retention (src/progression/retention.ts, tasks/retention.ts).
--
-- On a large existing database, build these indexes first without blocking writes
-- (CREATE INDEX CONCURRENTLY … with the same names and definitions): IF NOT EXISTS then
-- finds them and this migration only drops the indexes they replace.

-- The run list (GET /api/v1/pipeline-runs, src/store/lists.ts) pages newest first by
-- (created_at, id). Each filter gets an index in that order, so a filtered first page reads
-- 50 index entries whatever the history: a single-column index made the planner read every
-- run of a pipeline, asset or scan and sort them, and a status no run has walked the whole
-- tenant (115 ms on 1,000,000 runs). The single-column indexes they replace served only
-- equality (and the foreign keys' actions, which these serve as well).
CREATE INDEX IF NOT EXISTS pipeline_runs_tenant_status_idx ON pipeline_runs (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS pipeline_runs_pipeline_created_idx ON pipeline_runs (pipeline_id, created_at DESC, id DESC);
DROP INDEX IF EXISTS pipeline_runs_pipeline_idx;
CREATE INDEX IF NOT EXISTS pipeline_runs_asset_created_idx ON pipeline_runs (asset_id, created_at DESC, id DESC) WHERE asset_id IS NOT NULL;
DROP INDEX IF EXISTS pipeline_runs_asset_idx;
CREATE INDEX IF NOT EXISTS pipeline_runs_scan_created_idx ON pipeline_runs (scan_id, created_at DESC, id DESC) WHERE scan_id IS NOT NULL;
DROP INDEX IF EXISTS pipeline_runs_scan_idx;

-- The command list (GET /api/v1/commands), same order. commands is the hottest table (four
-- updates per command, none of them HOT), so it gets only what the filters cannot do
-- without: a status that is rare (failed, cancelled, expired) from a partial index written
-- once, when the command ends that way; completed (most commands) walks the tenant's index;
-- the live statuses are served by commands_claimable_idx and commands_held_idx, which hold
-- only what is in flight. An agent's commands, newest first (the index is written by the
-- claim and each later update: about 40 µs of PostgreSQL per command).
CREATE INDEX IF NOT EXISTS commands_tenant_status_idx ON commands (tenant_id, status, created_at DESC, id DESC)
  WHERE status IN ('failed', 'cancelled', 'expired');
CREATE INDEX IF NOT EXISTS commands_agent_created_idx ON commands (agent_id, created_at DESC, id DESC) WHERE agent_id IS NOT NULL;

-- Deleting a command (retention) makes its foreign keys look for rows that reference it:
-- step_runs.command_id (ON DELETE SET NULL) had no index, so each deleted command read all
-- of step_runs. ingests.command_id has ingests_command_idx, command_outputs its primary key.
CREATE INDEX IF NOT EXISTS step_runs_command_idx ON step_runs (command_id) WHERE command_id IS NOT NULL;

-- What retention removed and when (src/progression/retention.ts, sql/retention.sql): one
-- row per kind of history and retention pass that removed something. A pass deletes in
-- batches of a few thousand rows, each its own short transaction, and every batch adds to
-- its pass's row in the statement that deleted. Findings and their sightings are never
-- removed, nor are runs and step runs. A DBA reads it in SQL:
--   SELECT kind, rows, batches, oldest_at, newest_at, cutoff, started_at, finished_at
--   FROM retention_log ORDER BY id DESC;
CREATE TABLE retention_log (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The pass (one execution of the retention task).
  pass_id     uuid NOT NULL,
  -- events: run, step, scan, agent and channel events (a finding's events stay with it);
  -- output: chunks of step output (the command's output head stays, marked purged);
  -- commands: finished commands, with their output heads (their step runs and ingests stay,
  -- without the command); deliveries: finished deliveries of channels, with their attempts.
  kind        text NOT NULL CHECK (kind IN ('events', 'output', 'commands', 'deliveries')),
  -- Rows deleted (output: chunks), in how many batches, and for output the bytes.
  rows        bigint NOT NULL DEFAULT 0,
  batches     integer NOT NULL DEFAULT 0,
  bytes       bigint,
  -- The removed rows' own times, the ones the cutoff applies to: an event's created_at, the
  -- completed_at of a command (and of the command whose output went), a delivery's finished_at.
  oldest_at   timestamptz,
  newest_at   timestamptz,
  -- Rows older than this were removed (now() minus the kind's setting when the pass began).
  cutoff      timestamptz NOT NULL,
  -- Events are walked in id order: every event up to scanned_to is older than the cutoff and
  -- was removed or is kept for good (a finding's), so the next pass starts after it rather
  -- than reading again what it keeps; last_id is the largest id removed (the event feed
  -- answers 410 for a cursor at or below it that no longer exists).
  scanned_to  bigint,
  last_id     bigint,
  started_at  timestamptz NOT NULL,
  finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (pass_id, kind)
);
CREATE INDEX retention_log_kind_idx ON retention_log (kind, id DESC);

-- New runs, step runs and commands get ids that follow time (UUID version 7: 48 bits of Unix
-- milliseconds, then random bits), so every index keyed by one of them (their primary keys,
-- a step run's run, a command's run and step run, a run's events and sightings, a command's
-- output) takes new entries where the latest went, not on a random page among all those the
-- history filled. With random ids (version 4) and 200,000 runs of history, each handoff of
-- npm run bench -- scale-history (a chain run: 2 commands and their transitions) read 24
-- pages from outside shared buffers (3 on an empty database) and, after a checkpoint, wrote
-- 22.7 full-page images to the WAL (179 kB of WAL against 35 kB): a cost that grows with the
-- history. Existing ids stay as they are. uuidv7() is PostgreSQL 18's; older servers get the
-- same layout from SQL.
DO $$
BEGIN
  IF current_setting('server_version_num')::int >= 180000 THEN
    CREATE FUNCTION time_ordered_uuid() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS 'SELECT uuidv7()';
  ELSE
    CREATE FUNCTION time_ordered_uuid() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $f$
      SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
               PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
             52, 1), 53, 1), 'hex')::uuid
    $f$;
  END IF;
END $$;
ALTER TABLE pipeline_runs ALTER COLUMN id SET DEFAULT time_ordered_uuid();
ALTER TABLE step_runs ALTER COLUMN id SET DEFAULT time_ordered_uuid();
ALTER TABLE commands ALTER COLUMN id SET DEFAULT time_ordered_uuid();
