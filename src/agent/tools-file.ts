// The tools file (SCANFLOW_TOOLS_FILE): tools an operator adds to this agent, each a command
// line whose output is SARIF, the report format or text, e.g.
//
//   - name: semgrep
//     command: [semgrep, scan, --config, auto, --sarif, --quiet, "{target}"]
//     output: sarif
//     timeout: 30m
//
// Placeholders are replaced inside argv elements ({target}: the checkout of a repository,
// the URL of a web application or API, else the host; {host}; {port}; {workdir}: a scratch
// directory of the step), never through a shell; other braces are left as written. A tool
// whose program is missing on this host is kept: detect() says so and its commands fail with
// error_code tool_missing.
import * as v from 'valibot';
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { parseDuration, DURATION_HINT } from '../domain/durations.ts';
import { issuesToProblems } from '../domain/problems.ts';
import { findExecutable } from './tools/binaries.ts';
import { prepareSarif, readSarif, resultCount } from './tools/sarif.ts';
import { tail, ToolError, type ToolAdapter } from './tools/tool.ts';
import type { Target } from './targets.ts';
import type { Report } from './report.ts';

export const PLACEHOLDERS = ['target', 'host', 'port', 'workdir'] as const;
// Only these four are replaced; other braces (a script's `${x}`, JSON) stay as written.
const PLACEHOLDER = /\{(target|host|port|workdir)\}/g;
const HAS_PLACEHOLDER = /\{(?:target|host|port|workdir)\}/;

const Entry = v.strictObject({
  name: v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be lower-case letters, digits, ".", "_" or "-" (at most 64)')),
  command: v.pipe(
    v.array(v.pipe(v.string(), v.maxLength(4096))),
    v.minLength(1, 'must name the program and its arguments'),
    v.maxLength(200),
    v.check((argv) => argv[0] !== '' && !HAS_PLACEHOLDER.test(argv[0]), 'its first element must be the program, not a placeholder'),
  ),
  output: v.picklist(['sarif', 'report', 'text'], 'must be sarif, report or text'),
  timeout: v.optional(v.pipe(v.union([v.string(), v.number()]), v.check((d) => parseDuration(d) !== null, DURATION_HINT), v.transform((d) => parseDuration(d)!))),
});
export type ToolsFileEntry = v.InferOutput<typeof Entry>;

/** A tools-file tool: an adapter plus its own timeout (seconds), if it gave one. */
export type DeclaredTool = ToolAdapter & { timeoutSeconds: number | null; declared: ToolsFileEntry };

/** Reads and validates the tools file; errors name the file, the entry and the field. */
export async function loadToolsFile(file: string, builtins: readonly string[]): Promise<DeclaredTool[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read the tools file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseToolsFile(text, file, builtins);
}

