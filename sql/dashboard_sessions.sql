-- Dashboard sessions (migrations/0010_dashboard_sessions.sql): each row is found by the
-- SHA-256 of its cookie's value; the value itself is never stored.

-- name: FindTokenForSession :one
-- A live tenant token by its SHA-256, with its tenant: what a tenant sign-in exchanges.
SELECT k.id AS api_token_id, k.tenant_id FROM api_tokens k WHERE k.token_hash = $1 AND k.revoked_at IS NULL;

-- name: InsertSession :one
-- Stores a new session ($1 the SHA-256 of its cookie value) in tenant $2 (NULL: an admin
-- session before it chooses one), from tenant token $3 or the admin token of SHA-256 $4,
-- living at most $5 seconds.
INSERT INTO dashboard_sessions (id_hash, tenant_id, api_token_id, admin_token_sha256, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
RETURNING created_at, expires_at;

-- name: FindSession :one
-- A live session with its tenant: before its expiry, used within the last $2 seconds, its
-- tenant token not revoked. Marks it used at most once a minute (a write per minute of use,
-- not per request). The tenant's columns are NULL for an admin session that has not chosen
-- one.
WITH found AS (
  SELECT s.*, k.token_hash AS api_token_hash
  FROM dashboard_sessions s
  LEFT JOIN api_tokens k ON k.id = s.api_token_id
  WHERE s.id_hash = $1 AND s.expires_at > now() AND s.last_used_at > now() - make_interval(secs => $2)
    AND (s.api_token_id IS NULL OR k.revoked_at IS NULL)
), touched AS (
  UPDATE dashboard_sessions s SET last_used_at = now()
  FROM found f
  WHERE s.id_hash = f.id_hash AND f.last_used_at < now() - interval '1 minute'
  RETURNING s.id_hash
)
SELECT f.api_token_id, f.api_token_hash, f.admin_token_sha256, f.created_at AS session_created_at,
       f.expires_at AS session_expires_at, greatest(f.last_used_at, now()) AS session_used_at, t.*
FROM found f
LEFT JOIN tenants t ON t.id = f.tenant_id
WHERE (SELECT count(*) FROM touched) >= 0;

-- name: SessionTenant :one
-- The tenant a live session ($1, idle window $2 seconds) acts in, and its admin token hash
-- (admin sessions), without marking it used: an open event stream re-checks its session
-- with it, and an unattended dashboard's stream must not keep its session alive.
SELECT s.tenant_id, s.admin_token_sha256
FROM dashboard_sessions s
LEFT JOIN api_tokens k ON k.id = s.api_token_id
WHERE s.id_hash = $1 AND s.expires_at > now() AND s.last_used_at > now() - make_interval(secs => $2)
  AND (s.api_token_id IS NULL OR k.revoked_at IS NULL);

-- name: RotateSession :one
-- An admin session ($1) becomes session $2 acting in tenant $3: a new cookie value (the
-- session's privileges changed), the same admin token, start and expiry. No row when $1 is
-- not a live admin session.
WITH old AS (
  DELETE FROM dashboard_sessions
  WHERE id_hash = $1 AND admin_token_sha256 IS NOT NULL AND expires_at > now()
  RETURNING *
)
INSERT INTO dashboard_sessions (id_hash, tenant_id, admin_token_sha256, created_at, last_used_at, expires_at)
SELECT $2, $3, old.admin_token_sha256, old.created_at, now(), old.expires_at FROM old
RETURNING created_at, expires_at;

-- name: DeleteSession :exec
-- Signs a session out.
DELETE FROM dashboard_sessions WHERE id_hash = $1;

-- name: DeleteEndedSessions :exec
-- Forgets sessions past their expiry or unused for $1 seconds (at most 1,000 per call: it
-- runs on every sign-in, which is rare, so the table stays as small as the live sessions).
DELETE FROM dashboard_sessions
WHERE id_hash IN (
  SELECT id_hash FROM dashboard_sessions
  WHERE expires_at <= now() OR last_used_at <= now() - make_interval(secs => $1)
  LIMIT 1000
);
