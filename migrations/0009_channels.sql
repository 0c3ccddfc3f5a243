-- Events out (API.md Part 2 "Events out: notification channels"): a tenant's notification
-- channels and their deliveries. The events table is the outbox: the statement that writes
-- events routes them to the channels that want them and enqueues one event_deliver job per
-- (event, channel), in the same transaction (events_route below). The feed and the stream
-- read the events table in the order transactions settle (events.xid below).

-- Event types that are not a run's, a step's or a finding's transition.
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN (
  'pipeline.run.started', 'pipeline.run.completed', 'pipeline.run.failed',
  'pipeline.run.cancelled', 'pipeline.run.timeout',
  'pipeline.step.queued', 'pipeline.step.started', 'pipeline.step.completed',
  'pipeline.step.failed', 'pipeline.step.skipped', 'pipeline.step.retrying',
  'pipeline.step.cancelled', 'pipeline.step.timeout',
  'finding.created', 'finding.reopened', 'finding.resolved', 'finding.status_changed',
  'scan.fired', 'agent.offline', 'channel.test'));

-- The feed's order. Event ids are taken when a row is inserted but become visible when its
-- transaction commits, so a reader following ids alone would skip an event whose
-- transaction took its id early and committed late. Readers follow (xid, id) instead, and
-- only up to the oldest transaction still in progress (pg_snapshot_xmin of their snapshot):
-- every event of a transaction below that is committed (or rolled back) for good, and any
-- transaction that writes an event later has a larger xid. Rows written before this
-- migration read as transaction 0 (a constant default: no table rewrite).
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- The tenant feed and stream page through this; it replaces the (tenant_id, id) index that
-- nothing read, so an event insert maintains as many indexes as before.
DROP INDEX events_tenant_idx;
CREATE INDEX events_tenant_xid_idx ON events (tenant_id, xid, id);

CREATE TABLE channels (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  type                  text NOT NULL CHECK (type IN ('webhook', 'slack', 'email')),
  -- webhook and slack: where to POST (http or https, checked by the API).
  url                   text CHECK (url IS NULL OR url ~ '^https?://'),
  -- email: the recipients.
  email_to              text[] NOT NULL DEFAULT '{}',
  -- Exact event names or 'prefix.*' patterns; '*' is every event; none: only what pipelines'
  -- settings.notification route to the channel (and tests).
  events                text[] NOT NULL DEFAULT '{}',
  -- Finding events below this severity are not sent.
  min_severity          text CHECK (min_severity IN ('critical', 'high', 'medium', 'low', 'info')),
  -- Only events of runs of these pipelines (NULL: every pipeline). Events that belong to no
  -- pipeline (an agent going offline, findings ingested outside a run) are not filtered.
  pipeline_ids          uuid[],
  enabled               boolean NOT NULL DEFAULT true,
  disabled_reason       text,
  disabled_at           timestamptz,
  -- Webhooks: the signing secret, encrypted (src/delivery/secrets.ts: AES-256-GCM under
  -- SECRETS_KEY), and during a rotation's grace period the previous one, which signs too.
  secret                bytea,
  secret_prefix         text,
  previous_secret       bytea,
  previous_secret_until timestamptz,
  -- Set by the first failed attempt after a success: failing for 24 hours disables.
  failing_since         timestamptz,
  last_error            text,
  last_attempt_at       timestamptz,
  last_success_at       timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, id),
  CHECK (type = 'email' OR url IS NOT NULL),
  CHECK (type <> 'webhook' OR secret IS NOT NULL)
);
CREATE UNIQUE INDEX channels_name_key ON channels (tenant_id, lower(name));
CREATE INDEX channels_tenant_created_idx ON channels (tenant_id, created_at DESC, id DESC);
-- The events trigger's first question, asked by every statement that writes events.
CREATE INDEX channels_enabled_idx ON channels (tenant_id) WHERE enabled;

-- One (event, channel) to deliver: the event_deliver job's unit, retried by run_at
-- (next_attempt_at) until delivered or out of attempts.
CREATE TABLE deliveries (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid NOT NULL,
  channel_id       uuid NOT NULL,
  -- The event; for a group (the finding events of one ingest of one type), its first.
  event_id         bigint NOT NULL,
  event_type       text NOT NULL,
  -- A group's events, highest severity first, at most 100 of them; event_count counts all,
  -- severities counts them by severity.
  event_ids        bigint[] NOT NULL,
  event_count      integer NOT NULL DEFAULT 1 CHECK (event_count >= 1),
  severities       jsonb,
  -- Why the channel gets it: its own filters, the pipeline's settings.notification, a test.
  reason           text NOT NULL CHECK (reason IN ('subscribed', 'pipeline_notification', 'test')),
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
  attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  -- An attempt in flight: nobody else sends this delivery before lease_until.
  lease_id         uuid,
  lease_until      timestamptz,
  last_status_code integer,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  finished_at      timestamptz,
  UNIQUE (channel_id, event_id),
  FOREIGN KEY (tenant_id, channel_id) REFERENCES channels (tenant_id, id) ON DELETE CASCADE
);

-- Every attempt of a delivery: the channel's delivery log.
CREATE TABLE delivery_attempts (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     uuid NOT NULL,
  channel_id    uuid NOT NULL,
  delivery_id   uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
  attempt       integer NOT NULL CHECK (attempt >= 1),
  outcome       text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'gone')),
  -- The HTTP status (webhook, slack) or SMTP reply code (email); NULL when none came.
  status_code   integer,
  latency_ms    integer NOT NULL,
  error         text,
  -- When the next attempt runs (NULL: none will).
  next_retry_at timestamptz,
  attempted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_attempts_channel_idx ON delivery_attempts (channel_id, id DESC);
