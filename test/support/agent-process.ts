// The reference agent as a real process (src/agent/main.ts run by this Node), its output
// kept for assertions and failure messages, and the helpers the agent tests share: waiting
// for a run to end, for a file a tool writes, for a process to leave the process table.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Harness } from './harness.ts';
import type { Tenant } from './fixtures.ts';

const MAIN = fileURLToPath(new URL('../../src/agent/main.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type AgentProcess = {
  proc: ChildProcess;
  /** stdout and stderr so far. */
  output: () => string;
  /** Resolves when the output matches (rejects after timeoutMs, with the output). */
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<void>;
  /** Resolves with the exit code (or signal) when the process ends. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running. */
  kill: () => Promise<void>;
};

export function startAgentProcess(env: Record<string, string | undefined>, args: string[] = []): AgentProcess {
  const proc = spawn(process.execPath, [MAIN, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString('utf8');
    for (const l of listeners) l();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      for (const l of listeners) l();
      resolve({ code, signal });
    });
  });
  let done = false;
  void exited.then(() => (done = true));
  const waitFor = (pattern: RegExp, timeoutMs = 30_000) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if (pattern.test(text)) {
        cleanup();
        resolve();
      } else if (done) {
        cleanup();
        reject(new Error(`the agent exited before printing ${pattern}:\n${text.slice(-4000)}`));
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`the agent did not print ${pattern} within ${timeoutMs} ms:\n${text.slice(-4000)}`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      listeners.delete(check);
    };
    listeners.add(check);
    check();
  });
  return {
    proc,
    output: () => text,
    waitFor,
    exited,
    kill: async () => {
      if (!done) proc.kill('SIGKILL');
      await exited;
    },
  };
}

export const TERMINAL_RUN = new Set(['completed', 'failed', 'cancelled', 'timeout']);

/** The run once it has ended (or throws after timeoutMs with its state). */
export async function waitForRun(h: Harness, t: Tenant, runId: string, timeoutMs = 120_000, done = (run: any) => TERMINAL_RUN.has(run.status)): Promise<any> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const res = await h.request('GET', `/api/v1/pipeline-runs/${runId}`, { token: t.token });
    if (res.status === 200 && done(res.body)) return res.body;
    if (Date.now() > until) throw new Error(`run ${runId} did not get there within ${timeoutMs} ms: ${JSON.stringify(res.body)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Polls `check` until it returns a value other than undefined/false. */
export async function eventually<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The JSON a tool wrote to `file`, once it is there. */
export function readWhenWritten<T>(file: string, timeoutMs = 30_000): Promise<T> {
  return eventually(`${file} written`, () => {
    if (!existsSync(file)) return undefined;
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as T;
    } catch {
      return undefined; // being written
    }
  }, timeoutMs);
}

/** Whether a process is in the process table (a zombie counts as gone: it runs nothing). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
