// From parsed findings to the rows one ingest writes, once the assets they name are known:
// each finding's asset (API.md "Which asset"), its tool, its identity, duplicates within the
// report merged, the rows sorted by identity (every ingest locks findings in that one order,
// so two ingests of one report never deadlock), and the (tool, asset) scope a full-coverage
// report asserts. Pure: the asset rows come from the caller's upsert.
import type { Problem } from '../problems.ts';
import { fingerprintsOf } from './identity.ts';
import type { Coverage, FindingDraft, FindingLocation, ParsedFindings, ReportAsset } from './model.ts';
import type { ReportBranchInfo } from './report.ts';

/** An asset as the ingest's upsert answers it: named by (type, value), or looked up by id. */
export type ResolvedAsset = { id: string; type: string; value: string | null; created: boolean; by_id: boolean };

/** An asset to create or update by (type, value): a report's asset without its reference. */
export type AssetUpsert = Omit<ReportAsset, 'ref'>;

/** A finding as it is written (UpsertFindings' columns). */
export type FindingRowInput = {
  asset_id: string | null;
  fingerprint: string;
  tool_fingerprint: string | null;
  type: string;
  tool: string;
  rule_id: string | null;
  title: string;
  description: string | null;
  severity: string;
  location: FindingLocation;
  vulnerability: Record<string, unknown> | null;
  references: string[];
  properties: Record<string, unknown>;
};

export type FindingsPlan = {
  findings: FindingRowInput[];
  problems: Problem[];
  skipped: number;
  /** The assets the ingest covered: its report's assets, its findings', its default target. */
  scopeAssetIds: string[];
  /** This input's report assets by their reference (later chunks of a report use them). */
  assetRefs: Record<string, string>;
  assetsCreated: number;
  assetsUpdated: number;
};

const assetKey = (type: string, value: string) => `${type}\u0000${value}`;

/**
 * The assets to upsert: the report's, then those findings name inline, once each by (type,
 * value) (the report's own entry wins: it may carry a name, tags and metadata).
 */
export function assetUpserts(parsed: ParsedFindings): AssetUpsert[] {
  const out = new Map<string, AssetUpsert>();
  for (const a of parsed.assets) {
    const key = assetKey(a.type, a.value);
    const seen = out.get(key);
    out.set(key, seen
      ? { ...seen, name: a.name ?? seen.name, tags: [...new Set([...seen.tags, ...a.tags])], criticality: a.criticality ?? seen.criticality, metadata: { ...seen.metadata, ...a.metadata } }
      : { type: a.type, value: a.value, name: a.name, tags: a.tags, criticality: a.criticality, metadata: a.metadata });
  }
  for (const f of parsed.findings) {
    if (f.asset.kind !== 'inline') continue;
    const key = assetKey(f.asset.type, f.asset.value);
    if (!out.has(key)) out.set(key, { type: f.asset.type, value: f.asset.value, name: null, tags: [], criticality: null, metadata: {} });
  }
  return [...out.values()].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
}

/** The asset ids findings name (asset_id), to check they are the tenant's. */
export function assetIdsNamed(parsed: ParsedFindings): string[] {
  return [...new Set(parsed.findings.flatMap((f) => (f.asset.kind === 'id' ? [f.asset.id] : [])))];
}

/** Whether a report of this coverage and branch resolves what it no longer contains. */
export function resolvesUnseen(coverage: Coverage, branch: ReportBranchInfo | null): boolean {
  return coverage === 'full' && (branch === null || branch.is_default === true);
}

