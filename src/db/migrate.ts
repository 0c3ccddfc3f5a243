// Brings a database up to date: graphile-worker's schema, then our migrations/ (plain SQL,
// applied in order by node-pg-migrate, each in its own transaction, under an advisory lock
// so concurrent starts wait for each other), then the DBA views of sql/views.sql.
import { readFile, readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runMigrations as runWorkerMigrations } from 'graphile-worker';
import { runner } from 'node-pg-migrate';
import { quietErrors } from './pool.ts';

const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url));
const viewsFile = fileURLToPath(new URL('../../sql/views.sql', import.meta.url));
const MIGRATIONS_TABLE = 'schema_migrations';

type Log = { info: (msg: string) => void };

export async function migrate(connectionString: string, log: Log = { info: () => {} }): Promise<void> {
  const pool = quietErrors(new pg.Pool({ connectionString, max: 2 }));
  try {
    await runWorkerMigrations({ pgPool: pool, logger: undefined });
  } finally {
    await pool.end();
  }
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    const applied = await runner({
      dbClient: client,
      dir: migrationsDir,
      direction: 'up',
      migrationsTable: MIGRATIONS_TABLE,
      singleTransaction: false,
      checkOrder: true,
      advisoryLockMode: 'wait',
      log: () => {},
    });
    for (const m of applied) log.info(`applied migration ${m.name}`);
    await client.query(await readFile(viewsFile, 'utf8'));
  } finally {
    await client.end();
  }
}

/** True when every migration in migrations/ has been applied (for /readyz). */
export async function migrationsCurrent(db: pg.Pool | pg.Client): Promise<boolean> {
  const files = (await readdir(migrationsDir)).filter((f) => f.endsWith('.sql')).map((f) => f.slice(0, -4));
  const { rows } = await db.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE}`);
  const done = new Set(rows.map((r) => r.name));
  return files.every((f) => done.has(f));
}
