// Runs one tool as a child process: no shell, its own process group (so a timeout or a
// cancel stops the tool and everything it started), output streamed to a callback while it
// runs, stdout kept whole for the parser and stderr's tail for failure messages.
import { spawn } from 'node:child_process';
import { ToolError } from './tools/tool.ts';

export type OutputStream = 'stdout' | 'stderr';

export type RunToolOptions = {
  argv: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Wall-clock limit; past it the group gets SIGTERM, then SIGKILL after `killGraceMs`. */
  timeoutMs: number;
  killGraceMs?: number;
  /** Cancel: aborting stops the tool like a timeout does. */
  signal?: AbortSignal;
  /** Every chunk as it arrives (the agent forwards them to the logs endpoint). */
  onOutput?: (stream: OutputStream, chunk: Buffer) => void;
  /** stdout beyond this is an error (`output_too_large`), not an out-of-memory. */
  maxStdoutBytes?: number;
  /** How much of stderr to keep (the end of it). */
  stderrTailBytes?: number;
};

export type ToolRun = {
  pid: number;
  exitCode: number | null;
  /** The signal that ended the tool, when one did. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  cancelled: boolean;
  durationMs: number;
};

const DEFAULT_MAX_STDOUT = 256 * 1024 * 1024;
const DEFAULT_STDERR_TAIL = 256 * 1024;
/** After the leader exits, how long to wait for its pipes to close before giving up on them. */
const CLOSE_GRACE_MS = 2_000;

export function runTool(opts: RunToolOptions): Promise<ToolRun> {
  const started = Date.now();
  const grace = opts.killGraceMs ?? 5_000;
  const maxStdout = opts.maxStdoutBytes ?? DEFAULT_MAX_STDOUT;
  const stderrMax = opts.stderrTailBytes ?? DEFAULT_STDERR_TAIL;
  if (opts.argv.length === 0) throw new ToolError('invalid_config', 'empty command');
  if (opts.signal?.aborted) {
    return Promise.reject(new ToolError('cancelled', `${opts.argv[0]}: cancelled before it started`));
  }

  return new Promise<ToolRun>((resolve, reject) => {
    const child = spawn(opts.argv[0], opts.argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      // A new session and process group led by the tool: killing -pid reaches its children.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: false,
      windowsHide: true,
    });

    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = Buffer.alloc(0);
    let timedOut = false;
    let cancelled = false;
    let tooLarge = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let settled = false;
    let killTimer: NodeJS.Timeout | null = null;
    let closeTimer: NodeJS.Timeout | null = null;

    const killGroup = (sig: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    const stop = () => {
      killGroup('SIGTERM');
      killTimer ??= setTimeout(() => killGroup('SIGKILL'), grace);
    };

    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutMs);
    const onAbort = () => {
      cancelled = true;
      stop();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxStdout) {
        if (!tooLarge) {
          tooLarge = true;
          stop();
        }
        return;
      }
      stdout.push(chunk);
      opts.onOutput?.('stdout', chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = Buffer.concat([stderr, chunk]);
      if (stderr.length > stderrMax) stderr = stderr.subarray(stderr.length - stderrMax);
      opts.onOutput?.('stderr', chunk);
    });

    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      if (closeTimer) clearTimeout(closeTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) return reject(err);
      if (tooLarge) {
        return reject(new ToolError('output_too_large', `${opts.argv[0]}: more than ${maxStdout} bytes of output`));
      }
      resolve({
        pid: child.pid!,
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: stderr.toString('utf8'),
        timedOut,
        cancelled,
        durationMs: Date.now() - started,
      });
    };

    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') finish(new ToolError('tool_missing', `${opts.argv[0]}: not found`));
      else if (err.code === 'EACCES') finish(new ToolError('tool_missing', `${opts.argv[0]}: not executable`));
      else finish(err);
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      // Whatever the tool left running in its group goes with it (a daemonised helper, a
      // grandchild the tool did not wait for); it would otherwise hold the pipes open.
      killGroup('SIGKILL');
      closeTimer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        finish(null);
      }, CLOSE_GRACE_MS);
    });
    child.on('close', () => finish(null));
  });
}
