// Several prepared statements in one round trip (PostgreSQL's extended-protocol pipelining):
// Bind/Describe/Execute for each statement, then one Sync. The server runs them in order
// and answers once; after an error it skips the rest up to the Sync, as it would have for
// statements sent one by one and abandoned at the first failure. Values stay bound
// parameters (never interpolated), and each statement keeps its prepared plan.
//
// node-postgres sends one statement per round trip; this is a Submittable of its own (the
// same seam pg-cursor and pg-query-stream use), built on pg's Query so results are parsed
// by pg's own type parsers. Every statement must be prepared on the connection first:
// prepareOn() does that once per connection and statement, in a round trip of its own, so
// pg's bookkeeping of prepared statements stays exact even when a pipeline fails midway.
import { createRequire } from 'node:module';
import pg from 'pg';
import type { NamedQuery } from './sql.ts';

// pg's own conversion of a JavaScript value to a parameter (dates, arrays, JSON, buffers).
const utils = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(value: unknown): unknown };

export type Statement = { q: NamedQuery; values: unknown[] };

type Connection = {
  parsedStatements: Record<string, string>;
  stream: { cork?: () => void; uncork?: () => void };
  parse(m: { text: string; name: string; types: unknown[] }): void;
  bind(m: { portal: string; statement: string; values: unknown[]; binary: boolean }): void;
  describe(m: { type: 'P'; name: string }): void;
  execute(m: { portal: string }): void;
  sync(): void;
};

type Callback = (err: Error | null, results: pg.QueryResult | pg.QueryResult[]) => void;
const QueryBase = pg.Query as unknown as new (config: pg.QueryConfig, values?: unknown, callback?: Callback) => {
  handleError(err: Error, connection: Connection): void;
};

/** Parses one named statement on the connection (Parse, Sync): pg records it as prepared. */
class Prepare extends QueryBase {
  private readonly q: NamedQuery;
  constructor(q: NamedQuery, callback: Callback) {
    super({ name: q.name, text: q.text }, undefined, callback);
    this.q = q;
  }

  submit(connection: Connection): null {
    connection.parse({ text: this.q.text, name: this.q.name, types: [] });
    (connection as unknown as { submittedNamedStatements: Record<string, string> }).submittedNamedStatements[this.q.name] = this.q.text;
    connection.sync();
    return null;
  }
}

/** The statements, already prepared on this connection, sent together with one Sync. */
class Pipelined extends QueryBase {
  private readonly statements: { name: string; values: unknown[] }[];
  // values are converted up front: a value pg cannot convert fails before anything is sent
  constructor(statements: { name: string; values: unknown[] }[], callback: Callback) {
    super({ text: '' }, undefined, callback);
    this.statements = statements;
  }

  submit(connection: Connection): null {
    connection.stream.cork?.();
    try {
      for (const s of this.statements) {
        connection.bind({ portal: '', statement: s.name, values: s.values, binary: false });
        connection.describe({ type: 'P', name: '' });
        connection.execute({ portal: '' });
      }
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
    return null;
  }
}

function submit(client: pg.ClientBase, query: object): Promise<pg.QueryResult | pg.QueryResult[]> {
  return new Promise((resolve, reject) => {
    const cb: Callback = (err, results) => (err ? reject(err) : resolve(results));
    (query as { callback: Callback }).callback = cb;
    (client.query as unknown as (q: object) => void)(query);
  });
}

function connectionOf(client: pg.ClientBase): Connection {
  return (client as unknown as { connection: Connection }).connection;
}

/** Prepares (once per connection) every statement that is not prepared there yet. */
async function prepareOn(client: pg.ClientBase, statements: Statement[]): Promise<void> {
  const parsed = connectionOf(client).parsedStatements;
  for (const s of statements) {
    const known = parsed[s.q.name];
    if (known === s.q.text) continue;
    if (known !== undefined) throw new Error(`prepared statement ${s.q.name} is already prepared with another text`);
    await submit(client, new Prepare(s.q, () => {}));
  }
}

/**
 * Runs the statements in order in one round trip and returns one result per statement.
 * Any error rejects the whole call; the statements before it have run (inside the
 * caller's transaction, which the caller then rolls back).
 */
export async function pipeline(client: pg.ClientBase, statements: Statement[]): Promise<pg.QueryResult[]> {
  const bound = statements.map((s) => ({ name: s.q.name, values: s.values.map((v) => utils.prepareValue(v)) }));
  await prepareOn(client, statements);
  const results = await submit(client, new Pipelined(bound, () => {}));
  const list = Array.isArray(results) ? results : [results];
  if (list.length !== statements.length) {
    throw new Error(`pipeline: ${statements.length} statements sent, ${list.length} results received`);
  }
  return list;
}
