-- Agent scan sessions (seed 002 `POST /api/v1/agent/scans`): a scan an agent runs on its
-- own, registered, ingested into, and closed. Only the agent that opened one sees it.

-- name: InsertAgentScan :one
-- Opens a session (running).
INSERT INTO agent_scans (tenant_id, agent_id, tool, name, asset_id, branch, commit_sha)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: GetAgentScan :one
-- A session of this agent.
SELECT * FROM agent_scans WHERE tenant_id = $1 AND id = $2 AND agent_id = $3;

-- name: FinishAgentScan :one
-- running → completed or failed; findings_count, when not given, is the distinct findings
-- ingested into the session.
UPDATE agent_scans
SET status = $4,
    findings_count = coalesce($5::int, (SELECT count(DISTINCT fs.finding_id)::int FROM finding_sightings fs
                                        WHERE fs.agent_scan_id = $2)),
    error_message = $6, completed_at = now(), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND agent_id = $3 AND status = 'running'
RETURNING *;
