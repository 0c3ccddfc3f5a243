// The pure domain, without a database: durations, conditions (CEL), pipeline documents
// (validation and normalization) and the decisions of one advance of a run.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { formatDuration, parseDuration } from '../src/domain/durations.ts';
import { nameWithSuffix } from '../src/domain/names.ts';
import {
  assetScope, evaluateCondition, expressionProblem, type Condition, type ConditionScope,
} from '../src/domain/conditions.ts';
import { findCycle, validatePipeline, type PipelineDoc } from '../src/domain/pipeline.ts';
import { AGENT_RETRIES, planAdvance, type Action, type AdvanceInput, type StepState } from '../src/domain/progression.ts';

const FULL_SECURITY_SCAN = JSON.parse(
  readFileSync(new URL('./fixtures/full-security-scan.json', import.meta.url), 'utf8'),
) as Record<string, any>;

// ---------------------------------------------------------------- durations

describe('parseDuration', () => {
  const valid: [unknown, number][] = [
    ['30m', 1800], ['2h', 7200], ['45s', 45], ['1h30m', 5400], ['1d', 86_400], ['1d2h3m4s', 93_784],
    [90, 90], ['90', 90], [' 15M ', 900], ['0h5m', 300],
  ];
  for (const [input, seconds] of valid) {
    it(`${JSON.stringify(input)} → ${seconds}`, () => assert.equal(parseDuration(input), seconds));
  }

  const invalid: unknown[] = [
    '10x', '', ' ', 0, -5, 1.5, 'm', null, undefined, '0s', '0', '-5', '1.5', '1.5h', '30 m', 'h1', '1m1h',
    NaN, Infinity, '99999999999999999999d', 2 ** 53, 1e300, true, {}, ['30m'],
  ];
  for (const input of invalid) {
    it(`${typeof input === 'string' ? JSON.stringify(input) : String(input)} is not a duration`, () => {
      assert.equal(parseDuration(input), null);
    });
  }
});

describe('durations in a pipeline document', () => {
  it('are at most 365 days (they overflowed the integer columns they are stored in, a 400 naming no field)', () => {
    const doc = (timeout: unknown, settings: Record<string, unknown> = {}) =>
      validatePipeline({ name: 'p', settings, steps: [{ id: 'a', tool: 't', timeout }] });
    assert.equal(doc('365d').ok, true);
    assert.equal(doc(31_536_000).ok, true);
    for (const timeout of ['366d', 31_536_001, '2147483647m', '9999999999d', 2 ** 31, 1e300]) {
      const checked = doc(timeout);
      assert.equal(checked.ok, false, String(timeout));
      if (!checked.ok) assert.deepEqual(checked.problems.map((p) => p.path), ['steps[0].timeout'], String(timeout));
    }
    for (const key of ['timeout', 'queue_timeout']) {
      const checked = doc('30m', { [key]: 1e300 });
      assert.equal(checked.ok, false);
      if (!checked.ok) assert.deepEqual(checked.problems.map((p) => p.path), [`settings.${key}`]);
    }
  });
});

describe('nameWithSuffix', () => {
  it('keeps a short name whole, and cuts a long one between characters so the whole is 255 characters', () => {
    assert.equal(nameWithSuffix('scan', ' (copy)'), 'scan (copy)');
    const long = `${'x'.repeat(247)}😀😀😀😀😀😀😀😀`; // 255 characters, 263 UTF-16 units
    const named = nameWithSuffix(long, ' (schedule 1)');
    assert.equal([...named].length, 255);
    assert.ok(named.isWellFormed(), 'a surrogate pair was cut');
    assert.equal(named, `${'x'.repeat(242)} (schedule 1)`);
    assert.equal([...nameWithSuffix(`${'x'.repeat(236)}😀${'y'.repeat(18)}`, ' (copy 2)')].length, 255);
    assert.equal(nameWithSuffix(`${'x'.repeat(245)}          z`, ' (copy)'), `${'x'.repeat(245)} (copy)`);
  });
});

describe('formatDuration', () => {
  const cases: [number, string][] = [
    [1800, '30m'], [7200, '2h'], [45, '45s'], [86_400, '1d'], [5400, '90m'], [90, '90s'], [3600, '1h'],
    [172_800, '2d'], [1, '1s'], [61, '61s'],
  ];
  for (const [seconds, text] of cases) {
    it(`${seconds} → ${text}`, () => assert.equal(formatDuration(seconds), text));
  }

  it('round-trips through parseDuration', () => {
    for (const seconds of [1, 59, 60, 61, 600, 3599, 3600, 5400, 86_399, 86_400, 90_000, 31_536_000]) {
      assert.equal(parseDuration(formatDuration(seconds)), seconds, `round trip of ${seconds}`);
    }
  });
});

// ---------------------------------------------------------------- conditions

const webApp = assetScope({
  id: 'a-1', type: 'web_application', name: 'webshop', value: 'https://shop.example.com',
  tags: ['production', 'pci'], criticality: 'high', metadata: { owner: 'team-a', port: 443 },
});
const server = assetScope({
  id: 'a-2', type: 'server', name: 'db-1', value: '10.0.0.5', tags: [], criticality: 'low', metadata: {},
});

function scopeOf(asset: Record<string, unknown>, extra: Partial<ConditionScope> = {}): ConditionScope {
  return {
    asset,
    steps: { sast: { status: 'completed', findings_count: 3, output: { key: 'v', severity: 'high' } } },
    context: { branch: 'main' },
    ...extra,
  };
}

const expr = (value: string): Condition => ({ type: 'expression', value });

