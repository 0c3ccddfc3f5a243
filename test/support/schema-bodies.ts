// Request bodies generated from a valibot schema's structure, for fuzzing (test/fuzz.test.ts).
// The walker reads what valibot keeps on a schema (`type`, `entries`, `rest`, `item`,
// `items`, `key`/`value`, `options`, `wrapped`, `pipe` with its length, value, regex, trim
// and `examples` actions; checks it cannot read are passed by their examples) and makes, field
// by field: values the schema accepts (edge ones included: the longest strings, bounds,
// emoji, RTL, nesting at the limit, examples with their numbers made huge), values of the
// wrong type, values just past a bound, huge and deep values, missing required fields and
// unknown ones (`__proto__`, `constructor`, a repeated key), lone surrogates and NUL. A body
// is clean (what the schema accepts, so the handler's own checks and the database are
// reached), clean but for one field, or wild throughout. Bodies are built as JSON text, so
// `__proto__` really is a key and a number can be `1e999`; whole-body cases (malformed
// text, not an object, nesting past the limit, past the size limit, bytes that are not
// UTF-8) are mixed in. A schema type it does not know fails loudly, naming the field.
import fc from 'fast-check';
import type * as v from 'valibot';
import { FreeFormValue, JsonObject, MAX_FREE_FORM_BYTES, MAX_JSON_DEPTH } from '../../src/domain/json.ts';

// ---- JSON text with keys in order, repeated keys and raw literals ------------------------

/** An object as written: entries in order, `__proto__` an ordinary key, keys may repeat. */
export class Obj {
  readonly entries: readonly (readonly [string, Json])[];
  constructor(entries: readonly (readonly [string, Json])[]) {
    this.entries = entries;
  }
}
/** JSON text sent as is (`1e999`, `-0`, an escaped surrogate pair). */
export class Raw {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}
export type Json = null | boolean | number | string | Json[] | Obj | Raw;

/**
 * The JSON text of a value. JSON.stringify escapes lone surrogates as `\ud800` and NUL as
 * `\u0000`. Recursive: generated values are at most a few hundred levels deep (bodies nested
 * deeper are written as text, see deepText).
 */
export function jsonText(value: Json): string {
  const out: string[] = [];
  const write = (item: Json): void => {
    if (item instanceof Raw) out.push(item.text);
    else if (item instanceof Obj) {
      out.push('{');
      item.entries.forEach(([k, x], i) => {
        out.push(i > 0 ? `,${JSON.stringify(k)}:` : `${JSON.stringify(k)}:`);
        write(x);
      });
      out.push('}');
    } else if (Array.isArray(item)) {
      out.push('[');
      item.forEach((x, i) => {
        if (i > 0) out.push(',');
        write(x);
      });
      out.push(']');
    } else out.push(JSON.stringify(item));
  };
  write(value);
  return out.join('');
}

/** JSON text nested `levels` deep, built as text (for depths no walker should recurse into). */
export function deepText(levels: number, kind: 'array' | 'object' | 'mixed'): string {
  // As nested(): level 0 is the innermost.
  const isObject = (i: number) => kind === 'object' || (kind === 'mixed' && i % 2 === 0);
  const opens: string[] = [];
  const closes: string[] = [];
  for (let j = 0; j < levels; j++) {
    opens.push(isObject(levels - 1 - j) ? '{"k":' : '[');
    closes.push(isObject(j) ? '}' : ']');
  }
  return `${opens.join('')}1${closes.join('')}`;
}

/** A parsed JSON value (plain objects) as Json. */
function fromPlain(value: unknown): Json {
  if (Array.isArray(value)) return value.map(fromPlain);
  if (value !== null && typeof value === 'object') return new Obj(Object.entries(value).map(([k, x]) => [k, fromPlain(x)] as const));
  return value as Json;
}

// ---- edge values ---------------------------------------------------------------------------

