// npm audit (the npm on PATH): the advisories of a repository's locked dependencies, from the
// registry's advisory database. `npm audit --json` (auditReportVersion 2) → one
// `vulnerability` finding per (advisory, package), with its GHSA id, CWE, CVSS score, the
// installed version (read from the lockfile), the vulnerable range and the first fixed version.
// A package that is vulnerable only through another one (npm lists it with `via: ["name"]`)
// is not a finding of its own: the advisory's finding names the upgrade that fixes it.
import * as v from 'valibot';
import path from 'node:path';
import { fullReport, type ReportFinding, type Severity } from '../report.ts';
import { detectSystemBinary, findExecutable } from './binaries.ts';
import { checkoutOf, parseStepConfig, RepositoryPath, tail, ToolError, type ParseContext, type ToolAdapter, type ToolResult } from './tool.ts';

const OMIT = ['dev', 'optional', 'peer'] as const;

const Options = v.strictObject({
  /** The directory of package.json and its lockfile, relative to the repository; default its root. */
  path: v.optional(RepositoryPath),
  /** Dependency types to leave out (npm's --omit). */
  omit: v.optional(v.pipe(v.array(v.picklist(OMIT, `must be one of ${OMIT.join(', ')}`)), v.maxLength(3))),
});
type Options = v.InferOutput<typeof Options>;

const options = (stepConfig: unknown): Options => parseStepConfig('npm-audit', Options, stepConfig);

export const npmAudit: ToolAdapter = {
  name: 'npm-audit',
  scans: 'repository',
  detect: () => detectSystemBinary('npm-audit', 'npm', ['--version'], /^(\d+\.\d+\.\d+)/m, 'install Node.js with npm (npm is on PATH)'),
  checkConfig: (stepConfig) => void options(stepConfig),

  command(stepConfig, target) {
    const o = options(stepConfig);
    const dir = path.join(checkoutOf(target, 'npm-audit'), o.path ?? '.');
    // --prefix: npm otherwise walks up from cwd to the nearest package.json, which may be
    // outside the checkout (a work directory inside some project).
    const argv = [findExecutable('npm') ?? 'npm', 'audit', '--json', '--prefix', dir];
    for (const kind of o.omit ?? []) argv.push(`--omit=${kind}`);
    return [{ argv, cwd: dir }];
  },

  parse(stdout, stderr, exitCode, ctx) {
    return parseNpmAudit(stdout, stderr, exitCode, ctx);
  },
};

const Advisory = v.looseObject({
  source: v.optional(v.union([v.number(), v.string()])),
  name: v.string(),
  dependency: v.optional(v.string()),
  title: v.optional(v.string()),
  url: v.optional(v.nullable(v.string())),
  severity: v.optional(v.string()),
  cwe: v.optional(v.array(v.string())),
  cvss: v.optional(v.looseObject({ score: v.optional(v.number()), vectorString: v.optional(v.nullable(v.string())) })),
  range: v.optional(v.string()),
});
const FixAvailable = v.union([v.boolean(), v.looseObject({ name: v.string(), version: v.string(), isSemVerMajor: v.optional(v.boolean()) })]);
const Vulnerability = v.looseObject({
  name: v.string(),
  severity: v.string(),
  isDirect: v.optional(v.boolean()),
  via: v.array(v.union([v.string(), Advisory])),
  effects: v.optional(v.array(v.string())),
  range: v.optional(v.string()),
  nodes: v.optional(v.array(v.string())),
  fixAvailable: v.optional(FixAvailable),
});
const AuditReport = v.looseObject({
  auditReportVersion: v.literal(2),
  vulnerabilities: v.record(v.string(), Vulnerability),
  metadata: v.optional(v.looseObject({
    vulnerabilities: v.optional(v.record(v.string(), v.number())),
    dependencies: v.optional(v.union([v.number(), v.record(v.string(), v.number())])),
  })),
});
type AuditReport = v.InferOutput<typeof AuditReport>;

const SEVERITY: Record<string, Severity> = { critical: 'critical', high: 'high', moderate: 'medium', medium: 'medium', low: 'low', info: 'info' };

