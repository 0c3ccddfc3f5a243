// One scan step, start to end, as the agent loop runs it for a command: find the tool (missing
// → tool_missing), check step_config, prepare the target (clone a repository), run the tool's
// invocations within the step's timeout and cancel, parse, clean up. The result is what to
// ingest (a report or a SARIF log) and the step's output; a failure is a ToolError whose code
// is the command's error_code.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import * as v from 'valibot';
import type { Log as SarifLog } from 'sarif';
import { runTool, type OutputStream } from './run-tool.ts';
import { prepareTarget, type Target } from './targets.ts';
import type { Toolbox } from './toolbox.ts';
import type { Report } from './report.ts';
import { ToolError, type StepOutput, type ToolAdapter, type ToolResult, type UpstreamSteps } from './tools/tool.ts';

/** The fields of a command's payload a scan step reads (API.md Part 1 "A command"). */
export const ScanPayload = v.looseObject({
  tool: v.nullish(v.string()),
  step_config: v.nullish(v.unknown()),
  timeout_seconds: v.nullish(v.pipe(v.number(), v.integer(), v.minValue(1))),
  target: v.nullish(v.unknown()),
  context: v.nullish(v.unknown()),
  steps: v.nullish(v.record(v.string(), v.looseObject({}))),
});

export const DEFAULT_TIMEOUT_SECONDS = 3_600;
/** Files a parser may read from the checkout (lockfiles, source lines) are at most this big. */
const MAX_SOURCE_BYTES = 20 * 1024 * 1024;

export type ScanStepInput = {
  toolbox: Toolbox;
  payload: unknown;
  /** SCANFLOW_WORK_DIR: each step gets a directory of its own inside, removed afterwards. */
  workRoot: string;
  signal?: AbortSignal;
  onOutput?: (stream: OutputStream, chunk: Buffer) => void;
  /** SIGTERM → SIGKILL grace when a tool is stopped. */
  killGraceMs?: number;
  /**
   * Epoch ms by which the step must end, when the caller knows better than "timeout_seconds
   * from now": the agent counts the step's timeout from its acknowledgement, as the server does.
   */
  deadline?: number;
  now?: () => Date;
};

export type ScanStepResult = ToolResult & {
  tool: string;
  toolVersion: string | null;
  exitCode: number;
  durationMs: number;
  /** The target as scanned (for a repository: the branch and commit, is_default_branch). */
  target: Target;
};

