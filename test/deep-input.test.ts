// Bounded bad input (issue 7, part 4): JSON nested deeper than 64 levels or a free-form
// field over 256 KiB is a 400 naming the field, found before anything recurses; nothing
// that walks request data recurses as deep as the data is. The checker's own cases first,
// then the walkers after it, then every endpoint with a free-form field, on the real app.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  FULL_REPORT_MAX_VALUES, MAX_FREE_FORM_BYTES, MAX_JSON_DEPTH, canonicalJson, freeFormProblem, hasMoreValuesThan, nestingProblem,
  unstorable, validationConfig,
} from '../src/domain/json.ts';
import { validatePipeline } from '../src/domain/pipeline.ts';
import { expressionProblem, MAX_EXPRESSION_LENGTH } from '../src/domain/conditions.ts';
import { filterExpressionProblem } from '../src/domain/scans.ts';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, startRun, step, type Tenant } from './support/fixtures.ts';

const arrays = (n: number, inner = '') => `${'['.repeat(n)}${inner}${']'.repeat(n)}`;
const objects = (n: number, key = 'a', inner = '1') => `${`{${JSON.stringify(key)}:`.repeat(n)}${inner}${'}'.repeat(n)}`;
/** A value nested n levels without JSON.parse (which is how walkers see parsed bodies). */
function nestedArrays(n: number): unknown {
  let v: unknown = [];
  for (let i = 1; i < n; i++) v = [v];
  return v;
}

describe('nestingProblem: the scan of the raw text', () => {
  it('64 levels pass and 65 fail, for arrays and for objects, with the path to the 65th', () => {
    assert.equal(MAX_JSON_DEPTH, 64);
    assert.equal(nestingProblem(arrays(64)), null);
    assert.equal(nestingProblem(objects(64)), null);
    assert.equal(nestingProblem(arrays(64, '1, "x", 2')), null);
    const a = nestingProblem(arrays(65));
    assert.equal(a?.path, '[0][0][0][0][0]…');
    assert.match(a!.message, /nested deeper than 64 levels/);
    const o = nestingProblem(objects(65));
    assert.equal(o?.path, 'a.a.a.a.a…');
    assert.match(o!.message, /nested deeper than 64 levels/);
    // 64 levels end at the 64th container whatever it holds; a 65th inside it fails.
    assert.equal(nestingProblem(objects(63, 'a', '[]')), null);
    assert.notEqual(nestingProblem(objects(64, 'a', '[]')), null);
  });

  it('names the free-form field of a body: the body itself is the first level', () => {
    const body = (depth: number) => `{"type": "server", "name": "x", "metadata": ${objects(depth, 'b')}}`;
    assert.equal(nestingProblem(body(63)), null);
    assert.deepEqual(nestingProblem(body(64)), {
      path: 'metadata.b.b.b.b…', message: 'is nested deeper than 64 levels of objects and arrays (counting the body itself)',
    });
    // The field comes after other members, nested objects that closed, and array elements.
    const later = `{"a": {"x": [1, {"y": 2}]}, "b": "s", "steps": [{"id": "s0"}, {"id": "s1", "config": ${arrays(70)}}]}`;
    assert.equal(nestingProblem(later)?.path, 'steps[1].config[0][0]…');
    const mixed = `{"a": [{"b": [{"c": ${arrays(61)}}]}]}`;
    assert.equal(nestingProblem(mixed)?.path, 'a[0].b[0].c…');
  });

  it('brackets inside strings and keys do not count; escaped quotes and backslashes do not end strings', () => {
    const brackets = '['.repeat(1000) + '{'.repeat(1000);
    assert.equal(nestingProblem(JSON.stringify({ a: brackets, [brackets]: brackets })), null);
    // An escaped quote followed by brackets stays inside the string...
    assert.equal(nestingProblem(`{"a": "\\"${'['.repeat(100)}\\""}`), null);
    assert.equal(nestingProblem(JSON.stringify({ a: `"${'['.repeat(100)}"`, b: '\\' })), null);
    // ...and an escaped backslash ends with the string, so the brackets after it count.
    assert.equal(nestingProblem(`{"a": "\\\\", "b": ${arrays(70)}}`)?.path, 'b[0][0][0][0]…');
    assert.equal(nestingProblem(`{"a\\"b": ${arrays(70)}}`)?.path, 'a"b[0][0][0][0]…');
    assert.equal(nestingProblem(`{"\\u0041\\n": ${arrays(70)}}`)?.path, 'A\n[0][0][0][0]…');
  });

  it('__proto__ keys are keys like any other', () => {
    assert.equal(nestingProblem(objects(65, '__proto__'))?.path, '__proto__.__proto__.__proto__.__proto__.__proto__…');
    assert.equal(nestingProblem(`{"__proto__": {"constructor": ${arrays(3)}}}`), null);
  });

  it('long keys are cut in the path; malformed text is left to JSON.parse', () => {
    const key = 'k'.repeat(5000);
    const p = nestingProblem(`{${JSON.stringify(key)}: ${arrays(70)}}`);
    assert.ok(p && p.path.length < 200, p?.path);
    assert.ok(p.path.startsWith('k'.repeat(100)));
    for (const malformed of [']]]]', '}', '{"a": [}', '"unterminated [[[[', '{"a": "\\', '']) {
      assert.equal(nestingProblem(malformed), null, malformed);
    }
    // Malformed and too deep: refused as too deep, before JSON.parse sees it.
    assert.notEqual(nestingProblem('['.repeat(100_000)), null);
  });

  it('scans a 1 MiB body of "[" in one pass, without recursion', () => {
    const text = '['.repeat(1024 * 1024);
    const started = performance.now();
    assert.equal(nestingProblem(text)?.path, '[0][0][0][0][0]…');
    const wide = `{"a": [${Array(200_000).fill('[1]').join(',')}]}`;
    assert.equal(nestingProblem(wide), null);
    assert.ok(performance.now() - started < 2_000, `took ${performance.now() - started}ms`);
  });
});

describe('the walkers after the scan never recurse', () => {
  it('unstorable: NUL, numbers out of range, nesting, with their paths; 100,000 levels answer instead of overflowing', () => {
    assert.equal(unstorable({ a: [1, 'x', { b: null }] }), null);
    assert.deepEqual(unstorable({ a: [1, { b: 'x\u0000' }] }), { path: 'a[1].b', message: 'must not contain NUL (\\u0000) characters' });
    assert.deepEqual(unstorable({ a: { 'k\u0000': 1 } }), { path: 'a.k\\u0000', message: 'keys must not contain NUL (\\u0000) characters' });
    assert.deepEqual(unstorable({ n: [Infinity] }), { path: 'n[0]', message: 'is a number out of range' });
    assert.deepEqual(unstorable('\u0000'), { path: '(body)', message: 'must not contain NUL (\\u0000) characters' });
    // A lone surrogate (JSON text may escape one) has no UTF-8: jsonb refuses it, text stores U+FFFD.
    const lone = 'must not contain a lone UTF-16 surrogate (\\ud800-\\udfff outside a pair), which has no UTF-8 form';
    assert.deepEqual(unstorable(JSON.parse('{"a": ["x\\ud800"]}')), { path: 'a[0]', message: lone });
    assert.deepEqual(unstorable(JSON.parse('{"a": {"\\udc00": 1}}')), { path: 'a.\\udc00', message: `keys ${lone}` });
    assert.equal(unstorable(JSON.parse('{"\\ud83d\\ude00": "\\ud83d\\ude00"}')), null);
    const parsed = JSON.parse('{"__proto__": {"x": "\\u0000"}}') as Record<string, unknown>;
    assert.equal(unstorable(parsed)?.path, '__proto__.x');
    assert.equal(unstorable(nestedArrays(64)), null);
    assert.equal(unstorable(nestedArrays(65))?.path, '[0][0][0][0][0]…');
    assert.match(unstorable(nestedArrays(100_000))!.message, /nested deeper than 64 levels/);
    assert.match(unstorable({ metadata: nestedArrays(100_000) })!.path, /^metadata\[0\]\[0\]\[0\]\[0\]…$/);
  });

  it('freeFormProblem: 64 levels and 256 KiB of JSON pass; one more fails', () => {
    assert.equal(MAX_FREE_FORM_BYTES, 256 * 1024);
    assert.equal(freeFormProblem(nestedArrays(64)), null);
    assert.match(freeFormProblem(nestedArrays(65))!, /nested deeper than 64 levels/);
    assert.match(freeFormProblem(nestedArrays(1_000_000))!, /nested deeper than 64 levels/);
    // {"k":"…"}: 2 braces, 4 for the key's quotes, colon and comma, 1 for the key, 2 quotes.
    const filler = (n: number) => ({ k: 'x'.repeat(n) });
    const fits = MAX_FREE_FORM_BYTES - 2 - 5 - 2;
    assert.equal(freeFormProblem(filler(fits)), null);
    assert.equal(freeFormProblem(filler(fits + 1)), 'is larger than 256 KiB of JSON');
    assert.equal(freeFormProblem(Array(100_000).fill(12)), 'is larger than 256 KiB of JSON');
    assert.equal(freeFormProblem(Array(80_000).fill(1)), null);
    assert.equal(freeFormProblem(JSON.parse('{"__proto__": {"a": 1}}')), null);
  });

  it('canonicalJson: the text JSON.stringify gives with sorted keys; 100,000 levels do not overflow', () => {
    const sorted = (value: unknown) =>
      JSON.stringify(value, (_k, v) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
    const samples: unknown[] = [
      { b: 1, a: [3, { d: null, c: 'x"\\\u2028\ud800' }], e: undefined, f: () => 1, g: new Date(0) },
      [undefined, () => 1, Symbol('s'), NaN, -0, 1e21, true, '', {}],
      JSON.parse('{"__proto__": {"z": 1, "y": [2]}, "a": 0}'),
      'text', 42, null, { nested: { deeper: { deepest: [[[]]] } } },
    ];
    for (const s of samples) assert.equal(canonicalJson(s), sorted(s));
    assert.equal(canonicalJson({ b: 1, a: 2 }), canonicalJson({ a: 2, b: 1 }));
    assert.equal(canonicalJson(nestedArrays(100_000)), arrays(100_000));
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.throws(() => canonicalJson(cyclic), TypeError);
  });

  it('validationConfig: a body with more than 10,000 values is checked up to its first problem', () => {
    assert.equal(FULL_REPORT_MAX_VALUES, 10_000);
    assert.equal(hasMoreValuesThan({ a: Array(9_998).fill(0) }, FULL_REPORT_MAX_VALUES), false); // 10,000 with the object and array
    assert.equal(hasMoreValuesThan({ a: Array(9_999).fill(0) }, FULL_REPORT_MAX_VALUES), true);
    assert.equal(validationConfig({ a: 1 }), undefined);
    assert.deepEqual(validationConfig({ tags: Array(250_000).fill(1) }), { abortEarly: true });
  });
});

describe('pipelines and expressions that would recurse as deep as the input', () => {
  it('20,000 chained steps (a 1 MiB body) are refused for their number, not a stack overflow', () => {
    const steps = Array.from({ length: 20_000 }, (_, i) => ({ id: `s${i}`, tool: 't', ...(i ? { depends_on: [`s${i - 1}`] } : {}) }));
    const started = performance.now();
    const checked = validatePipeline({ name: 'chain', steps });
    assert.equal(checked.ok, false);
    assert.deepEqual(checked.ok ? [] : checked.problems.map((p) => p.path), ['steps']);
    assert.ok(performance.now() - started < 1_000);
    // 200 chained steps are fine.
    assert.equal(validatePipeline({ name: 'chain', steps: steps.slice(0, 200) }).ok, true);
  });

  it('a dependency repeated 250,000 times is one dependency', () => {
    const checked = validatePipeline({
      name: 'repeats',
      steps: [
        { id: 'a', tool: 't' },
        { id: 'b', tool: 't', depends_on: Array(250_000).fill('a') },
        { id: 'c', tool: 't', depends_on: ['b'], condition: { type: 'step_result', step: 'a', check: 'status == "completed"' } },
      ],
    });
    assert.equal(checked.ok, true, JSON.stringify(checked.ok ? null : checked.problems));
    assert.deepEqual(checked.ok && checked.value.steps[1].depends_on, ['a']);
  });

  it('250,000 wrong capabilities are one problem, not 250,000', () => {
    const checked = validatePipeline({ name: 'caps', steps: [{ id: 'a', capabilities: Array(250_000).fill(1) }] });
    assert.equal(checked.ok, false);
    assert.ok(!checked.ok && checked.problems.length <= 3, JSON.stringify(!checked.ok && checked.problems.slice(0, 5)));
  });

  it(`expressions longer than ${MAX_EXPRESSION_LENGTH} characters are refused; long operator chains below it compile`, () => {
    assert.equal(MAX_EXPRESSION_LENGTH, 2048);
    assert.match(expressionProblem(`${'!'.repeat(20_000)}true`)!, /longer than 2048 characters/);
    assert.match(filterExpressionProblem(`${'!'.repeat(20_000)}true`)!, /longer than 2048 characters/);
    assert.equal(expressionProblem(`${'!'.repeat(2044)}true`), null);
    assert.equal(expressionProblem(`${Array(1020).fill('1').join('+')} > 0`), null);
  });
});

// ---- on the real app: every free-form field, answered 400 naming it, nothing written ----

const TABLES = ['tenants', 'api_tokens', 'assets', 'agents', 'pipeline_versions', 'pipeline_steps', 'pipeline_runs', 'step_runs', 'commands', 'scans', 'events'];

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let assetId: string;
let pipelineId: string;
let scanId: string;
let commandId: string;

async function snapshot(): Promise<string> {
  const parts = TABLES.map((table) => `(SELECT coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM ${table} x)`);
  const { rows } = await h.pool.query<{ s: string }>(`SELECT concat_ws(E'\\n--\\n', ${parts.join(', ')}) AS s`);
  return rows[0].s;
}

type Case = { method: string; path: string; as: 'admin' | 'tenant' | 'agent'; raw: string; field: RegExp; message: RegExp };

async function refusals(cases: Case[]): Promise<string[]> {
  const failures: string[] = [];
  for (const c of cases) {
    await h.settle();
    const before = await snapshot();
    const auth = c.as === 'admin' ? { token: ADMIN_TOKEN } : c.as === 'tenant' ? { token: t.token } : { apiKey: agent.apiKey };
    const res = await h.request(c.method, c.path, { ...auth, raw: c.raw });
    const problems: string[] = [];
    if (res.status !== 400) problems.push(`status ${res.status}`);
    const details = (res.body as any)?.error?.details;
    if (!Array.isArray(details) || !details.some((d: any) => c.field.test(d.path) && c.message.test(d.message))) {
      problems.push(`no detail with a path like ${c.field} and a message like ${c.message}`);
    }
    await h.settle();
    if ((await snapshot()) !== before) problems.push('the database changed');
    if (problems.length) failures.push(`${c.method} ${c.path} ${c.raw.slice(0, 80)}…: ${problems.join('; ')} — ${JSON.stringify(res.body).slice(0, 300)}`);
  }
  return failures;
}

before(async () => {
  h = await startHarness();
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['tool-x'], max_concurrent_jobs: 50 });
  assetId = (await createAsset(h, t, { type: 'server', name: 'srv' })).id;
  pipelineId = (await createPipeline(h, t, { name: 'single', steps: [step('x', { tool: 'tool-x' })] })).id;
  const scan = await h.request('POST', '/api/v1/scans', {
    token: t.token, body: { name: 'manual', pipeline_id: pipelineId, targets: { asset_id: assetId }, schedule_type: 'manual' },
  });
  assert.equal(scan.status, 201, JSON.stringify(scan.body));
  scanId = scan.body.id;
  await startRun(h, t, pipelineId, { asset_id: assetId });
  await h.settle();
  const [cmd] = await agent.poll({ limit: 1 });
  assert.ok(cmd, 'a command to complete');
  assert.equal((await agent.ack(cmd.id)).status, 200);
  assert.equal((await agent.start(cmd.id)).status, 200);
  commandId = cmd.id;
});
after(() => h?.close());