export function parseNpmAudit(stdout: string, stderr: string, exitCode: number, ctx: ParseContext): ToolResult {
  const o = options(ctx.stepConfig);
  const base = o.path ?? '.';
  const rel = (file: string) => path.posix.normalize(path.posix.join(base, file));
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    throw new ToolError('tool_failed', `npm audit (exit ${exitCode}) wrote no JSON: ${tail(stderr) || tail(stdout, 500)}`, exitCode);
  }
  const err = (json as { error?: { code?: string; summary?: string; detail?: string }; message?: string } | null) ?? {};
  if (err.error?.code === 'ENOLOCK') {
    if (ctx.readSource(rel('package.json')) === null) {
      // Not an npm project: nothing to audit is a clean result, not a failed step.
      return {
        format: 'report',
        document: fullReport({ name: 'npm-audit' }, ctx.now, [], branchOf(ctx)),
        output: { audited: false, reason: `no package.json in ${base}`, vulnerable_packages: 0, vulnerabilities: {} },
      };
    }
    throw new ToolError('no_lockfile', `npm audit needs package-lock.json or npm-shrinkwrap.json in ${base} (create one with: npm install --package-lock-only)`, exitCode);
  }
  if (err.error || (typeof err.message === 'string' && !('auditReportVersion' in (json as object)))) {
    const said = err.message ?? [err.error?.code, err.error?.summary].filter(Boolean).join(': ');
    throw new ToolError('tool_failed', `npm audit failed: ${said || tail(stderr)}`, exitCode);
  }
  const parsed = v.safeParse(AuditReport, json);
  if (!parsed.success) {
    throw new ToolError('output_invalid', `npm audit wrote JSON that is not an audit report (version 2): ${parsed.issues[0].message}`, exitCode);
  }
  const report = parsed.output;
  const lockPath = ['package-lock.json', 'npm-shrinkwrap.json'].map(rel).find((p) => ctx.readSource(p) !== null) ?? rel('package-lock.json');
  const installed = lockedVersions(ctx.readSource(lockPath));
  const findings = auditFindings(report, installed, lockPath);
  return {
    format: 'report',
    document: fullReport({ name: 'npm-audit' }, ctx.now, findings, branchOf(ctx)),
    output: {
      audited: true,
      vulnerable_packages: new Set(findings.map((f) => f.vulnerability?.package)).size,
      advisories: new Set(findings.map((f) => f.rule_id)).size,
      vulnerabilities: report.metadata?.vulnerabilities ?? {},
    },
  };
}

function branchOf(ctx: ParseContext) {
  return ctx.target.kind === 'repository' ? ctx.target.branch : undefined;
}

/** node path ("node_modules/a/node_modules/b") → version, from a lockfile v2/v3 `packages` map. */
export function lockedVersions(lockfile: string | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!lockfile) return out;
  try {
    const lock = JSON.parse(lockfile) as { packages?: Record<string, { version?: unknown }> };
    for (const [node, pkg] of Object.entries(lock.packages ?? {})) {
      if (typeof pkg?.version === 'string') out.set(node, pkg.version);
    }
  } catch {
    // An unreadable lockfile only costs the installed versions.
  }
  return out;
}

