-- Step runs: the transitions progression makes.

-- name: StepRunsForAdvance :many
-- Every step run of a run with its definition and its current command's outcome; for a step
-- whose command completed without a findings_count, the distinct findings ingested for the
-- command (its findings_count then).
SELECT s.*, d.condition, d.tool, d.capabilities, d.config, d.timeout_seconds, d.retry_delay_seconds,
       d.max_retries,
       c.status AS command_status, c.result AS command_result, c.error_code AS command_error_code,
       c.error_message AS command_error_message, c.agent_id AS command_agent_id,
       CASE WHEN s.status IN ('queued', 'running') AND c.status = 'completed'
                 AND coalesce(jsonb_typeof(c.result -> 'findings_count'), 'null') = 'null'
            THEN (SELECT count(DISTINCT fs.finding_id)::int FROM finding_sightings fs WHERE fs.command_id = c.id)
       END AS ingested_findings
FROM step_runs s
JOIN pipeline_steps d ON d.id = s.step_id
LEFT JOIN commands c ON c.id = s.command_id
WHERE s.pipeline_run_id = $1
ORDER BY s.step_order, s.step_key;

-- name: ListStepRuns :many
-- The step runs of a run of a tenant, in order.
SELECT * FROM step_runs WHERE tenant_id = $1 AND pipeline_run_id = $2 ORDER BY step_order, step_key;

-- name: GetStepRun :one
-- One step run of a run of a tenant, by key.
SELECT * FROM step_runs WHERE tenant_id = $1 AND pipeline_run_id = $2 AND step_key = $3;

-- name: CompleteStep :exec
-- queued/running → completed, with the command's result.
UPDATE step_runs
SET status = 'completed', findings_count = $3, output = $4, agent_id = coalesce($5, agent_id),
    started_at = coalesce(started_at, now()), completed_at = now(), retry_at = NULL,
    error_code = NULL, error_message = NULL, updated_at = now()
WHERE id = $1 AND command_id = $2 AND status IN ('queued', 'running');

-- name: FailStep :exec
-- queued/running → failed or timeout, for good.
UPDATE step_runs
SET status = $3, error_code = $4, error_message = $5, completed_at = now(), retry_at = NULL, updated_at = now()
WHERE id = $1 AND command_id = $2 AND status IN ('queued', 'running');

-- name: ScheduleStepRetry :exec
-- A failed attempt with attempts left waits $5 seconds in 'queued'; an advance is
-- scheduled for that moment, when the retry's command is created. An attempt lost with its
-- agent ($6) adds the attempt it takes (max_attempts) and counts as such (agent_retries).
WITH step AS (
  UPDATE step_runs
  SET status = 'queued', retry_at = now() + make_interval(secs => $5), error_code = $3, error_message = $4,
      max_attempts = max_attempts + CASE WHEN $6::boolean THEN 1 ELSE 0 END,
      agent_retries = agent_retries + CASE WHEN $6::boolean THEN 1 ELSE 0 END,
      updated_at = now()
  WHERE id = $1 AND command_id = $2 AND status IN ('queued', 'running') AND retry_at IS NULL
  RETURNING id, pipeline_run_id, retry_at
)
SELECT graphile_worker.add_job('run_advance', json_build_object('run_id', pipeline_run_id),
         run_at => retry_at, job_key => 'step_retry:' || id) AS job
FROM step;

-- name: SkipStep :exec
-- pending → skipped, with the reason.
UPDATE step_runs
SET status = 'skipped', condition_evaluated = $2, condition_result = $3, skip_reason = $4,
    completed_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending';

-- name: RecordConditionMet :exec
-- A pending step whose condition held waits for a free slot.
UPDATE step_runs SET condition_evaluated = true, condition_result = true, updated_at = now()
WHERE id = $1 AND status = 'pending';

-- name: CancelRunSteps :many
-- Cancels every unfinished step of a run.
UPDATE step_runs
SET status = 'cancelled', error_code = 'cancelled', error_message = $2, retry_at = NULL,
    completed_at = now(), updated_at = now()
WHERE pipeline_run_id = $1 AND status IN ('pending', 'queued', 'running')
RETURNING id, tenant_id, pipeline_run_id, step_key;

-- name: ResetStepsForRetry :exec
-- A manual retry: the given steps start over as pending, each with a fresh set of attempts.
UPDATE step_runs s
SET status = 'pending', condition_evaluated = false, condition_result = NULL, skip_reason = NULL,
    retry_at = NULL, error_code = NULL, error_message = NULL, findings_count = 0, output = '{}',
    queued_at = NULL, started_at = NULL, completed_at = NULL, agent_id = NULL,
    max_attempts = s.attempt + d.max_retries + 1, agent_retries = 0, updated_at = now()
FROM pipeline_steps d
WHERE d.id = s.step_id AND s.pipeline_run_id = $1 AND s.id = ANY ($2::uuid[]);
