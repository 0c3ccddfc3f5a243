// Pipeline documents: seed 001's template YAML as JSON. This module validates a document,
// reports every problem with its path, and normalizes it. No I/O.
import * as v from 'valibot';
import { Cron } from 'croner';
import { DURATION_HINT, formatDuration, parseDuration } from './durations.ts';
import { expressionProblem, type Condition } from './conditions.ts';
import { issuesToProblems, type Problem } from './problems.ts';
import { JsonObject, validationConfig } from './json.ts';
import { AssetFilterSchema, type AssetFilter } from './scans.ts';

export type StepDef = {
  step_key: string;
  name: string;
  order: number;
  tool: string | null;
  capabilities: string[];
  config: Record<string, unknown>;
  timeout_seconds: number;
  depends_on: string[];
  condition: Condition | null;
  max_retries: number;
  retry_delay_seconds: number;
};

/**
 * seed 001 triggers. A schedule fires on its targets (asset filters; none: one run with no
 * asset), a webhook on its targets or the asset the request names, asset discovery on new
 * assets that match its filter (none: every new asset).
 */
export type Trigger =
  | { type: 'manual' }
  | { type: 'schedule'; cron: string; timezone?: string; targets?: AssetFilter[] }
  | { type: 'webhook'; event?: string; targets?: AssetFilter[] }
  | { type: 'on_asset_discovery'; asset_filter?: AssetFilter };

export type Settings = {
  max_parallel_steps: number;
  fail_fast: boolean;
  retry_failed_steps: number;
  timeout?: string;
  queue_timeout?: string;
  /** The priority of the run's commands: agents get higher priorities first. */
  priority?: 'low' | 'normal' | 'high' | 'critical';
  notification?: Record<string, unknown>;
};

export type PipelineDoc = {
  name: string;
  description: string | null;
  tags: string[];
  triggers: Trigger[];
  settings: Settings;
  steps: StepDef[];
};

export const DEFAULT_STEP_TIMEOUT_SECONDS = 1800; // seed 001: timeout_seconds INT DEFAULT 1800
export const DEFAULT_RETRY_DELAY_SECONDS = 60; // seed 001: retry_delay_seconds INT DEFAULT 60
export const DEFAULT_MAX_PARALLEL_STEPS = 10;

const KEY_PATTERN = /^[A-Za-z0-9_.-]{1,100}$/;
const KEY_HINT = 'must be 1-100 letters, digits, "_", "-" or "."';

const StepKey = v.pipe(v.string(), v.regex(KEY_PATTERN, KEY_HINT));
const Name = v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255));
const Word = v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(100));
/**
 * The longest duration a pipeline document gives (a step's timeout, a run's, a queue
 * timeout): a year, as timeout_seconds allows. Longer ones overflowed the integer columns
 * they are stored in (a 400 naming no field), or the deadline a run computes from them.
 */
export const MAX_DURATION_SECONDS = 31_536_000;
const Duration = v.pipe(
  v.custom<string | number>((input) => (parseDuration(input) ?? Infinity) <= MAX_DURATION_SECONDS, `${DURATION_HINT}, at most 365 days`),
  v.examples(['30m', '2h', 45]),
);
const Count = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max));

const Expression = (kind: 'expression' | 'step_check') =>
  v.pipe(
    v.string(),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const problem = expressionProblem(dataset.value, kind);
      if (problem) addIssue({ message: problem });
    }),
    v.examples(kind === 'expression'
      ? ["asset.type == 'repository'", "asset.tags.contains('production')", "context.branch == 'main'"]
      : ['findings_count > 0', "status == 'completed'", "output.severity == 'high'"]),
  );

export const ConditionSchema = v.variant(
  'type',
  [
    v.object({ type: v.literal('always') }),
    v.object({ type: v.literal('never') }),
    v.object({
      type: v.literal('asset_type'),
      value: v.union([Word, v.pipe(v.array(Word), v.minLength(1, 'must list at least one asset type'))], 'must be an asset type or a list of them'),
    }),
    v.object({ type: v.literal('expression'), value: Expression('expression') }),
    v.object({ type: v.literal('step_result'), step: StepKey, check: Expression('step_check') }),
  ],
  'must be one of always, never, asset_type, expression, step_result',
);

