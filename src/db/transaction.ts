import { createHash } from 'node:crypto';
import type pg from 'pg';
import { pipeline, type Statement } from './pipeline.ts';
import type { NamedQuery } from './sql.ts';

const RETRYABLE = new Set(['40001', '40P01']); // serialization failure, deadlock detected

const BEGIN: Statement = { q: { name: 'scanflow_tx_begin', text: 'BEGIN' }, values: [] };
// Bounded waits: a stuck lock surfaces as an error instead of a hung request.
const LOCK_TIMEOUT: Statement = { q: { name: 'scanflow_tx_lock_timeout', text: "SET LOCAL lock_timeout = '10s'" }, values: [] };
const COMMIT: Statement = { q: { name: 'scanflow_tx_commit', text: 'COMMIT' }, values: [] };

/**
 * A transaction on one client that spends as few round trips as it can: BEGIN goes out
 * with the transaction's first statement, writes whose results nobody reads are queued
 * (later()) and go out with the next statement or with the COMMIT, and a final read can
 * carry the COMMIT (finalRead). Each flush is one pipelined round trip (db/pipeline.ts).
 * A queued write that fails surfaces at that flush, inside the same transaction, which
 * then rolls back as a whole: nothing is ever half applied.
 */
export class Tx {
  private begun = false; // BEGIN sent
  private ended = false; // COMMIT sent
  private queued: Statement[] = [];

  readonly client: pg.ClientBase;
  constructor(client: pg.ClientBase) {
    this.client = client;
  }

  /** What must go out before the next statement: BEGIN (the first time) and queued writes. */
  private take(): Statement[] {
    const out = this.begun ? [] : [BEGIN, LOCK_TIMEOUT];
    this.begun = true;
    out.push(...this.queued);
    this.queued = [];
    return out;
  }

  private async send(statements: Statement[]): Promise<pg.QueryResult[]> {
    if (this.ended) throw new Error('the transaction is over');
    return pipeline(this.client, statements);
  }

  /**
   * Runs a statement now (with whatever is queued before it). A fixed one-statement text
   * without values (SAVEPOINT x, say) is prepared under a name derived from it, so it can
   * travel in the same pipeline.
   */
  async query(config: pg.QueryConfig | string, values?: unknown[]): Promise<pg.QueryResult> {
    const cfg: pg.QueryConfig = typeof config === 'string' ? { text: config, values } : config;
    const name = cfg.name ?? (!cfg.values?.length && !cfg.text.includes(';') ? fixedName(cfg.text) : undefined);
    if (name) {
      const results = await this.send([...this.take(), { q: { name, text: cfg.text }, values: cfg.values ?? [] }]);
      return results[results.length - 1];
    }
    // An unnamed statement (a savepoint, say) is not pipelined: flush first, then send it.
    const before = this.take();
    if (before.length) await this.send(before);
    return this.client.query(cfg);
  }

  /** Several statements now, in one round trip; one result each. */
  async batch(statements: Statement[]): Promise<pg.QueryResult[]> {
    const before = this.take();
    const results = await this.send([...before, ...statements]);
    return results.slice(before.length);
  }

  /** Queues a write whose result is not needed: it goes out with the next round trip. */
  later(q: NamedQuery, values: unknown[]): void {
    if (this.ended) throw new Error('the transaction is over');
    this.queued.push({ q, values });
  }

  /** A last read that commits the transaction in the same round trip. */
  async finalRead(q: NamedQuery, values: unknown[]): Promise<pg.QueryResult> {
    const results = await this.send([...this.take(), { q, values }, COMMIT]);
    this.ended = true;
    return results[results.length - 2];
  }

  /** Commits (with the queued writes); a transaction that never sent anything costs nothing. */
  async commit(): Promise<void> {
    if (this.ended) return;
    if (!this.begun && this.queued.length === 0) {
      this.ended = true;
      return;
    }
    await this.send([...this.take(), COMMIT]);
    this.ended = true;
  }

  async rollback(): Promise<void> {
    this.queued = [];
    if (this.begun) await this.client.query('ROLLBACK').catch(() => {});
    this.ended = true;
  }
}

/** The prepared-statement name of a fixed text (savepoints): stable per text. */
export function fixedName(text: string): string {
  return `scanflow_fixed_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`;
}

/**
 * Runs fn inside one transaction on one pooled client. Follow-up jobs are added with
 * graphile_worker.add_job on this same client, so they commit or roll back with the rows.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (tx: Tx) => Promise<T>): Promise<T> {
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
export async function inTransaction<T>(client: pg.ClientBase, fn: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const tx = new Tx(client);
    try {
      const result = await fn(tx);
      await tx.commit();
      return result;
    } catch (err) {
      await tx.rollback();
      if (attempt < 5 && RETRYABLE.has((err as { code?: string }).code ?? '')) continue;
      throw err;
    }
  }
}
