-- Findings (API.md Part 2 "Findings ingestion", "Findings (tenant)"): one row per distinct
-- finding of an asset, deduplicated by (tenant, asset, fingerprint) and kept true across
-- scans; every sighting recorded; every change an event in the same transaction. Ingests
-- are set-based (unnest arrays, ON CONFLICT), never a statement per finding.

-- An asset is identified in its tenant by type and value: reports name assets that way and
-- ingest creates or updates them by it, so two rows must never share it.
CREATE UNIQUE INDEX assets_tenant_type_value_key ON assets (tenant_id, type, value) WHERE value IS NOT NULL;

-- Agent scan sessions (seed 002 "POST /api/v1/agent/scans"): an agent registers a scan it runs
-- on its own, ingests into it, and closes it.
CREATE TABLE agent_scans (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent_id       uuid,
  tool           text NOT NULL CHECK (length(tool) BETWEEN 1 AND 255),
  name           text,
  asset_id       uuid,
  branch         text,
  commit_sha     text,
  status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
  findings_count integer,
  error_message  text,
  started_at     timestamptz NOT NULL DEFAULT now(),
  completed_at   timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE SET NULL (agent_id),
  FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id) ON DELETE SET NULL (asset_id)
);
CREATE INDEX agent_scans_tenant_created_idx ON agent_scans (tenant_id, created_at DESC, id DESC);

-- One row per ingest: a whole report, a SARIF log, leaked credentials, or one chunk of a
-- chunked report; what it was tied to and what it did (the answer is built from it). A
-- chunked report's chunks share report_id, and each is one row: a replayed chunk finds its
-- row (UNIQUE) and is answered from it without ingesting again. Chunks are ingested in index
-- order (a chunk may use an asset sent in an earlier one): one that arrives before the chunks
-- below it waits as `pending` with its payload until they have been ingested.
CREATE TABLE ingests (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  agent_id          uuid,
  kind              text NOT NULL CHECK (kind IN ('report', 'sarif', 'chunk', 'credentials')),
  status            text NOT NULL DEFAULT 'ingesting' CHECK (status IN ('pending', 'ingesting', 'ingested')),
  -- The report's own id (metadata.id, or a chunked upload's report_id), when it has one.
  report_id         text,
  chunk_index       integer CHECK (chunk_index >= 0),
  total_chunks      integer CHECK (total_chunks >= 1),
  -- What findings.last_report_id is set to: this ingest's id, or for a chunked report one key
  -- for all its chunks. A full-coverage report resolves what it did not see.
  report_key        text,
  tool              text,
  coverage_type     text NOT NULL DEFAULT 'partial' CHECK (coverage_type IN ('full', 'incremental', 'partial')),
  branch            text,
  is_default_branch boolean,
  command_id        uuid,
  pipeline_run_id   uuid,
  step_run_id       uuid,
  step_key          text,
  agent_scan_id     uuid,
  -- Where its findings that name no asset went (X-Asset-Id, the command's target, the
  -- session's asset); a chunked report's later chunks use the first chunk's.
  default_asset_id  uuid,
  -- The (tool, asset) pairs the ingest covered: a full-coverage report resolves, in each, the
  -- open findings it did not contain.
  scope_tools       text[] NOT NULL DEFAULT '{}',
  scope_asset_ids   uuid[] NOT NULL DEFAULT '{}' CHECK (cardinality(scope_asset_ids) = cardinality(scope_tools)),
  -- A chunk's report assets by their reference in the report: later chunks' findings may use them.
  asset_refs        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(asset_refs) = 'object'),
  -- A chunk waiting for the chunks below it: its data as received (base64-decoded), until ingested.
  payload           bytea,
  compression       text CHECK (compression IN ('none', 'gzip', 'zstd')),
  assets_created    integer NOT NULL DEFAULT 0,
  assets_updated    integer NOT NULL DEFAULT 0,
  findings_created  integer NOT NULL DEFAULT 0,
  findings_updated  integer NOT NULL DEFAULT 0,
  findings_reopened integer NOT NULL DEFAULT 0,
  findings_resolved integer NOT NULL DEFAULT 0,
  findings_skipped  integer NOT NULL DEFAULT 0,
  -- What could not be stored, each with its path: [{path, message}].
  problems          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(problems) = 'array'),
  -- The report's fields we do not read (its metadata's included).
  properties        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
  created_at        timestamptz NOT NULL DEFAULT now(),
  ingested_at       timestamptz,
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE SET NULL (agent_id),
  FOREIGN KEY (tenant_id, command_id) REFERENCES commands (tenant_id, id) ON DELETE SET NULL (command_id),
  FOREIGN KEY (tenant_id, pipeline_run_id) REFERENCES pipeline_runs (tenant_id, id) ON DELETE SET NULL (pipeline_run_id),
  FOREIGN KEY (tenant_id, agent_scan_id) REFERENCES agent_scans (tenant_id, id) ON DELETE SET NULL (agent_scan_id),
  CHECK (kind <> 'chunk' OR (report_id IS NOT NULL AND chunk_index IS NOT NULL AND total_chunks IS NOT NULL
                             AND chunk_index < total_chunks)),
  CHECK (status <> 'pending' OR (kind = 'chunk' AND payload IS NOT NULL))
);
CREATE UNIQUE INDEX ingests_chunk_key ON ingests (tenant_id, report_id, chunk_index) WHERE kind = 'chunk';
CREATE INDEX ingests_tenant_created_idx ON ingests (tenant_id, created_at DESC);
CREATE INDEX ingests_command_idx ON ingests (command_id) WHERE command_id IS NOT NULL;