/**
 * Every free-form field we know of, as [method, path, who, body with the value in it, field
 * path, whether it is free-form (kept) rather than a field the endpoint ignores].
 */
function fields(): [string, string, Case['as'], (value: string) => string, string, boolean?][] {
  const p = `/api/v1/pipelines/${pipelineId}`;
  const cmd = `/api/v1/agent/commands/${commandId}/complete`;
  return [
    ['POST', '/api/v1/assets', 'tenant', (x) => `{"type": "server", "name": "deep", "metadata": ${x}}`, 'metadata'],
    ['PUT', `/api/v1/assets/${assetId}`, 'tenant', (x) => `{"metadata": ${x}}`, 'metadata'],
    ['POST', '/api/v1/agents', 'tenant', (x) => `{"name": "deep", "tools": ["t"], "labels": ${x}}`, 'labels'],
    ['POST', '/api/v1/pipelines', 'tenant', (x) => `{"name": "deep", "steps": [{"id": "a", "tool": "t", "config": ${x}}]}`, 'steps[0].config'],
    ['PUT', p, 'tenant', (x) => `{"name": "single", "steps": [{"id": "x", "tool": "tool-x"}], "settings": {"notification": ${x}}}`, 'settings.notification'],
    ['POST', `${p}/steps`, 'tenant', (x) => `{"id": "deep", "tool": "t", "config": ${x}}`, 'config'],
    ['POST', `${p}/run`, 'tenant', (x) => `{"context": ${x}}`, 'context'],
    ['POST', '/api/v1/scans', 'tenant', (x) => `{"name": "deep", "pipeline_id": "${pipelineId}", "targets": {"asset_id": "${assetId}"}, "schedule_type": "manual", "context": ${x}}`, 'context'],
    ['POST', `/api/v1/scans/${scanId}/trigger`, 'tenant', (x) => `{"context": ${x}}`, 'context'],
    ['POST', `/api/v1/webhooks/${pipelineId}`, 'tenant', (x) => `{"context": ${x}}`, 'context'],
    ['POST', '/api/v1/agent/heartbeat', 'agent', (x) => `{"hostname": "h", "extra": ${x}}`, 'extra'],
    ['POST', cmd, 'agent', (x) => `{"findings_count": 1, "output": ${x}}`, 'output'],
    ['POST', cmd, 'agent', (x) => `{"result": {"findings_count": 1, "output": ${x}}}`, 'result.output'],
    ['POST', cmd, 'agent', (x) => `{"findings_count": 1, "scan_id": ${x}}`, 'scan_id'],
    ['POST', '/api/v1/tenants', 'admin', (x) => `{"name": "deep", "pad": ${x}}`, 'pad', false],
  ];
}

