// A fresh, empty database for a whole-system run (the bench, the chaos check): a new
// database on DATABASE_URL's server when it is set, otherwise an embedded PostgreSQL in a
// temporary directory. drop() removes it (and stops the embedded server).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { freePort } from './ports.ts';

export type ScratchDatabase = { url: string; kind: string; drop: () => Promise<void> };

export async function scratchDatabase(
  name: string,
  opts: {
    preloadStatements?: boolean;
    /** Server settings that need a restart (e.g. track_commit_timestamp): embedded PostgreSQL only. */
    serverSettings?: Record<string, string>;
    progress?: (m: string) => void;
  } = {},
): Promise<ScratchDatabase> {
  const server = process.env.DATABASE_URL;
  if (server) {
    const dbName = `${name}_${process.pid}`;
    const admin = new pg.Client({ connectionString: server });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${dbName}`);
    await admin.end();
    const u = new URL(server);
    u.pathname = `/${dbName}`;
    return {
      url: u.toString(),
      kind: `database ${dbName} on DATABASE_URL's server`,
      drop: async () => {
        const c = new pg.Client({ connectionString: server });
        await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        await c.end();
      },
    };
  }
  const tmp = await mkdtemp(path.join(tmpdir(), `${name}-`));
  opts.progress?.('starting an embedded PostgreSQL');
  const embeddedOpts = { dataDir: tmp, port: await freePort(), database: name, persistent: true };
  let embedded = await startEmbeddedPostgres(embeddedOpts);
  const settings = Object.entries(opts.serverSettings ?? {});
  if (opts.preloadStatements || settings.length > 0) {
    const c = new pg.Client({ connectionString: embedded.url });
    await c.connect();
    if (opts.preloadStatements) {
      await c.query(`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`);
      await c.query(`ALTER SYSTEM SET pg_stat_statements.track = 'all'`); // statements inside functions and triggers too
    }
    for (const [name, value] of settings) {
      await c.query(`ALTER SYSTEM SET ${pg.escapeIdentifier(name)} = ${pg.escapeLiteral(value)}`);
    }
    await c.end();
    await embedded.stop();
    embedded = await startEmbeddedPostgres(embeddedOpts);
  }
  const stop = embedded.stop;
  return {
    url: embedded.url,
    kind: `embedded PostgreSQL in ${tmp}`,
    drop: async () => {
      await stop();
      await rm(tmp, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    },
  };
}
