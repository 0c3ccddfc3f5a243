// SARIF 2.1.0 logs → findings, as API.md "SARIF mapping" says: one finding per
// runs[].results[], of type `secret` when its rule is tagged `secret` (else vulnerability);
// tool from the run's driver; rule from ruleId / rule.id; title from the rule's
// shortDescription or the message; severity from `security-severity` (result, then rule),
// else `level` (result, then the rule's defaultConfiguration), else medium; location from the
// first physicalLocation. The object model is @types/sarif's; valibot checks, first, that
// the parts read here have the types those declarations promise.
import type * as sarif from 'sarif';
import * as v from 'valibot';
import { freeFormProblem, isPlainObject, withinFreeFormBounds } from '../json.ts';
import { issuesToProblems, type Problem } from '../problems.ts';
import type { ReportBranchInfo } from './report.ts';
import { NotFindingsInput, type FindingDraft, type FindingLocation, type ParsedFindings, type Severity } from './model.ts';

const Index = v.pipe(v.number(), v.integer(), v.minValue(-1));
const Line = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2_147_483_647));

const ArtifactLocation = v.looseObject({
  uri: v.optional(v.string()),
  uriBaseId: v.optional(v.string()),
  index: v.optional(Index),
});

const Region = v.looseObject({
  startLine: v.optional(Line),
  startColumn: v.optional(Line),
  endLine: v.optional(Line),
  endColumn: v.optional(Line),
  snippet: v.optional(v.looseObject({ text: v.optional(v.string()) })),
});

const SarifResult = v.looseObject({
  ruleId: v.optional(v.string()),
  ruleIndex: v.optional(Index),
  rule: v.optional(v.looseObject({
    id: v.optional(v.string()),
    index: v.optional(Index),
    toolComponent: v.optional(v.looseObject({ index: v.optional(Index) })),
  })),
  kind: v.optional(v.picklist(['notApplicable', 'pass', 'fail', 'review', 'open', 'informational'])),
  level: v.optional(v.picklist(['none', 'note', 'warning', 'error'])),
  message: v.optional(v.looseObject({
    text: v.optional(v.string()),
    id: v.optional(v.string()),
    arguments: v.optional(v.array(v.string())),
  })),
  locations: v.optional(v.array(v.looseObject({
    physicalLocation: v.optional(v.looseObject({ artifactLocation: v.optional(ArtifactLocation), region: v.optional(Region) })),
  }))),
  fingerprints: v.optional(v.record(v.string(), v.string())),
  partialFingerprints: v.optional(v.record(v.string(), v.string())),
  properties: v.optional(v.pipe(v.looseObject({}), withinFreeFormBounds())),
});

const ToolComponent = v.looseObject({
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  version: v.optional(v.string()),
  semanticVersion: v.optional(v.string()),
  rules: v.optional(v.array(v.looseObject({ id: v.optional(v.string()) }))),
});

const SarifRun = v.looseObject({
  tool: v.looseObject({
    driver: ToolComponent,
    extensions: v.optional(v.array(v.looseObject({ rules: v.optional(v.array(v.looseObject({ id: v.optional(v.string()) }))) }))),
  }),
  results: v.optional(v.nullable(v.array(v.unknown()))),
  artifacts: v.optional(v.nullable(v.array(v.unknown()))),
  originalUriBaseIds: v.optional(v.nullable(v.record(v.string(), v.unknown()))),
  invocations: v.optional(v.nullable(v.array(v.unknown()))),
});

/** A SARIF log as far as this mapping reads it (for the API contract too). */
export const SarifLog = v.looseObject({
  version: v.literal('2.1.0', 'must be "2.1.0" (SARIF 2.1.0)'),
  runs: v.array(SarifRun),
});

export type SarifFindings = ParsedFindings & {
  /** The tool of each run: a full-coverage log resolves what each no longer reports. */
  tools: string[];
  /**
   * The branch scanned, from the first run's versionControlProvenance (`branch`,
   * `revisionId`, and `properties.is_default_branch` when the producer knows it), or null.
   */
  branch: ReportBranchInfo | null;
};

