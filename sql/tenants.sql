-- Tenants, tenant tokens and instance settings.

-- name: InsertTenant :one
-- Creates a tenant.
INSERT INTO tenants (name, modules) VALUES ($1, $2) RETURNING *;

-- name: GetTenant :one
-- A tenant by id.
SELECT * FROM tenants WHERE id = $1;

-- name: ListTenants :many
-- Tenants, newest first, keyset-paginated on (created_at, id).
SELECT *, created_at::text AS cursor_at FROM tenants
WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $3;

-- name: InsertApiToken :one
-- Stores the hash of a new tenant token.
INSERT INTO api_tokens (tenant_id, name, token_hash, token_prefix) VALUES ($1, $2, $3, $4)
RETURNING id, tenant_id, name, token_prefix, created_at;

-- name: FindTenantByTokenHash :one
-- The tenant a live token belongs to.
SELECT t.* FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id
WHERE k.token_hash = $1 AND k.revoked_at IS NULL;

-- name: GetSetting :one
-- An instance setting.
SELECT value FROM instance_settings WHERE key = $1;

-- name: InsertSettingIfAbsent :one
-- Stores an instance setting unless one exists; returns it only when this call stored it.
INSERT INTO instance_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING value;

-- name: TenantNamed :one
-- A tenant by name (names are unique, ignoring case).
SELECT * FROM tenants WHERE lower(name) = lower($1);

-- name: UpdateTenantDeclared :one
-- Sets what the config file declares of a tenant; returns a row only when something changed.
UPDATE tenants SET modules = coalesce($2, modules), max_active_runs = coalesce($3, max_active_runs), updated_at = now()
WHERE id = $1 AND (modules IS DISTINCT FROM coalesce($2, modules) OR max_active_runs IS DISTINCT FROM coalesce($3, max_active_runs))
RETURNING id;