/** Strings every text field should survive: unicode, controls, NUL, injection-shaped text. */
export const EDGE_STRINGS: readonly string[] = [
  '', ' ', '\t\n', '🔥', '👩‍💻', '🏳️‍🌈', 'مرحبا بالعالم', 'שלום\u202eabc', 'e\u0301\u0301\u0301', 'Ⅻ', 'ǅ', '\ufeffbom',
  '\ud800', '\udfff', 'a\udc00b', '\ud83d', '\u0000', 'a\u0000b', '\u0001\u001f\u007f', '\u2028\u2029', '\uffff',
  'NaN', 'Infinity', '-0', '1e999', 'null', 'true', 'undefined', '__proto__', 'constructor', '[object Object]',
  "' OR 1=1 --", '"; DROP TABLE tenants; --', '<script>alert(1)</script>', '{{7*7}}', '${jndi:ldap://x}', '%s%n%x',
  '../../etc/passwd', '\\', '"', '\\u0000', 'x'.repeat(256), '🔥'.repeat(128),
];

/** Literals whose number is odd once parsed: overflow to Infinity, -0, precision lost. */
const RAW_NUMBERS = ['1e999', '-1e999', '-0', '1E2', '1.0', '123456789012345678901234567890', '0.1e-400', '4.9e-324'];

/** Escapes in the JSON text itself: a surrogate pair, a reversed pair, a lone one, NUL, an escaped `"`. */
const RAW_STRINGS = ['"\\ud83d\\ude00"', '"\\ude00\\ud83d"', '"\\udbff"', '"\\u0000"', '"\\u0041\\u00e9"', '"\\""', '"\\/"'];

const WRONG_TYPES: readonly Json[] = [
  null, true, false, 0, -1, 1.5, 2 ** 53, '', 'x', '0', '1', 'true', 'null', 'NaN', '1e999', '0x10', '1_000',
  [], [null], ['x'], [1, 2], new Obj([]), new Obj([['a', 1]]), new Obj([['0', 'x']]),
];

/** Keys of unknown fields: prototype names, controls, surrogates, a long one. */
const EXTRA_KEYS = [
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '', ' ', 'a\u0000b', '\ud800',
  '🔥', 'k'.repeat(5_000), '$where', 'extra',
];

const anyJson: fc.Arbitrary<Json> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }).map(fromPlain) },
  { weight: 1, arbitrary: fc.constantFrom(...WRONG_TYPES) },
  { weight: 1, arbitrary: fc.constant(new Obj([['__proto__', new Obj([['polluted', true]])], ['constructor', new Obj([['prototype', new Obj([['polluted', true]])]])]])) },
);

/** Containers nested `levels` deep (1: `[]`), objects or arrays, a value inside. */
export function nested(levels: number, kind: 'array' | 'object' | 'mixed', inner: Json = 1): Json {
  let value: Json = inner;
  for (let i = 0; i < levels; i++) {
    const obj = kind === 'object' || (kind === 'mixed' && i % 2 === 0);
    value = obj ? new Obj([['k', value]]) : [value];
  }
  return value;
}

// ---- the walker ----------------------------------------------------------------------------

type AnySchema = v.GenericSchema & {
  type: string;
  pipe?: readonly { kind: string; type: string; requirement?: unknown; examples?: unknown[] }[];
  entries?: Record<string, AnySchema>;
  rest?: AnySchema;
  item?: AnySchema;
  options?: readonly unknown[];
  wrapped?: AnySchema;
  literal?: unknown;
  key?: AnySchema;
  value?: AnySchema;
  items?: AnySchema[];
};

type Requirements = {
  minLength?: number;
  maxLength?: number;
  minValue?: number;
  maxValue?: number;
  integer?: boolean;
  regex?: RegExp;
  trim?: boolean;
  /** A check the walker cannot read (check, raw_check, custom): `examples` are what passes it. */
  opaque?: boolean;
  examples?: unknown[];
};

/** The schema under its pipes, and what the pipes ask of a value. */
function unpipe(schema: AnySchema): { base: AnySchema; req: Requirements } {
  const req: Requirements = {};
  let base = schema;
  while (base.pipe) {
    for (const action of base.pipe.slice(1)) {
      const r = action.requirement;
      if (action.type === 'min_length') req.minLength = Math.max(req.minLength ?? 0, r as number);
      else if (action.type === 'max_length') req.maxLength = Math.min(req.maxLength ?? Infinity, r as number);
      else if (action.type === 'min_value') req.minValue = r as number;
      else if (action.type === 'max_value') req.maxValue = r as number;
      else if (action.type === 'integer') req.integer = true;
      else if (action.type === 'regex') req.regex = r as RegExp;
      else if (action.type === 'trim') req.trim = true;
      else if (action.type === 'check' || action.type === 'raw_check') req.opaque = true;
      else if (action.type === 'examples') req.examples = [...(req.examples ?? []), ...(action.examples ?? [])];
    }
    base = base.pipe[0] as AnySchema;
  }
  if (base.type === 'custom') req.opaque = true;
  return { base, req };
}

