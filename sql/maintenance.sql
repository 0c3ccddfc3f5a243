-- Worker liveness and the maintenance sweep (src/progression/maintenance.ts): every worker
-- process heartbeats; any live one sweeps, releasing the jobs of dead processes and
-- re-requesting whatever follow-up job a run, an agent or the scheduler lost.

-- name: RecordWorkerHeartbeat :one
-- Registers a worker process (graphile-worker pool) or records its heartbeat. Returns when
-- a sweep had declared it dead (it was silent too long; its jobs may have run elsewhere).
WITH previous AS (
  SELECT declared_dead_at FROM worker_processes WHERE pool_id = $1
), beat AS (
  INSERT INTO worker_processes (pool_id, hostname, pid, dead_after)
  VALUES ($1, $2, $3, make_interval(secs => $4))
  ON CONFLICT (pool_id) DO UPDATE
  SET last_heartbeat_at = now(), declared_dead_at = NULL, dead_after = EXCLUDED.dead_after
  RETURNING pool_id
)
SELECT beat.pool_id, (SELECT declared_dead_at FROM previous) AS was_declared_dead_at FROM beat;

-- name: MarkWorkerStopped :exec
-- A clean shutdown: graphile-worker finished or returned every job this process held.
UPDATE worker_processes SET stopped_at = now(), last_heartbeat_at = now() WHERE pool_id = $1;

-- name: TryLockSweep :one
-- One sweep at a time across all processes; the others skip this round.
SELECT pg_try_advisory_xact_lock(hashtextextended('scanflow.maintenance_sweep', 0)) AS locked;

-- name: SweepWithoutJit :exec
-- No JIT for the sweep's statements: with 10,000 live runs and fresh statistics,
-- RepairStalledRuns costs past jit_above_cost and compiled for 158 ms of its 496 (PostgreSQL
-- 15), which a statement that reads each row once never earns back.
SET LOCAL jit = off;

-- name: DiscardSpentOrphans :many
-- Orphaned jobs with no attempts left are deleted rather than released: graphile-worker's
-- add_job spends the attempts of a locked job whose key it hands to a new job (that job does
-- its work), and such a job would otherwise sit failed forever once its process died.
DELETE FROM graphile_worker._private_jobs j
USING orphaned_jobs o
WHERE j.id = o.job_id AND j.attempts >= j.max_attempts
RETURNING j.id, o.task_identifier, j.payload, j.last_error;

-- name: ReleaseOrphanedJobs :many
-- Unlocks every job held by a process that is not alive (orphaned_jobs) so any worker can
-- run it, and records on each dead process how many jobs it held.
WITH orphans AS (
  SELECT locked_by, count(*)::int AS jobs, array_agg(task_identifier ORDER BY job_id) AS tasks
  FROM orphaned_jobs GROUP BY locked_by
), unlocked AS (
  SELECT graphile_worker.force_unlock_workers(array_agg(locked_by)) AS done FROM orphans
), recorded AS (
  UPDATE worker_processes w
  SET released_jobs = w.released_jobs + o.jobs,
      declared_dead_at = CASE WHEN w.stopped_at IS NULL THEN coalesce(w.declared_dead_at, now()) END
  FROM orphans o
  WHERE w.pool_id = o.locked_by
  RETURNING w.pool_id
)
SELECT o.locked_by, o.jobs, o.tasks FROM orphans o
WHERE (SELECT count(*) FROM unlocked) >= 0 AND (SELECT count(*) FROM recorded) >= 0;

-- name: DeclareSilentWorkersDead :many
-- Processes silent past their dead_after that held no job: recorded as dead all the same.
UPDATE worker_processes
SET declared_dead_at = now()
WHERE stopped_at IS NULL AND declared_dead_at IS NULL AND last_heartbeat_at + dead_after < now()
RETURNING pool_id, hostname, pid, last_heartbeat_at;

-- name: RepairStalledRuns :many
-- Runs in progress that nothing would move (stalled_runs), the $1 that stalled first: an
-- advance for those with no advance job and nothing in flight, or with a finished command no
-- due advance job will apply; their expiry timer (run_next_deadline) for those with commands
-- in flight but none. One reading of stalled_runs and one add_jobs call per kind of job,
-- whatever the number of runs; the rest wait for the next sweep. (Was: stalled_runs read
-- twice and an add_job per run.) An advance whose keyed job a worker locked meanwhile
-- (add_jobs returns no row for it) goes through request_run_advance, which adds another.
WITH stalled AS MATERIALIZED (
  SELECT s.pipeline_run_id, s.problem FROM stalled_runs s ORDER BY s.since, s.pipeline_run_id LIMIT $1
), advances AS (
  SELECT ARRAY(
    SELECT ROW('run_advance', json_build_object('run_id', s.pipeline_run_id), NULL, NULL, NULL,
               'run_advance:' || s.pipeline_run_id, NULL, NULL)::graphile_worker.job_spec
    FROM stalled s WHERE s.problem <> 'no_timer') AS specs
), timers AS (
  SELECT ARRAY(
    SELECT ROW('command_expire', json_build_object('run_id', s.pipeline_run_id), NULL, run_next_deadline(s.pipeline_run_id),
               NULL, 'command_expire:' || s.pipeline_run_id, NULL, NULL)::graphile_worker.job_spec
    FROM stalled s WHERE s.problem = 'no_timer') AS specs
), advanced AS MATERIALIZED (
  SELECT j.key FROM advances a CROSS JOIN LATERAL graphile_worker.add_jobs(a.specs) j WHERE cardinality(a.specs) > 0
), armed AS MATERIALIZED (
  SELECT j.key FROM timers t CROSS JOIN LATERAL graphile_worker.add_jobs(t.specs) j WHERE cardinality(t.specs) > 0
)
SELECT s.pipeline_run_id, s.problem,
       CASE WHEN s.problem = 'no_timer' THEN 'command_expire:' || s.pipeline_run_id IN (SELECT a.key FROM armed a)
            ELSE 'run_advance:' || s.pipeline_run_id IN (SELECT a.key FROM advanced a)
                 OR request_run_advance(s.pipeline_run_id) IS NOT NULL END AS repaired
FROM stalled s;

-- name: RearmAgentHealthChecks :many
-- Online agents without a pending health check (lost with a job): check them when their
-- grace ($1 seconds after they were last seen) ends.
SELECT a.id AS agent_id,
       graphile_worker.add_job('agent_health', json_build_object('agent_id', a.id),
         run_at => coalesce(a.last_seen_at, now()) + make_interval(secs => $1),
         job_key => 'agent_health:' || a.id) IS NOT NULL AS armed
FROM agents a
WHERE a.health = 'online'
  AND NOT EXISTS (SELECT 1 FROM graphile_worker.jobs j
                  WHERE j.key = 'agent_health:' || a.id AND j.attempts < j.max_attempts);

-- name: RearmLostScheduler :one
-- Due or future scans but no scheduler_tick job that will run: arm it (arm_scheduler).
SELECT arm_scheduler() AS next_at
WHERE NOT EXISTS (SELECT 1 FROM graphile_worker.jobs j
                  WHERE j.task_identifier = 'scheduler_tick' AND j.attempts < j.max_attempts);

-- name: PruneWorkerProcesses :exec
-- Forgets processes that stopped or died more than a day ago.
DELETE FROM worker_processes
WHERE (stopped_at IS NOT NULL OR declared_dead_at IS NOT NULL)
  AND coalesce(stopped_at, declared_dead_at) < now() - interval '1 day';
