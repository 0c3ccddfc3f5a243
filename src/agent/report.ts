// The seed system's report format (version "1.0", API.md Part 2 "Findings ingestion"), as the
// agent's own adapters write it. Findings name no asset: the server ties them to the
// command's target asset.
import type { BranchInfo } from './targets.ts';

export type Severity = 'critical' | 'high' | 'medium' | 'low' | 'info';
export type FindingType = 'vulnerability' | 'secret' | 'misconfiguration' | 'compliance';

export type ReportFinding = {
  type: FindingType;
  title: string;
  severity: Severity;
  rule_id?: string;
  description?: string;
  location?: { path?: string; start_line?: number; end_line?: number; snippet?: string; url?: string; host?: string; port?: number };
  vulnerability?: {
    cve_id?: string; cwe?: string; cvss_score?: number; package?: string; version?: string; fixed_version?: string; purl?: string;
  };
  /** The tool's own identity for the finding: stable while the problem stays (never a line number). */
  fingerprint?: string;
  references?: string[];
  properties?: Record<string, unknown>;
};

export type Report = {
  version: '1.0';
  metadata: {
    timestamp: string;
    coverage_type: 'full' | 'incremental' | 'partial';
    branch?: BranchInfo;
  };
  tool: { name: string; version?: string };
  findings: ReportFinding[];
};

/** A whole-target scan's report: `coverage_type: full`, so what it no longer contains resolves. */
export function fullReport(
  tool: { name: string; version?: string | null },
  now: Date,
  findings: ReportFinding[],
  branch?: BranchInfo,
): Report {
  return {
    version: '1.0',
    metadata: { timestamp: now.toISOString(), coverage_type: 'full', ...(branch ? { branch } : {}) },
    tool: tool.version ? { name: tool.name, version: tool.version } : { name: tool.name },
    findings,
  };
}