CREATE TABLE findings (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  -- NULL only for findings that need no asset (type credential_leak).
  asset_id           uuid,
  -- Our identity of the finding (API.md "Identity"): never contains line numbers.
  fingerprint        text NOT NULL CHECK (length(fingerprint) BETWEEN 1 AND 512),
  -- The tool's own fingerprint when it gave one (SARIF fingerprints, report fingerprint):
  -- /ingest/check answers for it as well as for fingerprint.
  tool_fingerprint   text,
  type               text NOT NULL CHECK (type IN ('vulnerability', 'secret', 'misconfiguration', 'compliance',
                                                   'web3', 'credential_leak')),
  tool               text NOT NULL,
  rule_id            text,
  title              text NOT NULL,
  description        text,
  severity           text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low', 'info')),
  severity_rank      smallint GENERATED ALWAYS AS (
                       CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2
                                     WHEN 'low' THEN 1 ELSE 0 END) STORED,
  status             text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed')),
  -- Why it is resolved: auto_fixed (a full-coverage report no longer contained it) or what
  -- the person triaging said.
  resolution         text,
  location           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(location) = 'object'),
  vulnerability      jsonb,
  "references"       jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof("references") = 'array'),
  properties         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
  occurrences        integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
  first_seen_at      timestamptz NOT NULL DEFAULT now(),
  last_seen_at       timestamptz NOT NULL DEFAULT now(),
  resolved_at        timestamptz,
  first_run_id       uuid,
  last_run_id        uuid,
  last_step_key      text,
  last_ingest_id     uuid,
  -- The ingest that last changed the status (reopened it, or resolved it as auto_fixed); what
  -- a person's triage set is theirs. An ingest tells the findings it reopened by it.
  status_ingest_id   uuid,
  -- The report (its id, or the ingest's id) that saw it last: a full-coverage report resolves
  -- the open findings of its tool and assets that it did not see.
  last_report_id     text,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, asset_id) REFERENCES assets (tenant_id, id) ON DELETE CASCADE,
  CHECK (asset_id IS NOT NULL OR type = 'credential_leak')
);
-- The identity, enforced by the database (two agents ingesting one finding at once make one row).
CREATE UNIQUE INDEX findings_identity_key ON findings (tenant_id, asset_id, fingerprint) NULLS NOT DISTINCT;
CREATE INDEX findings_tool_fingerprint_idx ON findings (tenant_id, tool_fingerprint) WHERE tool_fingerprint IS NOT NULL;
CREATE INDEX findings_fingerprint_idx ON findings (tenant_id, fingerprint);
-- Auto-resolve: the open findings of one tool and asset.
CREATE INDEX findings_resolve_idx ON findings (tenant_id, asset_id, tool) WHERE status IN ('open', 'in_progress');

