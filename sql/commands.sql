-- Commands: the unit of work an agent claims, acknowledges, runs and reports.

-- name: DispatchStep :one
-- Creates the command of a step's next attempt (claimable until the queue deadline,
-- $9 seconds away) and queues the step. The caller then arms the run's expiry timer.
WITH command AS (
  INSERT INTO commands (tenant_id, pipeline_run_id, step_run_id, attempt, priority, tool, capabilities,
                        timeout_seconds, payload, expires_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, now() + make_interval(secs => $9))
  RETURNING id, type, expires_at
), step AS (
  UPDATE step_runs s
  SET status = 'queued', command_id = command.id, attempt = $4, queued_at = now(), retry_at = NULL,
      agent_id = NULL, started_at = NULL, condition_evaluated = true,
      condition_result = coalesce(s.condition_result, true), updated_at = now()
  FROM command
  WHERE s.id = $3
  RETURNING s.id
)
SELECT command.id, command.type FROM command, step;

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

-- name: AfterEmptyClaim :one
-- After a poll claimed nothing: milliseconds until the earliest un-acknowledged claim of the
-- tenant lapses (its command becomes claimable again, which no NOTIFY announces), or NULL;
-- and whether a command this agent could run is claimable right now (it got none because
-- it is at capacity, so a wake-up it received should go to another agent).
SELECT (SELECT ceil(extract(epoch FROM min(c.claim_expires_at) - now()) * 1000)::int
        FROM commands c
        WHERE c.tenant_id = $1 AND c.status = 'pending' AND c.agent_id IS NOT NULL
          AND c.claim_expires_at > now()) AS lapse_ms,
       EXISTS (SELECT 1 FROM commands c, agents a
               WHERE a.id = $2 AND c.tenant_id = $1 AND c.status = 'pending'
                 AND (c.agent_id IS NULL OR c.claim_expires_at <= now())
                 AND CASE WHEN c.tool IS NOT NULL THEN c.tool = ANY (a.tools)
                          ELSE c.capabilities <@ a.capabilities END) AS claimable;

-- name: GetAgentCommand :one
-- A command held by an agent (the only agent that may move it).
SELECT * FROM commands WHERE id = $1 AND agent_id = $2;

-- name: AckCommand :one
-- pending (claimed by this agent) → acknowledged. The step deadline starts now; the step
-- run becomes running (started_step_key names it when it did). The run's expiry timer
-- needs no change: it was armed for at most the step timeout from when the command was
-- created or last checked (ArmRunTimer).
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
  RETURNING s.step_key
)
SELECT command.*, (SELECT step_key FROM step) AS started_step_key FROM command;

-- name: StartCommand :one
-- acknowledged → running (the step deadline set at acknowledgement stands).
UPDATE commands SET status = 'running', started_at = now(), updated_at = now()
WHERE id = $1 AND agent_id = $2 AND status = 'acknowledged'
RETURNING *;

-- name: FinishCommand :one
-- pending/acknowledged/running → completed or failed, as reported by the holding agent
-- (with what it says of the run: exit code $7, duration $8, status $9, completion time $10),
-- and asks for the run to be advanced.
WITH command AS (
  UPDATE commands
  SET status = $3, result = $4, error_code = $5, error_message = $6, completed_at = now(),
      exit_code = $7, duration_ms = $8, reported_status = $9, reported_completed_at = $10,
      acknowledged_at = coalesce(acknowledged_at, now()), claim_expires_at = NULL, updated_at = now()
  WHERE id = $1 AND agent_id = $2 AND status IN ('pending', 'acknowledged', 'running')
  RETURNING *
), advance AS (
  SELECT request_run_advance(command.pipeline_run_id) AS job
  FROM command WHERE command.pipeline_run_id IS NOT NULL
)
SELECT command.* FROM command WHERE (SELECT count(*) FROM advance) >= 0;

-- name: GetCommand :one
-- A command of a tenant.
SELECT * FROM commands WHERE tenant_id = $1 AND id = $2;

-- The command list (GET /api/v1/commands): newest first, composed per combination of its
-- filters like the run list (sql/pipeline_runs.sql, src/store/lists.ts): each is planned with
-- its values, so a rare status reads commands_tenant_status_idx, a live one the partial
-- indexes of what is in flight, and completed the tenant's own index.

