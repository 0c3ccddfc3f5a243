-- Agents: registration, credentials, heartbeats and health.

-- name: InsertAgent :one
-- Registers an agent with the hash of its API key.
INSERT INTO agents (tenant_id, name, api_key_hash, api_key_prefix, tools, capabilities, max_concurrent_jobs, labels)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *;

-- name: GetAgent :one
-- An agent of a tenant, with the number of commands it holds.
SELECT a.*, (SELECT count(*) FROM commands c
             WHERE c.agent_id = a.id AND c.status IN ('pending', 'acknowledged', 'running')) AS active_commands
FROM agents a WHERE a.tenant_id = $1 AND a.id = $2;

-- name: LockAgent :one
-- An agent of a tenant, locked for an update.
SELECT * FROM agents WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: ListAgents :many
-- A tenant's agents, newest first.
SELECT a.*, (SELECT count(*) FROM commands c
             WHERE c.agent_id = a.id AND c.status IN ('pending', 'acknowledged', 'running')) AS active_commands,
       a.created_at::text AS cursor_at
FROM agents a
WHERE a.tenant_id = $1
  AND ($2::timestamptz IS NULL OR (a.created_at, a.id) < ($2, $3::uuid))
  AND ($4::text IS NULL OR a.status = $4)
  AND ($5::text IS NULL OR a.health = $5)
ORDER BY a.created_at DESC, a.id DESC
LIMIT $6;

-- name: UpdateAgent :one
-- Replaces an agent's editable fields.
UPDATE agents SET name = $3, tools = $4, capabilities = $5, max_concurrent_jobs = $6, labels = $7, updated_at = now()
WHERE tenant_id = $1 AND id = $2 RETURNING *;

-- name: SetAgentStatus :one
-- Activates, disables or revokes an agent. A revoked agent stays revoked.
UPDATE agents SET status = $3, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND (status <> 'revoked' OR $3 = 'revoked') RETURNING *;

-- name: SetAgentKey :one
-- Replaces an agent's API key hash; the old key stops working at once.
UPDATE agents SET api_key_hash = $3, api_key_prefix = $4, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND status <> 'revoked' RETURNING *;

-- name: FindAgentByKeyHash :one
-- The agent an API key belongs to, with its tenant's modules.
SELECT a.id, a.tenant_id, a.name, a.status, a.tools, a.capabilities, a.max_concurrent_jobs,
       a.last_seen_at, t.modules
FROM agents a JOIN tenants t ON t.id = a.tenant_id
WHERE a.api_key_hash = $1;

-- name: RecordHeartbeat :one
-- Records a heartbeat, marks the agent online and pushes its health check $5 seconds ahead.
WITH agent AS (
  UPDATE agents
  SET health = 'online', last_heartbeat_at = now(), last_seen_at = now(),
      version = coalesce($2, version), hostname = coalesce($3, hostname), heartbeat_data = $4,
      updated_at = now()
  WHERE id = $1
  RETURNING id
), armed AS (
  SELECT graphile_worker.add_job('agent_health', json_build_object('agent_id', id),
           run_at => now() + make_interval(secs => $5), job_key => 'agent_health:' || id) AS job
  FROM agent
)
SELECT agent.id FROM agent, armed;

-- name: TouchAgent :many
-- Any request of an agent shows it is alive; recorded at most every few seconds so the
-- poll path rarely writes.
WITH agent AS (
  UPDATE agents SET last_seen_at = now(), health = 'online'
  WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < now() - interval '5 seconds')
  RETURNING id
)
SELECT graphile_worker.add_job('agent_health', json_build_object('agent_id', id),
         run_at => now() + make_interval(secs => $2), job_key => 'agent_health:' || id) AS job
FROM agent;

-- name: CommandsToStop :many
-- Commands this agent should stop: cancelled or expired recently, or named by the agent
-- and no longer its to run.
SELECT c.id FROM commands c
WHERE c.agent_id = $1 AND c.status IN ('cancelled', 'expired', 'failed')
  AND c.error_code IN ('cancelled', 'step_timeout', 'queue_timeout', 'agent_lost')
  AND c.updated_at > now() - make_interval(secs => $2)
UNION
SELECT c.id FROM commands c
WHERE c.id = ANY ($3::uuid[]) AND c.tenant_id = $4
  AND (c.agent_id IS DISTINCT FROM $1 OR c.status NOT IN ('pending', 'acknowledged', 'running'));

-- name: LockAgentById :one
-- An agent locked for its health check.
SELECT *, now() AS db_now FROM agents WHERE id = $1 FOR UPDATE;

-- name: MarkAgentOffline :one
-- Marks an agent offline.
UPDATE agents SET health = 'offline', updated_at = now() WHERE id = $1 AND health <> 'offline' RETURNING id;

-- name: RearmAgentHealth :one
-- Schedules the next health check of an agent.
SELECT graphile_worker.add_job('agent_health', json_build_object('agent_id', $1::uuid),
         run_at => $2, job_key => 'agent_health:' || $1) AS job;

-- name: LockAgentForClaim :one
-- Serializes the polls of one agent so two of them never exceed its capacity together.
SELECT id FROM agents WHERE id = $1 FOR NO KEY UPDATE;
