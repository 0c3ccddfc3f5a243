// src/main.ts run as a worker-only child process on a test database, for the tests that
// kill one with SIGKILL (crash-recovery, delivery-crash); and waiting for a condition.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const mainTs = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const children = new Set<ChildProcess>();

/** A worker process (ROLE=worker) with the given heartbeat settings, in seconds. */
export function startWorkerProcess(databaseUrl: string, o: { heartbeatSeconds: number; deadAfterSeconds: number; adminToken: string }): ChildProcess {
  const child = spawn(process.execPath, [mainTs], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '',
      DATABASE_URL: databaseUrl, ROLE: 'worker', LOG_LEVEL: 'silent', ADMIN_TOKEN: o.adminToken,
      WORKER_HEARTBEAT_INTERVAL: String(o.heartbeatSeconds), WORKER_DEAD_AFTER: String(o.deadAfterSeconds),
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** SIGKILL, resolved once the process is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Every worker process still running (a test's after hook). */
export function killWorkerProcesses(): void {
  for (const c of children) c.kill('SIGKILL');
}

/** Resolves with probe's first truthy value; fails naming `what` after ms. */
export async function until<T>(what: string, ms: number, probe: () => Promise<T | null | undefined | false>, everyMs = 25): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`${what} did not happen within ${ms} ms`);
    await sleep(everyMs);
  }
}
