// What every tool adapter is, for the agent: detect the binary, build an argv from the step's
// step_config through an allow-list, and parse what the tool printed into the report format
// (API.md Part 2) or a SARIF 2.1.0 log plus the step's structured output.
import * as v from 'valibot';
import type { Log as SarifLog } from 'sarif';
import { issuesToProblems } from '../../domain/problems.ts';
import type { Report } from '../report.ts';
import type { Target } from '../targets.ts';

/** One process to start: never a shell string, argv[0] is the program. */
export type Invocation = { argv: string[]; cwd: string; env?: Record<string, string> };

export type Detection =
  | { tool: string; available: true; version: string | null; path: string }
  | { tool: string; available: false; reason: string; install: string };

/** The step's structured output, what downstream conditions read as `steps.<key>.output`. */
export type StepOutput = Record<string, unknown>;

export type ToolResult =
  | { format: 'report'; document: Report; output: StepOutput }
  | { format: 'sarif'; document: SarifLog; output: StepOutput }
  /** A tools-file tool whose output is text: nothing to ingest, the log has it all. */
  | { format: 'text'; document: null; output: StepOutput };

export type ParseContext = {
  target: Target;
  now: Date;
  /** A file of the scanned checkout (path relative to it), or null when absent or not a repository. */
  readSource: (relativePath: string) => string | null;
  /** The step's step_config, as command() was given it. */
  stepConfig?: unknown;
};

/** The steps of the run as the command's payload gives them (`payload.steps`). */
export type UpstreamSteps = Record<string, { status?: string; findings_count?: number; output?: unknown }>;

export type ToolAdapter = {
  name: string;
  /** What the tool needs: a checkout of a repository, a host, or whatever target the command has. */
  scans: 'repository' | 'host' | 'any';
  detect(): Promise<Detection>;
  /** Validates step_config alone (before a clone is spent on a step that cannot run). */
  checkConfig(stepConfig: unknown): void;
  /** Usually one invocation; sslscan makes one per port (it scans one target per process reliably). */
  command(stepConfig: unknown, target: Target, workdir: string, upstream?: UpstreamSteps): Invocation[];
  parse(stdout: string, stderr: string, exitCode: number, ctx: ParseContext): ToolResult;
};

export const TOOL_ERROR_CODES = [
  'invalid_config', 'tool_unknown', 'tool_missing', 'tool_failed', 'timeout', 'cancelled',
  'target_unsupported', 'target_unreachable', 'clone_failed', 'output_invalid', 'output_too_large', 'no_lockfile',
] as const;
export type ToolErrorCode = (typeof TOOL_ERROR_CODES)[number];

/** A step that cannot succeed; `code` is what the agent sends as the command's `error_code`. */
export class ToolError extends Error {
  readonly code: ToolErrorCode;
  readonly exitCode: number | null;
  constructor(code: ToolErrorCode, message: string, exitCode: number | null = null) {
    super(message);
    this.name = 'ToolError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/**
 * step_config through a tool's allow-list: anything not in `schema` (a strict object) is
 * refused with the option's name and the options the tool allows.
 */
export function parseStepConfig<S extends v.StrictObjectSchema<v.ObjectEntries, undefined>>(
  tool: string, schema: S, stepConfig: unknown,
): v.InferOutput<S> {
  const parsed = v.safeParse(schema, stepConfig ?? {});
  if (parsed.success) return parsed.output;
  const allowed = Object.keys(schema.entries).sort().join(', ') || 'none';
  const problems = parsed.issues.map((issue, i) => {
    const [p] = issuesToProblems([issue]);
    const where = p.path === '(body)' ? 'step_config' : `step_config.${p.path}`;
    if (issue.type === 'strict_object' && issue.expected === 'never') {
      return `${where} is not an option of ${tool} (allowed: ${allowed})`;
    }
    return i === 0 && p.path === '(body)' ? `step_config must be an object` : `${where}: ${p.message}`;
  });
  throw new ToolError('invalid_config', `${tool}: ${problems.join('; ')}`);
}

/** The last `max` characters of a tool's stderr, for failure messages. */
export function tail(text: string, max = 2_000): string {
  const t = text.trim();
  return t.length <= max ? t : `…${t.slice(t.length - max)}`;
}

/**
 * A path or glob inside the checkout, as a step may name one: never absolute, never "..",
 * never an option (a leading "-").
 */
export const RepositoryPath = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(500),
  v.check((p) => !p.startsWith('-'), 'must not start with "-"'),
  v.check((p) => !p.startsWith('/') && !/^[A-Za-z]:/.test(p), 'must be relative to the repository'),
  v.check((p) => !p.split(/[\\/]/).includes('..'), 'must not contain ".."'),
  v.check((p) => !/[\x00-\x1f]/.test(p), 'must not contain control characters'),
);

/** The checkout of a repository target, or a ToolError naming the tool. */
export function checkoutOf(target: Target, tool: string): string {
  if (target.kind !== 'repository') throw new ToolError('target_unsupported', `${tool} scans repositories; a ${target.asset.type} asset is not one`);
  return target.dir;
}
