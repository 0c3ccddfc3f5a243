-- Bursts of due scans (issue 13): admission in sets. A scheduler tick fires a batch of scans
-- in one transaction and admits each tenant's new runs with one admit_runs call; the walk of
-- 0002 cost two queries, an UPDATE and an add_job per admitted run (and in a burst of 10,000
-- due scans fired one per transaction, each fire's call took 97 ms on average, most of it
-- waiting for the tenant's lock). The same rule, a chunk of waiting runs at a time:
-- oldest first, while the tenant has fewer than its max_active_runs admitted runs in progress
-- and each run's scan fewer than its own; the runs of one scan that fit are its oldest
-- waiting ones (a run of a full scan is passed over, as before). The admitted runs' first
-- advances go in with one add_jobs (run_advance:<id>, as request_run_advance: a job of that
-- key already running gets a new one). One admission at a time per tenant (the advisory lock
-- is taken before the counts are read). After a run finishes one slot frees and the first
-- chunk (32 waiting runs) usually fills it.
CREATE OR REPLACE FUNCTION admit_runs(p_tenant_id uuid) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  admitted integer := 0;
  free integer;
  chunk integer;
  seen integer;
  ids uuid[];
  after_at timestamptz := '-infinity';
  after_id uuid := '00000000-0000-0000-0000-000000000000';
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('scanflow.admit.' || p_tenant_id::text, 0));
  SELECT t.max_active_runs - (SELECT count(*) FROM pipeline_runs r
                              WHERE r.tenant_id = p_tenant_id AND r.status IN ('pending', 'running')
                                AND r.admitted_at IS NOT NULL)
  INTO free FROM tenants t WHERE t.id = p_tenant_id;
  IF coalesce(free, 0) <= 0 THEN
    RETURN 0;
  END IF;
  LOOP
    chunk := least(greatest(free, 32), 2000);
    -- Each part materialized: a burst grows pipeline_runs faster than its statistics, and a
    -- nested loop that counted a scan's admitted runs per waiting run took 10 s for 500 runs.
    WITH waiting AS MATERIALIZED (
      SELECT r.id, r.scan_id, r.created_at FROM pipeline_runs r
      WHERE r.tenant_id = p_tenant_id AND r.status = 'pending' AND r.admitted_at IS NULL
        AND (r.created_at, r.id) > (after_at, after_id)
      ORDER BY r.created_at, r.id
      LIMIT chunk
    ), active AS MATERIALIZED (
      -- The admitted runs in progress of the chunk's scans (runs admitted by earlier chunks
      -- count: same transaction).
      SELECT a.scan_id, count(*) AS n FROM pipeline_runs a
      WHERE a.tenant_id = p_tenant_id AND a.status IN ('pending', 'running') AND a.admitted_at IS NOT NULL
        AND a.scan_id IN (SELECT w.scan_id FROM waiting w)
      GROUP BY a.scan_id
    ), room AS MATERIALIZED (
      -- Each scan's free slots.
      SELECT d.scan_id, coalesce(s.max_active_runs, 1) - coalesce(a.n, 0) AS room
      FROM (SELECT DISTINCT w.scan_id FROM waiting w WHERE w.scan_id IS NOT NULL) d
      LEFT JOIN scans s ON s.id = d.scan_id
      LEFT JOIN active a ON a.scan_id = d.scan_id
    ), ranked AS (
      SELECT w.id, w.created_at,
             w.scan_id IS NULL OR row_number() OVER (PARTITION BY w.scan_id ORDER BY w.created_at, w.id) <= room.room AS fits
      FROM waiting w LEFT JOIN room ON room.scan_id = w.scan_id
    )
    SELECT count(*)::integer,
           (array_agg(r.id ORDER BY r.created_at, r.id) FILTER (WHERE r.fits))[1:free],
           max(r.created_at),
           (array_agg(r.id ORDER BY r.created_at DESC, r.id DESC))[1]
    INTO seen, ids, after_at, after_id
    FROM ranked r;
    EXIT WHEN seen = 0;
    IF cardinality(ids) > 0 THEN
      UPDATE pipeline_runs SET admitted_at = now(), updated_at = now() WHERE id = ANY (ids);
      PERFORM graphile_worker.add_jobs(ARRAY(
        SELECT ROW('run_advance', json_build_object('run_id', i), NULL, NULL, NULL, 'run_advance:' || i, NULL, NULL)::graphile_worker.job_spec
        FROM unnest(ids) i));
      admitted := admitted + cardinality(ids);
      free := free - cardinality(ids);
    END IF;
    -- Otherwise the next chunk starts after this one's last run.
    EXIT WHEN free <= 0 OR seen < chunk;
  END LOOP;
  RETURN admitted;
END $$;

-- The scan.fired event of each fire, written per statement: a batch of fires (a scheduler
-- tick fires hundreds at once) is one insert into events, and one run of its routing
-- (events_route), rather than one of each per fire.
CREATE FUNCTION scan_fires_record_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO events (tenant_id, type, data)
  SELECT f.tenant_id, 'scan.fired',
         jsonb_build_object('scan_id', f.scan_id, 'scan_name', s.name, 'pipeline_id', s.pipeline_id,
                            'trigger_type', f.trigger_type, 'triggered_by', f.triggered_by, 'due_at', f.due_at,
                            'fired_at', f.fired_at, 'run_ids', to_jsonb(f.run_ids), 'waiting_runs', f.waiting_runs,
                            'skipped', jsonb_array_length(f.skipped))
  FROM new_fires f JOIN scans s ON s.id = f.scan_id
  ORDER BY f.id;
  RETURN NULL;
END $$;

DROP TRIGGER scan_fires_event ON scan_fires;
DROP FUNCTION scan_fires_record_event();
CREATE TRIGGER scan_fires_event AFTER INSERT ON scan_fires
  REFERENCING NEW TABLE AS new_fires
  FOR EACH STATEMENT EXECUTE FUNCTION scan_fires_record_events();