export async function runScanStep(input: ScanStepInput): Promise<ScanStepResult> {
  const started = Date.now();
  const parsedPayload = v.safeParse(ScanPayload, input.payload);
  if (!parsedPayload.success) throw new ToolError('invalid_config', `the command's payload is not a scan step: ${parsedPayload.issues[0].message}`);
  const payload = parsedPayload.output;
  if (!payload.tool) throw new ToolError('tool_unknown', 'the command names no tool (payload.tool)');
  const adapter = input.toolbox.get(payload.tool);
  if (!adapter) throw new ToolError('tool_unknown', `this agent has no tool ${payload.tool} (it has ${[...input.toolbox.keys()].join(', ')})`);

  const detection = await adapter.detect();
  if (!detection.available) {
    throw new ToolError('tool_missing', `tool ${adapter.name} is not installed on this agent: ${detection.reason} (${detection.install})`);
  }
  // The server repeats the step's tool in step_config (seed 001's message shape): not an option.
  const stepConfig = withoutTool(payload.step_config, payload.tool);
  adapter.checkConfig(stepConfig);

  const declared = (adapter as { timeoutSeconds?: number | null }).timeoutSeconds ?? null;
  const timeoutSeconds = Math.min(payload.timeout_seconds ?? declared ?? DEFAULT_TIMEOUT_SECONDS, declared ?? Infinity);
  const deadline = Math.min(started + timeoutSeconds * 1000, input.deadline ?? Infinity);

  await mkdir(input.workRoot, { recursive: true });
  const workdir = await mkdtemp(path.join(input.workRoot, `${adapter.name}-`));
  try {
    const prepared = await prepareTarget(payload.target, payload.context ?? {}, workdir, {
      signal: input.signal, onOutput: input.onOutput, timeoutMs: deadline - Date.now(),
    });
    try {
      const target = prepared.target;
      checkTargetKind(adapter, target);
      const invocations = adapter.command(stepConfig, target, workdir, (payload.steps ?? {}) as UpstreamSteps);
      const ctx = { target, now: (input.now ?? (() => new Date()))(), readSource: sourceReader(target), stepConfig };
      const results: ToolResult[] = [];
      let exitCode = 0;
      for (const inv of invocations) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw new ToolError('timeout', `${adapter.name} did not finish within ${timeoutSeconds} s`);
        const run = await runTool({
          argv: inv.argv, cwd: inv.cwd, env: inv.env ? { ...process.env, ...inv.env } : undefined,
          timeoutMs: remaining, killGraceMs: input.killGraceMs, signal: input.signal, onOutput: input.onOutput,
        });
        if (run.cancelled) throw new ToolError('cancelled', `${adapter.name} was stopped: the command was cancelled`);
        if (run.timedOut) throw new ToolError('timeout', `${adapter.name} did not finish within ${timeoutSeconds} s and was killed`);
        if (run.exitCode === null) {
          throw new ToolError('tool_failed', `${adapter.name} was killed by ${run.signal}: ${run.stderr.trim().slice(-2_000)}`);
        }
        exitCode = Math.max(exitCode, run.exitCode);
        results.push(adapter.parse(run.stdout, run.stderr, run.exitCode, ctx));
      }
      const merged = mergeResults(results);
      return { ...merged, tool: adapter.name, toolVersion: detection.version, exitCode, durationMs: Date.now() - started, target };
    } finally {
      await prepared.cleanup();
    }
  } finally {
    await rm(workdir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** step_config without a `tool` that names the step's own tool; anything else as given. */
export function withoutTool(stepConfig: unknown, tool: string): unknown {
  if (typeof stepConfig !== 'object' || stepConfig === null || Array.isArray(stepConfig)) return stepConfig;
  const { tool: named, ...rest } = stepConfig as Record<string, unknown>;
  return named === tool ? rest : stepConfig;
}

function checkTargetKind(adapter: ToolAdapter, target: Target): void {
  if (adapter.scans === 'any' || adapter.scans === target.kind) return;
  const wants = adapter.scans === 'repository' ? 'a repository' : 'a host (server, ip_address, domain, or a web_application/api URL)';
  throw new ToolError('target_unsupported', `${adapter.name} scans ${wants}; the target is a ${target.asset.type} asset`);
}

/** Reads files of a repository checkout, and nothing outside it. */
export function sourceReader(target: Target): (relativePath: string) => string | null {
  if (target.kind !== 'repository') return () => null;
  const root = path.resolve(target.dir);
  return (relativePath) => {
    const file = path.resolve(root, relativePath);
    if (file !== root && !file.startsWith(root + path.sep)) return null;
    try {
      if (statSync(file).size > MAX_SOURCE_BYTES) return null;
      return readFileSync(file, 'utf8');
    } catch {
      return null;
    }
  };
}

/**
 * Several invocations' results as one (sslscan, a port each): findings or SARIF runs put
 * together; output arrays concatenated (numbers and strings once), numbers summed, the rest
 * from the first. Pure.
 */
export function mergeResults(results: ToolResult[]): ToolResult {
  if (results.length === 0) throw new ToolError('output_invalid', 'the tool produced no result');
  if (results.length === 1) return results[0];
  const first = results[0];
  const output = mergeOutputs(results.map((r) => r.output));
  if (first.format === 'report') {
    const reports = results.map((r) => r.document as Report);
    return { format: 'report', document: { ...reports[0], findings: reports.flatMap((r) => r.findings ?? []) }, output };
  }
  if (first.format === 'sarif') {
    const logs = results.map((r) => r.document as SarifLog);
    return { format: 'sarif', document: { ...logs[0], runs: logs.flatMap((l) => l.runs) }, output };
  }
  return { format: 'text', document: null, output };
}

function mergeOutputs(outputs: StepOutput[]): StepOutput {
  const merged: StepOutput = {};
  for (const out of outputs) {
    for (const [key, value] of Object.entries(out)) {
      const prev = merged[key];
      if (prev === undefined) merged[key] = Array.isArray(value) ? [...value] : value;
      else if (Array.isArray(prev) && Array.isArray(value)) {
        for (const item of value) if (typeof item === 'object' || !prev.includes(item)) prev.push(item);
      } else if (typeof prev === 'number' && typeof value === 'number') merged[key] = prev + value;
    }
  }
  return merged;
}