export function parseToolsFile(text: string, file: string, builtins: readonly string[]): DeclaredTool[] {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new Error(`${file}: not YAML: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return [];
  const list = Array.isArray(doc) ? doc : (doc as { tools?: unknown }).tools;
  if (!Array.isArray(list)) throw new Error(`${file}: must be a list of tools ({name, command, output, timeout?}), or {tools: [...]}`);
  const problems: string[] = [];
  const entries: ToolsFileEntry[] = [];
  const names = new Set<string>();
  list.forEach((raw, i) => {
    const label = typeof (raw as { name?: unknown })?.name === 'string' ? `tools[${i}] (${(raw as { name: string }).name})` : `tools[${i}]`;
    const parsed = v.safeParse(Entry, raw);
    if (!parsed.success) {
      for (const p of issuesToProblems(parsed.issues)) {
        const unknownKey = p.message.startsWith('Invalid key');
        problems.push(`${label}.${p.path === '(body)' ? '' : p.path}: ${unknownKey ? 'is not a field (name, command, output, timeout)' : p.message}`.replace('.:', ':'));
      }
      return;
    }
    const e = parsed.output;
    if (builtins.includes(e.name)) problems.push(`${label}.name: ${e.name} is a built-in tool; give this one another name`);
    else if (names.has(e.name)) problems.push(`${label}.name: ${e.name} is declared twice`);
    names.add(e.name);
    entries.push(e);
  });
  if (problems.length) throw new Error(`${file}: ${problems.join('; ')}`);
  return entries.map(declaredTool);
}

/** The values of the placeholders for a target; pure. */
export function placeholderValues(target: Target, workdir: string): Record<(typeof PLACEHOLDERS)[number], string | null> {
  if (target.kind === 'repository') return { target: target.dir, host: null, port: null, workdir };
  return { target: target.url ?? target.host, host: target.host, port: target.port === null ? null : String(target.port), workdir };
}

/** argv with placeholders replaced inside each element (never split, never a shell). */
export function substitute(argv: string[], values: Record<string, string | null>, tool: string): string[] {
  return argv.map((arg) => arg.replace(PLACEHOLDER, (_, name: string) => {
    const value = values[name];
    if (value === null || value === undefined) {
      throw new ToolError('target_unsupported', `${tool}: this target has no {${name}} (its command uses it)`);
    }
    return value;
  }));
}

function declaredTool(e: ToolsFileEntry): DeclaredTool {
  const program = e.command[0];
  return {
    name: e.name,
    scans: 'any',
    timeoutSeconds: e.timeout ?? null,
    declared: e,
    detect: async () => {
      const found = findExecutable(program);
      return found
        ? { tool: e.name, available: true, version: null, path: found }
        : { tool: e.name, available: false, reason: `${program} is not on PATH`, install: `install ${program} on this host (declared in the tools file)` };
    },
    checkConfig: (stepConfig) => {
      // Its command line is fixed by the operator: a step cannot add options to it.
      if (stepConfig !== undefined && stepConfig !== null && (typeof stepConfig !== 'object' || Object.keys(stepConfig).length > 0)) {
        throw new ToolError('invalid_config', `${e.name}: takes no step_config options (its command line is set in the tools file)`);
      }
    },
    command(stepConfig, target, workdir) {
      this.checkConfig(stepConfig);
      const found = findExecutable(program);
      if (!found) throw new ToolError('tool_missing', `tool ${e.name} is declared in the tools file but ${program} is not installed on this agent`);
      const argv = substitute(e.command, placeholderValues(target, workdir), e.name);
      argv[0] = found;
      return [{ argv, cwd: target.kind === 'repository' ? target.dir : workdir }];
    },
    parse(stdout, stderr, exitCode, ctx) {
      if (e.output === 'text') {
        if (exitCode !== 0) throw new ToolError('tool_failed', `${e.name} exited with ${exitCode}: ${tail(stderr) || tail(stdout)}`, exitCode);
        return { format: 'text', document: null, output: { exit_code: exitCode } };
      }
      // Many scanners exit non-zero when they find something; a valid document on stdout is
      // a result whatever the exit code, no document is a failure.
      if (e.output === 'sarif') {
        const log = prepareSarif(readSarif(e.name, stdout, stderr, exitCode), { target: ctx.target, readSource: ctx.readSource });
        return { format: 'sarif', document: log, output: { exit_code: exitCode, results: resultCount(log) } };
      }
      let report: unknown;
      try {
        report = JSON.parse(stdout);
      } catch {
        throw new ToolError(exitCode === 0 ? 'output_invalid' : 'tool_failed', `${e.name} (exit ${exitCode}) wrote no report JSON: ${tail(stderr) || tail(stdout, 500)}`, exitCode);
      }
      if (typeof report !== 'object' || report === null || Array.isArray(report)) {
        throw new ToolError('output_invalid', `${e.name} wrote JSON that is not a report object`, exitCode);
      }
      const findings = (report as { findings?: unknown }).findings;
      return { format: 'report', document: report as Report, output: { exit_code: exitCode, findings: Array.isArray(findings) ? findings.length : 0 } };
    },
  };
}