function auditFindings(report: AuditReport, installed: Map<string, string>, lockPath: string): ReportFinding[] {
  const findings: ReportFinding[] = [];
  const seen = new Set<string>();
  for (const vuln of Object.values(report.vulnerabilities)) {
    const versions = [...new Set((vuln.nodes ?? []).map((n) => installed.get(n)).filter((x): x is string => !!x))];
    for (const via of vuln.via) {
      if (typeof via === 'string') continue; // vulnerable through a dependency: that one's finding says so
      const ghsa = /GHSA(?:-[23456789cfghjmpqrvwx]{4}){3}/.exec(via.url ?? '')?.[0] ?? null;
      const advisoryId = ghsa ?? `npm-${via.source ?? via.title ?? 'advisory'}`;
      const pkg = via.dependency ?? via.name;
      const key = `${advisoryId}:${pkg}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const range = via.range ?? vuln.range ?? '*';
      const fixed = firstFixedVersion(range, versions[0] ?? null);
      const fix = vuln.fixAvailable;
      const fixText = fix === false || fix === undefined ? 'no fix available'
        : fix === true ? 'fixed by npm audit fix'
        : fix.name === pkg ? `upgrade to ${fix.version}${fix.isSemVerMajor ? ' (a major version)' : ''}`
        : `upgrade ${fix.name} to ${fix.version}${fix.isSemVerMajor ? ' (a major version)' : ''}`;
      const title = via.title ?? `Vulnerable ${pkg}`;
      const cwes = via.cwe ?? [];
      findings.push({
        type: 'vulnerability',
        title: title.includes(pkg) ? title : `${title} (${pkg})`,
        severity: SEVERITY[via.severity ?? vuln.severity] ?? 'medium',
        rule_id: advisoryId,
        description: `${pkg}${versions.length ? ` ${versions.join(', ')}` : ''} is in the vulnerable range ${range} of ${advisoryId}; ${fixText}.` +
          ((vuln.effects ?? []).length ? ` It reaches ${vuln.effects!.join(', ')}.` : ''),
        location: { path: lockPath },
        vulnerability: {
          cve_id: advisoryId,
          ...(cwes[0] ? { cwe: cwes[0] } : {}),
          ...(via.cvss?.score ? { cvss_score: via.cvss.score } : {}),
          package: pkg,
          ...(versions.length ? { version: versions.join(', '), purl: purl(pkg, versions[0]) } : { version: range }),
          ...(fixed ? { fixed_version: fixed } : {}),
        },
        // The advisory in this package: a new still-vulnerable version is the same finding.
        fingerprint: `npm-audit:${advisoryId}:${pkg}`,
        references: via.url ? [via.url] : [],
        properties: {
          ghsa_id: ghsa, advisory_source: via.source ?? null, vulnerable_versions: range, cwes,
          cvss_vector: via.cvss?.vectorString ?? null, nodes: vuln.nodes ?? [], is_direct: vuln.isDirect ?? null,
          fix_available: fix ?? null, effects: vuln.effects ?? [],
        },
      });
    }
  }
  return findings;
}

function purl(name: string, version: string): string {
  const [scope, pkg] = name.startsWith('@') ? name.split('/') : [null, name];
  return scope ? `pkg:npm/${encodeURIComponent(scope)}/${pkg}@${version}` : `pkg:npm/${name}@${version}`;
}

type Triple = [number, number, number];
function triple(version: string): Triple | null {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(version.trim());
  return m ? [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)] : null;
}
function compare(a: Triple, b: Triple): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

/**
 * The first version past the vulnerable range an installed version is in: the `<X` bound of
 * that clause ("<0.2.4", ">=1.0.0 <1.2.6" → "0.2.4" / "1.2.6"). Null when the clause has no
 * such bound ("*", "<=4.17.22": no fixed release known). Pure.
 */
export function firstFixedVersion(range: string, installed: string | null): string | null {
  const version = installed ? triple(installed) : null;
  const clauses = range.split('||').map((c) => c.trim()).filter(Boolean);
  for (const clause of clauses) {
    const comparators = clause.split(/\s+/).map((c) => /^(<=|>=|<|>|=)?\s*v?([\d.]+.*)$/.exec(c)).filter((m): m is RegExpExecArray => !!m);
    if (version) {
      const inside = comparators.every((m) => {
        const bound = triple(m[2]);
        if (!bound) return true;
        const c = compare(version, bound);
        return m[1] === '<' ? c < 0 : m[1] === '<=' ? c <= 0 : m[1] === '>' ? c > 0 : m[1] === '>=' ? c >= 0 : c === 0;
      });
      if (!inside) continue;
    } else if (clauses.length > 1) {
      return null;
    }
    const upper = comparators.find((m) => m[1] === '<');
    return upper ? upper[2] : null;
  }
  return null;
}
