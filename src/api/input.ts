// Reading request input: JSON bodies, path ids, list queries. Everything is `unknown`
// until valibot has parsed it; every problem becomes a 400 naming its field.
import * as v from 'valibot';
import type { Context } from 'hono';
import { ApiError, invalid, notFound } from './errors.ts';
import { issuesToProblems } from '../domain/problems.ts';
import { isPlainObject, unstorable } from '../domain/json.ts';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The JSON body, which must be an object; an empty body is `{}` (so bodiless POSTs work).
 * Malformed JSON, a body that is not an object, and values PostgreSQL cannot store (NUL
 * characters, numbers out of range) are 400s naming where they are.
 */
export async function readJson(c: Context): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.trim() === '') return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'invalid_json', `The request body is not valid JSON: ${(err as Error).message}`, [
      { path: '(body)', message: 'must be valid JSON' },
    ]);
  }
  if (!isPlainObject(body)) {
    throw invalid([{ path: '(body)', message: `must be a JSON object, not ${Array.isArray(body) ? 'an array' : body === null ? 'null' : typeof body}` }]);
  }
  const problem = unstorable(body);
  if (problem) throw invalid([problem]);
  return body;
}

export function parseInput<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  const result = v.safeParse(schema, input);
  if (!result.success) throw invalid(issuesToProblems(result.issues));
  return result.output;
}

export async function parseBody<S extends v.GenericSchema>(c: Context, schema: S): Promise<v.InferOutput<S>> {
  return parseInput(schema, await readJson(c));
}

/** A path id: anything that is not a UUID cannot name a row, so it is a 404. */
export function pathId(c: Context, name: string, what: string): string {
  const id = c.req.param(name) ?? '';
  if (!UUID.test(id)) throw notFound(what);
  return id.toLowerCase();
}

/** A step key in a path: anything that cannot be a step key names no step. */
export function stepKeyParam(c: Context, what = 'step'): string {
  const key = c.req.param('stepKey') ?? '';
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(key)) throw notFound(what);
  return key;
}

export type Page = { limit: number; after: { at: string; id: string } | null };

const PageQuery = v.object({
  limit: v.optional(
    v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number between 1 and 200'), v.transform(Number), v.minValue(1, 'must be at least 1'), v.maxValue(200, 'must be at most 200')),
    '50',
  ),
  cursor: v.optional(v.string()),
});

/** Just the `limit` of a list query (for lists with their own cursor). */
export function limitOf(c: Context): number {
  return parseInput(v.object({ limit: PageQuery.entries.limit }), { limit: c.req.query('limit') }).limit;
}

export function pageOf(c: Context): Page {
  const q = parseInput(PageQuery, { limit: c.req.query('limit'), cursor: c.req.query('cursor') });
  if (!q.cursor) return { limit: q.limit, after: null };
  try {
    // The cursor carries the row's timestamp as PostgreSQL printed it (microseconds intact).
    const [at, id] = JSON.parse(Buffer.from(q.cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof at !== 'string' || typeof id !== 'string' || !UUID.test(id) || !/^\d{4}-\d\d-\d\d[ T][\d:.+-]+$/.test(at)) {
      throw new Error('bad cursor');
    }
    return { limit: q.limit, after: { at, id } };
  } catch {
    throw invalid([{ path: 'cursor', message: 'is not a cursor returned by this API' }]);
  }
}

/** A page of rows fetched with limit + 1, as {items, next_cursor}. */
export function pageResult<R extends { cursor_at: string; id: string }, T>(rows: R[], page: Page, present: (r: R) => T) {
  const more = rows.length > page.limit;
  const items = more ? rows.slice(0, page.limit) : rows;
  const last = items[items.length - 1];
  return {
    items: items.map(present),
    next_cursor: more && last ? Buffer.from(JSON.stringify([last.cursor_at, last.id])).toString('base64url') : null,
  };
}

/** Optional query filters, validated like a body. */
export function queryOf<S extends v.GenericSchema>(c: Context, schema: S, names: string[]): v.InferOutput<S> {
  const raw: Record<string, string | undefined> = {};
  for (const n of names) raw[n] = c.req.query(n);
  const problem = unstorable(raw);
  if (problem) throw invalid([problem]);
  return parseInput(schema, raw);
}

export const OptionalUuidQuery = v.optional(v.pipe(v.string(), v.regex(UUID, 'must be a UUID')));
