// The real entry point (src/main.ts) as a child process on its own database: the admin
// token shown once, health endpoints, a clean SIGTERM with a long poll in flight, and a
// refusal of bad configuration.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/db.ts';
import { freePort } from './support/ports.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const mainTs = fileURLToPath(new URL('../src/main.ts', import.meta.url));


const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Proc = {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitInfo: () => { code: number | null; signal: NodeJS.Signals | null } | null;
};

const children = new Set<ChildProcess>();

/** Starts src/main.ts with exactly this environment (plus PATH/HOME), never inheriting ADMIN_TOKEN. */
function startMain(env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [mainTs], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  let err = '';
  let info: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      info = { code, signal };
      children.delete(child);
      resolve(info);
    });
  });
  return { child, stdout: () => out, stderr: () => err, exited, exitInfo: () => info };
}

/** Waits until the process logged that it listens; fails early if it exits. */
async function waitListening(p: Proc, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!/scanflow is listening/.test(p.stdout())) {
    const info = p.exitInfo();
    if (info) assert.fail(`main.ts exited (${JSON.stringify(info)}) before listening:\n${p.stdout()}\n${p.stderr()}`);
    if (Date.now() > until) assert.fail(`main.ts did not start within ${timeoutMs}ms:\n${p.stdout()}\n${p.stderr()}`);
    await sleep(50);
  }
  // The token block is written right after the "listening" line; give the pipe a moment.
  await sleep(200);
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms}ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM, then the exit (code, signal) within the time given. */
async function stop(p: Proc, ms = 10_000) {
  if (p.exitInfo()) return p.exitInfo()!;
  p.child.kill('SIGTERM');
  return withTimeout(p.exited, ms, 'exit after SIGTERM');
}


async function call(base: string, method: string, path: string, opts: { token?: string; apiKey?: string; body?: unknown; signal?: AbortSignal } = {}) {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.apiKey) headers['x-api-key'] = opts.apiKey;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, {
    method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: opts.signal ?? AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  return { status: res.status, body };
}

function tokensIn(stdout: string): string[] {
  return [...stdout.matchAll(/admin token:\s+(\S+)/g)].map((m) => m[1]);
}

async function connectionsTo(serverUrl: string, datname: string): Promise<number> {
  const c = new pg.Client({ connectionString: serverUrl });
  await c.connect();
  try {
    const r = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
      [datname],
    );
    return r.rows[0].n;
  } finally {
    await c.end();
  }
}

let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await sleep(100);
  await db?.drop();
});

