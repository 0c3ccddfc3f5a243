-- Findings: the ingest's writes, each one statement for a whole batch of findings whatever
-- its size (unnest of one array per column), and the fingerprint check. Their events carry
-- finding_id, and the run, step and ingest in their data only: a run's own event list stays
-- its progression (a scan's 50,000 findings would bury its step transitions). The tenant's findings
-- API reads them (sql/findings_api.sql). Lifecycle: migrations/0005_findings.sql, README.

-- name: UpsertFindings :one
-- A batch of one ingest ($2): each finding created, or seen again by (tenant, asset,
-- fingerprint): last_seen_at, occurrences + 1, the latest run/step/ingest/report and the
-- tool's latest data; a resolved one is reopened (status_ingest_id says by this ingest), a
-- triaged one keeps its status. Every one gets a sighting (new when it created the finding),
-- each creation and reopening an event, and the ingest's counters add up. The batch comes
-- deduplicated and sorted by identity, and rows are inserted in that order, so two ingests
-- of one report take their row locks in the same order. No lookup before the insert: the
-- conflict check is the arbiter index's, whatever the planner's statistics say, and what the
-- update saw is the row's latest version (a concurrent reopen is counted once).
WITH input AS (
  SELECT *
  FROM unnest($9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
              $16::text[], $17::text[], $18::jsonb[], $19::jsonb[], $20::jsonb[], $21::jsonb[])
       WITH ORDINALITY AS i(asset_id, fingerprint, tool_fingerprint, type, tool, rule_id, title, description, severity,
                           location, vulnerability, refs, properties, ord)
), upserted AS (
  INSERT INTO findings AS f (tenant_id, asset_id, fingerprint, tool_fingerprint, type, tool, rule_id, title, description,
                             severity, location, vulnerability, "references", properties, first_run_id, last_run_id,
                             last_step_key, last_ingest_id, last_report_id)
  SELECT $1, i.asset_id, i.fingerprint, i.tool_fingerprint, i.type, i.tool, i.rule_id, i.title, i.description,
         i.severity, i.location, i.vulnerability, i.refs, i.properties, $3, $3, $7, $2, $8
  FROM input i
  ORDER BY i.ord
  ON CONFLICT (tenant_id, asset_id, fingerprint) DO UPDATE SET
    tool_fingerprint = coalesce(EXCLUDED.tool_fingerprint, f.tool_fingerprint),
    type = EXCLUDED.type, tool = EXCLUDED.tool, rule_id = EXCLUDED.rule_id, title = EXCLUDED.title,
    description = EXCLUDED.description, severity = EXCLUDED.severity, location = EXCLUDED.location,
    vulnerability = EXCLUDED.vulnerability, "references" = EXCLUDED."references", properties = EXCLUDED.properties,
    occurrences = f.occurrences + 1,
    last_seen_at = now(),
    last_run_id = coalesce(EXCLUDED.last_run_id, f.last_run_id),
    last_step_key = CASE WHEN EXCLUDED.last_run_id IS NULL THEN f.last_step_key ELSE EXCLUDED.last_step_key END,
    last_ingest_id = EXCLUDED.last_ingest_id,
    last_report_id = EXCLUDED.last_report_id,
    status = CASE WHEN f.status = 'resolved' THEN 'open' ELSE f.status END,
    resolution = CASE WHEN f.status = 'resolved' THEN NULL ELSE f.resolution END,
    resolved_at = CASE WHEN f.status = 'resolved' THEN NULL ELSE f.resolved_at END,
    status_ingest_id = CASE WHEN f.status = 'resolved' THEN EXCLUDED.last_ingest_id ELSE f.status_ingest_id END,
    updated_at = now()
  RETURNING f.id, f.asset_id, f.fingerprint, f.tool, f.rule_id, f.title, f.severity, f.location,
            (f.xmax = 0) AS created,
            (f.xmax <> 0 AND f.status = 'open' AND f.status_ingest_id IS NOT DISTINCT FROM $2::uuid) AS reopened
), sighted AS (
  INSERT INTO finding_sightings (tenant_id, finding_id, ingest_id, pipeline_run_id, step_run_id, command_id, agent_scan_id,
                                 new, location)
  SELECT $1, u.id, $2, $3, $4, $5, $6, u.created, u.location FROM upserted u
), evented AS (
  INSERT INTO events (tenant_id, finding_id, type, data)
  SELECT $1, u.id, CASE WHEN u.created THEN 'finding.created' ELSE 'finding.reopened' END,
         jsonb_build_object('finding_id', u.id, 'asset_id', u.asset_id, 'fingerprint', u.fingerprint, 'tool', u.tool,
                            'rule_id', u.rule_id, 'title', u.title, 'severity', u.severity, 'status', 'open',
                            'previous_status', CASE WHEN u.created THEN NULL ELSE 'resolved' END,
                            'ingest_id', $2::uuid, 'command_id', $5::uuid,
                            'pipeline_run_id', $3::uuid, 'step_run_id', $4::uuid, 'agent_scan_id', $6::uuid)
  FROM upserted u
  WHERE u.created OR u.reopened
), counts AS (
  SELECT count(*) FILTER (WHERE created)::int AS created,
         count(*) FILTER (WHERE reopened)::int AS reopened,
         count(*) FILTER (WHERE NOT created AND NOT reopened)::int AS updated
  FROM upserted
), counted AS (
  UPDATE ingests SET findings_created = findings_created + counts.created,
                     findings_updated = findings_updated + counts.updated,
                     findings_reopened = findings_reopened + counts.reopened
  FROM counts
  WHERE ingests.id = $2
)
SELECT created, updated, reopened FROM counts;

-- name: ResolveUnseenFindings :one
-- Auto-resolve after a full-coverage report (key $2; its ingests $5): in each (tool, asset)
-- it covered ($3, $4), the open and in-progress findings it did not see are resolved
-- (resolution auto_fixed), each with an event; the count goes to the ingest ($6). "Did not
-- see": last seen by another report, and no sighting by one of its ingests (a report seen
-- by another since, between two chunks of this one, is still this one's).
WITH scope AS (
  SELECT DISTINCT s.tool, s.asset_id FROM unnest($3::text[], $4::uuid[]) AS s(tool, asset_id)
), candidates AS (
  SELECT f.id, f.status
  FROM scope s
  JOIN findings f ON f.tenant_id = $1 AND f.asset_id = s.asset_id AND f.tool = s.tool AND f.status IN ('open', 'in_progress')
  WHERE f.last_report_id IS DISTINCT FROM $2
    AND NOT EXISTS (SELECT 1 FROM finding_sightings fs WHERE fs.finding_id = f.id AND fs.ingest_id = ANY ($5::uuid[]))
  ORDER BY f.asset_id, f.fingerprint
  FOR UPDATE OF f
), resolved AS (
  UPDATE findings f
  SET status = 'resolved', resolution = 'auto_fixed', resolved_at = now(), status_ingest_id = $6, updated_at = now()
  FROM candidates c
  WHERE f.id = c.id AND f.status IN ('open', 'in_progress')
  RETURNING f.id, f.asset_id, f.fingerprint, f.tool, f.rule_id, f.title, f.severity, c.status AS previous_status
), evented AS (
  INSERT INTO events (tenant_id, finding_id, type, data)
  SELECT $1, r.id, 'finding.resolved',
         jsonb_build_object('finding_id', r.id, 'asset_id', r.asset_id, 'fingerprint', r.fingerprint, 'tool', r.tool,
                            'rule_id', r.rule_id, 'title', r.title, 'severity', r.severity, 'status', 'resolved',
                            'previous_status', r.previous_status, 'resolution', 'auto_fixed', 'ingest_id', $6::uuid,
                            'pipeline_run_id', $7::uuid, 'step_run_id', $8::uuid)
  FROM resolved r
), counted AS (
  UPDATE ingests SET findings_resolved = findings_resolved + (SELECT count(*) FROM resolved)::int WHERE id = $6
)
SELECT count(*)::int AS resolved FROM resolved;

-- name: ExistingFingerprints :many
-- Of the strings sent ($2, at most 10,000), those a finding of the tenant has as its
-- fingerprint or as the tool's own fingerprint: a probe of findings_fingerprint_idx per
-- string, and of findings_tool_fingerprint_idx for those not found. Scalar subqueries, not
-- EXISTS: the planner may turn an EXISTS into a hash of every finding of the tenant, and did
-- right after a large ingest, its statistics not yet updated (two scans of 50,000 findings,
-- 230-530 ms; these probes: 70 ms, npm run bench -- findings).
SELECT x.fp
FROM unnest($2::text[]) AS x(fp)
WHERE coalesce((SELECT true FROM findings f WHERE f.tenant_id = $1 AND f.fingerprint = x.fp LIMIT 1),
               (SELECT true FROM findings f WHERE f.tenant_id = $1 AND f.tool_fingerprint = x.fp LIMIT 1),
               false);

-- name: RequestFindingsAnalyze :exec
-- Asks for the findings tables' statistics to be refreshed (tasks/findings_analyze.ts) after
-- an ingest large enough to change what the planner should know: a tenant's first 50,000
-- findings, say, are 5 % of a million-row table, under autovacuum's 10 % threshold, and
-- until an ANALYZE the planner misjudges that tenant's pages (measured: 35-50 ms instead of
-- 0.2-0.8 ms). One job for every ingest of the next few seconds (job_key, run_at kept).
SELECT graphile_worker.add_job('findings_analyze', '{}'::json, run_at := now() + interval '5 seconds',
                               job_key := 'findings_analyze', job_key_mode := 'preserve_run_at');

-- name: AnalyzeFindings :exec
-- The findings tables' statistics (a sample of each: a bounded cost whatever their size).
ANALYZE findings, finding_sightings, finding_texts;
