import type { Queryable } from '../db/pool.ts';
import { prepared, type ComposedStatement, type NamedQuery } from '../db/sql.ts';
import type { Tx } from '../db/transaction.ts';

export async function one<T>(tx: Queryable, q: NamedQuery, values: unknown[]): Promise<T | null> {
  const result = await tx.query(prepared(q, values));
  return (result.rows[0] as T | undefined) ?? null;
}

export async function many<T>(tx: Queryable, q: NamedQuery, values: unknown[]): Promise<T[]> {
  const result = await tx.query(prepared(q, values));
  return result.rows as T[];
}

export async function exec(tx: Queryable, q: NamedQuery, values: unknown[]): Promise<number> {
  const result = await tx.query(prepared(q, values));
  return result.rowCount ?? 0;
}

/** The transaction's last read: it commits in the same round trip. */
export async function finalMany<T>(tx: Tx, q: NamedQuery, values: unknown[]): Promise<T[]> {
  return (await tx.finalRead(q, values)).rows as T[];
}

/** The rows of a composed statement (db/sql.ts composeStatement): unnamed, so planned with its values each time. */
export async function composed<T>(db: Queryable, statement: ComposedStatement): Promise<T[]> {
  return (await db.query({ text: statement.text, values: statement.values })).rows as T[];
}
