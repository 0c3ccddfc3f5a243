-- Findings for the tenant API (API.md Part 2 "Findings (tenant)"): the list, one finding with
-- its history, triage, summary counts and a run's findings. Ingest's queries are findings.sql.
--
-- The list and the summary take any combination of a dozen filters. Rather than one
-- statement with `($n IS NULL OR …)` for each (issue 13: ListRuns became a parallel seq
-- scan under a generic plan that expected 2 rows), a statement is composed per combination
-- from the `:fragment` entries below (src/store/findings-api.ts): a head, one fragment per
-- filter given, a tail. A fragment numbers its own parameters from $1; composing renumbers
-- them. Values are always bound. Composed statements run unprepared, so each is planned with
-- its values: findings are skewed (most open, few suppressed, a tool nobody else uses), and
-- a custom plan sees that where a generic one cannot. Measured on 120,000 findings (one
-- tenant 72,000): `status = $2 ORDER BY first_seen_at DESC` for a status none of the
-- tenant's findings has took 102 ms under the generic plan (it walks the whole tenant in
-- sort order) and 0.08 ms under the custom one (findings_tenant_status_idx, nothing to sort).

-- name: FindingListHead :fragment
-- A page of a tenant's findings (every column, and the sort keys as PostgreSQL prints them,
-- microseconds intact, for the cursor). Filters and a FindingListOrder… tail follow.
SELECT f.*, f.first_seen_at::text AS first_seen_key, f.last_seen_at::text AS last_seen_key
FROM findings f
WHERE f.tenant_id = $1

-- name: FindingWhereStatus :fragment
-- In this status.
AND f.status = $1

-- name: FindingWhereStatusIn :fragment
-- In one of these statuses.
AND f.status = ANY ($1::text[])

-- name: FindingWhereSeverity :fragment
-- Of this severity (its rank: critical 4 … info 0, so the severity index serves it).
AND f.severity_rank = $1::smallint

-- name: FindingWhereSeverityIn :fragment
-- Of one of these severities (ranks).
AND f.severity_rank = ANY ($1::smallint[])

-- name: FindingWhereMinSeverity :fragment
-- At least this severity (rank).
AND f.severity_rank >= $1::smallint

-- name: FindingWhereType :fragment
-- Of this type.
AND f.type = $1

-- name: FindingWhereTypeIn :fragment
-- Of one of these types.
AND f.type = ANY ($1::text[])

-- name: FindingWhereTool :fragment
-- Reported by this tool.
AND f.tool = $1

-- name: FindingWhereRule :fragment
-- Of this rule.
AND f.rule_id = $1

-- name: FindingWhereAsset :fragment
-- Of this asset.
AND f.asset_id = $1::uuid

-- name: FindingWhereRun :fragment
-- Seen by this pipeline run (any of its sightings).
AND f.id IN (SELECT s.finding_id FROM finding_sightings s WHERE s.pipeline_run_id = $1::uuid)

-- name: FindingWhereScan :fragment
-- Seen under this scan: in the agent scan session of that id, or by a run of the scheduled
-- scan of that id (ids are UUIDs: one never names both).
AND f.id IN (SELECT s.finding_id FROM finding_sightings s WHERE s.agent_scan_id = $1::uuid
             UNION ALL
             SELECT s.finding_id FROM pipeline_runs r JOIN finding_sightings s ON s.pipeline_run_id = r.id
             WHERE r.scan_id = $1::uuid)

-- name: FindingWhereText :fragment
-- Title or path contains the text: $1 is an ILIKE pattern ('%' || escaped text || '%'),
-- matched against finding_texts (title, newline, path) through its trigram index.
AND f.id IN (SELECT t.finding_id FROM finding_texts t WHERE t.text ILIKE $1)

-- name: FindingWhereFirstSeenAfter :fragment
-- First seen after this instant.
AND f.first_seen_at > $1::timestamptz

-- name: FindingAfterFirstSeen :fragment
-- The keyset of sort=first_seen: after the cursor's row.
AND (f.first_seen_at, f.id) < ($1::timestamptz, $2::uuid)

-- name: FindingAfterLastSeen :fragment
-- The keyset of sort=last_seen.
AND (f.last_seen_at, f.id) < ($1::timestamptz, $2::uuid)

-- name: FindingAfterSeverity :fragment
-- The keyset of sort=severity.
AND (f.severity_rank, f.first_seen_at, f.id) < ($1::smallint, $2::timestamptz, $3::uuid)

-- name: FindingListOrderFirstSeen :fragment
-- Newest first (findings_tenant_first_seen_idx).
ORDER BY f.first_seen_at DESC, f.id DESC LIMIT $1

-- name: FindingListOrderLastSeen :fragment
-- Most recently seen first (findings_tenant_last_seen_idx).
ORDER BY f.last_seen_at DESC, f.id DESC LIMIT $1