CREATE INDEX delivery_attempts_delivery_idx ON delivery_attempts (delivery_id);

-- Whether a channel's event filter selects an event type: '*', the exact name, or a
-- 'prefix.*' pattern ('pipeline.*' selects 'pipeline.run.failed').
CREATE FUNCTION event_pattern_matches(patterns text[], event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT event_type = ANY (patterns) OR '*' = ANY (patterns)
      OR EXISTS (SELECT 1 FROM unnest(patterns) p WHERE p LIKE '%.*' AND starts_with(event_type, left(p, -1)))
$$;

CREATE FUNCTION severity_rank(severity text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END::smallint
$$;

-- Whether a pipeline's settings.notification ($1, seed 001) routes a run event ($2) to a
-- channel of this type and name: on_completion for a completed run, on_failure for a failed
-- or timed-out one, and the channel's type or name among its channels. Read defensively:
-- a malformed value routes nothing, it never fails the transition that wrote the event.
CREATE FUNCTION notification_routes(notification jsonb, event_type text, channel_type text, channel_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT jsonb_typeof(notification) = 'object'
     AND ((event_type = 'pipeline.run.completed' AND notification -> 'on_completion' = 'true'::jsonb)
          OR (event_type IN ('pipeline.run.failed', 'pipeline.run.timeout') AND notification -> 'on_failure' = 'true'::jsonb))
     AND jsonb_typeof(notification -> 'channels') = 'array'
     AND EXISTS (SELECT 1 FROM jsonb_array_elements(notification -> 'channels') x
                 WHERE jsonb_typeof(x) = 'string' AND lower(x #>> '{}') IN (channel_type, lower(channel_name)))
$$;

-- The tenants whose events an API process streams to someone right now
-- (src/api/event-stream.ts): only their transactions NOTIFY. A NOTIFY makes its transaction's
-- commit take PostgreSQL's notification queue lock, one commit at a time; on every step's
-- acknowledgement (which notifies nothing else) that cost 18% of npm run bench's steps/s.
-- Rows are refreshed while streams are open and expire when their process is gone.
CREATE UNLOGGED TABLE event_listeners (
  tenant_id  uuid NOT NULL,
  listener   text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, listener)
);

-- Every statement that writes events: a NOTIFY per tenant some API process streams
-- (PostgreSQL folds repeats within a transaction), and, only when a tenant has an enabled
-- channel, the routing: each (event, channel) the channel's filters or the run's
-- settings.notification select becomes a delivery and an event_deliver job, committed with
-- the event. The finding events of one ingest and type are one delivery per channel (a
-- capped list and a count), never one message per finding. A tenant with neither pays two
-- index probes: 35 µs of PostgreSQL CPU per event-writing statement (185 → 220 µs for a
-- one-event transaction), about 2% of a step's; npm run bench's steps/s moved within its noise.
CREATE FUNCTION events_route() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  tenant uuid;
  delivery_ids uuid[];
BEGIN
  FOR tenant IN SELECT DISTINCT tenant_id FROM new_events LOOP
    IF EXISTS (SELECT 1 FROM event_listeners l WHERE l.tenant_id = tenant AND l.expires_at > now()) THEN
      PERFORM pg_notify('scanflow_events', tenant::text);
    END IF;
  END LOOP;
  IF NOT EXISTS (SELECT 1 FROM channels c WHERE c.enabled AND c.tenant_id IN (SELECT tenant_id FROM new_events)) THEN
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

CREATE TRIGGER events_route AFTER INSERT ON events
  REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION events_route();

-- A scan fired (on schedule, by hand, by a webhook or an asset discovery) → scan.fired.
CREATE FUNCTION scan_fires_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO events (tenant_id, type, data)
  SELECT NEW.tenant_id, 'scan.fired',
         jsonb_build_object('scan_id', NEW.scan_id, 'scan_name', s.name, 'pipeline_id', s.pipeline_id,
                            'trigger_type', NEW.trigger_type, 'triggered_by', NEW.triggered_by, 'due_at', NEW.due_at,
                            'fired_at', NEW.fired_at, 'run_ids', to_jsonb(NEW.run_ids), 'waiting_runs', NEW.waiting_runs,
                            'skipped', jsonb_array_length(NEW.skipped))
  FROM scans s WHERE s.id = NEW.scan_id;
  RETURN NULL;
END $$;

CREATE TRIGGER scan_fires_event AFTER INSERT ON scan_fires
  FOR EACH ROW EXECUTE FUNCTION scan_fires_record_event();

-- An agent that went silent → agent.offline (its health turned offline).
CREATE FUNCTION agents_record_offline() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO events (tenant_id, type, data)
  VALUES (NEW.tenant_id, 'agent.offline',
          jsonb_build_object('agent_id', NEW.id, 'agent_name', NEW.name, 'hostname', NEW.hostname,
                             'previous_health', OLD.health, 'last_heartbeat_at', NEW.last_heartbeat_at,
                             'last_seen_at', NEW.last_seen_at));
  RETURN NULL;
END $$;

CREATE TRIGGER agents_offline_event AFTER UPDATE OF health ON agents
  FOR EACH ROW WHEN (NEW.health = 'offline' AND OLD.health IS DISTINCT FROM 'offline')
  EXECUTE FUNCTION agents_record_offline();