describe('evaluateCondition', () => {
  it('always, a missing condition and null are true', () => {
    assert.deepEqual(evaluateCondition({ type: 'always' }, scopeOf(server)), { result: true });
    assert.deepEqual(evaluateCondition(null, scopeOf(server)), { result: true });
    assert.deepEqual(evaluateCondition(undefined, scopeOf(server)), { result: true });
  });

  it('never is false with a reason', () => {
    assert.deepEqual(evaluateCondition({ type: 'never' }, scopeOf(webApp)), {
      result: false, reason: "Condition not met: condition is 'never'",
    });
  });

  it('asset_type with one type', () => {
    assert.deepEqual(evaluateCondition({ type: 'asset_type', value: 'server' }, scopeOf(server)), { result: true });
    // seed 001's own example of a skip reason
    assert.deepEqual(evaluateCondition({ type: 'asset_type', value: 'server' }, scopeOf(webApp)), {
      result: false, reason: "Condition not met: asset.type != 'server'",
    });
  });

  it('asset_type with a list of types', () => {
    const c: Condition = { type: 'asset_type', value: ['server', 'network'] };
    assert.deepEqual(evaluateCondition(c, scopeOf(server)), { result: true });
    assert.deepEqual(evaluateCondition(c, scopeOf(webApp)), {
      result: false, reason: "Condition not met: asset.type not in ['server', 'network']",
    });
    assert.deepEqual(evaluateCondition({ type: 'asset_type', value: ['web_application'] }, scopeOf(webApp)), { result: true });
  });

  describe('expressions (seed 001 "Condition Expressions")', () => {
    const cases: [string, boolean, boolean][] = [
      // [expression, on the web application, on the server]
      ["asset.type == 'web_application' && asset.has_url", true, false],
      ["asset.type in ['server', 'network']", false, true],
      ["asset.type == 'web_application' && asset.tags.contains('production')", true, false],
      ["asset.tags.contains('pci')", true, false],
      ["'production' in asset.tags", true, false],
      ['steps.sast.findings_count > 0', true, true],
      ['steps.sast.findings_count > 3', false, false],
      ['steps.sast.findings_count <= 3', true, true],
      ['steps.sast.findings_count <= 2', false, false],
      ["steps.sast.output.key == 'v'", true, true],
      ["steps.sast.output.key == 'w'", false, false],
      ["steps.sast.status == 'completed'", true, true],
      ["context.branch == 'main'", true, true],
      ["context.branch == 'develop'", false, false],
      ["asset.name.startsWith('web')", true, false],
      ["!(asset.criticality == 'low')", true, false],
      ["asset.criticality == 'critical' || asset.criticality == 'high'", true, false],
      ["asset.type == 'server' || context.branch == 'release'", false, true],
      ["asset.criticality != 'low'", true, false],
      ["asset.owner == 'team-a'", true, false],
      ['asset.port == 443', true, false],
      ['asset.has_url', true, false],
    ];
    for (const [source, onWebApp, onServer] of cases) {
      it(source, () => {
        // `asset.owner` and `asset.port` do not exist on the server: those are runtime errors there.
        const needsKey = /asset\.(owner|port)/.test(source);
        const web = evaluateCondition(expr(source), scopeOf(webApp));
        assert.equal(web.result, onWebApp, JSON.stringify(web));
        if (!onWebApp) assert.equal((web as { reason: string }).reason, `Condition not met: ${source}`);
        if (!needsKey) {
          const srv = evaluateCondition(expr(source), scopeOf(server));
          assert.equal(srv.result, onServer, JSON.stringify(srv));
          if (!onServer) assert.equal((srv as { reason: string }).reason, `Condition not met: ${source}`);
        }
      });
    }

    it('the skip reason of a false expression quotes it', () => {
      assert.deepEqual(evaluateCondition(expr("asset.type == 'web_application' && asset.has_url"), scopeOf(server)), {
        result: false, reason: "Condition not met: asset.type == 'web_application' && asset.has_url",
      });
    });

    it('a runtime error (missing key) is false, with a reason saying it could not be evaluated', () => {
      for (const source of ['asset.missing == 1', "steps.nope.status == 'completed'", "context.pr_number > 0"]) {
        const outcome = evaluateCondition(expr(source), scopeOf(server));
        assert.equal(outcome.result, false, source);
        const reason = (outcome as { reason: string }).reason;
        assert.match(reason, /could not be evaluated/, source);
        assert.ok(reason.endsWith(source), `reason names the expression: ${reason}`);
      }
    });

    it('an expression that is not a bool at runtime is not true', () => {
      const outcome = evaluateCondition(expr('context.flag'), scopeOf(server, { context: { flag: 'yes' } }));
      assert.equal(outcome.result, false);
      assert.match((outcome as { reason: string }).reason, /could not be evaluated/);
    });

    it('numbers from JSON compare as CEL ints and doubles', () => {
      const s = scopeOf(server, { context: { n: 2, x: 1.5 } });
      assert.equal(evaluateCondition(expr('context.n == 2'), s).result, true);
      assert.equal(evaluateCondition(expr('context.n > 1'), s).result, true);
      assert.equal(evaluateCondition(expr('context.x > 1.0'), s).result, true);
    });
  });

  describe('step_result', () => {
    it('checks the named step at top level: findings_count, status, output', () => {
      const s = scopeOf(webApp);
      assert.deepEqual(evaluateCondition({ type: 'step_result', step: 'sast', check: 'findings_count > 0' }, s), { result: true });
      assert.deepEqual(
        evaluateCondition({ type: 'step_result', step: 'sast', check: "status == 'completed' && output.severity == 'high'" }, s),
        { result: true },
      );
      assert.deepEqual(evaluateCondition({ type: 'step_result', step: 'sast', check: 'findings_count > 5' }, s), {
        result: false, reason: 'Condition not met: steps.sast: findings_count > 5',
      });
    });

    it('a step without a result is false with a reason naming it', () => {
      assert.deepEqual(evaluateCondition({ type: 'step_result', step: 'dast', check: 'findings_count > 0' }, scopeOf(webApp)), {
        result: false, reason: "Condition not met: step 'dast' has no result",
      });
    });

    it('a check that errors at runtime could not be evaluated', () => {
      const outcome = evaluateCondition({ type: 'step_result', step: 'sast', check: "output.missing == 'x'" }, scopeOf(webApp));
      assert.equal(outcome.result, false);
      assert.match((outcome as { reason: string }).reason, /could not be evaluated/);
    });
  });
});