describe('npm start (src/main.ts) as a process', { timeout: 90_000 }, () => {
  let generatedToken = '';

  it('first start: prints the API address and an admin token once; the token works', { timeout: 30_000 }, async () => {
    const port = await freePort();
    const p = startMain({ DATABASE_URL: db.url, PORT: String(port), LOG_LEVEL: 'info' });
    try {
      await waitListening(p);
      const out = p.stdout();
      assert.equal((out.match(/admin token:/g) ?? []).length, 1, `the token is printed exactly once:\n${out}`);
      assert.match(out, new RegExp(`scanflow API:\\s+http://127\\.0\\.0\\.1:${port}`));
      assert.match(out, new RegExp(`dashboard:\\s+http://127\\.0\\.0\\.1:${port}/\n`), 'the dashboard\'s address is printed');
      [generatedToken] = tokensIn(out);
      assert.ok(generatedToken && generatedToken.length >= 16, `a token: ${generatedToken}`);
      assert.doesNotMatch(p.stderr(), new RegExp(generatedToken), 'the token is not logged on stderr');

      const base = `http://127.0.0.1:${port}`;
      const created = await call(base, 'POST', '/api/v1/tenants', { token: generatedToken, body: { name: 'first-start' } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.ok(created.body.tenant.id);
      const refused = await call(base, 'POST', '/api/v1/tenants', { token: 'sfadm_not-the-token-0000000000', body: { name: 'nope' } });
      assert.equal(refused.status, 401);

      assert.equal((await call(base, 'GET', '/healthz')).status, 200);
      const ready = await call(base, 'GET', '/readyz');
      assert.equal(ready.status, 200, JSON.stringify(ready.body));

      const exit = await stop(p);
      assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM must end the process cleanly\n${p.stdout().slice(-2000)}`);
    } finally {
      if (!p.exitInfo()) p.child.kill('SIGKILL');
      await p.exited;
    }
    // Only the token's hash is stored in the database.
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const dump = await c.query<{ all: string | null }>(`SELECT string_agg(t::text, ' ') AS all FROM instance_settings t`);
      assert.ok(dump.rows[0].all, 'an admin credential is stored');
      assert.ok(!dump.rows[0].all.includes(generatedToken), 'the token itself is not stored');
    } finally {
      await c.end();
    }
  });

  it('second start on the same database: no token printed; the first token still works', { timeout: 30_000 }, async () => {
    assert.ok(generatedToken, 'needs the first start');
    const port = await freePort();
    const p = startMain({ DATABASE_URL: db.url, PORT: String(port), LOG_LEVEL: 'info' });
    try {
      await waitListening(p);
      const base = `http://127.0.0.1:${port}`;
      const created = await call(base, 'POST', '/api/v1/tenants', { token: generatedToken, body: { name: 'second-start' } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.doesNotMatch(p.stdout(), /admin token:/);
      assert.doesNotMatch(p.stdout(), new RegExp(generatedToken));
      assert.match(p.stdout(), new RegExp(`dashboard:\\s+${base}/\n`), 'the dashboard\'s address is printed on every start');

      const exit = await stop(p);
      assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM must end the process cleanly\n${p.stdout().slice(-2000)}`);
    } finally {
      if (!p.exitInfo()) p.child.kill('SIGKILL');
      await p.exited;
    }
  });

  it('with ADMIN_TOKEN set: that token is never printed and it works', { timeout: 30_000 }, async () => {
    const adminToken = `chosen-admin-token-${Math.random().toString(36).slice(2)}`;
    const fresh = await createTestDatabase(); // a database where no token was ever generated
    const port = await freePort();
    const p = startMain({ DATABASE_URL: fresh.url, PORT: String(port), LOG_LEVEL: 'debug', ADMIN_TOKEN: adminToken });
    try {
      await waitListening(p);
      const base = `http://127.0.0.1:${port}`;
      const created = await call(base, 'POST', '/api/v1/tenants', { token: adminToken, body: { name: 'chosen' } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const exit = await stop(p);
      assert.doesNotMatch(p.stdout(), /admin token:/);
      assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM must end the process cleanly\n${p.stdout().slice(-2000)}`);
      assert.ok(!p.stdout().includes(adminToken), 'ADMIN_TOKEN appears on stdout');
      assert.ok(!p.stderr().includes(adminToken), 'ADMIN_TOKEN appears on stderr');
    } finally {
      if (!p.exitInfo()) p.child.kill('SIGKILL');
      await p.exited;
      await fresh.drop();
    }
  });

  it('SIGTERM with a long poll in flight: the poll answers at once, the process exits 0 and leaves no connection', { timeout: 40_000 }, async () => {
    assert.ok(generatedToken, 'needs the first start');
    const port = await freePort();
    const p = startMain({ DATABASE_URL: db.url, PORT: String(port), LOG_LEVEL: 'info' });
    try {
      await waitListening(p);
      const base = `http://127.0.0.1:${port}`;
      const tenant = await call(base, 'POST', '/api/v1/tenants', { token: generatedToken, body: { name: 'shutdown' } });
      assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
      const agent = await call(base, 'POST', '/api/v1/agents', { token: tenant.body.token, body: { name: 'poller', tools: ['semgrep'] } });
      assert.equal(agent.status, 201, JSON.stringify(agent.body));
      const apiKey = agent.body.api_key as string;
      // A short poll works first, so the long one below fails only for shutdown reasons.
      const quick = await call(base, 'GET', '/api/v1/agent/commands?wait=0', { apiKey });
      assert.equal(quick.status, 200, JSON.stringify(quick.body));

      const pollStarted = Date.now();
      const poll = call(base, 'GET', '/api/v1/agent/commands?wait=30', { apiKey, signal: AbortSignal.timeout(35_000) })
        .then(
          (r) => ({ ...r, at: Date.now() }),
          (err: Error) => ({ status: -1, body: `request failed: ${String((err.cause as Error | undefined)?.message ?? err.message)}` as any, at: Date.now() }),
        );
      // Let the poll reach its wait.
      await sleep(1000);
      assert.equal(p.exitInfo(), null, 'still running before SIGTERM');
      const signalled = Date.now();
      p.child.kill('SIGTERM');

      const answer = await withTimeout(poll, 8_000, 'the long poll answering after SIGTERM');
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(answer.body, []);
      assert.ok(answer.at - signalled < 5_000, `the poll answered ${answer.at - signalled}ms after SIGTERM`);
      assert.ok(answer.at - pollStarted < 20_000, 'the poll did not run its full 30s');

      const exit = await withTimeout(p.exited, 10_000, 'exit after SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, `exit ${JSON.stringify(exit)}\n${p.stderr()}`);
      assert.ok(Date.now() - signalled < 10_000);
      assert.match(p.stdout(), /shutting down/);
      assert.doesNotMatch(p.stdout() + p.stderr(), /error during shutdown|longer than 30s/);

      // Every connection of the process is closed (the server may need a moment to notice).
      let remaining = -1;
      for (let i = 0; i < 20; i++) {
        remaining = await connectionsTo(process.env.TEST_SERVER_URL!, db.name);
        if (remaining === 0) break;
        await sleep(100);
      }
      assert.equal(remaining, 0, 'connections left open to the database after exit');
    } finally {
      if (!p.exitInfo()) p.child.kill('SIGKILL');
      await p.exited;
    }
  });

  it('invalid configuration (PORT=abc): exits non-zero with a message naming PORT, without a stack trace', { timeout: 20_000 }, async () => {
    const p = startMain({ DATABASE_URL: db.url, PORT: 'abc', LOG_LEVEL: 'info' });
    const exit = await withTimeout(p.exited, 15_000, 'exit on bad configuration');
    assert.notEqual(exit.code, 0);
    assert.ok(exit.code !== null, `exited by signal ${exit.signal}`);
    const output = p.stdout() + p.stderr();
    assert.match(p.stderr(), /PORT/);
    assert.match(p.stderr(), /whole number/);
    assert.doesNotMatch(output, /^\s+at /m, `a stack trace was printed:\n${output}`);
    assert.doesNotMatch(output, /ConfigError|Error:/);
    assert.doesNotMatch(output, /scanflow is listening|admin token:/);
  });
});
