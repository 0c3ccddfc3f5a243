// Loads the named runtime queries of sql/*.sql. A query starts with
// `-- name: QueryName :one|:many|:exec`, the next comment line says what it does, and the
// body runs until the next name. TypeScript refers to queries only by name; values are
// always bound parameters, never interpolated.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { QueryConfig } from 'pg';

const sqlDir = fileURLToPath(new URL('../../sql/', import.meta.url));

export type NamedQuery = { name: string; text: string };

export function loadQueries<const N extends string>(file: string, names: readonly N[]): Record<N, NamedQuery> {
  const source = readFileSync(sqlDir + file, 'utf8');
  const found = new Map<string, string>();
  let current: string | null = null;
  let body: string[] = [];
  const flush = () => {
    if (current) found.set(current, body.join('\n').trim());
  };
  for (const line of source.split('\n')) {
    const m = /^--\s*name:\s*(\w+)/.exec(line);
    if (m) {
      flush();
      current = m[1];
      body = [];
    } else if (current && !/^\s*--/.test(line)) {
      body.push(line);
    }
  }
  flush();
  const out = {} as Record<N, NamedQuery>;
  for (const name of names) {
    const text = found.get(name);
    if (!text) throw new Error(`sql/${file}: no query named ${name}`);
    out[name] = { name, text };
  }
  return out;
}

/** A query config for a named query: pg prepares it once per connection under its name. */
export function prepared(q: NamedQuery, values: unknown[]): QueryConfig {
  return { name: q.name, text: q.text, values };
}

/** A named query and the values of its own parameters ($1 …), as one part of a composed statement. */
export type StatementPart = { q: NamedQuery; values: unknown[] };

/**
 * A statement composed of named fragments (`-- name: X :fragment`), each numbering its
 * parameters from $1: fragment k's $n becomes $(n + parameters before it). A fragment whose
 * highest $n is not its number of values is a bug, caught before anything is sent. Composed
 * statements run unnamed (store/query.ts composed()), so each is planned with its values:
 * lists whose filters come in any combination, over skewed history, need that custom plan
 * (sql/findings_api.sql has the measurements).
 */
export type ComposedStatement = { text: string; values: unknown[]; fragments: string[] };

export function composeStatement(parts: StatementPart[]): ComposedStatement {
  const text: string[] = [];
  const values: unknown[] = [];
  for (const { q, values: own } of parts) {
    let highest = 0;
    text.push(q.text.replace(/\$(\d+)/g, (_, n: string) => {
      highest = Math.max(highest, Number(n));
      return `$${Number(n) + values.length}`;
    }));
    if (highest !== own.length) throw new Error(`fragment ${q.name} takes ${highest} values, given ${own.length}`);
    values.push(...own);
  }
  return { text: text.join('\n'), values, fragments: parts.map((p) => p.q.name) };
}