describe('assetScope', () => {
  it('puts metadata keys at top level next to the asset fields', () => {
    const scope = assetScope({
      id: 'a-1', type: 'repository', name: 'repo', value: 'git@github.com:x/y.git', tags: ['t'], criticality: 'medium',
      metadata: { language: 'go', stars: 3 },
    });
    assert.equal(scope.language, 'go');
    assert.equal(scope.stars, 3);
    assert.equal(scope.type, 'repository');
    assert.deepEqual(scope.tags, ['t']);
    assert.equal(scope.criticality, 'medium');
    assert.deepEqual(scope.metadata, { language: 'go', stars: 3 });
    assert.equal(evaluateCondition(expr("asset.language == 'go' && asset.stars >= 3"), scopeOf(scope)).result, true);
  });

  it('derives has_url from an http(s) value', () => {
    for (const value of ['https://shop.example.com', 'http://10.0.0.1:8080/', 'HTTPS://EXAMPLE.COM']) {
      assert.equal(assetScope({ id: 'x', type: 'web_application', name: 'n', value, metadata: {} }).has_url, true, value);
    }
    for (const value of ['10.0.0.5', 'example.com', 'ftp://example.com', 'git@github.com:x/y.git', null]) {
      assert.equal(assetScope({ id: 'x', type: 'server', name: 'n', value, metadata: {} }).has_url, false, String(value));
    }
    // a url in the metadata counts too
    assert.equal(assetScope({ id: 'x', type: 'domain', name: 'n', value: 'example.com', metadata: { url: 'https://example.com' } }).has_url, true);
  });

  it('metadata cannot override id, type or name', () => {
    const scope = assetScope({
      id: 'real-id', type: 'server', name: 'real-name', value: '10.0.0.1', tags: ['a'], criticality: 'low',
      metadata: { id: 'evil', type: 'web_application', name: 'evil', tags: ['production'], criticality: 'critical' },
    });
    assert.equal(scope.id, 'real-id');
    assert.equal(scope.type, 'server');
    assert.equal(scope.name, 'real-name');
    assert.deepEqual(scope.tags, ['a']);
    assert.equal(scope.criticality, 'low');
    assert.equal(evaluateCondition(expr("asset.type == 'web_application'"), scopeOf(scope)).result, false);
  });

  it('a run without an asset sees empty fields, so conditions on the asset are simply false', () => {
    const scope = assetScope(null);
    assert.equal(scope.type, '');
    assert.equal(scope.has_url, false);
    assert.deepEqual(evaluateCondition(expr("asset.type == 'web_application' && asset.has_url"), scopeOf(scope)), {
      result: false, reason: "Condition not met: asset.type == 'web_application' && asset.has_url",
    });
  });
});

describe('expressionProblem', () => {
  it('accepts every expression of seed 001', () => {
    for (const source of [
      "asset.type == 'web_application' && asset.has_url",
      "asset.type in ['server', 'network']",
      "asset.type == 'web_application' && asset.tags.contains('production')",
      'steps.sast.findings_count > 0',
      "steps.sast.output.key == 'v'",
      "context.branch == 'main'",
      "asset.name.startsWith('web')",
      "!(asset.criticality == 'low')",
    ]) {
      assert.equal(expressionProblem(source), null, source);
    }
  });

  it('bad syntax does not compile', () => {
    assert.match(expressionProblem("asset.type ==")!, /does not compile/);
    assert.match(expressionProblem("asset.type == 'x")!, /does not compile/);
    assert.match(expressionProblem('(asset.type')!, /does not compile/);
  });

  it('a non-bool result is refused', () => {
    assert.match(expressionProblem('1 + 2')!, /must evaluate to a bool, not int/);
    assert.match(expressionProblem("'text'")!, /must evaluate to a bool/);
  });

  it('an unknown variable is refused', () => {
    assert.match(expressionProblem('foo.bar')!, /Unknown variable: foo/);
    assert.match(expressionProblem("foo == 'x'")!, /foo/);
  });

  it('an empty expression is refused', () => {
    assert.equal(expressionProblem(''), 'expression is empty');
    assert.equal(expressionProblem('   '), 'expression is empty');
  });

  it('step checks see the step fields at top level; plain expressions do not', () => {
    assert.equal(expressionProblem('findings_count > 0', 'step_check'), null);
    assert.equal(expressionProblem("output.severity == 'high'", 'step_check'), null);
    assert.notEqual(expressionProblem('findings_count > 0'), null);
  });
});

// ---------------------------------------------------------------- pipeline documents

