-- Views for operators and DBAs, re-created at every start (after the migrations).
-- "What is running, on which agent, since when, and what is stuck":
--   SELECT * FROM running_work;      -- every step in flight, its agent and its deadline
--   SELECT * FROM stuck_work;        -- everything waiting longer than it should, and why
--   SELECT * FROM runs_in_progress;  -- active runs with their progress
--   SELECT * FROM agent_load;        -- agents, health, what they hold
--   SELECT * FROM scan_status;       -- scans: next fire, last fire, what it skipped, waiting runs
--   SELECT * FROM scan_fires ORDER BY id DESC;  -- every fire: when, why, runs, skips and reasons

DROP VIEW IF EXISTS running_work, stuck_work, runs_in_progress, agent_load, scan_status;

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
-- Runs in progress with nothing in flight and no advance or retry job waiting: progression
-- has stalled (should never happen; graphile_worker.jobs shows failed advance jobs).
SELECT 'run_stalled', r.tenant_id, r.id, NULL, r.status, now() - r.updated_at
FROM pipeline_runs r
WHERE r.status IN ('pending', 'running') AND r.updated_at < now() - interval '1 minute'
  AND NOT EXISTS (SELECT 1 FROM step_runs s WHERE s.pipeline_run_id = r.id AND s.status IN ('queued', 'running'))
  AND NOT EXISTS (SELECT 1 FROM graphile_worker.jobs j
                  WHERE j.key = 'run_advance:' || r.id);

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