-- name: FindingListOrderSeverity :fragment
-- Highest severity first, then newest (findings_tenant_severity_idx).
ORDER BY f.severity_rank DESC, f.first_seen_at DESC, f.id DESC LIMIT $1

-- name: FindingSummaryHead :fragment
-- Counts of a tenant's findings by severity (rank) and status, crossed (at most 30 rows;
-- the totals by severity and by status are their sums; findings_tenant_status_idx alone
-- answers it). Filters and FindingSummaryTail follow.
SELECT f.severity_rank, f.status, count(*)::int AS n
FROM findings f
WHERE f.tenant_id = $1

-- name: FindingSummaryTail :fragment
-- One row per severity and status that has findings.
GROUP BY f.severity_rank, f.status

-- name: FindingGroupByAssetHead :fragment
-- Counts per asset: the group's key, then FindingGroupCounts.
SELECT g.*, a.name AS asset_name, a.type AS asset_type, a.value AS asset_value
FROM (SELECT f.asset_id,

-- name: FindingGroupByToolHead :fragment
-- Counts per tool: the group's key, then FindingGroupCounts.
SELECT g.* FROM (SELECT f.tool,

-- name: FindingGroupByRuleHead :fragment
-- Counts per rule (of a tool): the group's key, then FindingGroupCounts.
SELECT g.* FROM (SELECT f.tool, f.rule_id,

-- name: FindingGroupCounts :fragment
-- A group's counts by severity and by status, all in one pass (FILTER), from a tenant's
-- findings. Filters and the group's tail follow.
count(*)::int AS total,
count(*) FILTER (WHERE f.severity_rank = 4)::int AS critical,
count(*) FILTER (WHERE f.severity_rank = 3)::int AS high,
count(*) FILTER (WHERE f.severity_rank = 2)::int AS medium,
count(*) FILTER (WHERE f.severity_rank = 1)::int AS low,
count(*) FILTER (WHERE f.severity_rank = 0)::int AS info,
count(*) FILTER (WHERE f.status = 'open')::int AS open,
count(*) FILTER (WHERE f.status = 'in_progress')::int AS in_progress,
count(*) FILTER (WHERE f.status = 'resolved')::int AS resolved,
count(*) FILTER (WHERE f.status = 'false_positive')::int AS false_positive,
count(*) FILTER (WHERE f.status = 'accepted_risk')::int AS accepted_risk,
count(*) FILTER (WHERE f.status = 'suppressed')::int AS suppressed
FROM findings f
WHERE f.tenant_id = $1

-- name: FindingGroupByAssetTail :fragment
-- The $1 assets with the most severe findings first (critical, then high, …), with their names.
GROUP BY f.asset_id
ORDER BY critical DESC, high DESC, medium DESC, low DESC, info DESC, f.asset_id
LIMIT $1) g
LEFT JOIN assets a ON a.id = g.asset_id
ORDER BY g.critical DESC, g.high DESC, g.medium DESC, g.low DESC, g.info DESC, g.asset_id

-- name: FindingGroupByToolTail :fragment
-- The $1 tools with the most severe findings first.
GROUP BY f.tool
ORDER BY critical DESC, high DESC, medium DESC, low DESC, info DESC, f.tool
LIMIT $1) g

-- name: FindingGroupByRuleTail :fragment
-- The $1 rules with the most severe findings first.
GROUP BY f.tool, f.rule_id
ORDER BY critical DESC, high DESC, medium DESC, low DESC, info DESC, f.tool, f.rule_id
LIMIT $1) g

-- name: GetFinding :one
-- A finding of a tenant.
SELECT * FROM findings WHERE tenant_id = $1 AND id = $2;

-- name: LockFinding :one
-- A finding of a tenant, locked for triage: concurrent triage of it waits, then reads the
-- status the one before it left.
SELECT * FROM findings WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: ListFindingSightings :many
-- A finding's sightings, newest first, before sighting $2 (the first page: the largest
-- bigint), with the step's key; at most $3.
SELECT s.id, s.ingest_id, s.pipeline_run_id, s.step_run_id, st.step_key, s.command_id, s.agent_scan_id, s.new,
       s.location, s.seen_at
FROM finding_sightings s
LEFT JOIN step_runs st ON st.id = s.step_run_id
WHERE s.finding_id = $1 AND s.id < $2
ORDER BY s.id DESC
LIMIT $3;

-- name: ListFindingEvents :many
-- A finding's events (created, status changes, resolved, reopened), newest first, before
-- event $3 (the first page: the largest bigint); at most $4.
SELECT id, type, data, created_at FROM events
WHERE finding_id = $2 AND tenant_id = $1 AND id < $3
ORDER BY id DESC
LIMIT $4;