/** A step of a pipeline document (also the body of the /steps sub-resource). */
export const PipelineStep = v.looseObject({
  id: v.optional(StepKey),
  step_key: v.optional(StepKey),
  name: v.optional(Name),
  order: v.optional(Count(-1_000_000, 1_000_000)),
  tool: v.optional(v.nullable(Word)),
  capabilities: v.optional(v.array(Word)),
  config: v.optional(v.nullable(JsonObject)),
  timeout: v.optional(Duration),
  timeout_seconds: v.optional(Count(1, MAX_DURATION_SECONDS)),
  depends_on: v.optional(v.nullable(v.array(v.string()))),
  condition: v.optional(v.nullable(ConditionSchema)),
  max_retries: v.optional(Count(0, 100)),
  retry_delay_seconds: v.optional(Count(0, 86_400)),
});

const CronExpression = v.pipe(
  v.string(),
  v.check((expr) => {
    try {
      new Cron(expr, { paused: true });
      return true;
    } catch {
      return false;
    }
  }, 'must be a valid cron expression like "0 2 * * *"'),
  v.examples(['0 2 * * *', '*/15 * * * *']),
);
const TimeZone = v.pipe(
  v.string(),
  v.check((tz) => {
    try {
      new Intl.DateTimeFormat('en', { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, 'must be an IANA time zone like "Europe/Berlin"'),
  v.examples(['UTC', 'Europe/Berlin']),
);

// A trigger's target: `{asset_filter: ...}` (seed 001 "Scheduling") or the filter itself
// (`{asset_type: repository, criticality: critical}`).
const TriggerTarget = v.union(
  [v.pipe(v.strictObject({ asset_filter: AssetFilterSchema }), v.transform((t) => t.asset_filter)), AssetFilterSchema],
  'must be {asset_filter: ...} or a filter {type, tags, criticality, expression}',
);
const TriggerTargets = v.pipe(v.array(TriggerTarget), v.maxLength(50));

// Seed 001 writes triggers in two forms: `- manual`, `- schedule: "0 2 * * *"`,
// `- webhook: push`, and `- type: schedule` objects. Both are accepted.
const TriggerSchema = v.union(
  [
    v.picklist(['manual', 'webhook', 'on_asset_discovery']),
    v.strictObject({ schedule: CronExpression }),
    v.strictObject({ webhook: v.string() }),
    v.variant('type', [
      v.looseObject({ type: v.literal('manual') }),
      v.object({ type: v.literal('schedule'), cron: CronExpression, timezone: v.optional(TimeZone), targets: v.optional(TriggerTargets) }),
      v.object({ type: v.literal('webhook'), event: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(100))), targets: v.optional(TriggerTargets) }),
      v.object({ type: v.literal('on_asset_discovery'), asset_filter: v.optional(AssetFilterSchema) }),
    ]),
  ],
  'must be manual, webhook, on_asset_discovery, {schedule: "<cron>"}, {webhook: "<event>"} or {type: ...}',
);

const SettingsSchema = v.looseObject({
  max_parallel_steps: v.optional(Count(1, 1000)),
  fail_fast: v.optional(v.boolean()),
  retry_failed_steps: v.optional(Count(0, 100)),
  timeout: v.optional(v.nullable(Duration)),
  queue_timeout: v.optional(v.nullable(Duration)),
  priority: v.optional(v.picklist(['low', 'normal', 'high', 'critical'], 'must be low, normal, high or critical')),
  notification: v.optional(v.nullable(JsonObject)),
});

/**
 * The most steps a pipeline has. Steps are checked one by one and as a graph only up to
 * this many: a 1 MiB body holds ~20,000 chained steps, which overflowed the stack of the
 * cycle search (a 500) and took seconds for the upstream checks of step_result conditions.
 */
const MAX_STEPS = 200;

const DocumentEntries = {
  name: Name,
  description: v.optional(v.nullable(v.string())),
  tags: v.optional(v.array(Word)),
  trigger: v.optional(v.array(TriggerSchema)),
  triggers: v.optional(v.array(TriggerSchema)),
  settings: v.optional(v.nullable(SettingsSchema)),
};
const StepList = <S extends v.GenericSchema>(item: S) =>
  v.pipe(v.array(item), v.minLength(1, 'a pipeline needs at least one step'), v.maxLength(MAX_STEPS));

/**
 * A pipeline document, steps included: the shape the API contract shows. validatePipeline
 * checks the same parts, the steps one by one (so that their problems are listed with the
 * graph's) and only when there are at most MAX_STEPS of them.
 */
export const PipelineDocument = v.looseObject({ ...DocumentEntries, steps: StepList(PipelineStep) });
const DocumentSchema = v.looseObject({ ...DocumentEntries, steps: StepList(v.unknown()) });

export type Validation<T> = { ok: true; value: T } | { ok: false; problems: Problem[] };

type RawStep = Record<string, unknown>;

/** Validates a whole pipeline document; every problem is reported, each with its path. */
export function validatePipeline(input: unknown): Validation<PipelineDoc> {
  const problems: Problem[] = [];
  const config = validationConfig(input);
  const doc = v.safeParse(DocumentSchema, input, config);
  if (!doc.success) problems.push(...issuesToProblems(doc.issues));

  const given: unknown[] =
    input && typeof input === 'object' && Array.isArray((input as { steps?: unknown }).steps)
      ? ((input as { steps: unknown[] }).steps)
      : [];
  // Too many steps is the document's problem (reported above); then no step is looked at.
  const rawSteps = given.length <= MAX_STEPS ? given : [];
  const steps: (v.InferOutput<typeof PipelineStep> | null)[] = rawSteps.map((raw, i) => {
    const parsed = v.safeParse(PipelineStep, raw, config);
    if (!parsed.success) {
      problems.push(...issuesToProblems(parsed.issues, ['steps', i]));
      return null;
    }
    return parsed.output;
  });
  problems.push(...graphProblems(rawSteps));
  steps.forEach((step, i) => {
    if (!step) return;
    if (step.id !== undefined && step.step_key !== undefined && step.id !== step.step_key) {
      problems.push({ path: `steps[${i}].step_key`, message: `must equal id ('${step.id}') when both are given` });
    }
    if (!step.tool && (step.capabilities ?? []).length === 0) {
      problems.push({ path: `steps[${i}]`, message: 'a step needs a tool or capabilities' });
    }
  });

  if (problems.length > 0 || !doc.success) return { ok: false, problems: dedupe(problems) };

  const raw = doc.output;
  const settingsIn = raw.settings ?? {};
  const settings: Settings = {
    ...settingsIn,
    max_parallel_steps: settingsIn.max_parallel_steps ?? DEFAULT_MAX_PARALLEL_STEPS,
    fail_fast: settingsIn.fail_fast ?? false,
    retry_failed_steps: settingsIn.retry_failed_steps ?? 0,
  } as Settings;
  for (const key of ['timeout', 'queue_timeout'] as const) {
    const value = settingsIn[key];
    if (value === undefined || value === null) delete settings[key];
    else settings[key] = formatDuration(parseDuration(value)!);
  }
  if (settingsIn.notification === null) delete settings.notification;

  const normalizedSteps = (steps as v.InferOutput<typeof PipelineStep>[]).map((s, i): StepDef => {
    const key = (s.id ?? s.step_key)!;
    return {
      step_key: key,
      name: s.name ?? key,
      order: s.order ?? i + 1,
      tool: s.tool ?? null,
      capabilities: s.capabilities ?? [],
      config: s.config ?? {},
      timeout_seconds: s.timeout !== undefined ? parseDuration(s.timeout)! : (s.timeout_seconds ?? DEFAULT_STEP_TIMEOUT_SECONDS),
      depends_on: [...new Set(s.depends_on ?? [])],
      condition: (s.condition as Condition | null | undefined) ?? null,
      max_retries: s.max_retries ?? settings.retry_failed_steps,
      retry_delay_seconds: s.retry_delay_seconds ?? DEFAULT_RETRY_DELAY_SECONDS,
    };
  });

  return {
    ok: true,
    value: {
      name: raw.name,
      description: raw.description ?? null,
      tags: raw.tags ?? [],
      triggers: [...(raw.trigger ?? []), ...(raw.triggers ?? [])].map(normalizeTrigger),
      settings,
      steps: normalizedSteps,
    },
  };
}

/** Validates one step (the /steps sub-resource) in the context of its siblings. */
export function validateStep(input: unknown): Validation<RawStep> {
  const parsed = v.safeParse(PipelineStep, input, validationConfig(input));
  if (!parsed.success) return { ok: false, problems: issuesToProblems(parsed.issues) };
  return { ok: true, value: parsed.output as RawStep };
}

function normalizeTrigger(t: v.InferOutput<typeof TriggerSchema>): Trigger {
  if (typeof t === 'string') return { type: t } as Trigger;
  if ('schedule' in t) return { type: 'schedule', cron: String(t.schedule) };
  if ('webhook' in t && !('type' in t)) return { type: 'webhook', event: String(t.webhook) };
  return t as Trigger;
}

function stepKeyOf(raw: unknown): string | null {
  if (!raw || typeof raw !== 'object') return null;
  const s = raw as RawStep;
  const key = s.id ?? s.step_key;
  return typeof key === 'string' && KEY_PATTERN.test(key) ? key : null;
}

/**
 * Graph problems, found on the raw steps so they are reported together with type errors:
 * missing or duplicate keys, unknown or self dependencies, cycles, and step_result
 * conditions on steps that are not upstream.
 */
function graphProblems(rawSteps: unknown[]): Problem[] {
  const problems: Problem[] = [];
  const indexOf = new Map<string, number>();
  rawSteps.forEach((raw, i) => {
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
      return; // the step schema reports it
    }
    const s = raw as RawStep;
    if (s.id === undefined && s.step_key === undefined) {
      problems.push({ path: `steps[${i}].id`, message: 'a step needs an id (or step_key)' });
      return;
    }
    const key = stepKeyOf(raw);
    if (key === null) return;
    const first = indexOf.get(key);
    if (first !== undefined) {
      problems.push({ path: `steps[${i}].id`, message: `duplicate step key '${key}' (also steps[${first}])` });
    } else {
      indexOf.set(key, i);
    }
  });

  const deps = new Map<string, string[]>();
  rawSteps.forEach((raw, i) => {
    const key = stepKeyOf(raw);
    if (key === null || indexOf.get(key) !== i) return;
    const dependsOn = (raw as RawStep).depends_on;
    // Each dependency once: depends_on may repeat a key any number of times.
    const known = new Set<string>();
    if (Array.isArray(dependsOn)) {
      dependsOn.forEach((dep, k) => {
        if (typeof dep !== 'string') return;
        if (dep === key) problems.push({ path: `steps[${i}].depends_on[${k}]`, message: 'a step cannot depend on itself' });
        else if (!indexOf.has(dep)) problems.push({ path: `steps[${i}].depends_on[${k}]`, message: `unknown step '${dep}'` });
        else known.add(dep);
      });
    }
    deps.set(key, [...known]);
  });

  const cycle = findCycle(deps);
  if (cycle) {
    problems.push({ path: `steps[${indexOf.get(cycle[0])}].depends_on`, message: `dependency cycle: ${cycle.join(' → ')}` });
  }
  {
    rawSteps.forEach((raw, i) => {
      const key = stepKeyOf(raw);
      const condition = key && (raw as RawStep).condition;
      if (!condition || typeof condition !== 'object') return;
      const c = condition as Record<string, unknown>;
      if (c.type !== 'step_result' || typeof c.step !== 'string' || !KEY_PATTERN.test(c.step)) return;
      if (!indexOf.has(c.step)) {
        problems.push({ path: `steps[${i}].condition.step`, message: `unknown step '${c.step}'` });
      } else if (!upstreamOf(key!, deps).has(c.step)) {
        problems.push({
          path: `steps[${i}].condition.step`,
          message: `step '${c.step}' is not upstream of '${key}': add it to depends_on`,
        });
      }
    });
  }
  return problems;
}

function upstreamOf(key: string, deps: Map<string, string[]>): Set<string> {
  const seen = new Set<string>();
  const stack = [...(deps.get(key) ?? [])];
  while (stack.length) {
    const k = stack.pop()!;
    if (seen.has(k)) continue;
    seen.add(k);
    for (const d of deps.get(k) ?? []) stack.push(d);
  }
  return seen;
}

/**
 * A dependency cycle as a path of keys ending where it started, or null. Recursive, as
 * deep as the longest chain: at most MAX_STEPS (validatePipeline looks no further).
 */
export function findCycle(deps: Map<string, string[]>): string[] | null {
  const state = new Map<string, 'visiting' | 'done'>();
  const path: string[] = [];
  const visit = (key: string): string[] | null => {
    state.set(key, 'visiting');
    path.push(key);
    for (const dep of deps.get(key) ?? []) {
      const s = state.get(dep);
      if (s === 'visiting') return [...path.slice(path.indexOf(dep)), dep].reverse();
      if (s === undefined) {
        const found = visit(dep);
        if (found) return found;
      }
    }
    path.pop();
    state.set(key, 'done');
    return null;
  };
  for (const key of [...deps.keys()].sort()) {
    if (state.get(key) === undefined) {
      const found = visit(key);
      if (found) return found;
    }
  }
  return null;
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = `${p.path}\u0000${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** A step as the API shows it: the document form plus step_key and timeout_seconds. */
export function stepToDocument(step: StepDef): Record<string, unknown> {
  return {
    id: step.step_key,
    step_key: step.step_key,
    name: step.name,
    order: step.order,
    tool: step.tool,
    capabilities: step.capabilities,
    config: step.config,
    timeout: formatDuration(step.timeout_seconds),
    timeout_seconds: step.timeout_seconds,
    depends_on: step.depends_on,
    condition: step.condition,
    max_retries: step.max_retries,
    retry_delay_seconds: step.retry_delay_seconds,
  };
}
