// What the agent says at start, for the person who started it: the tools found on this host
// (with versions, or the package to install), and how they compare with the tools the
// tenant gave the agent on the server (those are the commands it will be sent). Pure.
import path from 'node:path';
import type { Detection } from './tools/tool.ts';

export function hostReport(detections: Detection[], cwd = process.cwd()): string[] {
  const width = Math.max(...detections.map((d) => d.tool.length), 4);
  return detections.map((d) => {
    const name = d.tool.padEnd(width);
    if (!d.available) return `  ${name}  missing   ${d.reason}: ${d.install}`;
    const where = path.isAbsolute(d.path) && d.path.startsWith(cwd + path.sep) ? path.relative(cwd, d.path) : d.path;
    return `  ${name}  ${(d.version ?? '?').padEnd(8)}  ${where}`;
  });
}

export type ToolComparison = {
  /** Assigned on the server and installed here: what this agent runs. */
  runs: string[];
  /** Assigned on the server, not runnable here: their commands fail with tool_missing or tool_unknown. */
  assignedMissing: { tool: string; why: string }[];
  /** Installed here but not assigned: the server sends none of their commands. */
  unassigned: string[];
};

export function compareTools(detections: Detection[], assigned: string[]): ToolComparison {
  const byName = new Map(detections.map((d) => [d.tool, d]));
  const runs: string[] = [];
  const assignedMissing: { tool: string; why: string }[] = [];
  for (const tool of assigned) {
    const d = byName.get(tool);
    if (d?.available) runs.push(tool);
    else if (d) assignedMissing.push({ tool, why: `not installed here (${d.install}); its commands will fail with tool_missing` });
    else assignedMissing.push({ tool, why: 'this agent has no such tool (add it to the tools file); its commands will fail with tool_unknown' });
  }
  const unassigned = detections.filter((d) => d.available && !assigned.includes(d.tool)).map((d) => d.tool);
  return { runs, assignedMissing, unassigned };
}

export function comparisonReport(c: ToolComparison, agentId: string): string[] {
  const lines: string[] = [];
  lines.push(c.runs.length > 0
    ? `  runs the commands of: ${c.runs.join(', ')}`
    : '  runs no command: none of the tools the server gives this agent is installed here');
  for (const m of c.assignedMissing) lines.push(`  ! ${m.tool}: assigned to this agent on the server but ${m.why}`);
  if (c.unassigned.length > 0) {
    lines.push(`  installed here but not assigned to this agent (the server sends none of their commands): ${c.unassigned.join(', ')}`);
    lines.push(`    to use them: PUT /api/v1/agents/${agentId} with them in "tools"`);
  }
  return lines;
}
