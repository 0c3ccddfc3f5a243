-- Step output: a command's tool output in append-only chunks (migrations/0006). An agent
-- appends at the current length; readers read windows of the concatenated chunks.
-- A command takes output from its agent while it holds it and for a grace of $N seconds
-- after it finished (agents flush their last output after completing).

-- name: AppendCommandOutput :one
-- Appends a chunk for the agent ($2) holding command $1, if it starts at the output's current
-- length ($3): one guarded statement, so of two appends at one offset exactly one wins. $4
-- bytes were received, $5 of them are stored (a prefix once the cap is reached, nothing past
-- it) and the truncation marker $6 (NULL below the cap) is stored once. No row: not this
-- agent's command, closed for output, not at the current length, or stored content after a
-- truncation (a cap raised since) — GetCommandOutputHead says which.
WITH command AS (
  SELECT c.id, c.tenant_id FROM commands c
  WHERE c.id = $1 AND c.agent_id = $2
    AND (c.status IN ('acknowledged', 'running')
         OR (c.status = 'pending' AND c.claim_expires_at > now())
         OR c.completed_at > now() - make_interval(secs => $7))
), head AS (
  -- The first chunk creates the head; later ones find it and move it on only from $3. A head
  -- not yet visible is only created by a chunk at 0 (a concurrent creator makes it a conflict).
  INSERT INTO command_outputs AS o (command_id, tenant_id, received_bytes, kept_bytes, stored_bytes, truncated)
  SELECT command.id, command.tenant_id, $4, octet_length($5::bytea),
         octet_length($5::bytea) + coalesce(octet_length($6::bytea), 0), $6::bytea IS NOT NULL
  FROM command
  WHERE $3::bigint = 0 OR EXISTS (SELECT 1 FROM command_outputs x WHERE x.command_id = command.id)
  ON CONFLICT (command_id) DO UPDATE
  SET received_bytes = o.received_bytes + $4,
      kept_bytes = o.kept_bytes + octet_length($5::bytea),
      stored_bytes = CASE WHEN o.truncated THEN o.stored_bytes
                          ELSE o.kept_bytes + octet_length($5::bytea) + coalesce(octet_length($6::bytea), 0) END,
      truncated = o.truncated OR $6::bytea IS NOT NULL,
      updated_at = now()
  WHERE o.received_bytes = $3::bigint AND NOT (o.truncated AND octet_length($5::bytea) > 0)
  RETURNING o.command_id, o.tenant_id, o.received_bytes, o.kept_bytes, o.stored_bytes, o.truncated
), chunk AS (
  -- The content at the old kept length, the marker after it (once: a second one conflicts).
  INSERT INTO command_output_chunks (command_id, byte_offset, tenant_id, data)
  SELECT head.command_id, head.kept_bytes - octet_length($5::bytea), head.tenant_id, $5::bytea
  FROM head WHERE octet_length($5::bytea) > 0
  UNION ALL
  SELECT head.command_id, head.kept_bytes, head.tenant_id, $6::bytea
  FROM head WHERE $6::bytea IS NOT NULL
  ON CONFLICT (command_id, byte_offset) DO NOTHING
  RETURNING byte_offset
)
SELECT head.received_bytes, head.stored_bytes, head.truncated FROM head
WHERE (SELECT count(*) FROM chunk) >= 0;

-- name: GetCommandOutputHead :one
-- A command the agent ($2) holds, whether it takes output now ($3 seconds of grace after it
-- finished), and its output's lengths (zero before the first chunk).
SELECT c.id, c.tenant_id, c.status,
       (c.status IN ('acknowledged', 'running')
        OR (c.status = 'pending' AND c.claim_expires_at > now())
        OR coalesce(c.completed_at > now() - make_interval(secs => $3), false)) AS open,
       coalesce(o.received_bytes, 0) AS received_bytes, coalesce(o.kept_bytes, 0) AS kept_bytes,
       coalesce(o.truncated, false) AS truncated
FROM commands c
LEFT JOIN command_outputs o ON o.command_id = c.id
WHERE c.id = $1 AND c.agent_id = $2;

-- name: ReadCommandOutput :one
-- Bytes $2 to $2 + $3 of command $1's stored output in one statement: the chunk holding $2
-- and the ones after it up to the end of the window, concatenated in order.
SELECT coalesce(substring(string_agg(k.data, ''::bytea ORDER BY k.byte_offset)
                          FROM ($2::bigint - min(k.byte_offset))::int + 1 FOR $3::int), ''::bytea) AS data
FROM command_output_chunks k
WHERE k.command_id = $1
  AND k.byte_offset >= coalesce((SELECT max(p.byte_offset) FROM command_output_chunks p
                                 WHERE p.command_id = $1 AND p.byte_offset <= $2::bigint), 0)
  AND k.byte_offset < $2::bigint + $3::int;

-- name: ReadStepOutput :one
-- A step run of a tenant's run by key, the command of its attempt $4 (NULL: the latest), and
-- bytes $5 to $5 + $6 of that command's stored output, as ReadCommandOutput reads them.
-- No row: no such step. No command: the step was never dispatched (or no such attempt).
WITH step AS (
  SELECT s.id, s.step_key, s.status, s.attempt FROM step_runs s
  WHERE s.tenant_id = $1 AND s.pipeline_run_id = $2 AND s.step_key = $3
), command AS (
  SELECT c.id, c.attempt FROM commands c, step
  WHERE c.tenant_id = $1 AND c.step_run_id = step.id AND ($4::int IS NULL OR c.attempt = $4::int)
  ORDER BY c.attempt DESC, c.seq DESC
  LIMIT 1
), head AS (
  SELECT o.stored_bytes, o.truncated, o.purged_at FROM command_outputs o, command
  WHERE o.command_id = command.id AND o.tenant_id = $1
), win AS (
  SELECT min(k.byte_offset) AS first, string_agg(k.data, ''::bytea ORDER BY k.byte_offset) AS data
  FROM command_output_chunks k, command
  WHERE k.command_id = command.id AND k.tenant_id = $1
    AND k.byte_offset >= coalesce((SELECT max(p.byte_offset) FROM command_output_chunks p
                                   WHERE p.command_id = command.id AND p.byte_offset <= $5::bigint), 0)
    AND k.byte_offset < $5::bigint + $6::int
)
SELECT step.id AS step_run_id, step.step_key, step.status AS step_status, step.attempt AS step_attempt,
       command.id AS command_id, command.attempt,
       coalesce(head.stored_bytes, 0) AS stored_bytes, coalesce(head.truncated, false) AS truncated, head.purged_at,
       coalesce(substring(win.data FROM ($5::bigint - win.first)::int + 1 FOR $6::int), ''::bytea) AS data
FROM step
LEFT JOIN command ON true
LEFT JOIN head ON true
LEFT JOIN win ON true;
