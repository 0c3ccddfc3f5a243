-- Dashboard sessions (API.md Part 2 "The dashboard"): signing in exchanges a tenant token (or
-- the admin token) for an HttpOnly session cookie. Only the SHA-256 of the cookie's value is
-- stored, as for every other credential. A session lives at most until expires_at and ends
-- sooner when unused for the idle period (src/api/session.ts), when it is signed out, when
-- the tenant token it came from is revoked or deleted, or when the admin token changes.
CREATE TABLE dashboard_sessions (
  id_hash            bytea PRIMARY KEY,
  -- The tenant the session acts in; NULL for an admin session that has not chosen one.
  tenant_id          uuid REFERENCES tenants (id) ON DELETE CASCADE,
  -- A tenant session: the token it was signed in with (its revocation ends the session, and
  -- triage records it as who changed a finding).
  api_token_id       uuid REFERENCES api_tokens (id) ON DELETE CASCADE,
  -- An admin session: the SHA-256 of the admin token it was signed in with; a new admin
  -- token ends it. An admin acting in a tenant keeps this and has no api_token_id.
  admin_token_sha256 bytea,
  created_at         timestamptz NOT NULL DEFAULT now(),
  last_used_at       timestamptz NOT NULL DEFAULT now(),
  expires_at         timestamptz NOT NULL,
  CHECK ((admin_token_sha256 IS NULL) <> (api_token_id IS NULL)),
  CHECK (api_token_id IS NULL OR tenant_id IS NOT NULL)
);
CREATE INDEX dashboard_sessions_expires_idx ON dashboard_sessions (expires_at);
CREATE INDEX dashboard_sessions_token_idx ON dashboard_sessions (api_token_id) WHERE api_token_id IS NOT NULL;
CREATE INDEX dashboard_sessions_tenant_idx ON dashboard_sessions (tenant_id) WHERE tenant_id IS NOT NULL;
