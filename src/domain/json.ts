// JSON input that PostgreSQL can store: objects that are objects (valibot's object and
// record schemas let arrays through), no NUL characters (text and jsonb refuse U+0000),
// no numbers JSON.parse turned into Infinity.
import * as v from 'valibot';
import { formatPath, type Problem } from './problems.ts';

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A JSON object (not an array, not null) with any values. */
export const JsonObject = v.pipe(
  v.unknown(),
  v.check(isPlainObject, 'must be a JSON object'),
  v.transform((value) => value as Record<string, unknown>),
);

/** The first value PostgreSQL could not store, with its path. */
export function unstorable(value: unknown, path: (string | number)[] = []): Problem | null {
  if (typeof value === 'string') {
    return value.includes('\u0000') ? { path: formatPath(path) || '(body)', message: 'must not contain NUL (\\u0000) characters' } : null;
  }
  if (typeof value === 'number') {
    return Number.isFinite(value) ? null : { path: formatPath(path) || '(body)', message: 'is a number out of range' };
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = unstorable(value[i], [...path, i]);
      if (p) return p;
    }
    return null;
  }
  if (value && typeof value === 'object') {
    for (const [k, item] of Object.entries(value)) {
      if (k.includes('\u0000')) return { path: formatPath([...path, k.replace(/\u0000/g, '\\u0000')]), message: 'keys must not contain NUL (\\u0000) characters' };
      const p = unstorable(item, [...path, k]);
      if (p) return p;
    }
  }
  return null;
}

/** JSON with object keys sorted at every level: equal for equal values, whatever the key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) =>
    isPlainObject(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v,
  );
}
