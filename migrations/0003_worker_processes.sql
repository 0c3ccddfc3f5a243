-- Worker processes and their heartbeats. graphile-worker locks the jobs it fetches under
-- its pool's id (jobs.locked_by) and only forgets a lock after 4 hours; a process killed
-- with SIGKILL never releases its locks. Every worker process of ours registers its pool
-- here and heartbeats; a process silent for longer than its own dead_after is dead, and
-- the maintenance sweep that any live process runs releases its jobs
-- (graphile_worker.force_unlock_workers) and records that it did. The views built on this
-- (worker_status, orphaned_jobs, stalled_runs, stuck_work) are in sql/views.sql.

CREATE TABLE worker_processes (
  -- graphile-worker's pool id: the value of jobs.locked_by for every job this process holds.
  pool_id           text PRIMARY KEY,
  hostname          text NOT NULL,
  pid               integer NOT NULL,
  started_at        timestamptz NOT NULL DEFAULT now(),
  last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
  -- Silent for longer than this, the process is dead (WORKER_DEAD_AFTER of that process).
  dead_after        interval NOT NULL CHECK (dead_after > interval '0'),
  -- A clean shutdown (its jobs were finished or returned by graphile-worker itself).
  stopped_at        timestamptz,
  -- When a sweep found it silent, and how many jobs it held that the sweep released.
  declared_dead_at  timestamptz,
  released_jobs     integer NOT NULL DEFAULT 0
);
-- The sweep prunes old rows of processes that are gone.
CREATE INDEX worker_processes_gone_idx ON worker_processes (coalesce(stopped_at, declared_dead_at))
  WHERE stopped_at IS NOT NULL OR declared_dead_at IS NOT NULL;
-- The safety net re-arms health checks of online agents that lost theirs.
CREATE INDEX agents_online_idx ON agents (id) WHERE health = 'online';
