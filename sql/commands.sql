-- Commands: the unit of work an agent claims, acknowledges, runs and reports.

-- name: DispatchStep :one
-- Creates the command of a step's next attempt (claimable until the queue deadline,
-- $9 seconds away), queues the step, and arms the command's expiry job.
WITH command AS (
  INSERT INTO commands (tenant_id, pipeline_run_id, step_run_id, attempt, priority, tool, capabilities,
                        timeout_seconds, payload, expires_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, now() + make_interval(secs => $9))
  RETURNING id, expires_at
), step AS (
  UPDATE step_runs s
  SET status = 'queued', command_id = command.id, attempt = $4, queued_at = now(), retry_at = NULL,
      agent_id = NULL, started_at = NULL, updated_at = now()
  FROM command
  WHERE s.id = $3
  RETURNING s.id
), armed AS (
  SELECT graphile_worker.add_job('command_expire', json_build_object('command_id', command.id),
           run_at => command.expires_at, job_key => 'command_expire:' || command.id) AS job
  FROM command
)
SELECT command.id FROM command, step, armed;

-- name: ClaimCommands :many
-- Claims up to $3 claimable commands for an agent (never beyond its free capacity) in one
-- statement; SKIP LOCKED means two polls never get the same command. The caller holds the
-- agent's row lock, so the capacity count sees every earlier claim.
WITH agent AS (
  SELECT a.id, a.tools, a.capabilities,
         greatest(0, least($3::int, a.max_concurrent_jobs - (
           SELECT count(*) FROM commands h
           WHERE h.agent_id = a.id
             AND (h.status IN ('acknowledged', 'running') OR (h.status = 'pending' AND h.claim_expires_at > now()))
         )::int)) AS free
  FROM agents a WHERE a.id = $1
), picked AS (
  SELECT c.id FROM commands c, agent
  WHERE c.tenant_id = $2 AND c.status = 'pending'
    AND (c.agent_id IS NULL OR c.claim_expires_at <= now())
    AND CASE WHEN c.tool IS NOT NULL THEN c.tool = ANY (agent.tools)
             ELSE c.capabilities <@ agent.capabilities END
  ORDER BY c.priority_rank DESC, c.seq
  LIMIT (SELECT free FROM agent)
  FOR UPDATE OF c SKIP LOCKED
)
UPDATE commands c
SET agent_id = $1, claimed_at = now(), claim_expires_at = least(now() + make_interval(secs => $4), c.expires_at),
    updated_at = now()
FROM picked
WHERE c.id = picked.id
RETURNING c.*;

-- name: NextClaimLapse :one
-- Milliseconds until the earliest un-acknowledged claim of a tenant lapses (and its command
-- becomes claimable again, which no NOTIFY announces), or NULL.
SELECT ceil(extract(epoch FROM min(claim_expires_at) - now()) * 1000)::int AS ms
FROM commands
WHERE tenant_id = $1 AND status = 'pending' AND agent_id IS NOT NULL AND claim_expires_at > now();

-- name: GetAgentCommand :one
-- A command held by an agent (the only agent that may move it).
SELECT * FROM commands WHERE id = $1 AND agent_id = $2;

-- name: AckCommand :one
-- pending (claimed by this agent) → acknowledged. The step deadline starts now; the step
-- run becomes running.
WITH command AS (
  UPDATE commands
  SET status = 'acknowledged', acknowledged_at = now(), claim_expires_at = NULL,
      expires_at = now() + make_interval(secs => timeout_seconds), updated_at = now()
  WHERE id = $1 AND agent_id = $2 AND status = 'pending'
  RETURNING *
), step AS (
  UPDATE step_runs s
  SET status = 'running', started_at = now(), agent_id = command.agent_id, updated_at = now()
  FROM command
  WHERE s.id = command.step_run_id AND s.command_id = command.id AND s.status = 'queued'
  RETURNING s.id
), armed AS (
  SELECT graphile_worker.add_job('command_expire', json_build_object('command_id', command.id),
           run_at => command.expires_at, job_key => 'command_expire:' || command.id) AS job
  FROM command
)
SELECT command.* FROM command, armed WHERE (SELECT count(*) FROM step) >= 0;

-- name: StartCommand :one
-- acknowledged → running (the step deadline set at acknowledgement stands).
UPDATE commands SET status = 'running', started_at = now(), updated_at = now()
WHERE id = $1 AND agent_id = $2 AND status = 'acknowledged'
RETURNING *;