-- name: CommandListHead :fragment
-- A page of a tenant's commands (every column, and created_at as PostgreSQL prints it, for the cursor).
SELECT c.*, c.created_at::text AS cursor_at FROM commands c
WHERE c.tenant_id = $1

-- name: CommandWhereStatus :fragment
-- In this status.
AND c.status = $1

-- name: CommandWhereAgent :fragment
-- Claimed by this agent (commands_agent_created_idx).
AND c.agent_id = $1::uuid

-- name: CommandWhereRun :fragment
-- Of this pipeline run (commands_run_idx).
AND c.pipeline_run_id = $1::uuid

-- name: CommandListAfter :fragment
-- The keyset: after the cursor's row.
AND (c.created_at, c.id) < ($1::timestamptz, $2::uuid)

-- name: CommandListOrder :fragment
-- Newest first, at most $1.
ORDER BY c.created_at DESC, c.id DESC
LIMIT $1

-- name: ListStepCommands :many
-- Every attempt's command of a step run, oldest first.
SELECT * FROM commands WHERE tenant_id = $1 AND step_run_id = $2 ORDER BY attempt, created_at;

-- name: ExpireRunCommands :many
-- The in-flight commands of a run whose deadline passed → expired: queue_timeout while
-- pending (nobody acknowledged it in time), step_timeout once acknowledged.
UPDATE commands
SET status = 'expired',
    error_code = CASE WHEN status = 'pending' THEN 'queue_timeout' ELSE 'step_timeout' END,
    error_message = CASE WHEN status = 'pending'
                         THEN 'no agent acknowledged the command before its queue deadline'
                         ELSE 'the step did not finish within ' || timeout_seconds || 's' END,
    completed_at = now(), claim_expires_at = NULL, updated_at = now()
WHERE pipeline_run_id = $1 AND status IN ('pending', 'acknowledged', 'running') AND expires_at <= now()
RETURNING id, tenant_id, type;

-- name: ArmRunTimer :exec
-- Sets a run's expiry timer (job_key command_expire:<run id>) to run_next_deadline(), or
-- removes it when nothing is in flight. (Advances only ever move it earlier: SettleRun.)
WITH next AS (
  SELECT run_next_deadline($1) AS at
), armed AS (
  SELECT graphile_worker.add_job('command_expire', json_build_object('run_id', $1::uuid),
           run_at => next.at, job_key => 'command_expire:' || $1) AS job
  FROM next WHERE next.at IS NOT NULL
), removed AS (
  SELECT graphile_worker.remove_job('command_expire:' || $1) AS job FROM next WHERE next.at IS NULL
)
SELECT (SELECT count(*) FROM armed) + (SELECT count(*) FROM removed) AS changed;

-- name: CancelRunCommands :many
-- Cancels every in-flight command of a run.
UPDATE commands
SET status = 'cancelled', error_code = 'cancelled', error_message = $2, completed_at = now(),
    claim_expires_at = NULL, updated_at = now()
WHERE pipeline_run_id = $1 AND status IN ('pending', 'acknowledged', 'running')
RETURNING id, tenant_id, type;

-- name: FailLostAgentCommands :many
-- The commands a lost agent was running fail as agent_lost (progression retries them);
-- its un-acknowledged claims simply return to the queue.
WITH lost AS (
  UPDATE commands
  SET status = 'failed', error_code = 'agent_lost', error_message = $2, completed_at = now(), updated_at = now()
  WHERE agent_id = $1 AND status IN ('acknowledged', 'running')
  RETURNING id, tenant_id, type, pipeline_run_id
), released AS (
  UPDATE commands
  SET agent_id = NULL, claimed_at = NULL, claim_expires_at = NULL, updated_at = now()
  WHERE agent_id = $1 AND status = 'pending'
  RETURNING id
), advance AS (
  SELECT request_run_advance(pipeline_run_id) AS job
  FROM lost WHERE pipeline_run_id IS NOT NULL
)
SELECT lost.id, lost.tenant_id, lost.type, lost.pipeline_run_id FROM lost
WHERE (SELECT count(*) FROM advance) >= 0 AND (SELECT count(*) FROM released) >= 0;
