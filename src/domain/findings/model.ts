// What every source of findings (the seed's report format, SARIF, leaked credentials) is
// turned into before anything is stored: findings as drafts that still name their asset the
// way the input did, and the report's assets. Pure types and constants.
import type { Problem } from '../problems.ts';

export const FINDING_TYPES = ['vulnerability', 'secret', 'misconfiguration', 'compliance', 'web3', 'credential_leak'] as const;
export type FindingType = (typeof FINDING_TYPES)[number];

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** full: the whole scope was scanned (what it no longer contains is fixed); the others never resolve anything. */
export const COVERAGE_TYPES = ['full', 'incremental', 'partial'] as const;
export type Coverage = (typeof COVERAGE_TYPES)[number];

export const FINDING_STATUSES = ['open', 'in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed'] as const;

/**
 * How a finding names its asset, in API.md's order of precedence: a report asset by its
 * reference, an asset by type and value, an asset id, or none (then the default: the
 * command's target, X-Asset-Id, the agent scan session's asset, the report's only asset).
 */
export type AssetTarget =
  | { kind: 'ref'; ref: string }
  | { kind: 'inline'; type: string; value: string }
  | { kind: 'id'; id: string }
  | { kind: 'default' }
  /** Findings that need no asset (credential_leak). */
  | { kind: 'none' };

/** An asset named by a report, created or updated in the tenant by (type, value). */
export type ReportAsset = {
  /** The report's own reference to it (`assets[].id`), which findings use as `asset_ref`. */
  ref: string | null;
  type: string;
  value: string;
  name: string | null;
  tags: string[];
  criticality: string | null;
  metadata: Record<string, unknown>;
};

export type FindingLocation = {
  path?: string;
  start_line?: number;
  end_line?: number;
  start_column?: number;
  end_column?: number;
  snippet?: string;
  [key: string]: unknown;
};

/** A finding as read from the input, before its asset is resolved and its identity computed. */
export type FindingDraft = {
  /** Where it is in the request body: `findings[12]`, `runs[0].results[3]`, `credentials[1]`. */
  path: string;
  asset: AssetTarget;
  type: FindingType;
  /** null when the input names no tool (a report without `tool`): the command's or the session's then. */
  tool: string | null;
  rule_id: string | null;
  title: string;
  description: string | null;
  severity: Severity;
  location: FindingLocation;
  vulnerability: Record<string, unknown> | null;
  references: string[];
  properties: Record<string, unknown>;
  /** The tool's own identity of the finding (SARIF `fingerprints`, the report's `fingerprint`). */
  tool_fingerprint: string | null;
  /** SARIF `partialFingerprints.primaryLocationLineHash`: a hash of the line's content, not its number. */
  line_hash: string | null;
};

/** What a parsed input holds: its findings and assets, and what of it could not be used. */
export type ParsedFindings = {
  assets: ReportAsset[];
  findings: FindingDraft[];
  /** Findings (and assets) skipped, each problem with its path. */
  problems: Problem[];
  /** How many findings were skipped (a finding may have several problems). */
  skipped: number;
};

/** An input that is not what the route takes at all: a 400, nothing stored. */
export class NotFindingsInput extends Error {
  readonly problems: Problem[];
  constructor(message: string, problems: Problem[]) {
    super(message);
    this.problems = problems;
  }
}

/** The most fingerprints one /ingest/check may ask about (the seed's silently looked at 100). */
export const MAX_CHECKED_FINGERPRINTS = 10_000;

/** The most problems an ingest result lists; more are summed up in one last entry. */
export const MAX_LISTED_PROBLEMS = 1000;

export function listedProblems(problems: Problem[]): Problem[] {
  if (problems.length <= MAX_LISTED_PROBLEMS) return problems;
  return [
    ...problems.slice(0, MAX_LISTED_PROBLEMS),
    { path: '(body)', message: `and ${problems.length - MAX_LISTED_PROBLEMS} more problems not listed` },
  ];
}