-- name: FinishCommand :one
-- pending/acknowledged/running → completed or failed, as reported by the holding agent;
-- disarms the expiry and asks for the run to be advanced.
WITH command AS (
  UPDATE commands
  SET status = $3, result = $4, error_code = $5, error_message = $6, completed_at = now(),
      acknowledged_at = coalesce(acknowledged_at, now()), claim_expires_at = NULL, updated_at = now()
  WHERE id = $1 AND agent_id = $2 AND status IN ('pending', 'acknowledged', 'running')
  RETURNING *
), disarmed AS (
  SELECT graphile_worker.remove_job('command_expire:' || command.id) AS job FROM command
), advance AS (
  SELECT graphile_worker.add_job('run_advance', json_build_object('run_id', command.pipeline_run_id),
           job_key => 'run_advance:' || command.pipeline_run_id) AS job
  FROM command WHERE command.pipeline_run_id IS NOT NULL
)
SELECT command.* FROM command
WHERE (SELECT count(*) FROM disarmed) >= 0 AND (SELECT count(*) FROM advance) >= 0;

-- name: GetCommand :one
-- A command of a tenant.
SELECT * FROM commands WHERE tenant_id = $1 AND id = $2;

-- name: ListCommands :many
-- A tenant's commands, newest first, with optional filters.
SELECT *, created_at::text AS cursor_at FROM commands
WHERE tenant_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
  AND ($4::text IS NULL OR status = $4)
  AND ($5::uuid IS NULL OR agent_id = $5)
  AND ($6::uuid IS NULL OR pipeline_run_id = $6)
ORDER BY created_at DESC, id DESC
LIMIT $7;

-- name: ListStepCommands :many
-- Every attempt's command of a step run, oldest first.
SELECT * FROM commands WHERE tenant_id = $1 AND step_run_id = $2 ORDER BY attempt, created_at;

-- name: GetCommandById :one
-- A command, unlocked (to find its run before taking locks in order).
SELECT * FROM commands WHERE id = $1;

-- name: LockCommand :one
-- A command, locked for its expiry check, with the transaction's clock.
SELECT *, now() AS db_now FROM commands WHERE id = $1 FOR UPDATE;

-- name: ExpireCommand :one
-- A command whose deadline passed → expired (queue_timeout while pending, step_timeout
-- once acknowledged).
UPDATE commands
SET status = 'expired', error_code = $2, error_message = $3, completed_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('pending', 'acknowledged', 'running') AND expires_at <= now()
RETURNING *;

-- name: RearmCommandExpiry :exec
-- Schedules a command's expiry check at its current deadline.
SELECT graphile_worker.add_job('command_expire', json_build_object('command_id', id),
         run_at => expires_at, job_key => 'command_expire:' || id)
FROM commands WHERE id = $1;

-- name: CancelRunCommands :many
-- Cancels every in-flight command of a run and disarms their expiry jobs.
WITH command AS (
  UPDATE commands
  SET status = 'cancelled', error_code = 'cancelled', error_message = $2, completed_at = now(),
      claim_expires_at = NULL, updated_at = now()
  WHERE pipeline_run_id = $1 AND status IN ('pending', 'acknowledged', 'running')
  RETURNING id
)
SELECT command.id, graphile_worker.remove_job('command_expire:' || command.id) IS NOT NULL AS disarmed
FROM command;

-- name: FailLostAgentCommands :many
-- The commands a lost agent was running fail as agent_lost (progression retries them);
-- its un-acknowledged claims simply return to the queue.
WITH lost AS (
  UPDATE commands
  SET status = 'failed', error_code = 'agent_lost', error_message = $2, completed_at = now(), updated_at = now()
  WHERE agent_id = $1 AND status IN ('acknowledged', 'running')
  RETURNING id, pipeline_run_id
), released AS (
  UPDATE commands
  SET agent_id = NULL, claimed_at = NULL, claim_expires_at = NULL, updated_at = now()
  WHERE agent_id = $1 AND status = 'pending'
  RETURNING id
), disarmed AS (
  SELECT graphile_worker.remove_job('command_expire:' || lost.id) AS job FROM lost
), advance AS (
  SELECT graphile_worker.add_job('run_advance', json_build_object('run_id', pipeline_run_id),
           job_key => 'run_advance:' || pipeline_run_id) AS job
  FROM lost WHERE pipeline_run_id IS NOT NULL
)
SELECT lost.id, lost.pipeline_run_id FROM lost
WHERE (SELECT count(*) FROM disarmed) >= 0 AND (SELECT count(*) FROM advance) >= 0
  AND (SELECT count(*) FROM released) >= 0;
