import type { Queryable } from '../db/pool.ts';
import { prepared, type NamedQuery } from '../db/sql.ts';

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
