-- Views for operators and DBAs, created at start (after the migrations) when this file
-- changed: each view's comment carries the sha256 of the text that made it, and a start
-- whose file has the same hash, every view present, leaves them alone (src/db/migrate.ts).
-- "What is running, on which agent, since when, and what is stuck":
--   SELECT * FROM running_work;      -- every step in flight, its agent and its deadline
--   SELECT * FROM stuck_work;        -- everything waiting longer than it should, and why
--   SELECT * FROM runs_in_progress;  -- active runs with their progress
--   SELECT * FROM agent_load;        -- agents, health, what they hold
--   SELECT * FROM scan_status;       -- scans: next fire, last fire, what it skipped, waiting runs
--   SELECT * FROM scan_fires ORDER BY id DESC;  -- every fire: when, why, runs, skips and reasons
--   SELECT * FROM worker_status;     -- worker processes: alive, stopped or dead, jobs held and released
--   SELECT * FROM orphaned_jobs;     -- graphile-worker jobs locked by a process that is gone
--   SELECT * FROM stalled_runs;      -- runs in progress that nothing would move (the sweep repairs them)

DROP VIEW IF EXISTS running_work, stuck_work, runs_in_progress, agent_load, scan_status,
  worker_status, orphaned_jobs, run_jobs, stalled_runs CASCADE;

-- The event feed's horizon (sql/events.sql): every event of a transaction with an xid below
-- it is settled — that transaction has ended, so no event can appear before it any more. The
-- oldest transaction in progress anywhere on the server (pg_snapshot_xmin) would do, but
-- transaction ids are server-wide: a long transaction in another database, or an idle one,
-- would then hold back every tenant's feed and the dashboard. So transactions in progress
-- that pg_stat_activity shows in *other* databases are left out. Anything not proven to be
-- elsewhere still counts (a transaction of ours that ended between the snapshot and the stats
-- read, a session whose xid this role may not see): wrong only on the side of waiting.
CREATE OR REPLACE FUNCTION events_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
  WITH snap AS (SELECT pg_current_snapshot() AS s),
  elsewhere AS (
    SELECT a.backend_xid::text::bigint AS x FROM pg_stat_activity a
    WHERE a.datname IS DISTINCT FROM current_database() AND a.backend_xid IS NOT NULL
    UNION ALL
    SELECT p.transaction::text::bigint FROM pg_prepared_xacts p WHERE p.database <> current_database()
  )
  SELECT coalesce(min(x), pg_snapshot_xmax((SELECT s FROM snap)))
  FROM pg_snapshot_xip((SELECT s FROM snap)) x
  WHERE (x::text::bigint % 4294967296) NOT IN (SELECT e.x FROM elsewhere e)
$$;

-- A worker process is alive while it heartbeats within its own dead_after and has not
-- stopped (migrations/0003_worker_processes.sql).
CREATE VIEW worker_status AS
SELECT w.pool_id, w.hostname, w.pid,
       CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
            WHEN w.declared_dead_at IS NOT NULL OR w.last_heartbeat_at + w.dead_after < now() THEN 'dead'
            ELSE 'alive' END AS state,
       w.started_at, w.last_heartbeat_at, now() - w.last_heartbeat_at AS silent_for, w.dead_after,
       w.stopped_at, w.declared_dead_at, w.released_jobs,
       (SELECT count(*) FROM graphile_worker._private_jobs j WHERE j.locked_by = w.pool_id) AS locked_jobs
FROM worker_processes w
ORDER BY w.started_at DESC;

-- Jobs locked by a process that is not alive: one that stopped heartbeating, or a locker
-- that never registered (another program, or a row pruned a day after its process died)
-- holding its lock for over a minute. graphile-worker itself would keep them locked for 4
-- hours; the maintenance sweep releases them (force_unlock_workers). The payload comes from
-- graphile-worker's _private_jobs, which its public jobs view leaves out (0.16–0.18 layout).
CREATE VIEW orphaned_jobs AS
SELECT j.id AS job_id, t.identifier AS task_identifier, j.key, j.payload, j.locked_by, j.locked_at,
       now() - j.locked_at AS locked_for,
       CASE WHEN w.pool_id IS NULL THEN 'unregistered'
            WHEN w.stopped_at IS NOT NULL THEN 'stopped'
            ELSE 'dead' END AS locker_state
