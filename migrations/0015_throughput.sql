-- Throughput (issue 13): fewer statements per step. Every statement PostgreSQL executes,
-- nested ones in functions and triggers included, costs its executor start-up (locks,
-- catalog lookups, expressions) whatever it does; with pg_stat_statements tracking nested
-- statements, a step of npm run bench's diamond executed 57 of them.
--
-- events_route, the statement trigger of every event insert (3.5 per step), asked its
-- questions in three statements and a loop (the distinct tenants, then for each whether an
-- API process streams it, then whether any has an enabled channel): one statement now
-- answers both, and the NOTIFYs go out in one more only when someone listens. The rest of
-- the routing is as 0009 wrote it.
CREATE OR REPLACE FUNCTION events_route() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  listened uuid[];
  routed boolean;
  delivery_ids uuid[];
BEGIN
  SELECT array_agg(t.tenant_id ORDER BY t.tenant_id)
           FILTER (WHERE EXISTS (SELECT 1 FROM event_listeners l WHERE l.tenant_id = t.tenant_id AND l.expires_at > now())),
         coalesce(bool_or(EXISTS (SELECT 1 FROM channels c WHERE c.enabled AND c.tenant_id = t.tenant_id)), false)
  INTO listened, routed
  FROM (SELECT DISTINCT tenant_id FROM new_events) t;
  IF listened IS NOT NULL THEN
    PERFORM pg_notify('scanflow_events', tenant::text) FROM unnest(listened) tenant;
  END IF;
  IF NOT routed THEN
    RETURN NULL;
  END IF;
  WITH facts AS (
    SELECT e.id, e.tenant_id, e.type, e.data ->> 'ingest_id' AS ingest_id,
           coalesce(e.data ->> 'pipeline_id', r.pipeline_id::text) AS pipeline_id,
           r.settings -> 'notification' AS notification,
           CASE WHEN e.type LIKE 'finding.%' THEN coalesce(e.data ->> 'severity', f.severity) END AS severity
    FROM new_events e
    LEFT JOIN pipeline_runs r ON r.id = coalesce(e.pipeline_run_id, (e.data ->> 'pipeline_run_id')::uuid)
    LEFT JOIN findings f ON f.id = e.finding_id AND e.data ->> 'severity' IS NULL
    WHERE e.type <> 'channel.test' -- sent to its one channel by POST /channels/{id}/test
  ), matched AS (
    SELECT e.*, c.id AS channel_id, m.subscribed
    FROM facts e
    JOIN channels c ON c.tenant_id = e.tenant_id AND c.enabled
    CROSS JOIN LATERAL (
      SELECT event_pattern_matches(c.events, e.type)
               AND (c.min_severity IS NULL OR e.severity IS NULL OR severity_rank(e.severity) >= severity_rank(c.min_severity))
               AND (c.pipeline_ids IS NULL OR e.pipeline_id IS NULL OR e.pipeline_id = ANY (c.pipeline_ids::text[])) AS subscribed,
             notification_routes(e.notification, e.type, c.type, c.name) AS notified
    ) m
    WHERE m.subscribed OR m.notified
  ), grouped AS (
    SELECT tenant_id, channel_id, type, min(id) AS event_id,
           (array_agg(id ORDER BY severity_rank(severity) DESC, id))[1:100] AS event_ids,
           count(*)::int AS event_count,
           CASE WHEN type LIKE 'finding.%' THEN
             (SELECT jsonb_object_agg(s, n) FROM (SELECT coalesce(x, 'unknown') AS s, count(*) AS n
                                                   FROM unnest(array_agg(severity)) x GROUP BY 1) y)
           END AS severities,
           CASE WHEN bool_or(subscribed) THEN 'subscribed' ELSE 'pipeline_notification' END AS reason
    FROM matched
    GROUP BY tenant_id, channel_id, type,
             CASE WHEN type LIKE 'finding.%' AND ingest_id IS NOT NULL THEN ingest_id ELSE id::text END
  ), inserted AS (
    INSERT INTO deliveries (tenant_id, channel_id, event_id, event_type, event_ids, event_count, severities, reason)
    SELECT tenant_id, channel_id, event_id, type, event_ids, event_count, severities, reason FROM grouped
    ON CONFLICT (channel_id, event_id) DO NOTHING
    RETURNING id
  )
  SELECT array_agg(id) INTO delivery_ids FROM inserted;
  IF delivery_ids IS NOT NULL THEN
    PERFORM graphile_worker.add_jobs(ARRAY(
      SELECT ROW('event_deliver', json_build_object('delivery_id', d), NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
      FROM unnest(delivery_ids) d));
  END IF;
  RETURN NULL;
END $$;


-- Asks for a run to be advanced (as 0001: job_key run_advance:<id> coalesces bursts), with
-- graphile-worker's add_jobs directly: add_job is a wrapper that runs it as one more
-- statement. add_jobs clears the key of a job of that key that a worker holds (or that
-- failed for good) before inserting, so a new job is added then (graphile/worker#580); were
-- no job returned all the same, an unkeyed one is added, as before. 1.25 calls per step.
CREATE OR REPLACE FUNCTION request_run_advance(p_run_id uuid, p_run_at timestamptz DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM graphile_worker.add_jobs(ARRAY[
    ROW('run_advance', json_build_object('run_id', p_run_id), NULL, p_run_at, NULL, 'run_advance:' || p_run_id, NULL, NULL)::graphile_worker.job_spec]);
  IF NOT FOUND THEN
    PERFORM graphile_worker.add_jobs(ARRAY[
      ROW('run_advance', json_build_object('run_id', p_run_id), NULL, p_run_at, NULL, NULL, NULL, NULL)::graphile_worker.job_spec]);
  END IF;
END $$;


-- step_runs.agent_id named its agent through a foreign key, checked by every statement that
-- sets it (a step's acknowledgement, once per step): one more nested statement, and a KEY
-- SHARE lock on the agent's row, which every in-flight command of that agent locks the same
-- way at once (so a MultiXact) while its contact batches update it. Every value written is
-- the agent of a command of the same step (AckCommand: the acknowledged command's agent;
-- CompleteStep: the completed command's), and commands.agent_id's own foreign key keeps
-- that agent from being deleted while the command exists: the check never fails. What the
-- key also did, setting agent_id to NULL when an agent is deleted (nothing in scanflow
-- deletes one; by hand, after retention removed its commands), a statement trigger on
-- agents does now, for the deleted rows at once.
ALTER TABLE step_runs DROP CONSTRAINT IF EXISTS step_runs_tenant_id_agent_id_fkey;

CREATE FUNCTION agents_forget_step_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE step_runs s SET agent_id = NULL
  FROM gone g WHERE s.tenant_id = g.tenant_id AND s.agent_id = g.id;
  RETURN NULL;
END $$;

CREATE TRIGGER agents_forget_step_runs AFTER DELETE ON agents
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION agents_forget_step_runs();
