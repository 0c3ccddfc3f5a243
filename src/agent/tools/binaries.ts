// Where a tool's program is: a system binary on PATH (the Debian tools, npm), or an npm
// package of ours in node_modules/.bin, run with this Node (the .bin scripts say
// `#!/usr/bin/env node`, which may be an older Node than the agent's).
import { accessSync, constants, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTool } from '../run-tool.ts';
import type { Detection } from './tool.ts';

const PROJECT_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The absolute path of `name` on PATH (or `name` itself when it is a path), or null. */
export function findExecutable(name: string, envPath = process.env.PATH ?? ''): string | null {
  const executable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (name.includes('/')) return executable(name) ? path.resolve(name) : null;
  for (const dir of envPath.split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (executable(candidate)) return candidate;
  }
  return null;
}

/** The script behind node_modules/.bin/<bin> of this project, or null when not installed. */
export function projectBin(bin: string): string | null {
  try {
    return realpathSync(path.join(PROJECT_ROOT, 'node_modules', '.bin', bin));
  } catch {
    return null;
  }
}

/** A file shipped with the agent (configs given to the tools), by its path under src/agent/. */
export function agentFile(relative: string): string {
  return path.join(PROJECT_ROOT, 'src', 'agent', relative);
}

/** An installed package's version, from its package.json. */
export function packageVersion(pkg: string): string | null {
  try {
    const json = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof json.version === 'string' ? json.version : null;
  } catch {
    return null;
  }
}

/** Detects a system binary and reads its version from `<bin> <versionArgs>`. */
export async function detectSystemBinary(
  tool: string, bin: string, versionArgs: string[], versionPattern: RegExp, install: string,
): Promise<Detection> {
  const found = findExecutable(bin);
  if (!found) return { tool, available: false, reason: `${bin} is not on PATH`, install };
  try {
    const run = await runTool({ argv: [found, ...versionArgs], cwd: PROJECT_ROOT, timeoutMs: 10_000 });
    const text = `${run.stdout}\n${run.stderr}`.replace(/\x1b\[[0-9;]*m/g, ''); // sslscan colours its banner
    return { tool, available: true, version: versionPattern.exec(text)?.[1] ?? null, path: found };
  } catch {
    return { tool, available: true, version: null, path: found };
  }
}

/** Detects an npm package of ours (its .bin script) and reads its version from package.json. */
export function detectProjectBin(tool: string, bin: string, pkg: string): Detection {
  const script = projectBin(bin);
  if (!script) return { tool, available: false, reason: `node_modules/.bin/${bin} is missing`, install: 'npm install (in the scanflow directory)' };
  return { tool, available: true, version: packageVersion(pkg), path: script };
}

/** argv that runs a project .bin script with this Node, warnings about experimental features off. */
export function nodeScript(script: string, args: string[]): string[] {
  return [process.execPath, '--disable-warning=ExperimentalWarning', script, ...args];
}
