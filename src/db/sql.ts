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
