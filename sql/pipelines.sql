-- Pipeline templates, their immutable versions and the steps of each version.

-- name: InsertPipeline :one
-- Creates a pipeline at version 1 ($7: 'config' when the config file declares it).
INSERT INTO pipeline_templates (tenant_id, name, description, triggers, settings, tags, managed_by)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *;

-- name: BumpPipelineVersion :one
-- Makes the given document the pipeline's next version.
UPDATE pipeline_templates
SET name = $3, description = $4, triggers = $5, settings = $6, tags = $7, version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: InsertPipelineVersion :exec
-- Records a version's document and its steps (a JSON array of normalized steps).
WITH version AS (
  INSERT INTO pipeline_versions (tenant_id, pipeline_id, version, name, description, triggers, settings, tags)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
  RETURNING pipeline_id, version
)
INSERT INTO pipeline_steps (tenant_id, pipeline_id, version, step_key, name, step_order, tool, capabilities,
                            config, timeout_seconds, depends_on, condition, max_retries, retry_delay_seconds)
SELECT $1, version.pipeline_id, version.version, s.step_key, s.name, s."order", s.tool,
       coalesce(s.capabilities, '{}'), coalesce(s.config, '{}'), s.timeout_seconds,
       coalesce(s.depends_on, '{}'), s.condition, s.max_retries, s.retry_delay_seconds
FROM version, jsonb_to_recordset($9::jsonb) AS s(
  step_key text, name text, "order" integer, tool text, capabilities text[], config jsonb,
  timeout_seconds integer, depends_on text[], condition jsonb, max_retries integer, retry_delay_seconds integer);

-- name: GetPipeline :one
-- A live pipeline of a tenant.
SELECT * FROM pipeline_templates WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL;

-- name: LockPipeline :one
-- A live pipeline of a tenant, locked while a new version is made.
SELECT * FROM pipeline_templates WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE;

-- name: GetPipelineVersion :one
-- One version of a pipeline of a tenant.
SELECT v.*, p.is_active, p.created_at AS pipeline_created_at, p.version AS current_version
FROM pipeline_versions v JOIN pipeline_templates p ON p.id = v.pipeline_id
WHERE p.tenant_id = $1 AND p.id = $2 AND p.deleted_at IS NULL AND v.version = $3;

-- name: ListPipelines :many
-- A tenant's live pipelines, newest first.
SELECT *, created_at::text AS cursor_at FROM pipeline_templates
WHERE tenant_id = $1 AND deleted_at IS NULL
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- name: ListVersionSteps :many
-- The steps of one version, in order.
SELECT * FROM pipeline_steps WHERE pipeline_id = $1 AND version = $2 ORDER BY step_order, step_key;

-- name: ListStepsOfVersions :many
-- The steps of several (pipeline, version) pairs, for list responses.
SELECT s.* FROM pipeline_steps s
JOIN unnest($1::uuid[], $2::int[]) AS v(pipeline_id, version)
  ON s.pipeline_id = v.pipeline_id AND s.version = v.version
ORDER BY s.pipeline_id, s.step_order, s.step_key;

-- name: SoftDeletePipeline :one
-- Deletes a pipeline; its runs and versions stay readable through the runs. The scans of
-- its schedule triggers go; other scans of it are disabled (they have nothing to run).
WITH pipeline AS (
  UPDATE pipeline_templates SET deleted_at = now(), is_active = false, webhook_token_hash = NULL, updated_at = now()
  WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING id
), gone AS (
  DELETE FROM scans WHERE pipeline_id IN (SELECT id FROM pipeline) AND managed_by = 'pipeline-trigger' RETURNING id
), disabled AS (
  UPDATE scans SET status = 'disabled', next_run_at = NULL, updated_at = now()
  WHERE pipeline_id IN (SELECT id FROM pipeline) AND managed_by IS DISTINCT FROM 'pipeline-trigger' RETURNING id
)
SELECT pipeline.id FROM pipeline WHERE (SELECT count(*) FROM gone) + (SELECT count(*) FROM disabled) >= 0;

-- name: SetWebhookToken :one
-- Replaces a pipeline's webhook token hash (the old token stops working at once).
UPDATE pipeline_templates SET webhook_token_hash = $3, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING id;

-- name: FindPipelineByWebhookToken :one
-- The live pipeline a webhook token belongs to.
SELECT * FROM pipeline_templates WHERE id = $1 AND webhook_token_hash = $2 AND deleted_at IS NULL;

-- name: PipelinesDiscovering :many
-- A tenant's live, active pipelines with an on_asset_discovery trigger.
SELECT * FROM pipeline_templates
WHERE tenant_id = $1 AND deleted_at IS NULL AND is_active
  AND triggers @> '[{"type": "on_asset_discovery"}]'::jsonb;

-- name: DiscoveryRunExists :one
-- Whether asset discovery already started a run of this pipeline on this asset (the task
-- may run twice; it starts one run).
SELECT EXISTS (SELECT 1 FROM pipeline_runs
               WHERE pipeline_id = $1 AND asset_id = $2 AND trigger_type = 'on_asset_discovery') AS exists;

-- name: PipelineNamed :one
-- A live pipeline of a tenant by name (unique among live pipelines, ignoring case).
SELECT * FROM pipeline_templates WHERE tenant_id = $1 AND lower(name) = lower($2) AND deleted_at IS NULL;

-- name: ConfigPipelines :many
-- Every live pipeline the config file manages, with its tenant's name.
SELECT p.*, t.name AS tenant_name FROM pipeline_templates p JOIN tenants t ON t.id = p.tenant_id
WHERE p.managed_by = 'config' AND p.deleted_at IS NULL;
