// Scans: a pipeline, its targets and a schedule (seeds 002/003 "Scan Management", seed 000).
// Pure: input schemas, target filters, and schedule arithmetic with croner.
import * as v from 'valibot';
import { Cron } from 'croner';
import { Environment } from '@marcbachmann/cel-js';
import { ASSET_TYPES, CRITICALITIES } from './assets.ts';
import { assetScope, compileCel, toCel } from './conditions.ts';
import { JsonObject } from './json.ts';

export const SCHEDULE_TYPES = ['manual', 'daily', 'weekly', 'monthly', 'cron'] as const;
export type ScheduleType = (typeof SCHEDULE_TYPES)[number];
export const SCAN_STATUSES = ['active', 'paused', 'disabled'] as const;

// ---- target filters -------------------------------------------------------------------

/**
 * An asset filter: every given criterion must hold. `type` and `criticality` match any of
 * the listed values; `tags` must all be on the asset; `expression` is CEL over the asset
 * (seed 001 writes both `tags.contains('production')` and `asset.tags.contains(...)`).
 */
export type AssetFilter = {
  type?: string[];
  tags?: string[];
  criticality?: string[];
  expression?: string;
};

export type Targets =
  | { kind: 'none' }
  | { kind: 'assets'; asset_ids: string[] }
  | { kind: 'filter'; filters: AssetFilter[] };

const filterEnv = new Environment({ homogeneousAggregateLiterals: false, unlistedVariablesAreDyn: true })
  .registerVariable('asset', 'map')
  .registerFunction('list.contains(dyn): bool', (list: unknown, item: unknown) =>
    Array.isArray(list) && list.some((x) => x === item || (typeof x === 'bigint' && Number(x) === item)));

const filterProgram = (source: string) => compileCel(filterEnv, source);

/** null when a filter expression compiles; otherwise the problem. */
export function filterExpressionProblem(source: string): string | null {
  if (source.trim() === '') return 'expression is empty';
  try {
    filterProgram(source);
    return null;
  } catch (err) {
    return `expression does not compile: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`;
  }
}

type AssetLike = { id: string; type: string; name: string; value: string | null; tags: string[]; criticality: string; metadata: Record<string, unknown> };

export function assetMatches(filter: AssetFilter, asset: AssetLike): boolean {
  if (filter.type && !filter.type.includes(asset.type)) return false;
  if (filter.criticality && !filter.criticality.includes(asset.criticality)) return false;
  if (filter.tags && !filter.tags.every((t) => asset.tags.includes(t))) return false;
  if (filter.expression) {
    const scope = assetScope(asset as unknown as Record<string, unknown>);
    try {
      // The asset's fields are in scope bare (seed 001) and as asset.<field>.
      return filterProgram(filter.expression)(toCel({ ...scope, asset: scope }) as Record<string, unknown>) === true;
    } catch {
      return false; // an asset the expression cannot be evaluated on does not match
    }
  }
  return true;
}

const OneOrMany = (item: v.GenericSchema<unknown, string>, what: string) =>
  v.pipe(
    v.union([item, v.pipe(v.array(item), v.minLength(1, `must list at least one ${what}`))], `must be a ${what} or a list of them`),
    v.transform((x) => (Array.isArray(x) ? x : [x]) as string[]),
  );

const FilterExpression = v.pipe(
  v.string(),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const problem = filterExpressionProblem(dataset.value);
    if (problem) addIssue({ message: problem });
  }),
  v.examples(["tags.contains('production')", "asset.type == 'repository' && asset.criticality == 'critical'"]),
);

const FilterObject = v.pipe(
  v.strictObject(
    {
      type: v.optional(OneOrMany(v.picklist(ASSET_TYPES, `must be one of ${ASSET_TYPES.join(', ')}`), 'asset type')),
      asset_type: v.optional(OneOrMany(v.picklist(ASSET_TYPES, `must be one of ${ASSET_TYPES.join(', ')}`), 'asset type')),
      tags: v.optional(OneOrMany(v.pipe(v.string(), v.minLength(1)), 'tag')),
      criticality: v.optional(OneOrMany(v.picklist(CRITICALITIES, `must be one of ${CRITICALITIES.join(', ')}`), 'criticality')),
      expression: v.optional(FilterExpression),
    },
    'has an unknown field: a filter takes type, tags, criticality and expression',
  ),
  v.transform((f): AssetFilter => {
    const type = f.type ?? f.asset_type;
    return {
      ...(type ? { type } : {}),
      ...(f.tags ? { tags: f.tags } : {}),
      ...(f.criticality ? { criticality: f.criticality } : {}),
      ...(f.expression ? { expression: f.expression } : {}),
    };
  }),
);