FROM graphile_worker._private_jobs j
JOIN graphile_worker._private_tasks t ON t.id = j.task_id
LEFT JOIN worker_processes w ON w.pool_id = j.locked_by
WHERE j.locked_by IS NOT NULL
  AND CASE WHEN w.pool_id IS NULL THEN j.locked_at < now() - interval '1 minute'
           ELSE w.stopped_at IS NOT NULL OR w.declared_dead_at IS NOT NULL
                OR w.last_heartbeat_at + w.dead_after < now() END;

-- The run_advance and command_expire jobs that will run: attempts left, and not held by a
-- process that is gone. (A job of a dead process runs again once the sweep releases it.)
CREATE VIEW run_jobs AS
SELECT t.identifier AS task_identifier, j.payload ->> 'run_id' AS run_id, j.run_at, j.key, j.locked_by
FROM graphile_worker._private_jobs j
JOIN graphile_worker._private_tasks t ON t.id = j.task_id
WHERE t.identifier IN ('run_advance', 'command_expire') AND j.attempts < j.max_attempts
  AND NOT EXISTS (SELECT 1 FROM orphaned_jobs o WHERE o.job_id = j.id);

-- Runs in progress that nothing would move. Every transition enqueues its follow-up job in
-- its own transaction, so these appear only when a job was lost (held by a dead process
-- until released, failed for good, deleted by hand):
--   no_way_forward     admitted, nothing in flight, and no advance job at all;
--   step_not_advanced  a step's command finished (or its retry is due) and no advance job is due;
--   no_timer           commands in flight but no expiry timer (command_expire) job.
-- The maintenance sweep requests an advance (or re-arms the timer) for each.
--
-- The sweep reads this every few seconds, with every live run in it (10,000 after a burst of
-- due scans), often before autovacuum has analyzed the burst's rows. So no step of the plan
-- may turn quadratic on a stale estimate: the run jobs and the runs with commands in flight
-- are read once into jsonb maps (run id → …) that each run looks up; the step lookup is by
-- the run's own index. Before, with 10,000 live runs and statistics of before the burst
-- (PostgreSQL 15, load 6-8), the sweep's two statements over this view read every in-flight
-- command once per run (a BitmapAnd with commands_held_idx, estimated at 251 rows for
-- 10,000): 2.4-5.8 s and 7.2-12.7 s, now one statement of 0.2-0.6 s; and with nested loops
-- forced, the runs joined to their jobs ran 65 s (0.3 s now).
CREATE VIEW stalled_runs AS
WITH jobs AS MATERIALIZED (
  -- Due by the clock, not now(): a transaction that began before a completion committed
  -- (the maintenance sweep's, its earlier statements taking a while under load) sees its
  -- advance job, whose run_at is the completion's now(), as in its future, and took the
  -- step for not advanced (npm run bench: dozens of extra advances per sweep at load 15).
  SELECT coalesce(jsonb_object_agg(j.run_id, j.due) FILTER (WHERE j.task_identifier = 'run_advance'), '{}') AS advance,
         coalesce(jsonb_object_agg(j.run_id, true) FILTER (WHERE j.task_identifier = 'command_expire'), '{}') AS timer
  FROM (SELECT j.run_id, j.task_identifier, bool_or(j.run_at <= clock_timestamp() OR j.locked_by IS NOT NULL) AS due
        FROM run_jobs j WHERE j.run_id IS NOT NULL
        GROUP BY j.run_id, j.task_identifier) j
), flight AS MATERIALIZED (
  SELECT coalesce(jsonb_object_agg(c.run_id, true), '{}') AS runs
  FROM (SELECT DISTINCT c.pipeline_run_id::text AS run_id FROM commands c
        WHERE c.status IN ('pending', 'acknowledged', 'running') AND c.pipeline_run_id IS NOT NULL) c
), state AS MATERIALIZED (
  SELECT r.id, r.tenant_id, r.status, r.updated_at,
         (SELECT f.runs FROM flight f) ? r.id::text AS in_flight,
         (SELECT min(coalesce(s.retry_at, c.completed_at)) FROM step_runs s JOIN commands c ON c.id = s.command_id
          WHERE s.pipeline_run_id = r.id AND s.status IN ('queued', 'running')
            AND c.status NOT IN ('pending', 'acknowledged', 'running')
            AND (s.retry_at IS NULL OR s.retry_at <= now())) AS unadvanced_since,
         -- NULL: no advance job; false: one, not due yet.
         ((SELECT j.advance FROM jobs j) -> r.id::text)::boolean AS advance_due,
         (SELECT j.timer FROM jobs j) ? r.id::text AS has_timer
  FROM pipeline_runs r
  WHERE r.status IN ('pending', 'running') AND r.admitted_at IS NOT NULL
)
SELECT s.id AS pipeline_run_id, s.tenant_id, s.status,
       CASE WHEN NOT s.in_flight AND s.advance_due IS NULL THEN 'no_way_forward'
            WHEN s.unadvanced_since IS NOT NULL AND NOT coalesce(s.advance_due, false) THEN 'step_not_advanced'
            ELSE 'no_timer' END AS problem,
       coalesce(s.unadvanced_since, s.updated_at) AS since
FROM state s
WHERE (NOT s.in_flight AND s.advance_due IS NULL)
   OR (s.unadvanced_since IS NOT NULL AND NOT coalesce(s.advance_due, false))
   OR (s.in_flight AND NOT s.has_timer);

CREATE VIEW running_work AS
SELECT t.name                       AS tenant,
       p.name                       AS pipeline,
       r.id                         AS pipeline_run_id,
       s.step_key,
       s.status                     AS step_status,
       s.attempt,
       s.max_attempts,
       c.id                         AS command_id,
       c.status                     AS command_status,
       a.name                       AS agent,
       a.health                     AS agent_health,
       coalesce(c.acknowledged_at, c.claimed_at, s.queued_at) AS since,
       now() - coalesce(c.acknowledged_at, c.claimed_at, s.queued_at) AS for_how_long,
       CASE WHEN c.status = 'pending' AND c.agent_id IS NOT NULL THEN c.claim_expires_at ELSE c.expires_at END
                                    AS deadline,
       s.retry_at
FROM step_runs s
JOIN pipeline_runs r ON r.id = s.pipeline_run_id
JOIN tenants t ON t.id = s.tenant_id
JOIN pipeline_templates p ON p.id = r.pipeline_id
LEFT JOIN commands c ON c.id = s.command_id
LEFT JOIN agents a ON a.id = c.agent_id
WHERE s.status IN ('queued', 'running')
ORDER BY since;

CREATE VIEW stuck_work AS
-- Commands nobody can take: no active agent of the tenant has the tool (or capabilities).
SELECT 'no_capable_agent'::text AS problem, c.tenant_id, c.pipeline_run_id, c.id AS command_id,
       coalesce(c.tool, array_to_string(c.capabilities, ',')) AS detail, now() - c.created_at AS waiting_for
FROM commands c
WHERE c.status = 'pending' AND c.agent_id IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM agents a
    WHERE a.tenant_id = c.tenant_id AND a.status = 'active' AND a.health <> 'offline'
      AND CASE WHEN c.tool IS NOT NULL THEN c.tool = ANY (a.tools) ELSE c.capabilities <@ a.capabilities END)
