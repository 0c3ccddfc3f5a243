// runTool: no shell, output streamed while the tool runs, and a timeout or a cancel that
// leaves nothing of the tool behind (its children included) in the process table.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { runTool } from '../src/agent/run-tool.ts';
import { ToolError } from '../src/agent/tools/tool.ts';

const cwd = tmpdir();

/** A process that still exists (running, or a zombie waiting for init to reap it). */
function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ESRCH');
    return false;
  }
}

function running(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until no pid is running (gone, or a zombie), failing past `withinMs`. */
async function notRunning(pids: number[], withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (pids.some(running)) {
    if (Date.now() > deadline) assert.fail(`still running ${withinMs} ms after runTool returned: ${pids.filter(running).join(', ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until every pid is gone from the process table (kill(pid, 0) → ESRCH). */
async function gone(pids: number[], withinMs = 15_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  // Killed orphans are reaped by PID 1; this machine's init does that within ~1.6 s (measured).
  while (pids.some(exists)) {
    if (Date.now() > deadline) assert.fail(`still in the process table after ${withinMs} ms: ${pids.filter(exists).join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A shell that starts two sleeping children and prints their pids and its own. */
const FAMILY = ['sh', '-c', 'sleep 300 & echo $!; sleep 300 & echo $!; echo $$; wait'];

function pidsFrom(text: string): number[] {
  return text.trim().split('\n').map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

describe('runTool', () => {
  it('passes argv as is, never through a shell', async () => {
    const run = await runTool({ argv: ['printf', '%s|%s', 'a;b $(echo no) `x`', "'*'"], cwd, timeoutMs: 10_000 });
    assert.equal(run.exitCode, 0);
    assert.equal(run.stdout, "a;b $(echo no) `x`|'*'");
  });

  it('streams chunks while the tool runs, and keeps the exit code and stderr', async () => {
    const seen: { stream: string; text: string; at: number }[] = [];
    const script = `process.stdout.write('one\\n'); setTimeout(() => { process.stderr.write('warn\\n'); process.stdout.write('two\\n'); process.exit(3); }, 400);`;
    const run = await runTool({
      argv: [process.execPath, '-e', script], cwd, timeoutMs: 10_000,
      onOutput: (stream, chunk) => seen.push({ stream, text: chunk.toString(), at: Date.now() }),
    });
    assert.equal(run.exitCode, 3);
    assert.equal(run.stdout, 'one\ntwo\n');
    assert.equal(run.stderr, 'warn\n');
    const first = seen.find((s) => s.text.includes('one'))!;
    const second = seen.find((s) => s.text.includes('two'))!;
    assert.ok(second.at - first.at >= 300, 'the first chunk arrived before the tool went on (streamed, not at exit)');
    assert.deepEqual(seen.filter((s) => s.stream === 'stderr').map((s) => s.text), ['warn\n']);
  });

  it('keeps only the tail of stderr', async () => {
    const run = await runTool({
      argv: [process.execPath, '-e', `process.stderr.write('x'.repeat(5000) + 'END')`], cwd, timeoutMs: 10_000, stderrTailBytes: 100,
    });
    assert.equal(run.stderr.length, 100);
    assert.ok(run.stderr.endsWith('END'));
  });

  it('a timeout kills the tool and its children: gone from the process table', async () => {
    let out = '';
    const run = await runTool({ argv: FAMILY, cwd, timeoutMs: 500, killGraceMs: 1_000, onOutput: (_, c) => (out += c) });
    assert.equal(run.timedOut, true);
    assert.equal(run.exitCode, null);
    assert.equal(run.signal, 'SIGTERM');
    const pids = pidsFrom(out);
    assert.equal(pids.length, 3, 'two children and the shell printed their pids');
    // Every process of the group got SIGKILL and closed its pipes before runTool returned; the
    // kernel may still be finishing an exit (fds closed, not yet a zombie) on a loaded machine,
    // so "not running" is allowed a moment, far below the 300 s the sleeps would run.
    await notRunning(pids, 2_000);
    await gone(pids);
  });

  it('a tool that ignores SIGTERM is SIGKILLed after the grace', async () => {
    let out = '';
    const started = Date.now();
    const argv = ['sh', '-c', `trap '' TERM; sleep 300 & echo $!; echo $$; while true; do sleep 1; done`];
    const run = await runTool({ argv, cwd, timeoutMs: 300, killGraceMs: 700, onOutput: (_, c) => (out += c) });
    assert.equal(run.timedOut, true);
    assert.equal(run.signal, 'SIGKILL');
    assert.ok(Date.now() - started >= 1_000 - 50, 'SIGKILL came after timeout + grace');
    await gone(pidsFrom(out));
  });

  it('cancel (AbortSignal) stops the tool and its children the same way', async () => {
    const controller = new AbortController();
    let out = '';
    const pending = runTool({
      argv: FAMILY, cwd, timeoutMs: 60_000, killGraceMs: 1_000, signal: controller.signal,
      onOutput: (_, c) => {
        out += c;
        if (pidsFrom(out).length === 3) controller.abort();
      },
    });
    const run = await pending;
    assert.equal(run.cancelled, true);
    assert.equal(run.timedOut, false);
    const pids = pidsFrom(out);
    assert.equal(pids.length, 3);
    await gone(pids);
  });

  it('a cancelled signal never starts the tool', async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(runTool({ argv: ['true'], cwd, timeoutMs: 1_000, signal: controller.signal }), (err: ToolError) => err.code === 'cancelled');
  });

  it('what a tool leaves running after it exits goes with it', async () => {
    let out = '';
    const run = await runTool({ argv: ['sh', '-c', 'sleep 300 & echo $!; exit 0'], cwd, timeoutMs: 10_000, onOutput: (_, c) => (out += c) });
    assert.equal(run.exitCode, 0);
    await gone(pidsFrom(out));
  });

  it('a missing program is tool_missing', async () => {
    await assert.rejects(
      runTool({ argv: ['scanflow-no-such-tool'], cwd, timeoutMs: 1_000 }),
      (err: ToolError) => err instanceof ToolError && err.code === 'tool_missing' && err.message.includes('scanflow-no-such-tool'),
    );
  });

  it('stdout past the limit is output_too_large, and the tool is stopped', async () => {
    await assert.rejects(
      runTool({ argv: ['sh', '-c', 'yes scanflow'], cwd, timeoutMs: 30_000, maxStdoutBytes: 64 * 1024, killGraceMs: 500 }),
      (err: ToolError) => err.code === 'output_too_large',
    );
  });
});
