// JSON input that PostgreSQL can store and that code can walk: objects that are objects
// (valibot's object and record schemas let arrays through), no NUL characters (text and
// jsonb refuse U+0000), no lone UTF-16 surrogates (JSON text may escape one, `"\ud800"`; jsonb
// refuses it, and text columns would silently store U+FFFD instead), no numbers JSON.parse
// turned into Infinity, nesting and size bounded.
//
// Nothing here recurses: request data decides how deep it is. Measured on Node 24 before
// these bounds: a body nested 5,000 levels answered 500 (RangeError from the recursive
// walkers and from JSON.stringify, which pg and Hono use and which recurses natively), and
// cost 40–80 MB per request (the walker copied its path at every level). JSON.parse itself
// is iterative: 512 Ki `[` (a 1 MiB body) parse in 105 ms, +42 MB, without an error; every
// walker after it would overflow. So the raw text is scanned first (nestingProblem).
import * as v from 'valibot';
import { formatPath, type Problem } from './problems.ts';

/**
 * The deepest nesting of objects and arrays accepted, counting the body itself. Real
 * documents are shallow (pipeline step configs, tool outputs: under 10 levels); 64 keeps
 * every recursive serializer we cannot replace (JSON.stringify in pg and Hono, PostgreSQL's
 * jsonb parser, yaml's toJS) about a hundred times below its stack limit.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * The most JSON text one free-form value (asset metadata, step config, run and scan
 * context, a command's output, labels, notification, heartbeat extras) may hold. These
 * values are copied, not just stored: an asset's metadata goes into each run's target and
 * every command payload of the run, a run's context into every command, and every finished
 * step's output into the payload of each later command of its run (and into each condition
 * evaluated), so a 200-step run multiplies an output by up to 200. 256 KiB is far above
 * what a tool summary or a config needs, and still lets four of them share one 1 MiB body.
 */
export const MAX_FREE_FORM_BYTES = 256 * 1024;

/**
 * Listing every problem of a body costs ~600 bytes per problem inside valibot (an issue
 * object with its input, path and message each): measured, 250,000 wrong tags in one 1 MiB
 * body took 144 MB and 220 ms. A body with more values than this is checked up to its first
 * problem instead (see validationConfig).
 */
export const FULL_REPORT_MAX_VALUES = 10_000;

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type Segment = string | number;