const OPTIONAL = new Set(['optional', 'exact_optional', 'nullish', 'undefinedable']);

export type Walk = {
  /** Known good values for a field of this name (ids of existing resources, step keys): drawn often. */
  refs?: (field: string) => readonly string[] | undefined;
};

/**
 * Where the walker is. `clean`: only values the schema accepts (edge ones included: the
 * longest strings, bounds, unicode, nesting at the limit); otherwise any, wrong types and
 * values past the bounds too. `heavy`: huge strings, long arrays and the largest free-form
 * values may be generated (near the top).
 */
type Ctx = { walk: Walk; field: string; depth: number; heavy: boolean; clean: boolean };

/** How deep (the body is 1) huge values are generated; below it, documents of many fields stay small. */
const HEAVY_DEPTH = 3;

const STRING_UNITS = ['grapheme', 'binary', 'grapheme-ascii'] as const;

const matchers = new Map<string, fc.Arbitrary<string>>();

/** Strings a regex matches (its `i` flag dropped: fast-check cannot), built once per regex: building costs ~1 ms. */
function matching(regex: RegExp): fc.Arbitrary<string> {
  const flags = regex.flags.replace(/[^dgmsu]/g, '');
  const key = `/${regex.source}/${flags}`;
  let arbitrary = matchers.get(key);
  if (!arbitrary) matchers.set(key, (arbitrary = fc.stringMatching(new RegExp(regex.source, flags))));
  return arbitrary;
}

/** Whether PostgreSQL can store a string: no NUL, no lone surrogate. */
const storable = (x: string) => !x.includes('\u0000') && x.isWellFormed();

function stringsFor(req: Requirements, ctx: Ctx): fc.Arbitrary<Json> {
  const min = req.minLength ?? 0;
  const max = req.maxLength ?? 10_000;
  const refs = ctx.walk.refs?.(ctx.field);
  const fits = (x: string) => {
    const length = (req.trim ? x.trim() : x).length;
    return length >= min && length <= max && (!req.regex || req.regex.test(x)) && storable(x);
  };
  const typical: fc.Arbitrary<string> = req.regex
    ? matching(req.regex).filter((x) => x.length <= max)
    : fc.oneof(...STRING_UNITS.map((unit) => fc.string({ unit, minLength: min, maxLength: Math.min(max, Math.max(min, 24)) })));
  const valid: fc.WeightedArbitrary<Json>[] = [];
  // A check the walker cannot read is passed by its examples, rarely by chance.
  const chance = ctx.clean && req.opaque && req.examples?.length ? 0 : 24;
  if (chance) valid.push({ weight: chance, arbitrary: ctx.clean ? typical.filter(fits) : typical });
  if (req.examples?.length) valid.push({ weight: 30, arbitrary: fc.constantFrom(...(req.examples as Json[])) });
  if (refs?.length) valid.push({ weight: 40, arbitrary: fc.constantFrom(...refs) });
  let edges: Json[] = [...EDGE_STRINGS, ...RAW_STRINGS.map((t) => new Raw(t))];
  if (Number.isFinite(max)) {
    edges.push('x'.repeat(max), 'x'.repeat(max + 1), 'é'.repeat(max), ' '.repeat(max + 1), `${'x'.repeat(Math.max(0, max - 1))}🔥`);
  }
  if (min > 0) edges.push('x'.repeat(min - 1), ' '.repeat(min));
  for (const ref of (refs ?? []).slice(0, 2)) edges.push(ref.toUpperCase(), ` ${ref}`, `${ref}\u0000`, `${ref}x`);
  if (ctx.clean) edges = req.opaque ? [] : edges.filter((x) => fits(x instanceof Raw ? JSON.parse(x.text) : (x as string)));
  const huge = fc.constantFrom(200_000, 300_000).map((n) => 'x'.repeat(n));
  return fc.oneof(
    ...valid,
    ...(edges.length ? [{ weight: 8, arbitrary: fc.constantFrom(...edges) }] : []),
    // Huge strings only near the top: a document of many fields would mostly be huge.
    ...(ctx.heavy && !ctx.clean && ctx.depth <= HEAVY_DEPTH ? [{ weight: 2, arbitrary: huge }] : []),
  );
}

