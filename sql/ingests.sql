-- Ingests: one row per report, SARIF log, credentials upload or chunk of a chunked report
-- (migrations/0005_findings.sql), and what an ingest is tied to.

-- name: IngestContext :one
-- What an ingest names, checked in one read: the command ($3) if this agent ($2) holds it,
-- with its run, step and target asset; the asset ($4) if the tenant has it; the agent scan
-- session ($5) if this agent opened it. A NULL where an id was given means "not found".
SELECT c.id AS command_id, c.pipeline_run_id, c.step_run_id, s.step_key, c.tool AS command_tool,
       r.asset_id AS command_asset_id,
       a.id AS asset_id,
       sc.id AS scan_id, sc.tool AS scan_tool, sc.asset_id AS scan_asset_id
FROM (SELECT 1) AS one
LEFT JOIN commands c ON c.id = $3::uuid AND c.tenant_id = $1 AND c.agent_id = $2
LEFT JOIN step_runs s ON s.id = c.step_run_id
LEFT JOIN pipeline_runs r ON r.id = c.pipeline_run_id
LEFT JOIN assets a ON a.id = $4::uuid AND a.tenant_id = $1
LEFT JOIN agent_scans sc ON sc.id = $5::uuid AND sc.tenant_id = $1 AND sc.agent_id = $2;

-- name: InsertIngest :exec
-- An ingest starting (status ingesting): its findings follow in the same transaction.
INSERT INTO ingests (id, tenant_id, agent_id, kind, report_id, chunk_index, total_chunks, report_key, tool, coverage_type,
                     branch, is_default_branch, command_id, pipeline_run_id, step_run_id, step_key, agent_scan_id,
                     default_asset_id, properties)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19);

-- name: StartPendingChunk :exec
-- A chunk that waited for the chunks below it is ingested now, with its report's context
-- (the first chunk's tool, coverage, branch and ties).
UPDATE ingests
SET status = 'ingesting', payload = NULL, compression = NULL, report_key = $2, tool = $3, coverage_type = $4,
    branch = $5, is_default_branch = $6, command_id = $7, pipeline_run_id = $8, step_run_id = $9, step_key = $10,
    agent_scan_id = $11, default_asset_id = $12, properties = $13
WHERE id = $1 AND status = 'pending';

-- name: FinishIngest :one
-- The ingest is done: what it skipped, the assets it created or updated, what it covered.
UPDATE ingests
SET status = 'ingested', ingested_at = now(), assets_created = $2, assets_updated = $3, findings_skipped = $4,
    problems = $5, scope_tools = $6, scope_asset_ids = $7, asset_refs = $8
WHERE id = $1
RETURNING *;

-- name: LockReportChunks :one
-- Serializes the chunks of one report ($2) of a tenant ($1) until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2::text, 7205)) AS locked;

-- name: ReportChunks :many
-- The chunks of a report received so far, in index order (after LockReportChunks).
SELECT id, chunk_index, total_chunks, status, report_key, tool, coverage_type, branch, is_default_branch, command_id,
       pipeline_run_id, step_run_id, step_key, agent_scan_id, default_asset_id, scope_tools, scope_asset_ids, asset_refs,
       assets_created, assets_updated, findings_created, findings_updated, findings_reopened, findings_resolved,
       findings_skipped, problems
FROM ingests
WHERE tenant_id = $1 AND report_id = $2 AND kind = 'chunk'
ORDER BY chunk_index;

-- name: InsertPendingChunk :exec
-- A chunk that arrived before the chunks below it: kept, with its data, until they are in.
INSERT INTO ingests (id, tenant_id, agent_id, kind, status, report_id, chunk_index, total_chunks, payload, compression)
VALUES ($1, $2, $3, 'chunk', 'pending', $4, $5, $6, $7, $8);

-- name: GetPendingChunk :one
-- A waiting chunk's data.
SELECT id, agent_id, chunk_index, total_chunks, payload, compression FROM ingests WHERE id = $1 AND status = 'pending';

-- name: GetIngest :one
-- An ingest by id.
SELECT * FROM ingests WHERE id = $1;
