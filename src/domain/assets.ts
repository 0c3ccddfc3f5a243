// Assets as conditions and agents see them (seed 001 "Expression Syntax": asset.type,
// asset.name, asset.tags, asset.criticality) and the kinds of asset the seeds name.
import * as v from 'valibot';
import { JsonObject } from './json.ts';

export const ASSET_TYPES = [
  'repository', 'domain', 'subdomain', 'ip_address', 'ip_range', 'web_application', 'server', 'host', 'network',
  'container_image', 'container', 'api', 'cloud_account', 'certificate', 'mobile_app', 'database', 'email', 'other',
] as const;
export const CRITICALITIES = ['critical', 'high', 'medium', 'low', 'info'] as const;

const Tag = v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(100));

export const AssetFields = {
  type: v.picklist(ASSET_TYPES, `must be one of ${ASSET_TYPES.join(', ')}`),
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(1024)),
  value: v.nullable(v.pipe(v.string(), v.maxLength(4096))),
  tags: v.pipe(v.array(Tag), v.maxLength(100, 'at most 100 tags')),
  criticality: v.picklist(CRITICALITIES, `must be one of ${CRITICALITIES.join(', ')}`),
  metadata: JsonObject,
};

export const CreateAsset = v.object({
  type: AssetFields.type,
  name: AssetFields.name,
  value: v.optional(AssetFields.value, null),
  tags: v.optional(AssetFields.tags, []),
  criticality: v.optional(AssetFields.criticality, 'medium'),
  metadata: v.optional(AssetFields.metadata, {}),
});

export const UpdateAsset = v.partial(CreateAsset);

/** The snapshot of an asset a run keeps (conditions and command payloads read it). */
export function assetSnapshot(a: {
  id: string; type: string; name: string; value: string | null; tags: string[]; criticality: string; metadata: Record<string, unknown>;
}): Record<string, unknown> {
  return { id: a.id, type: a.type, name: a.name, value: a.value, tags: a.tags, criticality: a.criticality, metadata: a.metadata };
}