function numbersFor(req: Requirements, ctx: Ctx): fc.Arbitrary<Json> {
  const lo = req.minValue ?? -1e9;
  const hi = req.maxValue ?? 1e9;
  const typical = req.integer
    ? fc.integer({ min: Math.max(lo, -1e6), max: Math.min(hi, 1e6) })
    : fc.double({ min: Math.max(lo, -1e6), max: Math.min(hi, 1e6), noNaN: true, noDefaultInfinity: true });
  let edges: Json[] = [0, 1, -1, 0.5, 2 ** 31 - 1, 2 ** 31, 2 ** 53 + 2, -(2 ** 53), 1e308, 5e-324, ...RAW_NUMBERS.map((t) => new Raw(t))];
  if (req.minValue !== undefined) edges.push(req.minValue, req.minValue - 1, req.minValue - 0.5);
  if (req.maxValue !== undefined) edges.push(req.maxValue, req.maxValue + 1, req.maxValue + 0.5);
  if (ctx.clean) {
    edges = edges.filter((x) => {
      const n = x instanceof Raw ? Number(JSON.parse(x.text)) : (x as number);
      return Number.isFinite(n) && n >= (req.minValue ?? -Infinity) && n <= (req.maxValue ?? Infinity) && (!req.integer || Number.isInteger(n));
    });
  }
  return fc.oneof({ weight: 5, arbitrary: typical }, ...(edges.length ? [{ weight: 3, arbitrary: fc.constantFrom(...edges) }] : []));
}

/** Numbers at the edges of what a number column holds, as a number and in place of the digits of a string. */
const BIG_NUMBERS = [2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 1e15, 1e300];

/** Examples with their numbers made big: `45` → 2^31…, `"30m"` → `"2147483648m"`…; kept as given when they have none. */
function scaledExamples(examples: unknown[]): Json[] {
  const out: Json[] = [];
  for (const x of examples) {
    if (typeof x === 'number') out.push(...BIG_NUMBERS);
    else if (typeof x === 'string' && /\d/.test(x)) out.push(...BIG_NUMBERS.map((n) => x.replace(/\d+/, n.toLocaleString('en-US', { useGrouping: false }))));
  }
  return out.length ? out : (examples as Json[]);
}

const keysOf = (ctx: Ctx) => (ctx.clean ? EXTRA_KEYS.filter(storable) : EXTRA_KEYS);

/** A free-form JSON object: ordinary ones, and ones at (clean) and past the depth and size bounds. */
function freeForm(ctx: Ctx, objectOnly: boolean): fc.Arbitrary<Json> {
  // Levels this value may add before the body passes MAX_JSON_DEPTH (the body is level 1).
  const room = MAX_JSON_DEPTH - ctx.depth;
  const levels = ctx.clean ? fc.integer({ min: room - 1, max: room }) : fc.integer({ min: room, max: room + 3 });
  const deep = fc.tuple(levels, fc.constantFrom('array', 'object', 'mixed') as fc.Arbitrary<'array' | 'object' | 'mixed'>)
    .map(([n, kind]) => new Obj([['deep', nested(Math.max(0, n - 1), kind)]]));
  const sizes = ctx.clean ? [MAX_FREE_FORM_BYTES - 64] : [MAX_FREE_FORM_BYTES - 64, MAX_FREE_FORM_BYTES + 64];
  const big = fc.constantFrom(...sizes).map((n) => new Obj([['blob', 'x'.repeat(n - 12)]]));
  const wide = fc.constant(new Obj(Array.from({ length: 5_000 }, (_, i) => [`k${i}`, i] as const)));
  const plain = fc.dictionary(fc.oneof(fc.string(), fc.constantFrom(...keysOf(ctx))), anyJson, { maxKeys: 5 })
    .map((d) => new Obj(Object.entries(d)));
  const heavy = ctx.heavy && ctx.depth <= HEAVY_DEPTH ? [{ weight: 1, arbitrary: big }, { weight: 1, arbitrary: wide }] : [];
  const objects = fc.oneof({ weight: 10, arbitrary: plain }, { weight: 2, arbitrary: deep }, ...heavy, { weight: 1, arbitrary: anyJson.filter((x) => x instanceof Obj) });
  return objectOnly ? objects : fc.oneof({ weight: 3, arbitrary: objects }, { weight: 1, arbitrary: anyJson });
}