describe('validatePipeline on seed 001 "Full Security Scan"', () => {
  const result = validatePipeline(structuredClone(FULL_SECURITY_SCAN));

  it('is valid', () => assert.equal(result.ok, true, JSON.stringify(result)));

  const doc = (result.ok ? result.value : null) as PipelineDoc;

  it('keeps name, description and settings', () => {
    assert.equal(doc.name, 'Full Security Scan');
    assert.equal(doc.description, 'Complete security assessment pipeline');
    assert.deepEqual(doc.tags, []);
    assert.equal(doc.settings.max_parallel_steps, 3);
    assert.equal(doc.settings.fail_fast, false);
    assert.equal(doc.settings.retry_failed_steps, 2);
    assert.deepEqual(doc.settings.notification, { on_completion: true, on_failure: true, channels: ['slack', 'email'] });
  });

  it('normalizes the triggers into typed objects', () => {
    assert.deepEqual(doc.triggers, [
      { type: 'manual' },
      { type: 'schedule', cron: '0 2 * * *' },
      { type: 'webhook', event: 'push' },
      { type: 'on_asset_discovery' },
    ]);
  });

  it('normalizes the steps: step_key, timeout_seconds, retries, dependencies, conditions', () => {
    assert.deepEqual(doc.steps.map((s) => s.step_key), ['sast', 'sca', 'secrets', 'dast', 'infra']);
    assert.deepEqual(doc.steps.map((s) => s.timeout_seconds), [1800, 900, 600, 3600, 7200]);
    assert.deepEqual(doc.steps.map((s) => s.order), [1, 2, 3, 4, 5]);
    for (const s of doc.steps) {
      assert.equal(s.max_retries, 2, `${s.step_key}: max_retries from settings.retry_failed_steps`);
      assert.equal(s.retry_delay_seconds, 60, `${s.step_key}: default retry delay`);
    }
    assert.deepEqual(doc.steps.map((s) => s.depends_on), [[], [], [], ['sast', 'sca', 'secrets'], ['sast']]);
    assert.deepEqual(doc.steps.map((s) => s.condition), [
      null, null, null,
      { type: 'expression', value: "asset.type == 'web_application' && asset.has_url" },
      { type: 'expression', value: "asset.type in ['server', 'network']" },
    ]);
    const sast = doc.steps[0];
    assert.equal(sast.name, 'Static Analysis');
    assert.equal(sast.tool, 'semgrep');
    assert.deepEqual(sast.capabilities, ['sast']);
    assert.deepEqual(sast.config, { rules: ['p/security-audit', 'p/owasp-top-ten'], severity_threshold: 'medium' });
    assert.deepEqual(doc.steps[2].config, {}, 'a step without config gets {}');
  });
});

describe('validatePipeline normalization', () => {
  it('applies defaults and alternative spellings', () => {
    const r = validatePipeline({
      name: 'defaults',
      triggers: [{ type: 'schedule', cron: '*/5 * * * *', timezone: 'Europe/Berlin' }, 'webhook'],
      settings: { queue_timeout: 3600, timeout: '90m' },
      steps: [
        { step_key: 'a', capabilities: ['sast'], timeout_seconds: 45, depends_on: ['b', 'b'], retry_delay_seconds: 5 },
        { id: 'b', tool: 'x', max_retries: 4 },
      ],
    });
    assert.ok(r.ok, JSON.stringify(r));
    const doc = r.value;
    assert.deepEqual(doc.triggers, [{ type: 'schedule', cron: '*/5 * * * *', timezone: 'Europe/Berlin' }, { type: 'webhook' }]);
    assert.equal(doc.settings.max_parallel_steps, 10);
    assert.equal(doc.settings.fail_fast, false);
    assert.equal(doc.settings.retry_failed_steps, 0);
    assert.equal(doc.settings.queue_timeout, '1h');
    assert.equal(doc.settings.timeout, '90m');
    const [a, b] = doc.steps;
    assert.deepEqual([a.step_key, a.name, a.order, a.tool, a.timeout_seconds, a.max_retries, a.retry_delay_seconds], ['a', 'a', 1, null, 45, 0, 5]);
    assert.deepEqual(a.depends_on, ['b'], 'duplicate dependencies collapse');
    assert.deepEqual([b.step_key, b.order, b.timeout_seconds, b.max_retries, b.retry_delay_seconds], ['b', 2, 1800, 4, 60]);
  });
});

