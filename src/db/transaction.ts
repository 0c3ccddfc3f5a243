import { AsyncLocalStorage } from 'node:async_hooks';
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
  private queued: (Statement & { onResult?: (result: pg.QueryResult) => void })[] = [];
  // What happens once the transaction committed (metrics, log lines: src/observability/),
  // with the savepoints that may still take back what was registered after them.
  private committed: (() => void)[] = [];
  private savepoints = new Map<string, number>();

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

  private async send(statements: (Statement & { onResult?: (result: pg.QueryResult) => void })[]): Promise<pg.QueryResult[]> {
    if (this.ended) throw new Error('the transaction is over');
    const results = await pipeline(this.client, statements);
    statements.forEach((s, i) => s.onResult?.(results[i]));
    return results;
  }

  /**
   * Runs fn once this transaction has committed; never when it rolls back (a retried
   * transaction is a new Tx), nor when a savepoint taken before the registration is rolled
   * back to. For effects outside the database that must tell only what happened: counting
   * a transition, logging it.
   */
  afterCommit(fn: () => void): void {
    if (this.ended) throw new Error('the transaction is over');
    this.committed.push(fn);
  }

  private runCommitted(): void {
    const fns = this.committed;
    this.committed = [];
    for (const fn of fns) {
      try {
        fn();
      } catch {
        // an observer's failure is no reason to report a committed transaction as failed
      }
    }
  }

  /** Keeps afterCommit() in step with SAVEPOINT / ROLLBACK TO SAVEPOINT sent through query(). */
  private trackSavepoint(text: string): void {
    const m = /^\s*(SAVEPOINT|ROLLBACK\s+TO\s+(?:SAVEPOINT\s+)?)\s*(\w+)\s*$/i.exec(text);
    if (!m) return;
    if (/^SAVEPOINT$/i.test(m[1])) this.savepoints.set(m[2], this.committed.length);
    else this.committed.length = Math.min(this.committed.length, this.savepoints.get(m[2]) ?? this.committed.length);
  }

  /**
   * Runs a statement now (with whatever is queued before it). A fixed one-statement text
   * without values (SAVEPOINT x, say) is prepared under a name derived from it, so it can
   * travel in the same pipeline.
   */
  async query(config: pg.QueryConfig | string, values?: unknown[]): Promise<pg.QueryResult> {
    const cfg: pg.QueryConfig = typeof config === 'string' ? { text: config, values } : config;
    const name = cfg.name ?? (!cfg.values?.length && !cfg.text.includes(';') ? fixedName(cfg.text) : undefined);
    let result: pg.QueryResult;
    if (name) {
      const results = await this.send([...this.take(), { q: { name, text: cfg.text }, values: cfg.values ?? [] }]);
      result = results[results.length - 1];
    } else {
      // An unnamed statement (a savepoint, say) is not pipelined: flush first, then send it.
      const before = this.take();
      if (before.length) await this.send(before);
      result = await this.client.query(cfg);
    }
    // After the writes flushed with it have registered what they did.
    this.trackSavepoint(cfg.text);
    return result;
  }

  /** Several statements now, in one round trip; one result each. */
  async batch(statements: Statement[]): Promise<pg.QueryResult[]> {
    const before = this.take();
    const results = await this.send([...before, ...statements]);
    return results.slice(before.length);
  }

  /**
   * Queues a write whose result the caller does not wait for: it goes out with the next
   * round trip. onResult, when given, sees its result then (to count what it changed).
   */
  later(q: NamedQuery, values: unknown[], onResult?: (result: pg.QueryResult) => void): void {
    if (this.ended) throw new Error('the transaction is over');
    this.queued.push({ q, values, onResult });
  }

  /** A last read that commits the transaction in the same round trip. */
  async finalRead(q: NamedQuery, values: unknown[]): Promise<pg.QueryResult> {
    const results = await this.send([...this.take(), { q, values }, COMMIT]);
    this.ended = true;
    this.runCommitted();
    return results[results.length - 2];
  }

  /** Commits (with the queued writes); a transaction that never sent anything costs nothing. */
  async commit(): Promise<void> {
    if (this.ended) return;
    if (!this.begun && this.queued.length === 0) {
      this.ended = true;
      this.runCommitted();
      return;
    }
    await this.send([...this.take(), COMMIT]);
    this.ended = true;
    this.runCommitted();
  }

  async rollback(): Promise<void> {
    this.queued = [];
    this.committed = [];
    if (this.begun) await this.client.query('ROLLBACK').catch(() => {});
    this.ended = true;
  }
}

/** The prepared-statement name of a fixed text (savepoints): stable per text. */
export function fixedName(text: string): string {
  return `scanflow_fixed_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`;
}

/**
 * Writes that every transaction opened inside a scope carries, queued first so they cost no
 * round trip and commit or roll back with the transaction's own work: a request sent with
 * an Idempotency-Key marks its key committed this way (api/idempotency.ts). The scope's
 * owner empties `statements` when it ends, so work that outlives it carries nothing.
 */
export type CarriedWrites = { statements: Statement[] };
const carried = new AsyncLocalStorage<CarriedWrites>();

export function carryingWrites<T>(writes: CarriedWrites, fn: () => Promise<T>): Promise<T> {
  return carried.run(writes, fn);
}

/**
 * Whether the transactions opened here carry a marker (the request has an Idempotency-Key):
 * work that would otherwise commit in several transactions must then commit in one, with
 * the marker, so a request that dies midway leaves nothing behind for its retry.
 */
export function carriesWrites(): boolean {
  return (carried.getStore()?.statements.length ?? 0) > 0;
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
    for (const s of carried.getStore()?.statements ?? []) tx.later(s.q, s.values);
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