/** The branch a SARIF log says it scanned (SARIF 2.1.0 §3.23 versionControlDetails). */
function branchOf(log: sarif.Log): ReportBranchInfo | null {
  for (const run of log.runs) {
    for (const vcs of run.versionControlProvenance ?? []) {
      if (!isPlainObject(vcs)) continue;
      const name = typeof vcs.branch === 'string' && vcs.branch.trim() ? vcs.branch.trim().slice(0, 255) : null;
      const sha = typeof vcs.revisionId === 'string' && vcs.revisionId.trim() ? vcs.revisionId.trim().slice(0, 100) : null;
      if (name === null && sha === null) continue;
      const flag = isPlainObject(vcs.properties) ? vcs.properties.is_default_branch : undefined;
      return { name, is_default: typeof flag === 'boolean' ? flag : null, commit_sha: sha };
    }
  }
  return null;
}

/**
 * The findings of a SARIF log. `checkoutUri`: the directory the tool ran in, as its URIs
 * show it (file:///work/repo/), so absolute URIs become paths relative to the repository
 * and a finding keeps its identity whichever directory the next scan runs in.
 */
export function sarifFindings(body: unknown, opts: { checkoutUri?: string | null } = {}): SarifFindings {
  const parsed = v.safeParse(SarifLog, body);
  if (!parsed.success) throw new NotFindingsInput('The body is not a SARIF 2.1.0 log', issuesToProblems(parsed.issues));
  const log = parsed.output as unknown as sarif.Log;

  const findings: FindingDraft[] = [];
  const problems: Problem[] = [];
  const tools: string[] = [];
  let skipped = 0;
  log.runs.forEach((run, r) => {
    const tool = run.tool.driver.name.trim();
    tools.push(tool);
    const rules = ruleIndex(run);
    const bases = baseUris(run, opts.checkoutUri ?? null);
    (run.results ?? []).forEach((raw, i) => {
      const path = `runs[${r}].results[${i}]`;
      const checked = v.safeParse(SarifResult, raw);
      if (!checked.success) {
        problems.push(...issuesToProblems(checked.issues, ['runs', r, 'results', i]));
        skipped++;
        return;
      }
      const result = checked.output as unknown as sarif.Result;
      // A result that says the rule passed, or did not apply, is not a finding.
      if (result.kind === 'pass' || result.kind === 'notApplicable') return;
      const draft = findingOf(run, result, tool, rules, bases, path);
      if ('problem' in draft) {
        problems.push(draft.problem);
        skipped++;
      } else {
        findings.push(draft);
      }
    });
  });
  return { assets: [], findings, problems, skipped, tools, branch: branchOf(log) };
}

type Rules = { byId: Map<string, sarif.ReportingDescriptor>; components: (sarif.ToolComponent | undefined)[] };

/** The rules of a run: its driver's and its extensions' (CodeQL puts its queries' there), by id and by position. */
function ruleIndex(run: sarif.Run): Rules {
  const byId = new Map<string, sarif.ReportingDescriptor>();
  const extensions = run.tool.extensions ?? [];
  for (const component of [run.tool.driver, ...extensions]) {
    for (const rule of component.rules ?? []) {
      if (isPlainObject(rule) && typeof rule.id === 'string' && !byId.has(rule.id)) byId.set(rule.id, rule);
    }
  }
  return { byId, components: [run.tool.driver, ...extensions] };
}

function ruleOf(result: sarif.Result, rules: Rules): sarif.ReportingDescriptor | undefined {
  const componentIndex = result.rule?.toolComponent?.index;
  const component = componentIndex !== undefined && componentIndex >= 0 ? rules.components[componentIndex + 1] : rules.components[0];
  const index = result.rule?.index ?? result.ruleIndex;
  if (component && index !== undefined && index >= 0) {
    const rule = component.rules?.[index];
    if (isPlainObject(rule)) return rule;
  }
  const id = result.ruleId ?? result.rule?.id;
  return id !== undefined ? rules.byId.get(id) : undefined;
}