describe('validatePipeline reports every problem with its path', () => {
  function problemsOf(input: unknown): { path: string; message: string }[] {
    const r = validatePipeline(input);
    assert.equal(r.ok, false, 'the document must be refused');
    return (r as { problems: { path: string; message: string }[] }).problems;
  }
  function assertProblem(problems: { path: string; message: string }[], path: string, message: RegExp) {
    assert.ok(
      problems.some((p) => p.path === path && message.test(p.message)),
      `expected a problem at ${path} matching ${message}; got ${JSON.stringify(problems, null, 1)}`,
    );
  }

  it('a document with many problems lists each of them', () => {
    const problems = problemsOf({
      name: 'bad',
      trigger: ['manual', { schedule: 'not a cron' }, { type: 'schedule', cron: '0 2 * * *', timezone: 'Mars/Olympus' }],
      steps: [
        { id: 'a', tool: 't', depends_on: ['c'] }, // 0 ─┐
        { id: 'b', tool: 't', depends_on: ['a'] }, // 1  │ cycle a → b → c → a
        { id: 'c', tool: 't', depends_on: ['b'] }, // 2 ─┘
        { id: 'd', tool: 't', depends_on: ['ghost'] }, // 3 unknown dependency
        { id: 'a', tool: 't' }, // 4 duplicate key
        { id: 'e', tool: 't', condition: { type: 'expression', value: 'asset.type ==' } }, // 5 bad expression
        { id: 'f', tool: 't', timeout: '10x' }, // 6 bad duration
        { id: 'g' }, // 7 neither tool nor capabilities
        { id: 'h', tool: 't', condition: { type: 'step_result', step: 'd', check: 'findings_count > 0' } }, // 8 not upstream
      ],
    });
    assertProblem(problems, 'trigger[1].schedule', /cron/);
    assertProblem(problems, 'trigger[2].timezone', /time zone/);
    assertProblem(problems, 'steps[0].depends_on', /cycle: a → b → c → a/);
    assertProblem(problems, 'steps[3].depends_on[0]', /unknown step 'ghost'/);
    assertProblem(problems, 'steps[4].id', /duplicate step key 'a' \(also steps\[0\]\)/);
    assertProblem(problems, 'steps[5].condition.value', /does not compile/);
    assertProblem(problems, 'steps[6].timeout', /duration/);
    assertProblem(problems, 'steps[7]', /needs a tool or capabilities/);
    // The cycle is elsewhere in the graph; the step_result problem of 'h' is independent of it.
    assertProblem(problems, 'steps[8].condition.step', /not upstream/);
  });

  it('a step_result on a step that is not upstream, or unknown', () => {
    const problems = problemsOf({
      name: 'x',
      steps: [
        { id: 'a', tool: 't' },
        { id: 'b', tool: 't', condition: { type: 'step_result', step: 'a', check: 'findings_count > 0' } },
        { id: 'c', tool: 't', depends_on: ['a'], condition: { type: 'step_result', step: 'a', check: 'findings_count > 0' } },
        { id: 'd', tool: 't', condition: { type: 'step_result', step: 'zz', check: 'findings_count > 0' } },
        { id: 'e', tool: 't', depends_on: ['c'], condition: { type: 'step_result', step: 'a', check: "status == 'completed'" } },
      ],
    });
    assertProblem(problems, 'steps[1].condition.step', /step 'a' is not upstream of 'b'/);
    assertProblem(problems, 'steps[3].condition.step', /unknown step 'zz'/);
    // c depends on a directly, e transitively: both fine.
    assert.equal(problems.filter((p) => p.path.startsWith('steps[2]') || p.path.startsWith('steps[4]')).length, 0, JSON.stringify(problems));
    assert.equal(problems.length, 2, JSON.stringify(problems));
  });

  it('bad values in conditions, settings and step fields', () => {
    const problems = problemsOf({
      name: 'x',
      settings: { max_parallel_steps: 0, queue_timeout: 'soon' },
      steps: [
        { id: 'a', tool: 't' },
        { id: 'b', tool: 't', depends_on: ['a'], condition: { type: 'step_result', step: 'a', check: '1 + 2' } },
        { id: 'c', tool: 't', condition: { type: 'expression', value: '1 + 2' } },
        { id: 'd', tool: 't', condition: { type: 'expression', value: 'foo.bar' } },
        { id: 'e', tool: 't', condition: { type: 'bogus' } },
        { id: 'f', tool: 't', timeout_seconds: 0 },
        { id: 'g', tool: 't', timeout: 0 },
        { id: 'h', tool: 't', condition: { type: 'expression', value: '' } },
        { id: 'bad key!', tool: 't' },
        { id: 'i', tool: 't', depends_on: ['i'] },
      ],
    });
    assertProblem(problems, 'settings.max_parallel_steps', /1/);
    assertProblem(problems, 'settings.queue_timeout', /duration/);
    assertProblem(problems, 'steps[1].condition.check', /must evaluate to a bool/);
    assertProblem(problems, 'steps[2].condition.value', /must evaluate to a bool, not int/);
    assertProblem(problems, 'steps[3].condition.value', /Unknown variable: foo/);
    assertProblem(problems, 'steps[4].condition.type', /one of always, never/);
    assertProblem(problems, 'steps[5].timeout_seconds', /1/);
    assertProblem(problems, 'steps[6].timeout', /duration/);
    assertProblem(problems, 'steps[7].condition.value', /empty/);
    assertProblem(problems, 'steps[8].id', /letters, digits/);
    assertProblem(problems, 'steps[9].depends_on[0]', /cannot depend on itself/);
  });

  it('a document without name or steps', () => {
    const problems = problemsOf({ steps: [] });
    assert.ok(problems.some((p) => p.path === 'name'), JSON.stringify(problems));
    assertProblem(problems, 'steps', /at least one step/);
    assert.equal(validatePipeline(null).ok, false);
    assert.equal(validatePipeline('pipeline').ok, false);
  });

  it('a step without an id', () => {
    assertProblem(problemsOf({ name: 'x', steps: [{ tool: 't' }] }), 'steps[0].id', /needs an id/);
  });

  it('each problem is reported once', () => {
    const problems = problemsOf({ name: 'x', steps: [{ id: 'a', tool: 't', depends_on: ['b'] }, { id: 'b', tool: 't', depends_on: ['a'] }] });
    const keys = problems.map((p) => `${p.path} ${p.message}`);
    assert.deepEqual(keys, [...new Set(keys)]);
    assert.equal(problems.filter((p) => /cycle/.test(p.message)).length, 1);
  });
});

describe('findCycle', () => {
  // deps: key → the keys it depends on. A cycle reads in execution order: x → y means y depends on x.
  function assertIsCycle(cycle: string[] | null, deps: Map<string, string[]>) {
    assert.ok(cycle, 'a cycle is found');
    assert.ok(cycle.length >= 2);
    assert.equal(cycle[0], cycle[cycle.length - 1], 'the path ends where it started');
    for (let i = 0; i + 1 < cycle.length; i++) {
      assert.ok(deps.get(cycle[i + 1])?.includes(cycle[i]), `${cycle[i + 1]} depends on ${cycle[i]} in ${cycle.join(' → ')}`);
    }
  }

  it('no cycle in a DAG', () => {
    assert.equal(findCycle(new Map([['a', ['b']], ['b', ['c']], ['c', []], ['d', ['a', 'c']]])), null);
    assert.equal(findCycle(new Map()), null);
    // a diamond is not a cycle
    assert.equal(findCycle(new Map([['top', []], ['l', ['top']], ['r', ['top']], ['bottom', ['l', 'r']]])), null);
  });

  it('a three-step cycle', () => {
    const deps = new Map([['a', ['c']], ['b', ['a']], ['c', ['b']]]);
    const cycle = findCycle(deps);
    assert.deepEqual(cycle, ['a', 'b', 'c', 'a']);
    assertIsCycle(cycle, deps);
  });

  it('a self dependency', () => {
    assert.deepEqual(findCycle(new Map([['a', ['a']]])), ['a', 'a']);
  });

  it('a cycle reached through a step outside it', () => {
    const deps = new Map([['x', ['y']], ['y', ['z']], ['z', ['y']]]);
    const cycle = findCycle(deps);
    assertIsCycle(cycle, deps);
    assert.ok(!cycle!.includes('x'), 'the entry step is not part of the cycle');
  });
});

