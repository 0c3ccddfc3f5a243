// SARIF 2.1.0 logs as the tools write them, made ready for the server's mapping (API.md Part 2
// "SARIF mapping" and "Identity"): paths relative to the checkout (a clone lives in a new
// temporary directory every time, so absolute paths would make every finding new), a line
// hash where the tool gives no fingerprint (two findings of one rule in one file stay two,
// and a finding that moved down ten lines stays one), and the branch that was scanned.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v from 'valibot';
import type { Log as SarifLog, Result, Run } from 'sarif';
import type { Target } from '../targets.ts';
import { ToolError, tail } from './tool.ts';

const SarifShape = v.looseObject({
  version: v.literal('2.1.0'),
  runs: v.array(v.looseObject({ tool: v.looseObject({ driver: v.looseObject({ name: v.string() }) }), results: v.optional(v.array(v.looseObject({}))) })),
});

/** stdout as a SARIF 2.1.0 log, or a ToolError saying what came out instead. */
export function readSarif(tool: string, stdout: string, stderr: string, exitCode: number): SarifLog {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    const said = tail(stderr, 1_000) || tail(stdout, 500) || 'no output';
    throw new ToolError(exitCode === 0 ? 'output_invalid' : 'tool_failed', `${tool} (exit ${exitCode}) wrote no SARIF: ${said}`, exitCode);
  }
  const parsed = v.safeParse(SarifShape, json);
  if (!parsed.success) {
    throw new ToolError('output_invalid', `${tool} wrote JSON that is not a SARIF 2.1.0 log (${parsed.issues[0].message})`, exitCode);
  }
  return json as SarifLog;
}

/** A result's file path relative to the checkout ("./a.c", "file:///tmp/x/checkout/a.c" → "a.c"). */
export function relativeUri(uri: string, checkout: string | null): string {
  let p = uri;
  if (p.startsWith('file://')) {
    try {
      p = fileURLToPath(p);
    } catch {
      return uri;
    }
  }
  if (checkout && path.isAbsolute(p)) {
    const rel = path.relative(checkout, p);
    if (!rel.startsWith('..') && !path.isAbsolute(rel)) p = rel;
  }
  p = p.replace(/^(\.\/)+/, '');
  return p.split(path.sep).join('/');
}

/** A line's identity without its number: the rule and the line's text, whitespace collapsed. */
export function lineHash(ruleId: string, lineText: string): string {
  const normalized = lineText.trim().replace(/\s+/g, ' ');
  return createHash('sha256').update(`${ruleId}\0${normalized}`).digest('hex').slice(0, 32);
}

export type PrepareSarifOptions = {
  target: Target;
  readSource: (relativePath: string) => string | null;
  /** Tags added to every rule's properties.tags (secretlint: "secret", so findings are secrets). */
  ruleTags?: string[];
};

/** The log, changed in place and returned: relative URIs, line hashes, tags, provenance. */
export function prepareSarif(log: SarifLog, opts: PrepareSarifOptions): SarifLog {
  const checkout = opts.target.kind === 'repository' ? opts.target.dir : null;
  for (const run of log.runs) {
    if (opts.ruleTags?.length) tagRules(run, opts.ruleTags);
    const occurrences = new Map<string, number>();
    const lines = new Map<string, string[] | null>();
    for (const result of run.results ?? []) {
      for (const loc of result.locations ?? []) {
        const artifact = loc.physicalLocation?.artifactLocation;
        if (artifact?.uri) {
          artifact.uri = relativeUri(artifact.uri, checkout);
          if (artifact.uriBaseId === 'SRCROOT' || (checkout && artifact.uriBaseId)) delete artifact.uriBaseId;
        }
      }
      addLineHash(result, run, occurrences, (file) => {
        if (!lines.has(file)) lines.set(file, opts.readSource(file)?.split(/\r?\n/) ?? null);
        return lines.get(file)!;
      });
    }
    for (const artifact of run.artifacts ?? []) {
      if (artifact.location?.uri) artifact.location.uri = relativeUri(artifact.location.uri, checkout);
    }
    if (opts.target.kind === 'repository') {
      run.versionControlProvenance = [{
        repositoryUri: opts.target.url,
        revisionId: opts.target.branch.commit_sha,
        branch: opts.target.branch.name,
        properties: { is_default_branch: opts.target.branch.is_default_branch },
      }];
    }
  }
  return log;
}

function ruleIdOf(result: Result, run: Run): string {
  if (result.ruleId) return result.ruleId;
  if (result.rule?.id) return result.rule.id;
  const index = result.ruleIndex ?? result.rule?.index;
  return (index !== undefined ? run.tool.driver.rules?.[index]?.id : undefined) ?? '';
}

function addLineHash(
  result: Result, run: Run, occurrences: Map<string, number>, linesOf: (file: string) => string[] | null,
): void {
  if (result.fingerprints && Object.keys(result.fingerprints).length > 0) return;
  if (result.partialFingerprints?.primaryLocationLineHash) return;
  const physical = result.locations?.[0]?.physicalLocation;
  const file = physical?.artifactLocation?.uri;
  const line = physical?.region?.startLine;
  if (!file || !line) return;
  const text = physical.region?.snippet?.text ?? linesOf(file)?.[line - 1];
  if (text === undefined) return;
  const rule = ruleIdOf(result, run);
  const hash = lineHash(rule, text);
  // The same line text twice in a file (two identical calls) stays two findings, numbered in order.
  const key = `${file}\0${hash}`;
  const n = (occurrences.get(key) ?? 0) + 1;
  occurrences.set(key, n);
  result.partialFingerprints = { ...result.partialFingerprints, primaryLocationLineHash: `${hash}:${n}` };
}

function tagRules(run: Run, tags: string[]): void {
  for (const rule of run.tool.driver.rules ?? []) {
    const props = (rule.properties ??= {});
    const existing = Array.isArray(props.tags) ? props.tags : [];
    props.tags = [...new Set([...existing, ...tags])];
  }
}

/** How many results a log has (for the step's output). */
export function resultCount(log: SarifLog): number {
  return log.runs.reduce((n, run) => n + (run.results?.length ?? 0), 0);
}
