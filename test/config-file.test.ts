// The config file: pipelines (seed 001's YAML verbatim) and scans per tenant, applied
// idempotently, all or nothing, with problems naming file, line and path; what it manages
// is marked so and the API refuses to change it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startHarness, ADMIN_TOKEN, type Harness } from './support/harness.ts';
import { step } from './support/fixtures.ts';
import { applyConfigFile, ConfigFileError } from '../src/config-file/index.ts';
import { parseConfig } from '../src/config-file/parse.ts';

const EXAMPLE = new URL('./fixtures/scanflow.example.yaml', import.meta.url);
let h: Harness;
let dir: string;

before(async () => {
  h = await startHarness();
  dir = await mkdtemp(path.join(tmpdir(), 'scanflow-config-'));
});
after(() => h.close());

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}

/** A token for a tenant the config file created (the admin makes one). */
async function tokenFor(name: string): Promise<string> {
  const { rows } = await h.pool.query<{ id: string }>('SELECT id FROM tenants WHERE name = $1', [name]);
  const res = await h.request('POST', `/api/v1/tenants/${rows[0].id}/tokens`, { token: ADMIN_TOKEN, body: {} });
  assert.equal(res.status, 201);
  return res.body.token;
}

describe('applying the config file', () => {
  it('the example applies, and applying it again changes nothing', async () => {
    const first = await applyConfigFile(h.pool, EXAMPLE.pathname);
    assert.deepEqual(first.created, [
      'tenant example', 'pipeline example/Full Security Scan',
      'scan example/Nightly production web applications', 'scan example/Weekly critical repositories',
    ]);
    assert.deepEqual([first.updated, first.removed], [[], []]);
    const second = await applyConfigFile(h.pool, EXAMPLE.pathname);
    assert.deepEqual([second.created, second.updated, second.removed, second.unchanged], [[], [], [], 3]);

    const token = await tokenFor('example');
    const scans = (await h.request('GET', '/api/v1/scans', { token })).body.items as Record<string, any>[];
    const nightly = scans.find((s) => s.name === 'Nightly production web applications')!;
    assert.equal(nightly.managed_by, 'config');
    assert.equal(nightly.cron_expression, '0 2 * * *');
    assert.equal(nightly.timezone, 'Europe/Berlin');
    assert.deepEqual(nightly.targets, { asset_filter: { type: ['web_application'], tags: ['production'] } });
    // 02:00 in Berlin is 01:00 or 00:00 UTC, depending on the season.
    assert.match(nightly.next_run_at, /T0[01]:00:00\.000Z$/);
    const weekly = scans.find((s) => s.name === 'Weekly critical repositories')!;
    assert.equal(weekly.schedule_type, 'weekly');
    assert.equal(weekly.cron_expression, '0 0 * * 1');
    // The pipeline's own `schedule: "0 2 * * *"` trigger is a scan of the pipeline.
    assert.ok(scans.some((s) => s.managed_by === 'pipeline-trigger' && s.cron_expression === '0 2 * * *'));
    const pipelines = (await h.request('GET', '/api/v1/pipelines', { token })).body.items as Record<string, any>[];
    assert.equal(pipelines.length, 1);
    assert.equal(pipelines[0].managed_by, 'config');
    assert.equal(pipelines[0].version, 1);
  });

  it('the API refuses to change what the file manages, with a clear message; running it is fine', async () => {
    const token = await tokenFor('example');
    const pipeline = (await h.request('GET', '/api/v1/pipelines', { token })).body.items[0];
    const scan = ((await h.request('GET', '/api/v1/scans', { token })).body.items as Record<string, any>[]).find((s) => s.managed_by === 'config')!;
    for (const [method, p, body] of [
      ['PUT', `/api/v1/pipelines/${pipeline.id}`, { name: 'x', steps: [step('a')] }],
      ['DELETE', `/api/v1/pipelines/${pipeline.id}`, undefined],
      ['POST', `/api/v1/pipelines/${pipeline.id}/steps`, step('extra')],
      ['PUT', `/api/v1/pipelines/${pipeline.id}/steps/sast`, { timeout: '5m' }],
      ['DELETE', `/api/v1/pipelines/${pipeline.id}/steps/infra`, undefined],
      ['POST', `/api/v1/pipelines/${pipeline.id}/steps/reorder`, { order: ['sast', 'sca', 'secrets', 'dast', 'infra'] }],
      ['PUT', `/api/v1/scans/${scan.id}`, { status: 'paused' }],
      ['DELETE', `/api/v1/scans/${scan.id}`, undefined],
    ] as const) {
      const res = await h.request(method, p, { token, body });
      assert.equal(res.status, 409, `${method} ${p}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'managed_by_config');
      assert.match(res.body.error.message, /config file/);
    }
    assert.equal((await h.request('POST', `/api/v1/pipelines/${pipeline.id}/run`, { token, body: {} })).status, 201);
    assert.equal((await h.request('POST', `/api/v1/scans/${scan.id}/trigger`, { token, body: {} })).status, 201);
    assert.equal((await h.request('POST', `/api/v1/pipelines/${pipeline.id}/clone`, { token, body: {} })).status, 201);
  });

  it('a changed pipeline gets a new version; a removed scan or pipeline is removed', async () => {
    const text = readFileSync(EXAMPLE, 'utf8');
    const changed = await file('changed.yaml', text.replace('timeout: "30m"', 'timeout: "45m"'));
    const r1 = await applyConfigFile(h.pool, changed);
    assert.deepEqual(r1.updated, ['pipeline example/Full Security Scan']);
    const token = await tokenFor('example');
    const p = (await h.request('GET', '/api/v1/pipelines', { token })).body.items.find((x: any) => x.managed_by === 'config');
    assert.equal(p.version, 2);
    assert.equal(p.steps.find((s: any) => s.step_key === 'sast').timeout, '45m');

    const noScans = await file('no-scans.yaml', text.replace('timeout: "30m"', 'timeout: "45m"').split('    scans:')[0]);
    const r2 = await applyConfigFile(h.pool, noScans);
    assert.deepEqual(r2.removed.sort(), ['scan example/Nightly production web applications', 'scan example/Weekly critical repositories']);
    const r3 = await applyConfigFile(h.pool, await file('empty.yaml', 'tenants: []\n'));
    assert.deepEqual(r3.removed, ['pipeline example/Full Security Scan']);
    assert.equal((await h.request('GET', `/api/v1/pipelines/${p.id}`, { token })).status, 404);
  });
});

describe('config file problems', () => {
  it('every problem names the file, the line and the path, and nothing is applied', async () => {
    const bad = await file('bad.yaml', [
      'tenants:',
      '  - name: broken',
      '    pipelines:',
      '      - name: P',
      '        steps:',
      '          - id: a',
      '            tool: t',
      '            depends_on: [zz]',
      '          - id: b',
      '            tool: t',
      '            timeout: 10x',
      '    scans:',
      '      - name: S',
      '        pipeline: P',
      '        schedule_type: cron',
      '        cron_expression: "61 * * * *"',
      '        timezone: Mars/Olympus',
      '',
    ].join('\n'));
    await assert.rejects(applyConfigFile(h.pool, bad), (err: unknown) => {
      assert.ok(err instanceof ConfigFileError);
      const lines = err.message.split('\n');
      assert.ok(lines.some((l) => l.includes(`${bad}:8: tenants[0].pipelines[0].steps[0].depends_on[0]: unknown step 'zz'`)), err.message);
      assert.ok(lines.some((l) => l.includes(`${bad}:11: tenants[0].pipelines[0].steps[1].timeout: must be a duration`)), err.message);
      assert.ok(lines.some((l) => l.includes(`${bad}:17: tenants[0].scans[0].timezone: must be an IANA time zone`)), err.message);
      return true;
    });
    const { rows } = await h.pool.query(`SELECT 1 FROM tenants WHERE name = 'broken'`);
    assert.equal(rows.length, 0, 'nothing was applied');
  });

  it('a problem only the database can see (an unknown pipeline) also applies nothing', async () => {
    const bad = await file('dangling.yaml', [
      'tenants:',
      '  - name: dangling',
      '    pipelines:',
      '      - name: Real',
      '        steps: [{id: a, tool: t}]',
      '    scans:',
      '      - name: S',
      '        pipeline: Imaginary',
      '',
    ].join('\n'));
    await assert.rejects(applyConfigFile(h.pool, bad), (err: unknown) => {
      assert.ok(err instanceof ConfigFileError);
      assert.match(err.message, /tenants\[0\]\.scans\[0\]\.pipeline: no pipeline named 'Imaginary'/);
      return true;
    });
    assert.equal((await h.pool.query(`SELECT 1 FROM tenants WHERE name = 'dangling'`)).rows.length, 0);
  });

  it('a pipeline name taken by one the API created is a problem, not a takeover', async () => {
    await applyConfigFile(h.pool, await file('owner.yaml', 'tenants:\n  - name: owner\n'));
    const token = await tokenFor('owner');
    assert.equal((await h.request('POST', '/api/v1/pipelines', { token, body: { name: 'Mine', steps: [step('a')] } })).status, 201);
    const clash = await file('clash.yaml', 'tenants:\n  - name: owner\n    pipelines:\n      - name: Mine\n        steps: [{id: b, tool: t}]\n');
    await assert.rejects(applyConfigFile(h.pool, clash), /already exists and is not managed by the config file/);
  });

  it('YAML syntax errors, unknown fields and a missing file are reported with where they are', () => {
    const syntax = parseConfig('tenants: [\n', 'x.yaml');
    assert.equal(syntax.ok, false);
    assert.match(!syntax.ok ? syntax.problems[0].message : '', /not valid YAML/);
    const unknown = parseConfig('tenants:\n  - name: a\n    pipelnes: []\n', 'y.yaml');
    assert.ok(!unknown.ok && unknown.problems.some((p) => p.path === 'tenants[0].pipelnes' && p.line === 3), JSON.stringify(unknown));
    const notList = parseConfig('tenants: {}\n', 'z.yaml');
    assert.ok(!notList.ok && notList.problems[0].path === 'tenants');
  });
});

describe('the apply command', () => {
  it('npm run apply reports what it created, updated and removed; an invalid file exits 1 and names the problem', async () => {
    const { execFile } = await import('node:child_process');
    const cli = new URL('../src/cli.ts', import.meta.url).pathname;
    const run = (args: string[]) =>
      new Promise<{ code: number; out: string; err: string }>((resolve) => {
        execFile(process.execPath, [cli, ...args], { env: { ...process.env, DATABASE_URL: h.db.url, CONFIG_FILE: '' } }, (error, out, err) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, out, err }));
      });
    const ok = await file('cli.yaml', 'tenants:\n  - name: cli\n    pipelines:\n      - name: One\n        steps: [{id: a, tool: t}]\n');
    const first = await run(['apply', ok]);
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, /created {2}tenant cli/);
    assert.match(first.out, /created {2}pipeline cli\/One/);
    const again = await run(['apply', ok]);
    assert.match(again.out, /0 created, 0 updated, 0 removed, 1 unchanged/);
    const bad = await file('cli-bad.yaml', 'tenants:\n  - name: cli\n    pipelines:\n      - name: One\n        steps: [{id: a}]\n');
    const failed = await run(['apply', bad]);
    assert.equal(failed.code, 1);
    assert.match(failed.err, /cli-bad\.yaml:5: tenants\[0\]\.pipelines\[0\]\.steps\[0\]: a step needs a tool or capabilities/);
    assert.doesNotMatch(failed.err, /\n\s+at /, 'no stack trace');
    const check = await run(['check', ok]);
    assert.equal(check.code, 0);
    assert.match(check.out, /is valid: 1 tenant/);
  });
});