// ---------------------------------------------------------------- progression

const NOW = new Date('2024-06-01T12:00:00Z');

function st(key: string, o: Partial<StepState> = {}): StepState {
  return {
    id: `id-${key}`, step_key: key, step_order: 1, status: 'pending', depends_on: [], condition: null,
    condition_evaluated: false, condition_result: null, attempt: 0, max_attempts: 1, agent_retries: 0, retry_at: null,
    retry_delay_seconds: 60, command_id: null, command_status: null, command_result: null, command_error_code: null,
    command_error_message: null, command_agent_id: null, findings_count: 0, output: {}, error_message: null, skip_reason: null, ...o,
  };
}

function plan(steps: StepState[], o: Partial<AdvanceInput> = {}): Action[] {
  return planAdvance({ settings: {}, target: {}, context: {}, steps, now: NOW, ...o });
}

const kinds = (actions: Action[]) => actions.map((a) => a.kind);
const dispatched = (actions: Action[]) =>
  actions.flatMap((a) => (a.kind === 'dispatch' ? [`${a.stepKey}#${a.attempt}`] : []));
const ofStep = (actions: Action[], key: string) => actions.filter((a) => 'stepId' in a && a.stepId === `id-${key}`);

describe('planAdvance', () => {
  it('dispatches roots lowest order first, up to max_parallel_steps', () => {
    const steps = [st('e', { step_order: 5 }), st('a', { step_order: 1 }), st('d', { step_order: 4 }), st('b', { step_order: 2 }), st('c', { step_order: 3 })];
    const actions = plan(steps, { settings: { max_parallel_steps: 3 } });
    assert.deepEqual(dispatched(actions), ['a#1', 'b#1', 'c#1']);
    assert.ok(!kinds(actions).includes('finish'));
    // equal orders: by step key
    assert.deepEqual(dispatched(plan([st('z'), st('m'), st('b')], { settings: { max_parallel_steps: 2 } })), ['b#1', 'm#1']);
  });

  it('steps already queued or running take slots', () => {
    const steps = [
      st('run', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'running' }),
      st('q', { status: 'queued', attempt: 1, command_id: 'c-2', command_status: 'pending' }),
      st('x', { step_order: 2 }), st('y', { step_order: 3 }),
    ];
    assert.deepEqual(dispatched(plan(steps, { settings: { max_parallel_steps: 3 } })), ['x#1']);
    assert.deepEqual(dispatched(plan(steps, { settings: { max_parallel_steps: 2 } })), []);
    assert.deepEqual(dispatched(plan(steps, { settings: {} })), ['x#1', 'y#1'], 'no limit without max_parallel_steps');
  });

  it('a step waits until every dependency is terminal', () => {
    const steps = [
      st('a', { status: 'completed', attempt: 1 }),
      st('b', { status: 'running', attempt: 1, command_id: 'c-b', command_status: 'running' }),
      st('c', { depends_on: ['a', 'b'] }),
    ];
    assert.deepEqual(plan(steps), []);
  });

  it('a completed command completes its step, and its dependents are dispatched with its result', () => {
    const steps = [
      st('sast', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'completed', command_agent_id: 'agent-1',
        command_result: { findings_count: 4, output: { severity: 'high' } } }),
      st('fix', { depends_on: ['sast'], step_order: 2, condition: { type: 'step_result', step: 'sast', check: 'findings_count > 0' } }),
    ];
    const actions = plan(steps);
    assert.deepEqual(actions[0], {
      kind: 'complete', stepId: 'id-sast', commandId: 'c-1', findingsCount: 4, output: { severity: 'high' }, agentId: 'agent-1',
    });
    assert.deepEqual(kinds(actions), ['complete', 'dispatch']); // dispatching records the condition as met
    const dispatch = actions[1] as Extract<Action, { kind: 'dispatch' }>;
    assert.equal(dispatch.stepKey, 'fix');
    assert.equal(dispatch.attempt, 1);
    assert.deepEqual(dispatch.steps.sast, { status: 'completed', findings_count: 4, output: { severity: 'high' } });
  });

  it('a completed last step finishes the run as completed', () => {
    const actions = plan([
      st('a', { status: 'completed', attempt: 1 }),
      st('b', { status: 'running', attempt: 1, command_id: 'c-b', command_status: 'completed', command_result: { findings_count: '2' } }),
    ]);
    assert.deepEqual(kinds(actions), ['complete', 'finish']);
    assert.equal((actions[0] as Extract<Action, { kind: 'complete' }>).findingsCount, 2);
    assert.deepEqual(actions[1], { kind: 'finish', status: 'completed', errorMessage: null });
  });

  it('a failed command with attempts left is retried after its delay', () => {
    const steps = [
      st('a', { status: 'running', attempt: 1, max_attempts: 3, retry_delay_seconds: 90, command_id: 'c-1', command_status: 'failed',
        command_error_message: 'semgrep crashed' }),
      st('b', { depends_on: ['a'] }),
    ];
    const actions = plan(steps);
    assert.deepEqual(actions, [
      { kind: 'retry', stepId: 'id-a', commandId: 'c-1', errorCode: 'agent_error', errorMessage: 'semgrep crashed', delaySeconds: 90, agentGone: false },
    ]);
  });

  it('an attempt lost with its agent is tried again at once without spending a retry, up to AGENT_RETRIES times', () => {
    for (const code of ['agent_lost', 'agent_shutdown']) {
      // No retries at all (max_attempts 1): the lost attempt is given back.
      const lost = st('a', { status: 'running', attempt: 1, max_attempts: 1, retry_delay_seconds: 90, command_id: 'c-1', command_status: 'failed',
        command_error_code: code, command_error_message: 'gone' });
      assert.deepEqual(plan([lost]), [
        { kind: 'retry', stepId: 'id-a', commandId: 'c-1', errorCode: code, errorMessage: 'gone', delaySeconds: 0, agentGone: true },
      ], code);
      // A queued step (claimed, then its agent stopped before it started) is dispatched in the same advance.
      const queued = plan([{ ...lost, status: 'queued' }]);
      assert.deepEqual(queued.map((a) => a.kind), ['retry', 'dispatch'], code);
      assert.equal((queued[1] as Extract<Action, { kind: 'dispatch' }>).attempt, 2);
      // The last free one given, a lost attempt is a failure like any other: retried while
      // the step has retries, failed when it has none.
      const spent = { ...lost, agent_retries: AGENT_RETRIES, attempt: 4, max_attempts: 4 };
      assert.deepEqual(plan([spent]).map((a) => a.kind), ['fail', 'finish'], code);
      assert.deepEqual(plan([{ ...spent, max_attempts: 5 }]), [
        { kind: 'retry', stepId: 'id-a', commandId: 'c-1', errorCode: code, errorMessage: 'gone', delaySeconds: 90, agentGone: false },
      ], code);
    }
    // Only a failure with those codes: the tool's own failure, a timeout or an expiry spends the step's retries.
    for (const o of [{ command_status: 'failed', command_error_code: 'tool_error' }, { command_status: 'failed', command_error_code: 'timeout' },
      { command_status: 'expired', command_error_code: 'agent_lost' }, { command_status: 'cancelled', command_error_code: 'agent_shutdown' }]) {
      const actions = plan([st('a', { status: 'running', attempt: 1, max_attempts: 1, command_id: 'c-1', ...o })]);
      assert.equal(actions[0].kind, 'fail', JSON.stringify(o));
    }
  });

  it('an expired command on its last attempt fails the step as timeout, and the run fails', () => {
    const actions = plan([
      st('a', { status: 'running', attempt: 3, max_attempts: 3, command_id: 'c-3', command_status: 'expired' }),
    ]);
    assert.deepEqual(actions, [
      { kind: 'fail', stepId: 'id-a', commandId: 'c-3', status: 'timeout', errorCode: 'step_timeout', errorMessage: 'the command expired' },
      { kind: 'finish', status: 'failed', errorMessage: "Step 'a' timed out: the command expired" },
    ]);
  });

  it('a cancelled command is never retried', () => {
    const actions = plan([st('a', { status: 'queued', attempt: 1, max_attempts: 3, command_id: 'c-1', command_status: 'cancelled' })]);
    assert.equal(actions[0].kind, 'fail');
    assert.equal((actions[0] as Extract<Action, { kind: 'fail' }>).status, 'cancelled');
    assert.deepEqual(actions[1], { kind: 'finish', status: 'failed', errorMessage: "Step 'a' was cancelled: the command was cancelled" });
  });

  it('an upstream failure skips the dependents, through the whole chain', () => {
    const actions = plan([
      st('a', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'failed', command_error_code: 'exit_code', command_error_message: 'exit 2' }),
      st('b', { depends_on: ['a'], step_order: 2 }),
      st('c', { depends_on: ['b'], step_order: 3 }),
      st('d', { depends_on: ['c'], step_order: 4 }),
    ]);
    assert.deepEqual(actions[0], { kind: 'fail', stepId: 'id-a', commandId: 'c-1', status: 'failed', errorCode: 'exit_code', errorMessage: 'exit 2' });
    assert.deepEqual(ofStep(actions, 'b'), [
      { kind: 'skip', stepId: 'id-b', conditionEvaluated: false, conditionResult: null, reason: "Upstream step 'a' failed" },
    ]);
    for (const key of ['c', 'd']) {
      const own = ofStep(actions, key);
      assert.deepEqual(kinds(own), ['skip'], `${key} must be skipped, not run: ${JSON.stringify(own)}`);
      assert.equal((own[0] as Extract<Action, { kind: 'skip' }>).conditionEvaluated, false);
      assert.match((own[0] as Extract<Action, { kind: 'skip' }>).reason, /^Upstream step '\w+'/);
    }
    assert.deepEqual(dispatched(actions), []);
    assert.deepEqual(actions.at(-1), { kind: 'finish', status: 'failed', errorMessage: "Step 'a' failed: exit 2" });
  });

  it('an upstream-failure skip from an earlier advance still blocks the next step', () => {
    const actions = plan([
      st('a', { status: 'failed', attempt: 1, error_message: 'exit 2' }),
      st('b', { status: 'skipped', depends_on: ['a'] }), // skipped by the previous advance: upstream failed
      st('c', { depends_on: ['b'] }),
    ]);
    assert.deepEqual(dispatched(actions), [], JSON.stringify(actions));
    assert.deepEqual(kinds(ofStep(actions, 'c')), ['skip']);
  });

  it('a step skipped by its own condition does not block its dependents', () => {
    const actions = plan([
      st('a', { status: 'completed', attempt: 1 }),
      st('b', { status: 'skipped', depends_on: ['a'], condition: { type: 'never' }, condition_evaluated: true, condition_result: false }),
      st('c', { depends_on: ['b'] }),
    ]);
    assert.deepEqual(kinds(actions), ['dispatch']);
    assert.deepEqual(dispatched(actions), ['c#1']);
  });

  it('timed-out and cancelled dependencies skip their dependents with a reason naming them', () => {
    const actions = plan([
      st('a', { status: 'timeout', attempt: 1 }),
      st('x', { status: 'cancelled' }),
      st('b', { depends_on: ['a'] }),
      st('c', { depends_on: ['x'] }),
    ]);
    assert.equal((ofStep(actions, 'b')[0] as Extract<Action, { kind: 'skip' }>).reason, "Upstream step 'a' timed out");
    assert.equal((ofStep(actions, 'c')[0] as Extract<Action, { kind: 'skip' }>).reason, "Upstream step 'x' was cancelled");
    assert.equal(actions.at(-1)!.kind, 'finish');
  });

  it('a false condition skips the step with the reason', () => {
    const actions = plan([st('infra', { condition: { type: 'asset_type', value: 'server' } })], {
      target: { id: 'a-1', type: 'web_application', name: 'shop', value: 'https://shop', tags: [], criticality: 'high', metadata: {} },
    });
    assert.deepEqual(actions, [
      { kind: 'skip', stepId: 'id-infra', conditionEvaluated: true, conditionResult: false, reason: "Condition not met: asset.type != 'server'" },
      { kind: 'finish', status: 'completed', errorMessage: null },
    ]);
  });

  it('expression conditions see the asset, the context and the upstream steps', () => {
    const actions = plan([
      st('sast', { status: 'completed', attempt: 1, findings_count: 2, output: { lang: 'go' } }),
      st('x', { depends_on: ['sast'], condition: expr("asset.has_url && context.branch == 'main' && steps.sast.output.lang == 'go' && steps.sast.findings_count == 2") }),
    ], {
      target: { id: 'a-1', type: 'web_application', name: 'shop', value: 'https://shop.example.com', tags: [], criticality: 'high', metadata: {} },
      context: { branch: 'main' },
    });
    assert.deepEqual(dispatched(actions), ['x#1'], JSON.stringify(actions));
  });

  it('fail_fast: a final failure ends the run while other steps are still active', () => {
    const actions = plan([
      st('a', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'failed', command_error_message: 'boom' }),
      st('b', { status: 'running', attempt: 1, command_id: 'c-2', command_status: 'running' }),
      st('c', { step_order: 3 }),
    ], { settings: { fail_fast: true, max_parallel_steps: 5 } });
    assert.deepEqual(kinds(actions), ['fail', 'fail_fast']);
    assert.deepEqual(actions[1], { kind: 'fail_fast', errorMessage: "Step 'a' failed: boom (fail_fast)" });
  });

  it('fail_fast does not fire on a failure that will be retried', () => {
    const actions = plan([
      st('a', { status: 'running', attempt: 1, max_attempts: 2, command_id: 'c-1', command_status: 'failed' }),
      st('b', { step_order: 2 }),
    ], { settings: { fail_fast: true } });
    assert.deepEqual(kinds(actions), ['retry', 'dispatch']);
  });

  it('without fail_fast, other branches continue after a failure', () => {
    const actions = plan([
      st('a', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'failed' }),
      st('b', { status: 'completed', attempt: 1 }),
      st('c', { depends_on: ['b'] }),
    ], { settings: { fail_fast: false } });
    assert.deepEqual(kinds(actions), ['fail', 'dispatch']);
    assert.deepEqual(dispatched(actions), ['c#1']);
  });

  it('all steps terminal: completed with skips, failed with any failure', () => {
    assert.deepEqual(plan([st('a', { status: 'completed' }), st('b', { status: 'skipped' })]), [
      { kind: 'finish', status: 'completed', errorMessage: null },
    ]);
    assert.deepEqual(plan([st('a', { status: 'completed' }), st('b', { status: 'failed', error_message: 'exit 1' })]), [
      { kind: 'finish', status: 'failed', errorMessage: "Step 'b' failed: exit 1" },
    ]);
    assert.deepEqual(plan([st('a', { status: 'timeout' })]), [{ kind: 'finish', status: 'failed', errorMessage: "Step 'a' timed out" }]);
  });

  it('a retry whose time has come is dispatched with the next attempt; one not yet due waits', () => {
    const due = st('a', { status: 'queued', attempt: 1, max_attempts: 3, retry_at: new Date(NOW.getTime() - 1000), command_id: 'c-1', command_status: 'failed' });
    const exact = st('b', { status: 'queued', attempt: 2, max_attempts: 3, retry_at: new Date(NOW), command_id: 'c-2', command_status: 'expired' });
    const later = st('c', { status: 'queued', attempt: 1, max_attempts: 3, retry_at: new Date(NOW.getTime() + 1000), command_id: 'c-3', command_status: 'failed' });
    const actions = plan([due, exact, later]);
    assert.deepEqual(dispatched(actions), ['a#2', 'b#3']);
    assert.deepEqual(kinds(actions), ['dispatch', 'dispatch'], 'the old failed commands are not applied again');
  });

  it('a condition is evaluated once: a step that met it waits for a slot without re-evaluating', () => {
    // 'never' would skip the step if it were evaluated again.
    const waiting = st('w', { step_order: 2, condition: { type: 'never' }, condition_evaluated: true, condition_result: true });
    const busy = st('busy', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'running' });
    assert.deepEqual(plan([busy, waiting], { settings: { max_parallel_steps: 1 } }), []);
    // a slot frees up: dispatched, still without a second evaluation
    const done = st('busy', { status: 'completed', attempt: 1 });
    assert.deepEqual(kinds(plan([done, { ...waiting }], { settings: { max_parallel_steps: 1 } })), ['dispatch']);
  });

  it('a condition met while no slot is free is recorded, and the step is not dispatched', () => {
    const actions = plan([
      st('busy', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'running' }),
      st('w', { step_order: 2, condition: { type: 'always' } }),
    ], { settings: { max_parallel_steps: 1 } });
    assert.deepEqual(actions, [{ kind: 'condition_met', stepId: 'id-w' }]);
  });

  it('a dispatch in the same advance as a completion uses the freed slot', () => {
    const actions = plan([
      st('a', { status: 'running', attempt: 1, command_id: 'c-1', command_status: 'completed', command_result: {} }),
      st('b', { step_order: 2 }),
    ], { settings: { max_parallel_steps: 1 } });
    assert.deepEqual(kinds(actions), ['complete', 'dispatch']); // dispatching records the condition as met
  });
});