UNION ALL
-- Claims not acknowledged in time (they are claimable again).
SELECT 'claim_not_acknowledged', c.tenant_id, c.pipeline_run_id, c.id, a.name, now() - c.claimed_at
FROM commands c JOIN agents a ON a.id = c.agent_id
WHERE c.status = 'pending' AND c.claim_expires_at < now()
UNION ALL
-- Commands past their deadline that the expiry job has not handled yet (the worker is
-- down or behind).
SELECT 'deadline_passed', c.tenant_id, c.pipeline_run_id, c.id, c.status, now() - c.expires_at
FROM commands c
WHERE c.status IN ('pending', 'acknowledged', 'running') AND c.expires_at < now() - interval '30 seconds'
UNION ALL
-- Commands held by an agent that is offline.
SELECT 'agent_offline', c.tenant_id, c.pipeline_run_id, c.id, a.name, now() - coalesce(a.last_seen_at, c.claimed_at)
FROM commands c JOIN agents a ON a.id = c.agent_id
WHERE c.status IN ('acknowledged', 'running') AND a.health = 'offline'
UNION ALL
-- Jobs locked by a worker process that stopped heartbeating (or stopped): nothing runs
-- them until the maintenance sweep releases them.
SELECT 'job_orphaned', r.tenant_id, r.id, NULL, o.task_identifier || ' locked by ' || o.locked_by || ' (' || o.locker_state || ')',
       o.locked_for
