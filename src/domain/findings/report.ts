// The seed system's report format (API.md "Report"; the Report/Finding/Asset structs of its Go
// SDK, pkg/eis/types.go, by their json tags), sent bare or as `{report}`. Unknown fields are
// kept: a finding's in its `properties`, an asset's in its `metadata`, the report's own in
// the ingest's properties. A finding or an asset that cannot be used is skipped with its path;
// a body that is not a report at all is refused whole (NotFindingsInput).
import * as v from 'valibot';
import { FreeFormValue, JsonObject, freeFormProblem, isPlainObject, withinFreeFormBounds } from '../json.ts';
import { issuesToProblems, type Problem } from '../problems.ts';
import {
  COVERAGE_TYPES, FINDING_TYPES, NotFindingsInput, SEVERITIES,
  type AssetTarget, type Coverage, type FindingDraft, type FindingLocation, type ParsedFindings, type ReportAsset,
} from './model.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Optional text: absent, null and "" all mean "not given" (Go's omitempty drops empty strings; other clients send them). */
const OptionalText = (max: number) =>
  v.optional(v.nullable(v.pipe(v.string(), v.maxLength(max, `must be at most ${max} characters`), v.transform((s) => (s.trim() === '' ? null : s)))));

/** Lowercased, then one of the values (clients write "HIGH" as often as "high"). */
const LowerPicklist = <const T extends readonly string[]>(values: T) =>
  v.pipe(v.string(), v.transform((s) => s.trim().toLowerCase()), v.picklist(values, `must be one of ${values.join(', ')}`));

const Count = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2_147_483_647));

export const Severity = LowerPicklist(SEVERITIES);
export const FindingTypeName = LowerPicklist(FINDING_TYPES);
export const AssetTypeName = v.pipe(
  v.string(),
  v.regex(/^[a-z][a-z0-9_]{0,62}$/, 'must be a lowercase asset type like "repository" or "domain"'),
  v.examples(['repository', 'domain', 'ip_address', 'web_application', 'container_image']),
);

/** Titles are one line for lists: longer ones are cut rather than refused (tools write long ones). */
const MAX_TITLE = 1000;
const Title = v.pipe(
  v.string(),
  v.trim(),
  v.minLength(1, 'must not be empty'),
  v.transform((s) => (s.length > MAX_TITLE ? `${s.slice(0, MAX_TITLE - 1)}…` : s)),
);

export const ReportLocation = v.pipe(
  v.looseObject({
    path: OptionalText(4096),
    start_line: v.optional(v.nullable(Count)),
    end_line: v.optional(v.nullable(Count)),
    start_column: v.optional(v.nullable(Count)),
    end_column: v.optional(v.nullable(Count)),
    snippet: OptionalText(65_536),
    url: OptionalText(4096),
    host: OptionalText(1024),
    port: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65_535)))),
  }),
  withinFreeFormBounds(),
);

export const ReportVulnerability = v.pipe(
  v.looseObject({
    cve_id: OptionalText(100),
    cwe: v.optional(v.nullable(v.union([v.pipe(v.string(), v.maxLength(100)), v.pipe(v.array(v.pipe(v.string(), v.maxLength(100))), v.maxLength(100))]))),
    cvss_score: v.optional(v.nullable(v.pipe(v.number(), v.minValue(0), v.maxValue(10)))),
    package: OptionalText(1024),
    version: OptionalText(255),
    fixed_version: OptionalText(255),
    purl: OptionalText(2048),
  }),
  withinFreeFormBounds(),
);

/** A finding of a report (the SDK's Finding): the fields API.md names; any other kept in properties. */
export const ReportFinding = v.objectWithRest({
  type: FindingTypeName,
  title: Title,
  severity: Severity,
  rule_id: OptionalText(1000),
  description: OptionalText(65_536),
  asset_ref: OptionalText(1000),
  asset_id: v.optional(v.nullable(v.pipe(
    v.string(),
    v.transform((s) => s.trim()),
    v.check((s) => s === '' || UUID.test(s), 'must be an asset id (UUID)'),
    v.transform((s) => (s === '' ? null : s.toLowerCase())),
  ))),
  asset_type: v.optional(v.nullable(v.union([v.literal(''), AssetTypeName]))),
  asset_value: OptionalText(4096),
  location: v.optional(v.nullable(ReportLocation)),
  vulnerability: v.optional(v.nullable(ReportVulnerability)),
  fingerprint: OptionalText(1024),
  partial_fingerprints: v.optional(v.nullable(v.pipe(v.record(v.string(), v.string()), withinFreeFormBounds()))),
  references: v.optional(v.nullable(v.pipe(v.array(v.pipe(v.string(), v.maxLength(4096))), v.maxLength(200, 'at most 200 references')))),
  properties: v.optional(v.nullable(JsonObject)),
}, FreeFormValue);

