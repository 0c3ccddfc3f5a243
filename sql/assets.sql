-- Assets: what pipelines scan.

-- name: InsertAsset :one
-- Creates an asset; when a pipeline of the tenant has an on_asset_discovery trigger, the
-- asset_discovered job (which starts the matching runs) is enqueued with it.
WITH asset AS (
  INSERT INTO assets (tenant_id, type, name, value, tags, criticality, metadata)
  VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *
), discovered AS (
  SELECT graphile_worker.add_job('asset_discovered', json_build_object('asset_id', asset.id),
           job_key => 'asset_discovered:' || asset.id) AS job
  FROM asset
  WHERE EXISTS (SELECT 1 FROM pipeline_templates p
                WHERE p.tenant_id = asset.tenant_id AND p.deleted_at IS NULL AND p.is_active
                  AND p.triggers @> '[{"type": "on_asset_discovery"}]'::jsonb)
)
SELECT asset.* FROM asset WHERE (SELECT count(*) FROM discovered) >= 0;

-- name: GetAsset :one
-- An asset of a tenant.
SELECT * FROM assets WHERE tenant_id = $1 AND id = $2;

-- name: LockAsset :one
-- An asset of a tenant, locked for an update.
SELECT * FROM assets WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: ListAssets :many
-- A tenant's assets, newest first, optionally of one type or with one tag.
SELECT *, created_at::text AS cursor_at FROM assets
WHERE tenant_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
  AND ($4::text IS NULL OR type = $4)
  AND ($5::text IS NULL OR $5 = ANY (tags))
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- name: UpdateAsset :one
-- Replaces an asset's fields.
UPDATE assets SET type = $3, name = $4, value = $5, tags = $6, criticality = $7, metadata = $8, updated_at = now()
WHERE tenant_id = $1 AND id = $2 RETURNING *;

-- name: DeleteAsset :one
-- Deletes an asset; its runs keep their snapshot of it.
DELETE FROM assets WHERE tenant_id = $1 AND id = $2 RETURNING id;

-- name: GetAssetById :one
-- An asset by id alone (for jobs, which carry no tenant).
SELECT * FROM assets WHERE id = $1;

-- name: UpsertIngestAssets :many
-- The assets an ingest names ($2: [{type, value, name, tags, metadata, criticality}]),
-- created or updated by (type, value) in sorted order; and the tenant's assets among the ids
-- it names ($3). An existing asset keeps its name unless the report gives one other than its
-- value, gains the report's tags and metadata, and keeps its criticality (people set that).
-- New assets start the tenant's on_asset_discovery pipelines, as assets created through the
-- API do (InsertAsset).
WITH input AS (
  SELECT * FROM jsonb_to_recordset($2::jsonb)
    AS a(type text, value text, name text, tags text[], criticality text, metadata jsonb)
), upserted AS (
  INSERT INTO assets AS t (tenant_id, type, name, value, tags, criticality, metadata)
  SELECT $1, a.type, coalesce(a.name, left(a.value, 1024)), a.value, coalesce(a.tags, '{}'),
         coalesce(a.criticality, 'medium'), coalesce(a.metadata, '{}')
  FROM input a
  ORDER BY a.type, a.value
  ON CONFLICT (tenant_id, type, value) WHERE value IS NOT NULL DO UPDATE SET
    name = CASE WHEN EXCLUDED.name = left(EXCLUDED.value, 1024) THEN t.name ELSE EXCLUDED.name END,
    tags = ARRAY(SELECT x FROM unnest(t.tags || EXCLUDED.tags) WITH ORDINALITY AS u(x, n) GROUP BY x ORDER BY min(n)),
    metadata = t.metadata || EXCLUDED.metadata,
    updated_at = now()
  RETURNING t.id, t.type, t.value, (t.xmax = 0) AS created
), discovered AS (
  SELECT graphile_worker.add_job('asset_discovered', json_build_object('asset_id', u.id),
           job_key => 'asset_discovered:' || u.id) AS job
  FROM upserted u
  WHERE u.created AND EXISTS (SELECT 1 FROM pipeline_templates p
                              WHERE p.tenant_id = $1 AND p.deleted_at IS NULL AND p.is_active
                                AND p.triggers @> '[{"type": "on_asset_discovery"}]'::jsonb)
)
SELECT u.id, u.type, u.value, u.created, false AS by_id FROM upserted u WHERE (SELECT count(*) FROM discovered) >= 0
UNION ALL
SELECT a.id, a.type, a.value, false, true FROM assets a WHERE a.tenant_id = $1 AND a.id = ANY ($3::uuid[]);