/** A MultiformatMessageString's or Message's text, when it has one. */
function textOf(message: unknown): string | null {
  if (!isPlainObject(message) || typeof message.text !== 'string') return null;
  const t = message.text.trim();
  return t === '' ? null : t;
}

/** The message of a result: its text, or the rule's message string it names, with its arguments put in. */
function messageText(result: sarif.Result, rule: sarif.ReportingDescriptor | undefined): string | null {
  const message = result.message as sarif.Message | undefined;
  let text = textOf(message);
  if (text === null && message?.id && rule?.messageStrings && isPlainObject(rule.messageStrings[message.id])) {
    text = textOf(rule.messageStrings[message.id]);
  }
  if (text === null) return null;
  const args = message?.arguments ?? [];
  return text.replace(/\{(\d+)\}/g, (m, n: string) => args[Number(n)] ?? m);
}

function tagsOf(bag: sarif.PropertyBag | undefined): string[] {
  return Array.isArray(bag?.tags) ? bag.tags.filter((t): t is string => typeof t === 'string') : [];
}

/** security-severity as a number: CVSS-like, 0 to 10 (GitHub code scanning's scale). */
function securitySeverity(...bags: (sarif.PropertyBag | undefined)[]): number | null {
  for (const bag of bags) {
    const raw = bag?.['security-severity'];
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
    if (Number.isFinite(n) && n >= 0) return n;
  }
  return null;
}

export function severityOfScore(score: number): Severity {
  if (score >= 9) return 'critical';
  if (score >= 7) return 'high';
  if (score >= 4) return 'medium';
  if (score > 0) return 'low';
  return 'info';
}

const LEVEL_SEVERITY: Record<string, Severity> = { error: 'high', warning: 'medium', note: 'low', none: 'info' };

export function severityOf(result: sarif.Result, rule: sarif.ReportingDescriptor | undefined): Severity {
  const score = securitySeverity(result.properties, rule?.properties);
  if (score !== null) return severityOfScore(score);
  const level = result.level ?? rule?.defaultConfiguration?.level;
  return (level && LEVEL_SEVERITY[level]) || 'medium';
}

function findingOf(
  run: sarif.Run, result: sarif.Result, tool: string, rules: Rules, bases: string[], path: string,
): FindingDraft | { problem: Problem } {
  const rule = ruleOf(result, rules);
  const ruleId = result.ruleId ?? result.rule?.id ?? (typeof rule?.id === 'string' ? rule.id : null);
  const message = messageText(result, rule);
  const title = textOf(rule?.shortDescription) ?? message ?? textOf(rule?.fullDescription)
    ?? (typeof rule?.name === 'string' && rule.name.trim() ? rule.name.trim() : null) ?? ruleId;
  if (!title) return { problem: { path: `${path}.message`, message: 'names nothing to call the finding: no message text and no rule description' } };

  const tags = [...new Set([...tagsOf(rule?.properties), ...tagsOf(result.properties)])];
  const physical = (result.locations ?? []).find((l) => l.physicalLocation?.artifactLocation || l.physicalLocation?.region)?.physicalLocation;
  const location: FindingLocation = {};
  const file = physical?.artifactLocation ? artifactPath(run, physical.artifactLocation, bases) : null;
  if (file) location.path = file;
  const region = physical?.region;
  if (region?.startLine !== undefined) location.start_line = region.startLine;
  if (region?.endLine !== undefined) location.end_line = region.endLine;
  if (region?.startColumn !== undefined) location.start_column = region.startColumn;
  if (region?.endColumn !== undefined) location.end_column = region.endColumn;
  const snippet = textOf(region?.snippet);
  if (snippet) location.snippet = snippet;

  const vulnerability: Record<string, unknown> = {};
  if (ruleId && /^CVE-\d{4}-\d{4,}$/i.test(ruleId)) vulnerability.cve_id = ruleId.toUpperCase();
  const cwe = tags.flatMap((t) => /^external\/cwe\/cwe-0*(\d+)$/i.exec(t)?.[1] ?? []).map((n) => `CWE-${n}`);
  if (cwe.length > 0) vulnerability.cwe = cwe;

  const properties: Record<string, unknown> = { ...(result.properties ?? {}) };
  if (tags.length > 0) properties.tags = tags;
  if (typeof rule?.name === 'string' && rule.name !== ruleId) properties.rule_name = rule.name;
  const tooBig = freeFormProblem(properties);
  if (tooBig) return { problem: { path: `${path}.properties`, message: tooBig } };

  const toolFingerprint = firstFingerprint(result.fingerprints);
  return {
    path,
    asset: { kind: 'default' },
    type: tags.some((t) => t.toLowerCase() === 'secret') ? 'secret' : 'vulnerability',
    tool,
    rule_id: ruleId ? ruleId.slice(0, 1000) : null,
    title: title.length > 1000 ? `${title.slice(0, 999)}…` : title,
    description: message !== title ? message : textOf(rule?.fullDescription),
    severity: severityOf(result, rule),
    location,
    vulnerability: Object.keys(vulnerability).length > 0 ? vulnerability : null,
    references: typeof rule?.helpUri === 'string' ? [rule.helpUri] : [],
    properties,
    tool_fingerprint: toolFingerprint,
    line_hash: result.partialFingerprints?.primaryLocationLineHash?.trim() || null,
  };
}

