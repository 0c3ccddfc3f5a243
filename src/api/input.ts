// Reading request input: JSON bodies, path ids, list queries. Everything is `unknown`
// until valibot has parsed it; every problem becomes a 400 naming its field.
import * as v from 'valibot';
import type { Context } from 'hono';
import { routePath } from 'hono/route';
import type { Endpoint } from './contract.ts';
import { ApiError, invalid, notFound } from './errors.ts';
import { issuesToProblems } from '../domain/problems.ts';
import { isPlainObject, nestingProblem, unstorable, validationConfig } from '../domain/json.ts';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The JSON body, which must be an object; an empty body is `{}` (so bodiless POSTs work).
 * Malformed JSON, a body that is not an object, nesting deeper than MAX_JSON_DEPTH, and
 * values PostgreSQL cannot store (NUL characters, numbers out of range) are 400s naming
 * where they are. The nesting is checked on the text, before JSON.parse builds anything,
 * so every walker after this one sees at most 64 levels.
 */
async function readJson(c: Context): Promise<Record<string, unknown>> {
  // Read past Hono's body cache when nothing read the body before (c.req.text() keeps the
  // text for the request's life): an ingest's 27 MB SARIF text would stay in memory until
  // its last batch was stored.
  const text = Object.keys(c.req.bodyCache).length > 0 ? await c.req.text() : await c.req.raw.text();
  if (text.trim() === '') return {};
  const tooDeep = nestingProblem(text);
  if (tooDeep) throw invalid([tooDeep]);
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
  const result = v.safeParse(schema, input, validationConfig(input));
  if (!result.success) throw invalid(issuesToProblems(result.issues));
  return result.output;
}

/**
 * The body of the request being served, read as JSON (readJson's bounds) with the
 * endpoint's aliases renamed, but not yet validated: for handlers that validate it with the
 * endpoint's schema (or the parts of it) after merging it into something. `endpoint` must
 * be the contract's entry for the route serving this request: the contract is the one
 * place a body's shape is written, and a handler that read another entry's body would make
 * it lie (a bug, so a 500, which every test of the route would see).
 */
export async function readBodyJson(c: Context, endpoint: Endpoint<v.GenericSchema>): Promise<Record<string, unknown>> {
  if (c.req.method !== endpoint.method || routePath(c) !== endpoint.path) {
    throw new Error(`The handler of ${c.req.method} ${routePath(c)} reads the body of ${endpoint.method} ${endpoint.path}`);
  }
  let body = await readJson(c);
  for (const [alias, field] of Object.entries(endpoint.aliases ?? {})) {
    if (body[alias] !== undefined && body[field] === undefined) {
      const { [alias]: value, ...rest } = body;
      body = { ...rest, [field]: value };
    }
  }
  return body;
}

/** The body of the request being served, validated with its endpoint's schema (see readBodyJson). */
export async function readBody<S extends v.GenericSchema>(c: Context, endpoint: Endpoint<S>): Promise<v.InferOutput<S>> {
  return parseInput(endpoint.body, await readBodyJson(c, endpoint));
}

/**
 * The body of the request being served as bytes, for an endpoint whose body is not JSON
 * (its contract entry lists `media`): a Content-Type outside those is a 415 (none at all is
 * taken as bytes). Bounded and decoded by the body layer like every body.
 */
export async function readBodyBytes(c: Context, endpoint: Endpoint<null>): Promise<Buffer> {
  if (c.req.method !== endpoint.method || routePath(c) !== endpoint.path || !endpoint.media) {
    throw new Error(`The handler of ${c.req.method} ${routePath(c)} reads the bytes of ${endpoint.method} ${endpoint.path}`);
  }
  const type = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
  const taken = type === '' || endpoint.media.some((m) => (m.endsWith('/*') ? type.startsWith(m.slice(0, -1)) : type === m));
  if (!taken) {
    throw new ApiError(415, 'unsupported_media_type', `The body is taken as ${endpoint.media.join(' or ')}, not ${type}`,
      [{ path: 'Content-Type', message: `must be ${endpoint.media.join(' or ')}` }]);
  }
  return Buffer.from(await c.req.arrayBuffer());
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

export const PageQuery = v.object({
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

/**
 * Optional query filters, validated like a body. Query values are flat strings (Hono's
 * c.req.query(name) gives the first value of a name; the URL is bounded by Node's 16 KiB
 * header limit), so nothing here can be deep.
 */
export function queryOf<S extends v.GenericSchema>(c: Context, schema: S, names: string[]): v.InferOutput<S> {
  const raw: Record<string, string | undefined> = {};
  for (const n of names) raw[n] = c.req.query(n);
  const problem = unstorable(raw);
  if (problem) throw invalid([problem]);
  return parseInput(schema, raw);
}

export const OptionalUuidQuery = v.optional(v.pipe(v.string(), v.regex(UUID, 'must be a UUID')));