/** A path for messages: keys cut to 100 characters, at most `max` segments then "…". */
function shortPath(segments: readonly Segment[], max = Infinity): string {
  const shown = segments.slice(0, max).map((s) =>
    typeof s === 'string' ? escapeUnstorable(s.length > 100 ? `${s.slice(0, 100)}…` : s) : s,
  );
  const path = formatPath(shown) || '(body)';
  return segments.length > max ? `${path}…` : path;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** A key as a message can show it: NUL and lone surrogates as their escapes. */
function escapeUnstorable(s: string): string {
  const shown = s.replace(/\u0000/g, '\\u0000');
  return shown.isWellFormed() ? shown : shown.replace(LONE_SURROGATE, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

const tooDeep = (segments: readonly Segment[]): Problem => ({
  path: shortPath(segments, 5),
  message: `is nested deeper than ${MAX_JSON_DEPTH} levels of objects and arrays (counting the body itself)`,
});

/**
 * Scans raw JSON text without parsing it and without recursion: the first object or array
 * nested deeper than `maxDepth`, with the path to it (cut after five segments), or null.
 * It only tracks strings, brackets, commas and keys; anything else that is wrong with the
 * text is left to JSON.parse (text that is both malformed and too deep is refused as too
 * deep). Cost: one pass over the characters, memory proportional to the depth.
 */
export function nestingProblem(text: string, maxDepth = MAX_JSON_DEPTH): Problem | null {
  // One entry per open container: whether it is an object, where its current key is in
  // the text (objects), how many elements came before the current one (arrays).
  const isObject: boolean[] = [];
  const keyStart: number[] = [];
  const keyEnd: number[] = [];
  const index: number[] = [];
  let expectKey = false;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22 /* " */) {
      const start = i++;
      while (i < n) {
        const c = text.charCodeAt(i);
        if (c === 0x5c /* \ */) i += 2;
        else if (c === 0x22) break;
        else i++;
      }
      i++; // past the closing quote
      if (expectKey) {
        const top = isObject.length - 1;
        keyStart[top] = start;
        keyEnd[top] = Math.min(i, n);
        expectKey = false;
      }
      continue;
    }
    if (ch === 0x7b /* { */ || ch === 0x5b /* [ */) {
      if (isObject.length >= maxDepth) return tooDeep(segmentsOf(text, isObject, keyStart, keyEnd, index));
      isObject.push(ch === 0x7b);
      keyStart.push(-1);
      keyEnd.push(-1);
      index.push(0);
      expectKey = ch === 0x7b;
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) {
      if (isObject.length === 0) return null; // unbalanced: JSON.parse says where
      isObject.pop();
      keyStart.pop();
      keyEnd.pop();
      index.pop();
      expectKey = false;
    } else if (ch === 0x2c /* , */ && isObject.length > 0) {
      const top = isObject.length - 1;
      if (isObject[top]) expectKey = true;
      else index[top]++;
    }
    i++;
  }
  return null;
}

/** The path to the innermost open container, its keys decoded (only the first few matter). */
function segmentsOf(text: string, isObject: boolean[], keyStart: number[], keyEnd: number[], index: number[]): Segment[] {
  const segments: Segment[] = [];
  for (let d = 0; d < isObject.length; d++) {
    if (!isObject[d]) {
      segments.push(index[d]);
      continue;
    }
    if (d >= 5 || keyStart[d] < 0) {
      segments.push(keyStart[d] < 0 ? '?' : '…');
      continue;
    }
    const raw = text.slice(keyStart[d], Math.min(keyEnd[d], keyStart[d] + 202));
    let key: string;
    try {
      key = JSON.parse(raw) as string;
    } catch {
      key = raw.replace(/^"|"$/g, ''); // cut short or malformed: shown as written
    }
    segments.push(key);
  }
  return segments;
}

/**
 * Visits every value inside `root` (and root itself), depth first, without recursion.
 * `visit` gets the value, its key in its parent (null for root) and how many containers
 * enclose it; returning true stops the walk, which then returns the path to that value.
 */
function walkJson(root: unknown, visit: (value: unknown, key: Segment | null, depth: number) => boolean): Segment[] | null {
  type Frame = { keys: string[] | null; container: unknown; next: number };
  const frames: Frame[] = [];
  const pathHere = () => frames.map((f) => (f.keys ? f.keys[f.next - 1] : f.next - 1));
  let value = root;
  let key: Segment | null = null;
  for (;;) {
    if (visit(value, key, frames.length)) return pathHere();
    if (Array.isArray(value)) frames.push({ keys: null, container: value, next: 0 });
    else if (value !== null && typeof value === 'object') frames.push({ keys: Object.keys(value), container: value, next: 0 });
    for (;;) {
      const f = frames[frames.length - 1];
      if (!f) return null;
      if (f.keys) {
        if (f.next < f.keys.length) {
          key = f.keys[f.next++];
          value = (f.container as Record<string, unknown>)[key];
          break;
        }
      } else if (f.next < (f.container as unknown[]).length) {
        key = f.next;
        value = (f.container as unknown[])[f.next++];
        break;
      }
      frames.pop();
    }
  }
}

const isContainer = (value: unknown) => value !== null && typeof value === 'object';

const LONE = 'a lone UTF-16 surrogate (\\ud800-\\udfff outside a pair), which has no UTF-8 form';

/**
 * The first value PostgreSQL could not store, with its path: a NUL character or a lone
 * surrogate in a string or a key, a number out of range; or nesting deeper than
 * MAX_JSON_DEPTH.
 */
export function unstorable(value: unknown): Problem | null {
  let message = '';
  const path = walkJson(value, (item, key, depth) => {
    if (typeof key === 'string' && key.includes('\u0000')) message = 'keys must not contain NUL (\\u0000) characters';
    else if (typeof key === 'string' && !key.isWellFormed()) message = `keys must not contain ${LONE}`;
    else if (typeof item === 'string' && item.includes('\u0000')) message = 'must not contain NUL (\\u0000) characters';
    else if (typeof item === 'string' && !item.isWellFormed()) message = `must not contain ${LONE}`;
    else if (typeof item === 'number' && !Number.isFinite(item)) message = 'is a number out of range';
    else if (isContainer(item) && depth >= MAX_JSON_DEPTH) message = 'deep';
    return message !== '';
  });
  if (!path) return null;
  return message === 'deep' ? tooDeep(path) : { path: shortPath(path), message };
}

/** Roughly the length of a scalar's JSON text (strings without their escapes). */
function scalarSize(value: unknown): number {
  if (typeof value === 'string') return value.length + 2;
  if (typeof value === 'number') return String(value).length;
  if (typeof value === 'boolean') return value ? 4 : 5;
  return 4; // null (and anything JSON would not hold)
}

/**
 * Why a free-form value is refused, or null: nested deeper than MAX_JSON_DEPTH (counting
 * the value itself: values read from a body are already shallower), or over
 * MAX_FREE_FORM_BYTES of JSON text. Stops as soon as either is exceeded.
 */
export function freeFormProblem(value: unknown): string | null {
  let size = 0;
  let problem: string | null = null;
  walkJson(value, (item, key, depth) => {
    // A key costs its quotes, colon and comma; an element its comma.
    size += typeof key === 'string' ? key.length + 4 : key === null ? 0 : 1;
    if (isContainer(item)) {
      size += 2;
      if (depth >= MAX_JSON_DEPTH) problem = `is nested deeper than ${MAX_JSON_DEPTH} levels of objects and arrays`;
    } else {
      size += scalarSize(item);
    }
    if (!problem && size > MAX_FREE_FORM_BYTES) problem = `is larger than ${MAX_FREE_FORM_BYTES / 1024} KiB of JSON`;
    return problem !== null;
  });
  return problem;
}

/** Whether `value` holds more than `limit` JSON values (counting containers), found without walking further. */
export function hasMoreValuesThan(value: unknown, limit: number): boolean {
  let count = 0;
  return walkJson(value, () => ++count > limit) !== null;
}

/**
 * The valibot config for checking `input`: every problem listed, unless the input has so
 * many values that listing them all would cost too much (FULL_REPORT_MAX_VALUES); then up
 * to the first problem.
 */
export function validationConfig(input: unknown): v.Config<v.BaseIssue<unknown>> | undefined {
  return hasMoreValuesThan(input, FULL_REPORT_MAX_VALUES) ? { abortEarly: true } : undefined;
}

/** The free-form bounds as a valibot action: depth and size (freeFormProblem). */
export const boundedJson = v.rawCheck<unknown>(({ dataset, addIssue }) => {
  if (!dataset.typed || dataset.issues) return;
  const problem = freeFormProblem(dataset.value);
  if (problem) addIssue({ message: problem });
});

/** boundedJson for a schema whose output is already typed (an object schema's, say). */
export function withinFreeFormBounds<T>() {
  return v.rawCheck<T>(({ dataset, addIssue }) => {
    if (!dataset.typed || dataset.issues) return;
    const problem = freeFormProblem(dataset.value);
    if (problem) addIssue({ message: problem });
  });
}

/** Any JSON value within the free-form bounds. */
export const FreeFormValue = v.pipe(v.unknown(), boundedJson);

/** A JSON object (not an array, not null) with any values, within the free-form bounds. */
export const JsonObject = v.pipe(
  v.unknown(),
  v.check(isPlainObject, 'must be a JSON object'),
  boundedJson,
  v.transform((value) => value as Record<string, unknown>),
);

const SKIP = Symbol('not serialized');

/** A value as JSON.stringify would see it: after toJSON; SKIP for what it leaves out. */
function serializable(value: unknown, key: string): unknown {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON(key: string): unknown }).toJSON(key);
  }
  return value === undefined || typeof value === 'function' || typeof value === 'symbol' ? SKIP : value;
}

