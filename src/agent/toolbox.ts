// The tools this agent runs: the six built in, plus those of the tools file. What the agent
// reports at start-up (which tools, which versions, which are missing) is detectTools().
import { eslint } from './tools/eslint.ts';
import { flawfinder } from './tools/flawfinder.ts';
import { nmap } from './tools/nmap.ts';
import { npmAudit } from './tools/npm-audit.ts';
import { secretlint } from './tools/secretlint.ts';
import { sslscan } from './tools/sslscan.ts';
import type { Detection, ToolAdapter } from './tools/tool.ts';
import { loadToolsFile, type DeclaredTool } from './tools-file.ts';

export const BUILTIN_TOOLS: readonly ToolAdapter[] = [nmap, sslscan, secretlint, eslint, npmAudit, flawfinder];
export const BUILTIN_TOOL_NAMES = BUILTIN_TOOLS.map((t) => t.name);

export type Toolbox = Map<string, ToolAdapter | DeclaredTool>;

/** The built-in tools and, with a tools file, the tools it declares (validated; throws naming the file). */
export async function loadToolbox(opts: { toolsFile?: string | null } = {}): Promise<Toolbox> {
  const box: Toolbox = new Map(BUILTIN_TOOLS.map((t) => [t.name, t]));
  if (opts.toolsFile) {
    for (const t of await loadToolsFile(opts.toolsFile, BUILTIN_TOOL_NAMES)) box.set(t.name, t);
  }
  return box;
}

/** Every tool's detection, in the toolbox's order. */
export function detectTools(box: Toolbox): Promise<Detection[]> {
  return Promise.all([...box.values()].map((t) => t.detect()));
}

/** The names to register as the agent's `tools` (those whose program is here). */
export function availableTools(detections: Detection[]): string[] {
  return detections.filter((d) => d.available).map((d) => d.tool);
}