const escape = (s: string) => s.replace(/[.[\]]/g, (c) => `\\${c}`);

describe('every endpoint with a free-form field', () => {
  it('JSON nested 5,000 levels (objects or arrays) is a 400 naming the field, and changes nothing', async () => {
    const cases: Case[] = [];
    for (const [method, path, as, body, field] of fields()) {
      const deepMessage = /nested deeper than 64 levels/;
      cases.push({ method, path, as, raw: body(objects(5_000, 'k')), field: new RegExp(`^${escape(field)}\\.k\\.k`), message: deepMessage });
      cases.push({ method, path, as, raw: body(`{"list": ${arrays(5_000)}}`), field: new RegExp(`^${escape(field)}\\.list\\[0\\]`), message: deepMessage });
    }
    assert.deepEqual(await refusals(cases), []);
  });

  it('a body of 1 MiB of "[" in a free-form field is a 400 too', async () => {
    const n = 1024 * 1024 / 2 - 64;
    const cases = fields().slice(0, 4).map(([method, path, as, body, field]): Case => ({
      method, path, as, raw: body(arrays(n)), field: new RegExp(`^${escape(field)}\\[0\\]`), message: /nested deeper than 64 levels/,
    }));
    for (const c of cases) assert.ok(c.raw.length > 1_000_000 && c.raw.length <= 1024 * 1024, String(c.raw.length));
    assert.deepEqual(await refusals(cases), []);
  });

  it('a free-form field over 256 KiB is a 400 naming the field, and changes nothing', async () => {
    const big = JSON.stringify({ blob: 'x'.repeat(MAX_FREE_FORM_BYTES) });
    const cases = fields().filter(([, , , , , freeForm]) => freeForm !== false).map(([method, path, as, body, field]): Case => ({
      method, path, as, raw: body(big), field: new RegExp(`^${escape(field)}$`), message: /larger than 256 KiB/,
    }));
    // The fields of a completion that make its output (no `output` given), together.
    const half = JSON.stringify('y'.repeat(200 * 1024));
    cases.push({
      method: 'POST', path: `/api/v1/agent/commands/${commandId}/complete`, as: 'agent',
      raw: `{"findings_count": 1, "a": ${half}, "b": ${half}}`, field: /^\(body\)$/, message: /output.*larger than 256 KiB/,
    });
    assert.deepEqual(await refusals(cases), []);
  });

  it('64 levels in all, counting the body, are accepted', async () => {
    const res = await h.request('POST', '/api/v1/assets', {
      token: t.token, raw: `{"type": "server", "name": "deep-ok", "metadata": ${objects(62, 'k', '[1]')}}`,
    });
    assert.equal(res.status, 201, JSON.stringify(res.body).slice(0, 300));
    const stored = await h.request('GET', `/api/v1/assets/${res.body.id}`, { token: t.token });
    assert.equal(JSON.stringify(stored.body.metadata), objects(62, 'k', '[1]').replace(/ /g, ''));
    const refused = await h.request('POST', '/api/v1/assets', {
      token: t.token, raw: `{"type": "server", "name": "deep-no", "metadata": ${objects(63, 'k', '[1]')}}`,
    });
    assert.equal(refused.status, 400);
    assert.match(refused.body.error.details[0].path, /^metadata\.k\.k\.k\.k…$/);
  });

  it('a pipeline of 20,000 chained steps and 250,000 wrong tags are 400s, not 500s', async () => {
    const steps = Array.from({ length: 20_000 }, (_, i) => ({ id: `s${i}`, tool: 't', ...(i ? { depends_on: [`s${i - 1}`] } : {}) }));
    const chain = await h.request('POST', '/api/v1/pipelines', { token: t.token, body: { name: 'chain', steps } });
    assert.equal(chain.status, 400, JSON.stringify(chain.body).slice(0, 300));
    assert.deepEqual(chain.body.error.details.map((d: any) => d.path), ['steps']);
    const tags = await h.request('POST', '/api/v1/assets', { token: t.token, body: { type: 'server', name: 'tags', tags: Array(250_000).fill(1) } });
    assert.equal(tags.status, 400, JSON.stringify(tags.body).slice(0, 300));
    assert.ok(tags.body.error.details.length < 5, `${tags.body.error.details.length} details`);
    assert.match(tags.body.error.details[0].path, /^tags/);
  });
});