/** A filter as an object, or as a bare CEL expression (seed 001: `asset_filter: "tags.contains('production')"`). */
export const AssetFilterSchema = v.union(
  [v.pipe(FilterExpression, v.transform((expression): AssetFilter => ({ expression }))), FilterObject],
  'must be a filter object {type, tags, criticality, expression} or a CEL expression',
);

const Uuid = v.pipe(v.string(), v.regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be an asset id (UUID)'));

/**
 * Scan targets: one asset, several, or a filter (one run per matching asset, as Crossfeed
 * runs a scan on every organization); `{}` means one run with no asset.
 */
export const TargetsSchema = v.pipe(
  v.strictObject(
    {
      asset_id: v.optional(Uuid),
      asset_ids: v.optional(v.pipe(v.array(Uuid), v.minLength(1, 'must list at least one asset'), v.maxLength(10_000))),
      asset_filter: v.optional(v.union([AssetFilterSchema, v.pipe(v.array(AssetFilterSchema), v.minLength(1))], 'must be a filter or a list of filters')),
    },
    'has an unknown field: targets are {asset_id}, {asset_ids} or {asset_filter}',
  ),
  v.check((t) => [t.asset_id, t.asset_ids, t.asset_filter].filter((x) => x !== undefined).length <= 1, 'give one of asset_id, asset_ids or asset_filter'),
  v.transform((t): Targets => {
    if (t.asset_id) return { kind: 'assets', asset_ids: [t.asset_id.toLowerCase()] };
    if (t.asset_ids) return { kind: 'assets', asset_ids: [...new Set(t.asset_ids.map((x) => x.toLowerCase()))] };
    if (t.asset_filter) return { kind: 'filter', filters: Array.isArray(t.asset_filter) ? t.asset_filter : [t.asset_filter] };
    return { kind: 'none' };
  }),
);

/** Targets as the API shows them (and stores them). */
export function targetsToDocument(t: Targets): Record<string, unknown> {
  if (t.kind === 'assets') return t.asset_ids.length === 1 ? { asset_id: t.asset_ids[0] } : { asset_ids: t.asset_ids };
  if (t.kind === 'filter') return { asset_filter: t.filters.length === 1 ? t.filters[0] : t.filters };
  return {};
}

// ---- schedules --------------------------------------------------------------------------

export function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export function cronProblem(expr: string, timezone = 'UTC'): string | null {
  try {
    const next = new Cron(expr, { timezone, paused: true }).nextRun(new Date());
    return next ? null : 'never fires';
  } catch (err) {
    return `is not a valid cron expression (${(err instanceof Error ? err.message : String(err)).split('\n')[0]})`;
  }
}

/** The local wall-clock parts of an instant in a time zone. */
function localParts(at: Date, timezone: string): { minute: number; hour: number; day: number; weekday: number } {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: timezone, hour12: false, hour: 'numeric', minute: 'numeric', day: 'numeric', weekday: 'short',
  }).formatToParts(at);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '0';
  const weekday = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'].indexOf(get('weekday'));
  return { minute: Number(get('minute')), hour: Number(get('hour')) % 24, day: Number(get('day')), weekday };
}

/**
 * The cron expression a schedule fires on. daily/weekly/monthly fire at the local time (and
 * weekday or day of month) of `anchor` — the first fire the caller asked for with
 * next_run_at — or at 00:00, Mondays, the 1st when there is none.
 */
export function effectiveCron(type: ScheduleType, cron: string | undefined, timezone: string, anchor: Date | undefined): string | null {
  if (type === 'manual') return null;
  if (type === 'cron') return cron!;
  const p = anchor ? localParts(anchor, timezone) : { minute: 0, hour: 0, day: 1, weekday: 1 };
  if (type === 'daily') return `${p.minute} ${p.hour} * * *`;
  if (type === 'weekly') return `${p.minute} ${p.hour} * * ${p.weekday}`;
  return `${p.minute} ${p.hour} ${p.day} * *`;
}