export function planFindings(input: {
  parsed: ParsedFindings;
  assetRows: ResolvedAsset[];
  /** Report assets of earlier chunks of the same report, by reference. */
  knownRefs?: Record<string, string>;
  /** Where findings that name no asset go: X-Asset-Id, the command's target, the session's asset. */
  defaultAssetId: string | null;
  /** The tool of findings whose report names none: the command's, else the session's. */
  fallbackTool: string | null;
}): FindingsPlan {
  const { parsed, assetRows, defaultAssetId, fallbackTool } = input;
  const knownRefs = input.knownRefs ?? {};
  const byKey = new Map<string, string>();
  const byId = new Set<string>();
  let assetsCreated = 0;
  let assetsUpdated = 0;
  for (const row of assetRows) {
    if (row.by_id) {
      byId.add(row.id);
      continue;
    }
    if (row.value !== null) byKey.set(assetKey(row.type, row.value), row.id);
    if (row.created) assetsCreated++;
    else assetsUpdated++;
  }

  const assetRefs: Record<string, string> = {};
  const reportAssetIds: string[] = [];
  for (const a of parsed.assets) {
    const id = byKey.get(assetKey(a.type, a.value));
    if (!id) continue;
    reportAssetIds.push(id);
    if (a.ref !== null) assetRefs[a.ref] = id;
  }
  // "Else the report's only asset": this input's, or (a chunk naming none) the report's.
  const knownIds = [...new Set(Object.values(knownRefs))];
  const onlyAsset = parsed.assets.length === 1 ? (reportAssetIds[0] ?? null)
    : parsed.assets.length === 0 && knownIds.length === 1 ? knownIds[0] : null;

  const problems: Problem[] = [...parsed.problems];
  let skipped = parsed.skipped;
  const kept: { draft: FindingDraft; assetId: string | null; tool: string }[] = [];
  for (const draft of parsed.findings) {
    const resolved = assetOf(draft, { byKey, byId, assetRefs, knownRefs, defaultAssetId, onlyAsset });
    if (typeof resolved === 'object' && resolved !== null) {
      problems.push(resolved);
      skipped++;
      continue;
    }
    const tool = draft.tool ?? fallbackTool;
    if (!tool) {
      problems.push({ path: draft.path, message: 'names no tool: the report has no tool.name, and no command or scan session gives one' });
      skipped++;
      continue;
    }
    kept.push({ draft, assetId: resolved, tool });
  }

  const fingerprints = fingerprintsOf(kept.map(({ draft, assetId, tool }) => ({
    tool,
    rule_id: draft.rule_id,
    asset_id: assetId,
    path: typeof draft.location.path === 'string' ? draft.location.path : null,
    tool_fingerprint: draft.tool_fingerprint,
    line_hash: draft.line_hash,
    snippet: typeof draft.location.snippet === 'string' ? draft.location.snippet : null,
    title: draft.title,
    start_line: typeof draft.location.start_line === 'number' ? draft.location.start_line : null,
    start_column: typeof draft.location.start_column === 'number' ? draft.location.start_column : null,
  })));

  // One row per identity: a report that lists a finding twice saw it once.
  const rows = new Map<string, FindingRowInput>();
  kept.forEach(({ draft, assetId, tool }, i) => {
    const key = `${assetId ?? ''}\u0000${fingerprints[i]}`;
    if (rows.has(key)) return;
    rows.set(key, {
      asset_id: assetId,
      fingerprint: fingerprints[i],
      tool_fingerprint: draft.tool_fingerprint,
      type: draft.type,
      tool,
      rule_id: draft.rule_id,
      title: draft.title,
      description: draft.description,
      severity: draft.severity,
      location: draft.location,
      vulnerability: draft.vulnerability,
      references: draft.references,
      properties: draft.properties,
    });
  });
  const findings = [...rows.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, row]) => row);

  const scope = new Set<string>(reportAssetIds);
  for (const f of findings) if (f.asset_id) scope.add(f.asset_id);
  if (defaultAssetId) scope.add(defaultAssetId);
  return { findings, problems, skipped, scopeAssetIds: [...scope].sort(), assetRefs, assetsCreated, assetsUpdated };
}

/** The asset id of a finding, null for one that needs none, or the problem. */
function assetOf(draft: FindingDraft, at: {
  byKey: Map<string, string>; byId: Set<string>; assetRefs: Record<string, string>; knownRefs: Record<string, string>;
  defaultAssetId: string | null; onlyAsset: string | null;
}): string | null | Problem {
  const a = draft.asset;
  switch (a.kind) {
    case 'none':
      return null;
    case 'ref': {
      const id = at.assetRefs[a.ref] ?? at.knownRefs[a.ref];
      return id ?? { path: `${draft.path}.asset_ref`, message: `names no asset of the report ('${a.ref.slice(0, 100)}')` };
    }
    case 'inline': {
      const id = at.byKey.get(assetKey(a.type, a.value));
      return id ?? { path: `${draft.path}.asset_value`, message: 'names an asset that could not be created' };
    }
    case 'id':
      return at.byId.has(a.id) ? a.id : { path: `${draft.path}.asset_id`, message: 'names no asset of this tenant' };
    case 'default': {
      const id = at.defaultAssetId ?? at.onlyAsset;
      return id ?? {
        path: draft.path,
        message: 'has no target asset: name one (asset_ref, asset_type + asset_value, asset_id), send X-Asset-Id, or tie the report to a command',
      };
    }
  }
}