/** Values for `schema` at a field: ones it accepts, and (not clean) some of the wrong type. */
function valueFor(schema: AnySchema, ctx: Ctx): fc.Arbitrary<Json> {
  const right = acceptedBy(schema, ctx);
  if (ctx.clean) return right;
  return fc.oneof({ weight: 14, arbitrary: right }, { weight: 1, arbitrary: fc.constantFrom(...WRONG_TYPES) });
}

const built = new WeakMap<Walk, WeakMap<AnySchema, Map<string, fc.Arbitrary<Json>>>>();

/** The values of `schema` it accepts (see Ctx), built once per schema and place. */
function acceptedBy(schema: AnySchema, ctx: Ctx): fc.Arbitrary<Json> {
  const key = `${ctx.field}\u0000${ctx.depth}\u0000${ctx.heavy}\u0000${ctx.clean}`;
  let forWalk = built.get(ctx.walk);
  if (!forWalk) built.set(ctx.walk, (forWalk = new WeakMap()));
  let forSchema = forWalk.get(schema);
  if (!forSchema) forWalk.set(schema, (forSchema = new Map()));
  let arbitrary = forSchema.get(key);
  if (!arbitrary) forSchema.set(key, (arbitrary = buildAccepted(schema, ctx)));
  return arbitrary;
}

function buildAccepted(schema: AnySchema, ctx: Ctx): fc.Arbitrary<Json> {
  if (schema === (JsonObject as unknown)) return freeForm(ctx, true);
  if (schema === (FreeFormValue as unknown)) return freeForm(ctx, false);
  const { base, req } = unpipe(schema);
  if (base === (JsonObject as unknown)) return freeForm(ctx, true);
  if (base === (FreeFormValue as unknown)) return freeForm(ctx, false);
  switch (base.type) {
    case 'string':
      return stringsFor(req, ctx);
    case 'number':
      return numbersFor(req, ctx);
    case 'boolean':
      return fc.boolean();
    case 'literal':
      return fc.constant(base.literal as Json);
    case 'null':
      return fc.constant(null);
    case 'enum':
      return fc.constantFrom(...(base.options as Json[]));
    case 'tuple':
    case 'strict_tuple':
    case 'loose_tuple':
      return fc.tuple(...base.items!.map((item) => valueFor(item, { ...ctx, depth: ctx.depth + 1 })));
    case 'record': {
      const inner: Ctx = { ...ctx, depth: ctx.depth + 1 };
      const keys = fc.oneof({ weight: 4, arbitrary: acceptedBy(base.key!, inner) }, { weight: 1, arbitrary: fc.constantFrom(...keysOf(ctx)) })
        .filter((k): k is string => typeof k === 'string');
      return fc.array(fc.tuple(keys, valueFor(base.value!, inner)), { maxLength: Math.min(req.maxLength ?? 4, 4) })
        .map((entries) => new Obj(entries));
    }
    case 'picklist': {
      const options = base.options as string[];
      if (ctx.clean) return fc.constantFrom(...options);
      return fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom(...options) },
        { weight: 1, arbitrary: fc.constantFrom(...options.flatMap((o) => [o.toUpperCase(), ` ${o}`, `${o}\u0000`, `${o}🔥`])) },
      );
    }
    case 'optional':
    case 'exact_optional':
    case 'undefinedable':
      return valueFor(base.wrapped!, ctx);
    case 'nullable':
    case 'nullish':
      return fc.oneof({ weight: 1, arbitrary: fc.constant(null) }, { weight: 4, arbitrary: valueFor(base.wrapped!, ctx) });
    case 'union':
    case 'variant':
      return fc.oneof(...(base.options as AnySchema[]).map((o) => acceptedBy(o, ctx)));
    case 'array':
      return arrayOf(base.item!, req, ctx);
    case 'object':
    case 'loose_object':
    case 'strict_object':
    case 'object_with_rest':
      return objectOf(base, ctx);
    case 'unknown':
    case 'any':
    case 'custom':
      if (req.examples?.length) {
        // What passes a check the walker cannot read: its examples, the same with their
        // numbers made huge (a duration of "9999999999d" or 2^31 seconds), and (not clean)
        // whatever might, of any type.
        const examples = fc.constantFrom(...(req.examples as Json[]));
        const scaled = fc.constantFrom(...scaledExamples(req.examples));
        if (ctx.clean) return fc.oneof({ weight: 6, arbitrary: examples }, { weight: 1, arbitrary: scaled });
        return fc.oneof(
          { weight: 6, arbitrary: examples },
          { weight: 2, arbitrary: scaled },
          { weight: 1, arbitrary: anyJson },
          { weight: 1, arbitrary: numbersFor({}, ctx) },
          { weight: 1, arbitrary: stringsFor({}, ctx) },
        );
      }
      return freeForm(ctx, false);
    default:
      throw new Error(`no generator for valibot schema type '${base.type}' (field ${ctx.field}): add one to test/support/schema-bodies.ts`);
  }
}

