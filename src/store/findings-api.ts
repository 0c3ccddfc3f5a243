// The statements of the findings list and summary, composed per filter combination from the
// fixed fragments of sql/findings_api.sql (why: the head of that file). Values are always
// bound; only fragments of that file ever become statement text.
import { composeStatement, type ComposedStatement, type NamedQuery, type StatementPart } from '../db/sql.ts';
import { findingsApiSql as sql } from './queries.ts';

export const FINDING_STATUSES = ['open', 'in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed'] as const;
export const FINDING_SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'] as const;
export const FINDING_TYPES = ['vulnerability', 'secret', 'misconfiguration', 'compliance', 'web3', 'credential_leak'] as const;
export const FINDING_SORTS = ['first_seen', 'last_seen', 'severity'] as const;

export type FindingStatusName = (typeof FINDING_STATUSES)[number];
export type FindingSeverityName = (typeof FINDING_SEVERITIES)[number];
export type FindingSort = (typeof FINDING_SORTS)[number];

/** findings.severity_rank: critical 4 … info 0. */
export const SEVERITY_RANK: Record<FindingSeverityName, number> = { critical: 4, high: 3, medium: 2, low: 1, info: 0 };

export type FindingFilters = {
  status?: string[];
  severity?: FindingSeverityName[];
  min_severity?: FindingSeverityName;
  type?: string[];
  tool?: string;
  rule_id?: string;
  asset_id?: string;
  pipeline_run_id?: string;
  scan_id?: string;
  /** Text the title or the path contains (case-insensitive), as given. */
  q?: string;
  /** An instant PostgreSQL parses (RFC 3339). */
  first_seen_after?: string;
};

/** Where a page starts: the sort keys of the last row of the page before (as PostgreSQL printed them). */
export type FindingKeyset = { sort: FindingSort; rank: number | null; at: string; id: string };

type Part = StatementPart;

// Composing moved to db/sql.ts (the run and command lists compose the same way).
export { composeStatement, type ComposedStatement };

/** The ILIKE pattern of a text: its own %, _ and \ match themselves. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, '\\$&')}%`;
}

function filterParts(f: FindingFilters): Part[] {
  const parts: Part[] = [];
  const oneOrMany = (values: unknown[] | undefined, single: NamedQuery, many: NamedQuery) => {
    if (!values || values.length === 0) return;
    parts.push(values.length === 1 ? { q: single, values: [values[0]] } : { q: many, values: [values] });
  };
  oneOrMany(f.status, sql.FindingWhereStatus, sql.FindingWhereStatusIn);
  oneOrMany(f.severity?.map((s) => SEVERITY_RANK[s]), sql.FindingWhereSeverity, sql.FindingWhereSeverityIn);
  if (f.min_severity) parts.push({ q: sql.FindingWhereMinSeverity, values: [SEVERITY_RANK[f.min_severity]] });
  oneOrMany(f.type, sql.FindingWhereType, sql.FindingWhereTypeIn);
  if (f.tool !== undefined) parts.push({ q: sql.FindingWhereTool, values: [f.tool] });
  if (f.rule_id !== undefined) parts.push({ q: sql.FindingWhereRule, values: [f.rule_id] });
  if (f.asset_id) parts.push({ q: sql.FindingWhereAsset, values: [f.asset_id] });
  if (f.pipeline_run_id) parts.push({ q: sql.FindingWhereRun, values: [f.pipeline_run_id] });
  if (f.scan_id) parts.push({ q: sql.FindingWhereScan, values: [f.scan_id] });
  if (f.q !== undefined) parts.push({ q: sql.FindingWhereText, values: [containsPattern(f.q)] });
  if (f.first_seen_after) parts.push({ q: sql.FindingWhereFirstSeenAfter, values: [f.first_seen_after] });
  return parts;
}

const ORDER: Record<FindingSort, NamedQuery> = {
  first_seen: sql.FindingListOrderFirstSeen,
  last_seen: sql.FindingListOrderLastSeen,
  severity: sql.FindingListOrderSeverity,
};

function keysetPart(after: FindingKeyset): Part {
  switch (after.sort) {
    case 'first_seen': return { q: sql.FindingAfterFirstSeen, values: [after.at, after.id] };
    case 'last_seen': return { q: sql.FindingAfterLastSeen, values: [after.at, after.id] };
    case 'severity': return { q: sql.FindingAfterSeverity, values: [after.rank, after.at, after.id] };
  }
}

/** A page of a tenant's findings: the filters given, in the sort's order, after the keyset, at most `limit` rows. */
export function listFindingsStatement(tenantId: string, filters: FindingFilters, sort: FindingSort, after: FindingKeyset | null, limit: number) {
  return composeStatement([
    { q: sql.FindingListHead, values: [tenantId] },
    ...filterParts(filters),
    ...(after ? [keysetPart(after)] : []),
    { q: ORDER[sort], values: [limit] },
  ]);
}

/** Counts by severity and status, crossed, of a tenant's findings that pass the filters. */
export function summarizeFindingsStatement(tenantId: string, filters: FindingFilters) {
  return composeStatement([
    { q: sql.FindingSummaryHead, values: [tenantId] },
    ...filterParts(filters),
    { q: sql.FindingSummaryTail, values: [] },
  ]);
}

export const FINDING_GROUPS = ['asset', 'tool', 'rule'] as const;
export type FindingGroup = (typeof FINDING_GROUPS)[number];

const GROUP: Record<FindingGroup, { head: NamedQuery; tail: NamedQuery }> = {
  asset: { head: sql.FindingGroupByAssetHead, tail: sql.FindingGroupByAssetTail },
  tool: { head: sql.FindingGroupByToolHead, tail: sql.FindingGroupByToolTail },
  rule: { head: sql.FindingGroupByRuleHead, tail: sql.FindingGroupByRuleTail },
};

/** Counts by severity and by status per group, the `limit` groups with the most severe findings first. */
export function groupFindingsStatement(tenantId: string, filters: FindingFilters, group: FindingGroup, limit: number) {
  return composeStatement([
    { q: GROUP[group].head, values: [] },
    { q: sql.FindingGroupCounts, values: [tenantId] },
    ...filterParts(filters),
    { q: GROUP[group].tail, values: [limit] },
  ]);
}