-- Every sighting of a finding: by which ingest, run, step and command; `new` when it created
-- the finding. A run's findings (and its new_findings) come from here.
CREATE TABLE finding_sightings (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       uuid NOT NULL,
  finding_id      uuid NOT NULL,
  ingest_id       uuid NOT NULL,
  pipeline_run_id uuid,
  step_run_id     uuid,
  command_id      uuid,
  agent_scan_id   uuid,
  new             boolean NOT NULL DEFAULT false,
  -- Where it was seen this time (lines move; the identity does not).
  location        jsonb NOT NULL DEFAULT '{}',
  seen_at         timestamptz NOT NULL DEFAULT now(),
  -- By id alone, unlike the other tenant-owned references: a sighting is only ever written
  -- from the finding its statement just upserted (same tenant), and its key check is then one
  -- probe of the primary key. Checked as (tenant_id, id), the check's cached plan chose a
  -- (tenant_id, …) index of findings when the statistics were stale (a fresh database, the
  -- first large scan) and read the tenant's findings for every sighting: measured 1 ms per
  -- sighting, 6 s per batch of 5,000, against 20 ms for the batch by primary key.
  FOREIGN KEY (finding_id) REFERENCES findings (id) ON DELETE CASCADE
);
CREATE INDEX finding_sightings_finding_idx ON finding_sightings (finding_id, id);
CREATE INDEX finding_sightings_run_idx ON finding_sightings (pipeline_run_id, finding_id) WHERE pipeline_run_id IS NOT NULL;
-- A step's findings_count, when its agent gives none: the distinct findings of its command.
CREATE INDEX finding_sightings_command_idx ON finding_sightings (command_id, finding_id) WHERE command_id IS NOT NULL;
-- A run's new_findings: its sightings that created a finding.
CREATE INDEX finding_sightings_run_new_idx ON finding_sightings (pipeline_run_id) WHERE new AND pipeline_run_id IS NOT NULL;

-- The findings a run saw first (its sightings with new), next to total_findings (the sum of its
-- completed steps' findings_count). Kept by the run's counters: run_step_counts() gains a
-- column, read by SettleRun and FinishRun like the others.
ALTER TABLE pipeline_runs ADD COLUMN new_findings integer NOT NULL DEFAULT 0;

DROP FUNCTION run_step_counts(uuid);
CREATE FUNCTION run_step_counts(p_run_id uuid)
RETURNS TABLE (total integer, completed integer, failed integer, skipped integer, findings integer, new_findings integer)
LANGUAGE sql STABLE AS $$
  SELECT count(*)::int,
         count(*) FILTER (WHERE status = 'completed')::int,
         count(*) FILTER (WHERE status IN ('failed', 'timeout'))::int,
         count(*) FILTER (WHERE status = 'skipped')::int,
         coalesce(sum(findings_count) FILTER (WHERE status = 'completed'), 0)::int,
         (SELECT count(*)::int FROM finding_sightings WHERE pipeline_run_id = p_run_id AND new)
  FROM step_runs WHERE pipeline_run_id = p_run_id
$$;

-- Finding events live in the same log as run and step events.
ALTER TABLE events ADD COLUMN finding_id uuid;
CREATE INDEX events_finding_idx ON events (finding_id, id) WHERE finding_id IS NOT NULL;
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN (
  'pipeline.run.started', 'pipeline.run.completed', 'pipeline.run.failed',
  'pipeline.run.cancelled', 'pipeline.run.timeout',
  'pipeline.step.queued', 'pipeline.step.started', 'pipeline.step.completed',
  'pipeline.step.failed', 'pipeline.step.skipped', 'pipeline.step.retrying',
  'pipeline.step.cancelled', 'pipeline.step.timeout',
  'finding.created', 'finding.reopened', 'finding.resolved', 'finding.status_changed'));