/**
 * JSON with object keys sorted at every level: equal for equal values, whatever the key
 * order. The same text as JSON.stringify with sorted keys, built without recursion.
 */
export function canonicalJson(value: unknown): string {
  type Frame = { container: object; keys: string[] | null; next: number; wrote: boolean };
  const frames: Frame[] = [];
  const open = new Set<object>();
  let out = '';
  const write = (item: unknown) => {
    if (item === null || typeof item !== 'object') {
      out += JSON.stringify(item);
      return;
    }
    if (open.has(item)) throw new TypeError('canonicalJson: a value that contains itself');
    open.add(item);
    const keys = Array.isArray(item) ? null : Object.keys(item).sort();
    out += keys ? '{' : '[';
    frames.push({ container: item, keys, next: 0, wrote: false });
  };
  const root = serializable(value, '');
  if (root === SKIP) return undefined as unknown as string; // as JSON.stringify(undefined)
  write(root);
  while (frames.length > 0) {
    const f = frames[frames.length - 1];
    if (f.keys) {
      if (f.next === f.keys.length) {
        out += '}';
        open.delete(frames.pop()!.container);
        continue;
      }
      const k = f.keys[f.next++];
      const item = serializable((f.container as Record<string, unknown>)[k], k);
      if (item === SKIP) continue;
      out += `${f.wrote ? ',' : ''}${JSON.stringify(k)}:`;
      f.wrote = true;
      write(item);
    } else {
      const list = f.container as unknown[];
      if (f.next === list.length) {
        out += ']';
        open.delete(frames.pop()!.container);
        continue;
      }
      const i = f.next++;
      const item = serializable(list[i], String(i));
      if (i > 0) out += ',';
      if (item === SKIP) out += 'null';
      else write(item);
    }
  }
  return out;
}