/**
 * The next fire strictly after `after`. Missed fires are not replayed: after downtime the
 * scheduler fires a due scan once and then continues from now. Local times that do not
 * exist (the spring-forward gap) fire at the first valid time after the gap; local times
 * that occur twice (fall back) fire once, at the first occurrence (croner's rules).
 */
export function nextFire(cron: string, timezone: string, after: Date): Date | null {
  return new Cron(cron, { timezone, paused: true }).nextRun(after);
}

// ---- input ------------------------------------------------------------------------------

const Name = v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255));
const Timestamp = v.pipe(
  v.string(),
  v.check((s) => !Number.isNaN(Date.parse(s)) && /^\d{4}-\d\d-\d\dT/.test(s), 'must be an RFC 3339 timestamp'),
  v.examples(['2030-01-01T02:00:00Z']),
  v.transform((s) => new Date(s)),
);
const TimeZone = v.pipe(v.string(), v.check(validTimeZone, 'must be an IANA time zone like "Europe/Berlin"'), v.examples(['UTC', 'Europe/Berlin']));

export const ScanFields = {
  name: Name,
  description: v.nullable(v.pipe(v.string(), v.maxLength(4000))),
  pipeline_id: v.pipe(v.string(), v.regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be a pipeline id (UUID)')),
  targets: TargetsSchema,
  schedule_type: v.picklist(SCHEDULE_TYPES, `must be one of ${SCHEDULE_TYPES.join(', ')}`),
  cron_expression: v.nullable(v.pipe(v.string(), v.maxLength(200), v.examples(['0 2 * * *', '*/15 * * * *']))),
  timezone: TimeZone,
  status: v.picklist(SCAN_STATUSES, `must be one of ${SCAN_STATUSES.join(', ')}`),
  context: JsonObject,
  max_active_runs: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000)),
  next_run_at: v.nullable(Timestamp),
};

export const ScanInput = v.object({
  name: ScanFields.name,
  description: v.optional(ScanFields.description),
  pipeline_id: ScanFields.pipeline_id,
  targets: v.optional(ScanFields.targets, {}),
  schedule_type: v.optional(ScanFields.schedule_type, 'manual'),
  cron_expression: v.optional(ScanFields.cron_expression),
  timezone: v.optional(ScanFields.timezone, 'UTC'),
  status: v.optional(ScanFields.status, 'active'),
  context: v.optional(ScanFields.context, {}),
  max_active_runs: v.optional(ScanFields.max_active_runs, 10),
  next_run_at: v.optional(ScanFields.next_run_at),
});
export type ScanInputValue = v.InferOutput<typeof ScanInput>;

/** A change to a scan: any of its fields (PUT merges them into the scan, then checks it as ScanInput). */
export const ScanUpdate = v.partial(ScanInput);

/** Cross-field rules of a scan's schedule; every problem with its field. */
export function scheduleProblems(s: Pick<ScanInputValue, 'schedule_type' | 'cron_expression' | 'timezone'>): { path: string; message: string }[] {
  const problems: { path: string; message: string }[] = [];
  if (s.schedule_type === 'cron') {
    if (!s.cron_expression) problems.push({ path: 'cron_expression', message: 'is required for schedule_type cron' });
    else {
      const p = cronProblem(s.cron_expression, s.timezone);
      if (p) problems.push({ path: 'cron_expression', message: p });
    }
  } else if (s.cron_expression) {
    problems.push({ path: 'cron_expression', message: `is only for schedule_type cron (${s.schedule_type} derives its own)` });
  }
  return problems;
}

/**
 * The schedule a scan runs on: its effective cron and its next fire. An explicit
 * next_run_at is the first fire (and, for daily/weekly/monthly, the anchor of the time of
 * day); otherwise the next fire after now. Manual and inactive scans have none.
 */
export function scheduleOf(
  s: Pick<ScanInputValue, 'schedule_type' | 'cron_expression' | 'timezone' | 'status' | 'next_run_at'>,
  now: Date,
): { cron: string | null; next: Date | null } {
  const cron = effectiveCron(s.schedule_type, s.cron_expression ?? undefined, s.timezone, s.next_run_at ?? undefined);
  if (!cron || s.status !== 'active') return { cron, next: null };
  return { cron, next: s.next_run_at ?? nextFire(cron, s.timezone, now) };
}
