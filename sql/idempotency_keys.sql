-- Idempotency keys: reservations and stored answers of requests sent with Idempotency-Key
-- (src/api/idempotency.ts; the states are drawn in migrations/0004_idempotency_keys.sql).

-- name: ReserveIdempotencyKey :one
-- Reserves a key that is not in use; no row when it is (then GetIdempotencyKey says how).
INSERT INTO idempotency_keys (tenant_id, key, request_hash, owner)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, key) DO NOTHING
RETURNING owner;

-- name: GetIdempotencyKey :one
-- A key with its stored answer; expired when older than $3 seconds, stale when reserved
-- longer than $4 seconds ago.
SELECT owner, status, request_hash, response_status, response_content_type, response_body,
       created_at < now() - make_interval(secs => $3) AS expired,
       reserved_at < now() - make_interval(secs => $4) AS stale
FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2;

-- name: TakeOverIdempotencyKey :one
-- Takes a key from owner $4 for owner $5: an expired key (any status, it starts anew), or a
-- reservation for the same request ($3) never committed and older than the lease ($7 s).
-- It waits for a transaction that is committing the key and then finds it committed.
UPDATE idempotency_keys
SET owner = $5, request_hash = $3, status = 'processing', reserved_at = now(),
    created_at = CASE WHEN created_at < now() - make_interval(secs => $6) THEN now() ELSE created_at END,
    response_status = NULL, response_content_type = NULL, response_body = NULL, completed_at = NULL
WHERE tenant_id = $1 AND key = $2 AND owner = $4
  AND (created_at < now() - make_interval(secs => $6)
       OR (status = 'processing' AND request_hash = $3 AND reserved_at < now() - make_interval(secs => $7)))
RETURNING owner;

-- name: MarkIdempotencyKeyCommitted :exec
-- Queued first in every transaction of the request: the key is committed with its work.
SELECT idempotency_key_commit($1, $2, $3);

-- name: CompleteIdempotencyKey :one
-- Stores the answer of the request that holds the key.
UPDATE idempotency_keys
SET status = 'completed', response_status = $4, response_content_type = $5, response_body = $6, completed_at = now()
WHERE tenant_id = $1 AND key = $2 AND owner = $3 AND status IN ('processing', 'committed')
RETURNING status;

-- name: ReleaseIdempotencyKey :one
-- Lets a retry run: the request failed (5xx) before its work committed.
DELETE FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND owner = $3 AND status = 'processing'
RETURNING key;

-- name: PurgeIdempotencyKeys :one
-- Deletes up to $2 keys older than $1 seconds (they behave as new anyway); how many. Never
-- waits: a key some request holds is left for the next purge. The age is checked again
-- on the row deleted (a key taken over meanwhile is young again).
WITH gone AS (
  DELETE FROM idempotency_keys
  WHERE created_at < now() - make_interval(secs => $1)
    AND (tenant_id, key) IN (
    SELECT tenant_id, key FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => $1)
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
  )
  RETURNING 1
)
SELECT count(*)::int AS purged FROM gone;
