// Brings a database up to date: graphile-worker's schema, then our migrations/ (plain SQL,
// applied in order by node-pg-migrate, each in its own transaction, under an advisory lock
// so concurrent starts wait for each other), then the DBA views of sql/views.sql.
import { createHash } from 'node:crypto';
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
    await applyViews(client, await readFile(viewsFile, 'utf8'));
  } finally {
    await client.end();
  }
}

/**
 * Creates the operator views of sql/views.sql (`text`) unless they are already those of this
 * text: each view's comment names the sha256 of the text that created it. Re-creating them
 * drops them, which waits for every transaction that read one of them to end, and queues
 * every later reader behind it: with 10,000 live runs, worker processes starting while a
 * maintenance sweep read stalled_runs for seconds did not come up within 120 s (npm run
 * bench -- scale-burst, its second round). An unchanged file takes no lock on any view.
 * Processes starting together check and create one at a time (an advisory lock), each in
 * one transaction. Returns whether the views were (re-)created.
 */
export async function applyViews(client: pg.Client, text: string): Promise<boolean> {
  const comment = `scanflow operator view, from sql/views.sql sha256:${createHash('sha256').update(text).digest('hex')}`;
  const names = [...text.matchAll(/^CREATE VIEW (\w+)/gm)].map((m) => m[1]);
  await client.query('BEGIN');
  try {
    await client.query(`SELECT pg_advisory_xact_lock(hashtextextended('scanflow.views', 0))`);
    const { rows: [current] } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_class c
       WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v'
         AND c.relname = ANY ($1::text[]) AND obj_description(c.oid, 'pg_class') = $2`, [names, comment]);
    const create = names.length === 0 || current.n < names.length;
    if (create) {
      await client.query(text);
      for (const name of names) await client.query(`COMMENT ON VIEW ${pg.escapeIdentifier(name)} IS ${pg.escapeLiteral(comment)}`);
    }
    await client.query('COMMIT');
    return create;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** True when every migration in migrations/ has been applied (for /readyz). */
export async function migrationsCurrent(db: pg.Pool | pg.Client): Promise<boolean> {
  const files = (await readdir(migrationsDir)).filter((f) => f.endsWith('.sql')).map((f) => f.slice(0, -4));
  const { rows } = await db.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE}`);
  const done = new Set(rows.map((r) => r.name));
  return files.every((f) => done.has(f));
}