/** An asset of a report (the SDK's Asset): any other field is kept in its metadata. */
export const ReportAssetSchema = v.objectWithRest({
  id: OptionalText(1000),
  type: AssetTypeName,
  value: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(4096)),
  name: OptionalText(1024),
  tags: v.optional(v.nullable(v.pipe(v.array(v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(100))), v.maxLength(100, 'at most 100 tags')))),
  criticality: v.optional(v.nullable(v.union([v.literal(''), LowerPicklist(SEVERITIES)]))),
  metadata: v.optional(v.nullable(JsonObject)),
  properties: v.optional(v.nullable(JsonObject)),
}, FreeFormValue);

export const ReportTool = v.looseObject({
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  version: OptionalText(255),
});

const ReportBranch = v.looseObject({
  name: OptionalText(1000),
  is_default_branch: v.optional(v.nullable(v.boolean())),
  commit_sha: OptionalText(200),
});

export const ReportMetadata = v.looseObject({
  id: OptionalText(255),
  timestamp: v.optional(v.nullable(v.string())),
  coverage_type: v.optional(v.nullable(v.union([v.literal(''), LowerPicklist(COVERAGE_TYPES)]))),
  branch: v.optional(v.nullable(ReportBranch)),
  command_id: OptionalText(100),
  scan_id: OptionalText(100),
});

/** The head of a report: everything but its findings and assets, which are checked one by one. */
const ReportHead = v.looseObject({
  version: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(50)))),
  metadata: v.optional(v.nullable(ReportMetadata)),
  tool: v.optional(v.nullable(ReportTool)),
  assets: v.optional(v.nullable(v.array(v.unknown()))),
  findings: v.optional(v.nullable(v.array(v.unknown()))),
});

/**
 * The whole report, for the API contract (fuzzing, OpenAPI). parseReport checks it part by
 * part: an asset or a finding of another shape is skipped and listed in the answer, so the
 * contract takes any value there (the described shape, or one that will be skipped).
 */
export const Report = v.looseObject({
  ...ReportHead.entries,
  assets: v.optional(v.nullable(v.array(v.union([ReportAssetSchema, v.unknown()])))),
  findings: v.optional(v.nullable(v.array(v.union([ReportFinding, v.unknown()])))),
});

const REPORT_KEYS = ['version', 'metadata', 'tool', 'assets', 'findings'];

export type ReportBranchInfo = { name: string | null; is_default: boolean | null; commit_sha: string | null };

export type ParsedReport = ParsedFindings & {
  tool: { name: string; version: string | null } | null;
  coverage: Coverage;
  branch: ReportBranchInfo | null;
  command_id: string | null;
  scan_id: string | null;
  /** metadata.id: the report's own id. */
  report_id: string | null;
  /** The report's fields we do not read, and metadata's: kept with the ingest. */
  properties: Record<string, unknown>;
};

/** `{report: {...}}` or the report itself. */
export function unwrapReport(body: Record<string, unknown>): unknown {
  if (isPlainObject(body.report) && !REPORT_KEYS.some((k) => k in body)) return body.report;
  return body;
}

/**
 * A report, checked: a body that is not a report (not an object, fields of the wrong
 * shape, none of a report's fields) throws NotFindingsInput; findings and assets that cannot
 * be used are left out and listed in `problems`. `allowEmpty`: a chunk of a report may
 * carry nothing of it (the SDK's chunks are parts of one).
 */
