import type pg from 'pg';

const RETRYABLE = new Set(['40001', '40P01']); // serialization failure, deadlock detected

/**
 * Runs fn inside one transaction on one pooled client. Follow-up jobs are added with
 * graphile_worker.add_job on this same client, so they commit or roll back with the rows.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    return await inTransaction(client, fn);
  } finally {
    client.release();
  }
}

/**
 * Runs fn inside one transaction on the given client (graphile-worker tasks get their
 * client from the worker's pool). A deadlock or serialization failure is retried from
 * the start a few times; fn must therefore not have effects outside the database.
 */
export async function inTransaction<C extends pg.ClientBase, T>(client: C, fn: (tx: C) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      // Bounded waits: a stuck lock surfaces as an error instead of a hung request.
      await client.query("BEGIN; SET LOCAL lock_timeout = '10s'");
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      if (attempt < 5 && RETRYABLE.has((err as { code?: string }).code ?? '')) continue;
      throw err;
    }
  }
}