function arrayOf(item: AnySchema, req: Requirements, ctx: Ctx): fc.Arbitrary<Json> {
  const inner: Ctx = { ...ctx, depth: ctx.depth + 1 };
  const element = valueFor(item, inner);
  const min = req.minLength ?? 0;
  const max = req.maxLength ?? Infinity;
  const typical = fc.array(element, { minLength: min, maxLength: Math.min(max, Math.max(min, 4)) });
  // One accepted element repeated: at, past and far past the bound (a 1 MiB body holds ~100,000
  // short ones), at most as many as fit in about 1 MiB.
  const lengths = (ctx.clean ? [max, 2_000] : [max, max + 1, 20_000]).filter((n) => n >= min && n <= 20_000 && (!ctx.clean || n <= max));
  const long = fc.tuple(acceptedBy(item, { ...inner, clean: true }), fc.constantFrom(...new Set(lengths))).map(([x, n]) => {
    const fit = Math.floor(1_100_000 / (jsonText(x).length + 1));
    return Array.from({ length: Math.max(1, Math.min(n, fit)) }, () => x);
  });
  return fc.oneof(
    { weight: 12, arbitrary: typical },
    ...(min === 0 || !ctx.clean ? [{ weight: 1, arbitrary: fc.constant<Json>([]) }] : []),
    ...(ctx.heavy && ctx.depth <= HEAVY_DEPTH && lengths.length ? [{ weight: 2, arbitrary: long }] : []),
  );
}

/**
 * An object of the schema's entries. Not clean: a required field is sometimes missing. With
 * `wildField`, a clean object but for that one field (any value, or missing).
 */
function objectOf(schema: AnySchema, ctx: Ctx, wildField?: number): fc.Arbitrary<Json> {
  const entries = Object.entries(schema.entries ?? {});
  const fields = entries.map(([key, s], i) => {
    const wild = i === wildField;
    const inner: Ctx = { ...ctx, field: key, depth: ctx.depth + 1, clean: ctx.clean && !wild };
    const value = valueFor(s, inner);
    const optional = OPTIONAL.has(s.type) || OPTIONAL.has(unpipe(s).base.type);
    const presence = optional ? (inner.clean ? [1, 3] : [1, 2]) : inner.clean ? [0, 1] : [1, 20];
    return fc.oneof(
      ...(presence[0] ? [{ weight: presence[0], arbitrary: fc.constant(null) }] : []),
      { weight: presence[1], arbitrary: value.map((x) => [key, x] as const) },
    );
  });
  // Unknown fields: refused by a strict object, so none in a clean one.
  const strict = schema.type === 'strict_object';
  const restSchema = schema.type === 'object_with_rest' ? schema.rest : undefined;
  const restValue = restSchema ? valueFor(restSchema, { ...ctx, field: '(rest)', depth: ctx.depth + 1 }) : anyJson;
  const extraKeys = ctx.clean ? keysOf(ctx).filter((k) => !(k in (schema.entries ?? {}))) : [...EXTRA_KEYS, ...entries.map(([k]) => k)];
  const extra = fc.tuple(fc.oneof(fc.constantFrom(...extraKeys), fc.string()), restValue).map(([k, x]) => [k, x] as const);
  const none = fc.constant<(readonly [string, Json])[]>([]);
  const extras = ctx.clean && strict
    ? none
    : fc.oneof({ weight: 5, arbitrary: none }, { weight: 2, arbitrary: fc.array(extra, { minLength: 1, maxLength: 3 }) });
  return fc.record({ fields: fc.tuple(...fields), extras, extrasFirst: fc.boolean() }).map(({ fields: given, extras: more, extrasFirst }) => {
    const present = given.filter((f): f is readonly [string, Json] => f !== null);
    // A clean object repeats none of its keys (JSON.parse would keep the last).
    const added = ctx.clean ? more.filter(([k]) => !present.some(([p]) => p === k)) : more;
    return new Obj(extrasFirst ? [...added, ...present] : [...present, ...added]);
  });
}