FROM orphaned_jobs o
LEFT JOIN pipeline_runs r ON r.id::text = o.payload ->> 'run_id'
UNION ALL
-- Runs in progress that nothing would move (see stalled_runs): the detail says why.
SELECT 'run_stalled', s.tenant_id, s.pipeline_run_id, NULL, s.problem, now() - s.since
FROM stalled_runs s
UNION ALL
-- Steps whose command finished (or whose retry is due) more than 30 s ago while the step did
-- not move: the worker is down, behind, or its advance job was lost.
SELECT 'step_not_advanced', s.tenant_id, s.pipeline_run_id, c.id, s.step_key || ': command ' || c.status,
       now() - coalesce(s.retry_at, c.completed_at)
FROM step_runs s JOIN commands c ON c.id = s.command_id
WHERE s.status IN ('queued', 'running') AND c.status NOT IN ('pending', 'acknowledged', 'running')
  AND coalesce(s.retry_at, c.completed_at) < now() - interval '30 seconds';

CREATE VIEW runs_in_progress AS
SELECT r.id AS pipeline_run_id, t.name AS tenant, p.name AS pipeline, r.pipeline_version, r.status,
       r.trigger_type, r.asset_id, r.target->>'name' AS asset, r.started_at,
       now() - coalesce(r.started_at, r.created_at) AS age,
       r.total_steps, r.completed_steps, r.failed_steps, r.skipped_steps,
       (SELECT count(*) FROM step_runs s WHERE s.pipeline_run_id = r.id AND s.status IN ('queued', 'running')) AS active_steps,
       (SELECT max(e.created_at) FROM events e WHERE e.pipeline_run_id = r.id) AS last_event_at
FROM pipeline_runs r
JOIN tenants t ON t.id = r.tenant_id
JOIN pipeline_templates p ON p.id = r.pipeline_id
WHERE r.status IN ('pending', 'running')
ORDER BY r.created_at;

CREATE VIEW agent_load AS
SELECT t.name AS tenant, a.id AS agent_id, a.name AS agent, a.status, a.health, a.tools, a.capabilities,
       a.max_concurrent_jobs,
       count(c.id) FILTER (WHERE c.status IN ('acknowledged', 'running')) AS running,
       count(c.id) FILTER (WHERE c.status = 'pending') AS claimed,
       a.last_heartbeat_at, a.last_seen_at, now() - a.last_seen_at AS silent_for
FROM agents a
JOIN tenants t ON t.id = a.tenant_id
LEFT JOIN commands c ON c.agent_id = a.id AND c.status IN ('pending', 'acknowledged', 'running')
GROUP BY t.name, a.id
ORDER BY t.name, a.name;

CREATE VIEW scan_status AS
SELECT t.name AS tenant, s.name AS scan, s.status, s.schedule_type, s.cron_expression, s.timezone,
       s.next_run_at, s.last_run_at, s.managed_by,
       (SELECT count(*) FROM pipeline_runs r
        WHERE r.scan_id = s.id AND r.status IN ('pending', 'running') AND r.admitted_at IS NOT NULL) AS active_runs,
       (SELECT count(*) FROM pipeline_runs r
        WHERE r.scan_id = s.id AND r.status = 'pending' AND r.admitted_at IS NULL) AS waiting_runs,
       s.max_active_runs,
       f.fired_at AS last_fired_at, f.trigger_type AS last_trigger, cardinality(f.run_ids) AS last_runs,
       jsonb_array_length(f.skipped) AS last_skips, f.skipped AS last_skipped
FROM scans s
JOIN tenants t ON t.id = s.tenant_id
LEFT JOIN LATERAL (SELECT * FROM scan_fires x WHERE x.scan_id = s.id ORDER BY x.id DESC LIMIT 1) f ON true
ORDER BY t.name, s.next_run_at NULLS LAST, s.name;
