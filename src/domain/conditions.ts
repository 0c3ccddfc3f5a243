// Step conditions (seed 001 "Condition Expressions"). Expressions are CEL, compiled and
// evaluated by @marcbachmann/cel-js; nothing here parses expressions by hand.
import { Environment } from '@marcbachmann/cel-js';

export type Condition =
  | { type: 'always' }
  | { type: 'never' }
  | { type: 'asset_type'; value: string | string[] }
  | { type: 'expression'; value: string }
  | { type: 'step_result'; step: string; check: string };

export type StepResult = { status: string; findings_count: number; output: Record<string, unknown> };

export type ConditionScope = {
  asset: Record<string, unknown>;
  steps: Record<string, StepResult>;
  context: Record<string, unknown>;
};

export type ConditionOutcome = { result: true } | { result: false; reason: string };

// Seed 001 writes `asset.tags.contains('production')`; standard CEL only has
// `'production' in asset.tags`, so lists get a `contains` member function too.
function listContains(list: unknown, item: unknown): boolean {
  if (!Array.isArray(list)) return false;
  return list.some((element) => celEquals(element, item));
}

function celEquals(a: unknown, b: unknown): boolean {
  if ((typeof a === 'bigint' || typeof a === 'number') && (typeof b === 'bigint' || typeof b === 'number')) {
    return Number(a) === Number(b);
  }
  return a === b;
}

function baseEnvironment(): Environment {
  return new Environment({ homogeneousAggregateLiterals: false })
    .registerVariable('asset', 'map')
    .registerVariable('steps', 'map')
    .registerVariable('context', 'map')
    .registerFunction('list.contains(dyn): bool', listContains);
}

const expressionEnv = baseEnvironment();
// A step_result check sees the referenced step's fields at top level:
// `findings_count > 0`, `status == 'completed'`, `output.severity == 'high'`.
const stepCheckEnv = baseEnvironment()
  .registerVariable('status', 'string')
  .registerVariable('findings_count', 'int')
  .registerVariable('output', 'map');

export type Program = ((context: Record<string, unknown>) => unknown) & { check(): unknown };
const programs = new WeakMap<Environment, Map<string, Program>>();

/**
 * The longest expression compiled. cel-js bounds the nesting of parentheses, lists and
 * members (maxDepth 250) but not chains of unary or binary operators, which its type
 * checker and evaluator recurse on. Measured on Node 24: 4,000 `!` in a row overflowed the
 * stack in the type check; chains of `!`, `-`, `+` and `||` filling 2,048 characters were
 * checked and evaluated fine even 5,000 calls deep. Conditions and filters are one-liners.
 */
export const MAX_EXPRESSION_LENGTH = 2048;

/** A compiled CEL program, cached per environment (conditions are evaluated at every advance). */
export function compileCel(env: Environment, source: string): Program {
  if (source.length > MAX_EXPRESSION_LENGTH) throw new Error(`the expression is longer than ${MAX_EXPRESSION_LENGTH} characters`);
  let cache = programs.get(env);
  if (!cache) programs.set(env, (cache = new Map()));
  let program = cache.get(source);
  if (!program) {
    program = env.parse(source) as unknown as Program;
    if (cache.size > 5_000) cache.clear();
    cache.set(source, program);
  }
  return program;
}


/** null when the expression compiles to something that can be a bool; otherwise the problem. */
export function expressionProblem(source: string, kind: 'expression' | 'step_check' = 'expression'): string | null {
  if (source.trim() === '') return 'expression is empty';
  let program: Program;
  try {
    program = compileCel(kind === 'expression' ? expressionEnv : stepCheckEnv, source);
  } catch (err) {
    return `expression does not compile: ${firstLine(err)}`;
  }
  let checked: unknown;
  try {
    checked = program.check();
  } catch (err) {
    return `expression does not type-check: ${firstLine(err)}`;
  }
  const c = checked as { valid?: boolean; type?: string; error?: unknown };
  if (c && c.valid === false) return `expression does not type-check: ${firstLine(c.error)}`;
  if (c && typeof c.type === 'string' && c.type !== 'bool' && c.type !== 'dyn') {
    return `expression must evaluate to a bool, not ${c.type}`;
  }
  return null;
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0];
}

/**
 * JSON values → CEL values: integral numbers are CEL ints (BigInt), others doubles.
 * Recursive, on values that came through the API: at most 64 levels (MAX_JSON_DEPTH).
 */
export function toCel(value: unknown): unknown {
  if (typeof value === 'number') return Number.isInteger(value) ? BigInt(value) : value;
  if (Array.isArray(value)) return value.map(toCel);
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = toCel(v);
    return out;
  }
  return value;
}

function runBool(env: Environment, source: string, variables: Record<string, unknown>): boolean | string {
  try {
    const value = compileCel(env, source)(toCel(variables) as Record<string, unknown>);
    if (typeof value !== 'boolean') return `expression returned ${typeof value}, not a bool`;
    return value;
  } catch (err) {
    return firstLine(err);
  }
}

export function evaluateCondition(condition: Condition | null | undefined, scope: ConditionScope): ConditionOutcome {
  if (!condition || condition.type === 'always') return { result: true };
  switch (condition.type) {
    case 'never':
      return { result: false, reason: "Condition not met: condition is 'never'" };
    case 'asset_type': {
      const wanted = Array.isArray(condition.value) ? condition.value : [condition.value];
      if (wanted.includes(String(scope.asset.type))) return { result: true };
      return {
        result: false,
        reason:
          wanted.length === 1
            ? `Condition not met: asset.type != '${wanted[0]}'`
            : `Condition not met: asset.type not in [${wanted.map((w) => `'${w}'`).join(', ')}]`,
      };
    }
    case 'expression': {
      const value = runBool(expressionEnv, condition.value, scope);
      if (value === true) return { result: true };
      if (value === false) return { result: false, reason: `Condition not met: ${condition.value}` };
      return { result: false, reason: `Condition could not be evaluated (${value}): ${condition.value}` };
    }
    case 'step_result': {
      const step = scope.steps[condition.step];
      if (!step) return { result: false, reason: `Condition not met: step '${condition.step}' has no result` };
      const value = runBool(stepCheckEnv, condition.check, { ...scope, ...step });
      if (value === true) return { result: true };
      if (value === false) return { result: false, reason: `Condition not met: steps.${condition.step}: ${condition.check}` };
      return {
        result: false,
        reason: `Condition could not be evaluated (${value}): steps.${condition.step}: ${condition.check}`,
      };
    }
  }
}

/**
 * What conditions see as `asset`: the asset's fields, its metadata keys at top level
 * (seed 001 writes `asset.has_url`), and `has_url` derived from an http(s) value when the
 * metadata does not say.
 */
export function assetScope(asset: Record<string, unknown> | null | undefined): Record<string, unknown> {
  if (!asset || Object.keys(asset).length === 0) return { type: '', name: '', tags: [], criticality: '', has_url: false };
  const metadata = (asset.metadata ?? {}) as Record<string, unknown>;
  const value = typeof asset.value === 'string' ? asset.value : '';
  return {
    has_url: /^https?:\/\//i.test(value) || typeof metadata.url === 'string',
    ...metadata,
    id: asset.id,
    type: asset.type,
    name: asset.name,
    value: asset.value ?? null,
    tags: asset.tags ?? [],
    criticality: asset.criticality,
    metadata,
  };
}