/** The tool's own fingerprint: of its `fingerprints`, the first key in sorted order. */
export function firstFingerprint(fingerprints: Record<string, string> | undefined): string | null {
  if (!fingerprints) return null;
  for (const key of Object.keys(fingerprints).sort()) {
    const value = fingerprints[key];
    if (typeof value === 'string' && value.trim() !== '') return value.trim();
  }
  return null;
}

/**
 * Absolute directories a file URI of this run may be under, longest first: the checkout
 * directory given with the upload, the run's originalUriBaseIds, its invocations' working
 * directories.
 */
function baseUris(run: sarif.Run, checkoutUri: string | null): string[] {
  const out: string[] = [];
  const add = (uri: unknown) => {
    if (typeof uri !== 'string' || !/^file:/i.test(uri)) return;
    out.push(uri.endsWith('/') ? uri : `${uri}/`);
  };
  if (checkoutUri) add(/^file:/i.test(checkoutUri) ? checkoutUri : `file://${checkoutUri.startsWith('/') ? '' : '/'}${checkoutUri}`);
  for (const base of Object.values(run.originalUriBaseIds ?? {})) if (isPlainObject(base)) add(base.uri);
  for (const inv of run.invocations ?? []) if (isPlainObject(inv) && isPlainObject(inv.workingDirectory)) add(inv.workingDirectory.uri);
  // "file:///" is the root itself (Trivy's ROOTPATH): nothing to take off.
  return out.filter((b) => !/^file:\/*$/i.test(b)).sort((a, b) => b.length - a.length);
}

/**
 * The path of an artifact as the repository knows it: relative to its uriBaseId when it has
 * one, else relative to a known base directory when it is an absolute file URI, else as
 * written; percent-decoded, without a leading "./".
 */
function artifactPath(run: sarif.Run, loc: sarif.ArtifactLocation, bases: string[]): string | null {
  let uri = loc.uri;
  if (uri === undefined && loc.index !== undefined && loc.index >= 0) {
    const artifact = run.artifacts?.[loc.index];
    if (isPlainObject(artifact) && isPlainObject(artifact.location) && typeof artifact.location.uri === 'string') uri = artifact.location.uri;
  }
  if (!uri) return null;
  if (!loc.uriBaseId && /^file:/i.test(uri)) {
    const base = bases.find((b) => uri!.toLowerCase().startsWith(b.toLowerCase()));
    uri = base ? uri.slice(base.length) : uri.replace(/^file:\/\/(localhost)?/i, '');
  }
  let path: string;
  try {
    path = decodeURIComponent(uri);
  } catch {
    path = uri;
  }
  return path.replace(/^(\.\/)+/, '').slice(0, 4096) || null;
}
