-- What one retention batch removed, added to its pass's retention_log row (created by the
-- pass's first batch that removed anything): one definition of the merge the four batch
-- statements of sql/retention.sql each wrote out. Counts add up; the oldest and newest
-- times, the events walked (scanned_to) and the last event removed widen; NULLs (bytes,
-- scanned_to, last_id of the kinds without them) stay NULL.
CREATE FUNCTION retention_log_add(
  p_pass_id uuid, p_kind text, p_rows bigint, p_batches integer, p_bytes bigint,
  p_oldest timestamptz, p_newest timestamptz, p_cutoff timestamptz,
  p_scanned_to bigint, p_last_id bigint, p_started timestamptz
) RETURNS void LANGUAGE sql AS $$
  INSERT INTO retention_log AS l (pass_id, kind, rows, batches, bytes, oldest_at, newest_at, cutoff, scanned_to, last_id, started_at)
  VALUES (p_pass_id, p_kind, p_rows, p_batches, p_bytes, p_oldest, p_newest, p_cutoff, p_scanned_to, p_last_id, p_started)
  ON CONFLICT (pass_id, kind) DO UPDATE
  SET rows = l.rows + EXCLUDED.rows, batches = l.batches + EXCLUDED.batches, bytes = l.bytes + EXCLUDED.bytes,
      oldest_at = least(l.oldest_at, EXCLUDED.oldest_at), newest_at = greatest(l.newest_at, EXCLUDED.newest_at),
      scanned_to = greatest(l.scanned_to, EXCLUDED.scanned_to), last_id = greatest(l.last_id, EXCLUDED.last_id),
      finished_at = clock_timestamp();
$$;
