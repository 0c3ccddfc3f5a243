import pg from 'pg';

// Timestamps come back as Date, bigint counts as numbers (never near 2^53 here).
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/** A pool, a client or a transaction (db/transaction.ts Tx): whatever runs a statement. */
export type Queryable = { query(config: pg.QueryConfig): Promise<pg.QueryResult> };

export function createPool(connectionString: string, max = 20, options: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ connectionString, max, idleTimeoutMillis: 30_000, ...options });
  quietErrors(pool);
  return pool;
}

/** An idle client that errors (server restart) must not crash the process; the next query reports it. */
export function quietErrors(pool: pg.Pool): pg.Pool {
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}