/** Bodies of one kind: clean, clean but for one field, or wild throughout. */
function walkBodies(schema: AnySchema, walk: Walk, heavy: boolean): fc.Arbitrary<string> {
  const root = (clean: boolean): Ctx => ({ walk, field: '(body)', depth: 1, heavy, clean });
  const { base } = unpipe(schema);
  const count = Object.keys(base.entries ?? {}).length;
  const oneWild = count > 0 && base.entries
    ? fc.oneof(...Array.from({ length: count }, (_, i) => objectOf(base, root(true), i)))
    : acceptedBy(schema, root(false));
  return fc.oneof(
    { weight: 3, arbitrary: acceptedBy(schema, root(true)) },
    { weight: 3, arbitrary: oneWild },
    { weight: 4, arbitrary: acceptedBy(schema, root(false)) },
  ).map(jsonText);
}

// ---- whole bodies --------------------------------------------------------------------------

/** Text that is not a JSON object: malformed, another type, nothing. */
const NOT_AN_OBJECT = [
  '', ' ', '{', '}', '{"a":', '{"a":1,}', "{'a':1}", '{"a":1}x', '{"a" 1}', '{a:1}', '{"a":01}', '{"a":.5}', '{"a":NaN}',
  '{"a":Infinity}', '{"a":undefined}', '{"a":"\\x41"}', '{"a":"\u0001"}', '{"a":"\\ud800"', '\ufeff{}', '{}\u0000',
  'null', 'true', '0', '-1', '"x"', '[]', '[{}]', '[[[]]]', '1e999', 'NaN', '\u0000', '{"__proto__":', '{"a":[1,2}', '[{"a":1}',
];

export type Body = { text: string } | { bytes: number[] };

/** A body for an endpoint whose body has `schema` (null: reads none), as JSON text or raw bytes. */
export function bodies(schema: v.GenericSchema | null, walk: Walk = {}): fc.Arbitrary<Body> {
  const text = (a: fc.Arbitrary<string>) => a.map((t): Body => ({ text: t }));
  const fromSchema = schema
    // Most bodies keep their values small, so that thousands of them stay fast; some may be huge.
    ? fc.oneof({ weight: 7, arbitrary: walkBodies(schema as AnySchema, walk, false) }, { weight: 1, arbitrary: walkBodies(schema as AnySchema, walk, true) })
    : fc.oneof(fc.constant(''), fc.constant('{}'), anyJson.map(jsonText));
  return fc.oneof(
    { weight: 40, arbitrary: text(fromSchema) },
    { weight: 2, arbitrary: text(fc.constantFrom(...NOT_AN_OBJECT)) },
    { weight: 1, arbitrary: text(anyJson.map(jsonText)) },
    // Nesting of the whole body around the limit, and far past it (a scan must refuse, not recurse).
    { weight: 1, arbitrary: text(fc.tuple(fc.constantFrom(MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 100_000), fc.constantFrom('array', 'object', 'mixed') as fc.Arbitrary<'array' | 'object' | 'mixed'>)
      .map(([levels, kind]) => (levels > 1000 && kind === 'array' ? '['.repeat(levels) : deepText(levels, kind)))) },
    // Just under and over the 1 MiB body limit.
    { weight: 1, arbitrary: text(fc.constantFrom(1024 * 1024 - 64, 1024 * 1024 + 1).map((n) => `{"name":"${'x'.repeat(n - 12)}"}`)) },
    // Bytes that are not UTF-8: a lone continuation byte, an overlong '/', a cut emoji, UTF-16.
    { weight: 1, arbitrary: fc.constantFrom([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0x80, 0x22, 0x7d], [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d], [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xf0, 0x9f, 0x94, 0x22, 0x7d], [0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]).map((bytes): Body => ({ bytes: [...bytes] })) },
  );
}