export function parseReport(body: unknown, opts: { allowEmpty?: boolean; ignoreKeys?: readonly string[] } = {}): ParsedReport {
  if (!isPlainObject(body)) {
    throw new NotFindingsInput('The body is not a report', [{ path: '(body)', message: 'must be a JSON object (a report)' }]);
  }
  if (!opts.allowEmpty && !REPORT_KEYS.some((k) => body[k] !== undefined && body[k] !== null)) {
    throw new NotFindingsInput('The body is not a report', [
      { path: '(body)', message: `is not a report: it has none of ${REPORT_KEYS.join(', ')}` },
    ]);
  }
  const head = v.safeParse(ReportHead, body);
  if (!head.success) throw new NotFindingsInput('The body is not a report', issuesToProblems(head.issues));
  const { version, metadata, tool, assets: rawAssets, findings: rawFindings, ...extra } = head.output;
  for (const k of opts.ignoreKeys ?? []) delete extra[k];

  const problems: Problem[] = [];
  const assets: ReportAsset[] = [];
  (rawAssets ?? []).forEach((raw, i) => {
    const a = v.safeParse(ReportAssetSchema, raw);
    if (!a.success) {
      problems.push(...issuesToProblems(a.issues, ['assets', i]));
      return;
    }
    const { id, type, value, name, tags, criticality, metadata: meta, properties, ...rest } = a.output;
    const merged = { ...rest, ...(properties ?? {}), ...(meta ?? {}) };
    const tooBig = freeFormProblem(merged);
    if (tooBig) {
      problems.push({ path: `assets[${i}]`, message: `its metadata (with its other fields) ${tooBig}` });
      return;
    }
    assets.push({
      ref: id ?? null, type, value, name: name ?? null, tags: tags ?? [], criticality: criticality || null, metadata: merged,
    });
  });

  const findings: FindingDraft[] = [];
  let skipped = 0;
  (rawFindings ?? []).forEach((raw, i) => {
    const draft = findingDraft(raw, i, tool?.name ?? null);
    if ('problems' in draft) {
      problems.push(...draft.problems);
      skipped++;
    } else {
      findings.push(draft);
    }
  });

  const { id: reportId, coverage_type, branch, command_id, scan_id, timestamp: _t, ...metaExtra } = metadata ?? {};
  const properties: Record<string, unknown> = { ...extra };
  if (version) properties.version = version;
  if (Object.keys(metaExtra).length > 0) properties.metadata = metaExtra;
  if (tool?.version) properties.tool_version = tool.version;
  return {
    assets,
    findings,
    problems,
    skipped,
    tool: tool ? { name: tool.name, version: tool.version ?? null } : null,
    coverage: coverage_type || 'partial',
    branch: branch ? { name: branch.name ?? null, is_default: branch.is_default_branch ?? null, commit_sha: branch.commit_sha ?? null } : null,
    command_id: command_id ?? null,
    scan_id: scan_id ?? null,
    report_id: reportId ?? null,
    properties: freeFormProblem(properties) ? { omitted: 'the report\'s other fields are larger than the free-form limit' } : properties,
  };
}

function findingDraft(raw: unknown, i: number, tool: string | null): FindingDraft | { problems: Problem[] } {
  const parsed = v.safeParse(ReportFinding, raw);
  if (!parsed.success) return { problems: issuesToProblems(parsed.issues, ['findings', i]) };
  const {
    type, title, severity, rule_id, description, asset_ref, asset_id, asset_type, asset_value, location, vulnerability,
    fingerprint, partial_fingerprints, references, properties, ...rest
  } = parsed.output;
  const path = `findings[${i}]`;

  let asset: AssetTarget;
  if (asset_ref) asset = { kind: 'ref', ref: asset_ref };
  else if (asset_type || asset_value) {
    if (!asset_type || !asset_value) {
      return { problems: [{ path: `${path}.${asset_type ? 'asset_value' : 'asset_type'}`, message: 'is required with ' + (asset_type ? 'asset_type' : 'asset_value') + ': they name an asset together' }] };
    }
    asset = { kind: 'inline', type: asset_type, value: asset_value };
  } else if (asset_id) asset = { kind: 'id', id: asset_id };
  else asset = type === 'credential_leak' ? { kind: 'none' } : { kind: 'default' };

  const props = { ...rest, ...(properties ?? {}) };
  const tooBig = freeFormProblem(props);
  if (tooBig) return { problems: [{ path: `${path}.properties`, message: `(with the finding's other fields) ${tooBig}` }] };

  return {
    path,
    asset,
    type,
    tool,
    rule_id: rule_id ?? null,
    title,
    description: description ?? null,
    severity,
    location: withoutNulls(location ?? {}) as FindingLocation,
    vulnerability: vulnerability ? withoutNulls(vulnerability) : null,
    references: references ?? [],
    properties: props,
    tool_fingerprint: fingerprint ?? null,
    line_hash: partial_fingerprints?.primaryLocationLineHash || null,
  };
}

/** The object without its null and undefined fields (what was not given is not stored as null). */
export function withoutNulls(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, x]) => x !== null && x !== undefined));
}
