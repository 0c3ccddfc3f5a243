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
SELECT a.id, a.tenant_id, a.name, a.status, a.health, a.tools, a.capabilities, a.max_concurrent_jobs,
       a.last_seen_at, t.modules
FROM agents a JOIN tenants t ON t.id = a.tenant_id
WHERE a.api_key_hash = $1;

-- name: RecordContacts :many
-- Records a batch of agent contact (src/api/contacts.ts), one row per agent in $1, a JSON array
-- of {id, seen_ms, beat_ms, version, hostname, data, scanners, collectors, report}, whose ids
-- are $3 too (so the agents are found through their primary key whatever the plan): seen_ms is
-- how long before this statement the agent's latest request came, beat_ms its latest
-- heartbeat's (null: no heartbeat, only other requests), whose report replaces the last one.
-- Each agent goes online; its times never move back (two processes' batches may commit in
-- either order). Its health check is re-armed for $2 seconds after it was seen only when it
-- was not online or the check armed by a contact runs within half of that: not on every
-- contact. The rows are locked first, in id order (two batches never deadlock), so
-- previous_health is the health as committed when this batch got the agent: of two batches
-- that find an agent offline, exactly one says so. With $4 the batch commits without waiting
-- for its WAL to reach the disk (synchronous_commit off for this transaction alone): a crash
-- of PostgreSQL may then lose its last fraction of a second of contact, never part of it; the
-- caller asks for it only when no agent of the batch is to turn online.
WITH mode AS (
  SELECT set_config('synchronous_commit', 'off', true) WHERE $4::boolean
), contact AS (
  SELECT c.id, c.version, c.hostname, c.data, c.scanners, c.collectors, c.report,
         now() - make_interval(secs => c.seen_ms / 1000.0) AS seen_at,
         now() - make_interval(secs => c.beat_ms / 1000.0) AS beat_at
  FROM jsonb_to_recordset($1::jsonb) AS c(id uuid, seen_ms float8, beat_ms float8, version text, hostname text,
                                          data jsonb, scanners text[], collectors text[], report jsonb)
), previous AS (
  SELECT a.id, a.health, a.last_seen_at, a.last_heartbeat_at, a.health_check_at
  FROM agents a WHERE a.id = ANY ($3::uuid[])
  ORDER BY a.id FOR NO KEY UPDATE
), change AS (
  SELECT c.*, p.health AS previous_health,
         greatest(p.last_seen_at, c.seen_at) AS new_seen_at,
         c.beat_at IS NOT NULL AND (p.last_heartbeat_at IS NULL OR c.beat_at >= p.last_heartbeat_at) AS newer_beat,
         p.health <> 'online' OR p.health_check_at IS NULL
           OR p.health_check_at < now() + make_interval(secs => $2::float8 / 2) AS rearm
  FROM contact c JOIN previous p ON p.id = c.id
), agent AS (
  UPDATE agents a
  SET health = 'online',
      last_seen_at = x.new_seen_at,
      last_heartbeat_at = CASE WHEN x.newer_beat THEN x.beat_at ELSE a.last_heartbeat_at END,
      version = CASE WHEN x.newer_beat THEN coalesce(x.version, a.version) ELSE a.version END,
      hostname = CASE WHEN x.newer_beat THEN coalesce(x.hostname, a.hostname) ELSE a.hostname END,
      heartbeat_data = CASE WHEN x.newer_beat THEN x.data ELSE a.heartbeat_data END,
      scanners = CASE WHEN x.newer_beat THEN x.scanners ELSE a.scanners END,
      collectors = CASE WHEN x.newer_beat THEN x.collectors ELSE a.collectors END,
      last_report = CASE WHEN x.newer_beat THEN x.report ELSE a.last_report END,
      health_check_at = CASE WHEN x.rearm THEN x.new_seen_at + make_interval(secs => $2::float8) ELSE a.health_check_at END,
      updated_at = CASE WHEN x.newer_beat THEN now() ELSE a.updated_at END
  FROM change x
  WHERE a.id = ANY ($3::uuid[]) AND a.id = x.id
  RETURNING a.id, x.previous_health, x.rearm, a.health_check_at
), armed AS (
  -- add_jobs costs milliseconds even with nothing to add: called only when there is.
  SELECT (SELECT count(*) FROM graphile_worker.add_jobs(s.specs)) AS n
  FROM (SELECT array_agg(ROW('agent_health', json_build_object('agent_id', id), NULL, health_check_at, NULL,
                             'agent_health:' || id, NULL, NULL)::graphile_worker.job_spec ORDER BY id) AS specs
        FROM agent WHERE rearm) s
  WHERE s.specs IS NOT NULL
)
SELECT agent.id, agent.previous_health, agent.rearm FROM agent LEFT JOIN armed ON true LEFT JOIN mode ON true;

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
-- Marks an agent offline (its health check has run: none is armed).
UPDATE agents SET health = 'offline', health_check_at = NULL, updated_at = now() WHERE id = $1 AND health <> 'offline' RETURNING id;

-- name: RearmAgentHealth :one
-- Schedules the next health check of an agent (locked by LockAgentById), recorded beside it.
WITH agent AS (
  UPDATE agents SET health_check_at = $2 WHERE id = $1::uuid RETURNING id
)
SELECT graphile_worker.add_job('agent_health', json_build_object('agent_id', $1::uuid),
         run_at => $2, job_key => 'agent_health:' || $1) AS job;

-- name: LockAgentForClaim :one
-- Serializes the polls of one agent so two of them never exceed its capacity together.
SELECT id FROM agents WHERE id = $1 FOR NO KEY UPDATE;