-- name: TriageFinding :one
-- Moves a finding from the status its caller read under LockFinding ($3) to $4, and writes
-- the finding.status_changed event in the same statement: from, to, the reason ($5), the
-- resolution and who (the tenant token whose SHA-256 is $6, else $7: the admin acting in the
-- tenant through a dashboard session). Resolved by hand: resolution is
-- the reason or 'manual', resolved_at now; false_positive, accepted_risk, suppressed keep the
-- reason as their resolution; open and in_progress have none. No row when the finding is no
-- longer in $3.
WITH changed AS (
  UPDATE findings
  SET status = $4::text,
      resolution = CASE WHEN $4::text = 'resolved' THEN coalesce($5::text, 'manual')
                        WHEN $4::text IN ('open', 'in_progress') THEN NULL
                        ELSE $5::text END,
      resolved_at = CASE WHEN $4::text = 'resolved' THEN now() END,
      updated_at = now()
  WHERE tenant_id = $1 AND id = $2 AND status = $3::text
  RETURNING *
), event AS (
  INSERT INTO events (tenant_id, finding_id, type, data)
  SELECT c.tenant_id, c.id, 'finding.status_changed',
         jsonb_build_object('from', $3::text, 'to', $4::text, 'reason', $5::text, 'resolution', c.resolution,
                            'by', coalesce((SELECT jsonb_build_object('type', 'tenant_token', 'token_id', k.id, 'token_name', k.name,
                                                             'token_prefix', k.token_prefix)
                                   FROM api_tokens k WHERE k.token_hash = $6), $7::jsonb))
  FROM changed c
  RETURNING id
)
SELECT changed.* FROM changed WHERE (SELECT count(*) FROM event) >= 0;

-- name: ListRunFindings :many
-- What a run saw: each finding of its sightings once, `new` when one of them created it;
-- highest severity first, then newest, after the cursor ($3 rank, $4 first_seen_at, $5 id;
-- the first page: 5, 'infinity', the largest UUID); at most $6. Two ways, chosen by the run's
-- sightings counted up to 5,000 (an index-only count that stops there):
--   - fewer: its sightings grouped, their findings read and sorted (every one of them);
--   - more: the tenant's findings walked in the page's order (findings_tenant_severity_idx),
--     each kept if the run saw it (one probe of finding_sightings_run_idx, which also says
--     whether a sighting was new), until the page is full: a run that saw a large share of
--     the tenant's findings fills it within a few hundred. Grouping and sorting a run of
--     50,000 findings (150,000 sightings: three ingests) took 0.3 s for any page. The probe
--     is an aggregate over (run, finding), which the planner can neither turn into a join
--     (so the walk keeps the index's order and stops) nor answer from
--     finding_sightings_run_new_idx: under the generic plan, a separate `new` probe read every
--     new sighting of the run for each finding walked (0.8 s a page for 10,000 findings).
-- The first way reads at most 5,000 sightings in the index's order (all of them when it
-- runs) and each finding by its primary key (OFFSET 0 keeps that lookup from becoming a hash
-- join): however the planner estimates the run, it never plans a sequential or parallel
-- scan, whose workers would start before the count has said which way runs (0.1 s).
WITH sighted AS MATERIALIZED (
  SELECT count(*) AS n FROM (SELECT 1 FROM finding_sightings WHERE pipeline_run_id = $2 ORDER BY finding_id LIMIT 5000) x
)
(SELECT f.*, s.new, f.first_seen_at::text AS first_seen_key
 FROM (SELECT finding_id, bool_or(new) AS new
       FROM (SELECT finding_id, new FROM finding_sightings WHERE pipeline_run_id = $2 ORDER BY finding_id LIMIT 5000) x
       GROUP BY finding_id) s
 CROSS JOIN LATERAL (SELECT * FROM findings k WHERE k.id = s.finding_id OFFSET 0) f
 WHERE (SELECT n FROM sighted) < 5000 AND f.tenant_id = $1
   AND (f.severity_rank, f.first_seen_at, f.id) < ($3::smallint, $4::timestamptz, $5::uuid)
 ORDER BY f.severity_rank DESC, f.first_seen_at DESC, f.id DESC
 LIMIT $6)
UNION ALL
(SELECT f.*, s.new, f.first_seen_at::text AS first_seen_key
 FROM findings f
 CROSS JOIN LATERAL (SELECT bool_or(x.new) AS new FROM finding_sightings x
                     WHERE x.pipeline_run_id = $2 AND x.finding_id = f.id) s
 WHERE (SELECT n FROM sighted) >= 5000 AND f.tenant_id = $1
   AND (f.severity_rank, f.first_seen_at, f.id) < ($3::smallint, $4::timestamptz, $5::uuid)
   AND s.new IS NOT NULL
 ORDER BY f.severity_rank DESC, f.first_seen_at DESC, f.id DESC
 LIMIT $6)
ORDER BY severity_rank DESC, first_seen_at DESC, id DESC;
