// Findings ingestion on a real PostgreSQL (API.md Part 2 "Findings ingestion"), with real tool
// output (test/fixtures/sarif/README.md): deduplication across scans, identity without line
// numbers, the lifecycle (auto-resolve after full coverage, reopen, triage kept), the
// fingerprint check, chunked reports, ties to commands and scan sessions, tenants and modules,
// and the number of statements of one ingest whatever its size.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import zlib from 'node:zlib';
import pg from 'pg';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, getRun, startRun, stepsByKey, type Tenant } from './support/fixtures.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

const sarifText = (name: string) => readFileSync(new URL(`./fixtures/sarif/${name}`, import.meta.url), 'utf8');
const sarif = (name: string) => JSON.parse(sarifText(name)) as Record<string, any>;

type Result = {
  scan_id: string | null; findings_created: number; findings_updated: number; findings_reopened: number;
  findings_resolved: number; findings_skipped: number; assets_created: number; assets_updated: number;
  errors: string[]; details: { path: string; message: string }[];
};

function postSarif(agent: TestAgent, log: unknown, headers: Record<string, string> = {}) {
  return h.request<Result>('POST', '/api/v1/agent/ingest/sarif', {
    apiKey: agent.apiKey, raw: typeof log === 'string' ? log : JSON.stringify(log),
    headers: { 'content-type': 'application/sarif+json', ...headers },
  });
}

async function ingestSarif(agent: TestAgent, log: unknown, headers: Record<string, string> = {}): Promise<Result> {
  const res = await postSarif(agent, log, headers);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

function postReport(agent: TestAgent, body: unknown, headers: Record<string, string> = {}) {
  return h.request<Result>('POST', '/api/v1/agent/ingest', { apiKey: agent.apiKey, body, headers });
}

async function ingestReport(agent: TestAgent, body: unknown, headers: Record<string, string> = {}): Promise<Result> {
  const res = await postReport(agent, body, headers);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

type Stored = { id: string; fingerprint: string; tool_fingerprint: string | null; status: string; resolution: string | null; occurrences: number; rule_id: string; location: Record<string, any>; asset_id: string | null; title: string; type: string; severity: string; properties: Record<string, any> };

async function findingsOf(tenantId: string, assetId?: string | null): Promise<Stored[]> {
  const { rows } = await h.pool.query<Stored>(
    `SELECT * FROM findings WHERE tenant_id = $1 AND ($2::uuid IS NULL OR asset_id = $2) ORDER BY rule_id, location->>'start_line', fingerprint`,
    [tenantId, assetId ?? null],
  );
  return rows;
}

async function eventsOf(findingId: string): Promise<string[]> {
  const { rows } = await h.pool.query<{ type: string }>(`SELECT type FROM events WHERE finding_id = $1 ORDER BY id`, [findingId]);
  return rows.map((r) => r.type);
}

/** A tenant with an agent and a repository asset for SARIF uploads (X-Asset-Id). */
async function setup(modules?: string[]): Promise<{ t: Tenant; agent: TestAgent; asset: string }> {
  const name = `tenant-${randomUUID().slice(0, 8)}`;
  let t: Tenant;
  if (modules) {
    const res = await h.request('POST', '/api/v1/tenants', { token: 'test-admin-token-0123456789', body: { name, modules } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    t = { id: res.body.tenant.id, token: res.body.token };
  } else {
    t = await createTenant(h, name);
  }
  const agent = await TestAgent.create(h, t, { tools: ['eslint', 'semgrep'] });
  const asset = (await createAsset(h, t, { type: 'repository', name: 'webapp', value: `https://git.example/${randomUUID()}` })).id;
  return { t, agent, asset };
}

describe('SARIF from real tools', () => {
  it('the same SARIF twice: 7 findings created, then 0 created and 7 updated', async () => {
    const { t, agent, asset } = await setup();
    const first = await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    assert.deepEqual([first.findings_created, first.findings_updated, first.findings_skipped, first.errors], [7, 0, 0, []]);
    const second = await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    assert.deepEqual([second.findings_created, second.findings_updated, second.findings_reopened, second.findings_resolved], [0, 7, 0, 0]);
    const rows = await findingsOf(t.id);
    assert.equal(rows.length, 7);
    assert.ok(rows.every((f) => f.occurrences === 2 && f.status === 'open' && f.asset_id === asset));
    // The two object-injection sinks of one file, same rule and text, stay two findings.
    assert.equal(rows.filter((f) => f.rule_id === 'security/detect-object-injection').length, 2);
    const { rows: sightings } = await h.pool.query(`SELECT new FROM finding_sightings WHERE tenant_id = $1`, [t.id]);
    assert.equal(sightings.length, 14);
    assert.equal(sightings.filter((s) => s.new).length, 7);
    for (const f of rows) assert.deepEqual(await eventsOf(f.id), ['finding.created']);
  });

  it('code moved down ten lines is the same finding, at its new place', async () => {
    const { t, agent, asset } = await setup();
    await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    const moved = await ingestSarif(agent, sarif('eslint-moved.sarif'), { 'x-asset-id': asset });
    assert.deepEqual([moved.findings_created, moved.findings_updated, moved.findings_resolved], [0, 7, 0]);
    const rows = await findingsOf(t.id);
    assert.equal(rows.length, 7);
    const evalFinding = rows.find((f) => f.rule_id === 'security/detect-eval-with-expression')!;
    assert.equal(evalFinding.location.start_line, 34, 'the location is the latest sighting\'s');
    const { rows: seen } = await h.pool.query(
      `SELECT (location->>'start_line')::int AS line FROM finding_sightings WHERE finding_id = $1 ORDER BY id`, [evalFinding.id]);
    assert.deepEqual(seen.map((s) => s.line), [24, 34]);
  });

  it('a full re-scan without one finding resolves it; a triaged one is left alone; seen again, the resolved one reopens and the triaged one does not', async () => {
    const { t, agent, asset } = await setup();
    await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    const rows = await findingsOf(t.id);
    const evalFinding = rows.find((f) => f.rule_id === 'security/detect-eval-with-expression')!;
    const regexp = rows.find((f) => f.rule_id === 'security/detect-non-literal-regexp')!;
    const triage = await h.request('PATCH', `/api/v1/findings/${regexp.id}`, { token: t.token, body: { status: 'false_positive', reason: 'the pattern is ours' } });
    assert.equal(triage.status, 200, JSON.stringify(triage.body));

    // eslint-fixed.sarif: the eval is gone. A triaged finding a full scan still contains is untouched too.
    const fixed = await ingestSarif(agent, sarif('eslint-fixed.sarif'), { 'x-asset-id': asset });
    assert.deepEqual([fixed.findings_created, fixed.findings_updated, fixed.findings_resolved], [0, 6, 1]);
    let after = await findingsOf(t.id);
    const resolved = after.find((f) => f.id === evalFinding.id)!;
    assert.deepEqual([resolved.status, resolved.resolution], ['resolved', 'auto_fixed']);
    assert.equal(after.find((f) => f.id === regexp.id)!.status, 'false_positive');
    assert.equal(after.filter((f) => f.status === 'open').length, 5);
    assert.deepEqual(await eventsOf(evalFinding.id), ['finding.created', 'finding.resolved']);

    // A scan that no longer contains the triaged finding does not resolve it either.
    const withoutRegexp = sarif('eslint-fixed.sarif');
    withoutRegexp.runs[0].results = withoutRegexp.runs[0].results.filter((r: any) => r.ruleId !== 'security/detect-non-literal-regexp');
    const r2 = await ingestSarif(agent, withoutRegexp, { 'x-asset-id': asset });
    assert.equal(r2.findings_resolved, 0);
    assert.equal((await findingsOf(t.id)).find((f) => f.id === regexp.id)!.status, 'false_positive');

    // The eval is back: reopened. The false positive, seen again, stays one.
    const back = await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    assert.deepEqual([back.findings_created, back.findings_reopened, back.findings_updated, back.findings_resolved], [0, 1, 6, 0]);
    after = await findingsOf(t.id);
    const reopened = after.find((f) => f.id === evalFinding.id)!;
    assert.deepEqual([reopened.status, reopened.resolution], ['open', null]);
    assert.equal(after.find((f) => f.id === regexp.id)!.status, 'false_positive');
    assert.deepEqual(await eventsOf(evalFinding.id), ['finding.created', 'finding.resolved', 'finding.reopened']);
  });

  it('a partial upload (X-Coverage: partial) resolves nothing; a full one of another tool resolves nothing of this one', async () => {
    const { t, agent, asset } = await setup();
    await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    const partial = await ingestSarif(agent, sarif('eslint-fixed.sarif'), { 'x-asset-id': asset, 'x-coverage': 'partial' });
    assert.equal(partial.findings_resolved, 0);
    const other = await ingestSarif(agent, sarif('secretlint.sarif'), { 'x-asset-id': asset });
    assert.deepEqual([other.findings_created, other.findings_resolved], [4, 0]);
    const rows = await findingsOf(t.id);
    assert.equal(rows.filter((f) => f.status === 'open').length, 11);
    const bad = await postSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset, 'x-coverage': 'most' });
    assert.equal(bad.status, 400);
    assert.equal((bad.body as any).error.details[0].path, 'X-Coverage');
  });

  it('maps identity, type and severity as API.md says (partialFingerprints, fingerprints, security-severity, secret tag)', async () => {
    const { t, agent, asset } = await setup();
    const codeql = await ingestSarif(agent, sarif('codeql.sarif'), { 'x-asset-id': asset });
    assert.equal(codeql.findings_created, 4);
    const trivy = await ingestSarif(agent, sarif('trivy.sarif'), { 'x-asset-id': asset });
    assert.equal(trivy.findings_created, 6);
    const rows = await findingsOf(t.id);
    const by = (rule: string) => rows.filter((f) => f.rule_id === rule);
    assert.equal(by('js/sql-injection').length, 2);
    assert.equal(by('js/sql-injection')[0].severity, 'high');
    assert.equal(by('js/sql-injection')[0].location.path, 'src/db/users.js', 'relative to %SRCROOT%');
    assert.equal(by('js/unused-local-variable')[0].severity, 'low', "the rule's defaultConfiguration.level note");
    assert.deepEqual(
      ['CVE-2023-38545', 'CVE-2023-44487', 'CVE-2023-39325', 'CVE-2024-2511', 'aws-access-key-id', 'DS002'].map((r) => [by(r)[0].severity, by(r)[0].type]),
      [['critical', 'vulnerability'], ['high', 'vulnerability'], ['medium', 'vulnerability'], ['low', 'vulnerability'], ['critical', 'secret'], ['medium', 'vulnerability']],
    );
    assert.equal(by('CVE-2023-44487')[0].tool_fingerprint, '3f1c0ab5d6e4c2a8b7f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1');
    assert.equal(by('CVE-2023-44487')[0].fingerprint, by('CVE-2023-44487')[0].tool_fingerprint, "the tool's own fingerprint is the identity");

    // CodeQL's line hash is the identity: the same results ten lines lower are the same findings.
    const moved = sarif('codeql.sarif');
    for (const r of moved.runs[0].results) r.locations[0].physicalLocation.region.startLine += 10;
    const again = await ingestSarif(agent, moved, { 'x-asset-id': asset });
    assert.deepEqual([again.findings_created, again.findings_updated], [0, 4]);
  });

  it('absolute file URIs become repository paths with X-Checkout-Uri, so a scan from another directory matches', async () => {
    const { t, agent, asset } = await setup();
    await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset, 'x-checkout-uri': 'file:///tmp/scanflow-fixture/webapp/' });
    const elsewhere = sarifText('eslint.sarif').replaceAll('file:///tmp/scanflow-fixture/webapp/', 'file:///home/runner/work/42/s/');
    const r = await ingestSarif(agent, elsewhere, { 'x-asset-id': asset, 'x-checkout-uri': '/home/runner/work/42/s' });
    assert.deepEqual([r.findings_created, r.findings_updated], [0, 7]);
    assert.deepEqual([...new Set((await findingsOf(t.id)).map((f) => f.location.path))].sort(), ['src/server.js', 'src/settings.js']);
  });

  it('malformed SARIF is a 400 naming the path, and stores nothing', async () => {
    const { t, agent, asset } = await setup();
    const noName = sarif('eslint.sarif');
    delete noName.runs[0].tool.driver.name;
    const res = await postSarif(agent, noName, { 'x-asset-id': asset });
    assert.equal(res.status, 400);
    assert.ok((res.body as any).error.details.some((d: any) => d.path === 'runs[0].tool.driver.name'), JSON.stringify(res.body));
    const oldVersion = { ...sarif('eslint.sarif'), version: '2.0.0' };
    const v2 = await postSarif(agent, oldVersion, { 'x-asset-id': asset });
    assert.equal(v2.status, 400);
    assert.equal((v2.body as any).error.details[0].path, 'version');
    const notJson = await postSarif(agent, '{"runs": [', { 'x-asset-id': asset });
    assert.equal(notJson.status, 400);
    const xml = await postSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset, 'content-type': 'application/xml' });
    assert.equal(xml.status, 415);
    assert.equal((await findingsOf(t.id)).length, 0);
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM ingests WHERE tenant_id = $1`, [t.id]);
    assert.equal(rows[0].n, 0);
  });

  it('a result that cannot be stored is skipped with its path; the others are stored', async () => {
    const { t, agent, asset } = await setup();
    const log = sarif('eslint.sarif');
    log.runs[0].results[2].level = 'catastrophic';
    log.runs[0].results[4].locations[0].physicalLocation.region.startLine = 'ten';
    const r = await ingestSarif(agent, log, { 'x-asset-id': asset });
    assert.deepEqual([r.findings_created, r.findings_skipped], [5, 2]);
    assert.deepEqual(r.details.map((d) => d.path), ['runs[0].results[2].level', 'runs[0].results[4].locations[0].physicalLocation.region.startLine']);
    assert.ok(r.errors[0].startsWith('runs[0].results[2].level: '));
    assert.equal((await findingsOf(t.id)).length, 5);
  });

  it('without X-Asset-Id or a command, findings have no target asset: skipped, each with its path', async () => {
    const { agent } = await setup();
    const r = await ingestSarif(agent, sarif('secretlint.sarif'));
    assert.deepEqual([r.findings_created, r.findings_skipped], [0, 4]);
    assert.match(r.errors[0], /^runs\[0\]\.results\[0\]: has no target asset/);
  });

  it('two agents ingesting the same report at the same time create each finding once', async () => {
    const { t, agent, asset } = await setup();
    const second = await TestAgent.create(h, t, { tools: ['eslint'] });
    const results = await Promise.all([agent, second, agent, second, agent].map((a) => ingestSarif(a, sarif('eslint.sarif'), { 'x-asset-id': asset })));
    assert.equal(results.reduce((n, r) => n + r.findings_created, 0), 7);
    assert.equal(results.reduce((n, r) => n + r.findings_updated, 0), 28);
    const rows = await findingsOf(t.id);
    assert.equal(rows.length, 7);
    assert.ok(rows.every((f) => f.occurrences === 5));
    const { rows: created } = await h.pool.query(`SELECT count(*)::int AS n FROM events WHERE tenant_id = $1 AND type = 'finding.created'`, [t.id]);
    assert.equal(created[0].n, 7);
  });
});

describe('the report format (the seed SDK\'s)', () => {
  it('a bare report and {report} alike; assets by reference and inline; unknown fields kept', async () => {
    const { t, agent } = await setup();
    const report = {
      version: '1.0',
      metadata: { id: 'scan-1', timestamp: '2026-01-29T10:00:00Z', source_type: 'scanner', coverage_type: 'partial' },
      tool: { name: 'semgrep', version: '1.50.0' },
      assets: [{ id: 'repo', type: 'repository', value: 'github.com/acme/api', name: 'acme/api', tags: ['prod'], technical: { repository: { default_branch: 'main' } } }],
      findings: [
        { type: 'vulnerability', title: 'SQL injection', severity: 'high', rule_id: 'sqli', asset_ref: 'repo', location: { path: 'db.go', start_line: 10, snippet: 'db.Query("SELECT " + id)' }, confidence: 90, remediation: { recommendation: 'bind parameters' } },
        { type: 'secret', title: 'AWS key', severity: 'CRITICAL', rule_id: 'aws', asset_type: 'domain', asset_value: 'api.acme.example', fingerprint: 'sha256:abc', properties: { entropy: 4.2 } },
        { type: 'misconfiguration', title: 'TLS 1.0', severity: 'severe', asset_ref: 'repo' },
      ],
    };
    const r = await ingestReport(agent, report);
    assert.deepEqual([r.findings_created, r.findings_skipped, r.assets_created, r.assets_updated], [2, 1, 2, 0]);
    assert.deepEqual(r.details.map((d) => d.path), ['findings[2].severity']);
    const rows = await findingsOf(t.id);
    const sqli = rows.find((f) => f.rule_id === 'sqli')!;
    assert.deepEqual(sqli.properties, { confidence: 90, remediation: { recommendation: 'bind parameters' } });
    const key = rows.find((f) => f.rule_id === 'aws')!;
    assert.deepEqual([key.severity, key.fingerprint, key.tool_fingerprint, key.properties.entropy], ['critical', 'sha256:abc', 'sha256:abc', 4.2]);
    const { rows: assets } = await h.pool.query(`SELECT type, value, name, tags, metadata FROM assets WHERE tenant_id = $1 ORDER BY type, value`, [t.id]);
    const repo = assets.find((a) => a.value === 'github.com/acme/api');
    assert.deepEqual([repo.name, repo.tags, repo.metadata.technical.repository.default_branch], ['acme/api', ['prod'], 'main']);
    assert.ok(assets.some((a) => a.type === 'domain' && a.value === 'api.acme.example'));

    const wrapped = await ingestReport(agent, { report });
    assert.deepEqual([wrapped.findings_created, wrapped.findings_updated, wrapped.assets_created, wrapped.assets_updated], [0, 2, 0, 2]);
  });

  it('an assets-only report creates and updates assets', async () => {
    const { t, agent } = await setup();
    const report = { version: '1.0', metadata: { timestamp: '2026-01-29T10:00:00Z' }, assets: [
      { id: 'a', type: 'domain', value: 'acme.example' }, { id: 'b', type: 'subdomain', value: 'www.acme.example' },
    ] };
    const r = await ingestReport(agent, report);
    assert.deepEqual([r.assets_created, r.assets_updated, r.findings_created, r.errors], [2, 0, 0, []]);
    const again = await ingestReport(agent, report);
    assert.deepEqual([again.assets_created, again.assets_updated], [0, 2]);
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM assets WHERE tenant_id = $1 AND value LIKE '%acme.example'`, [t.id]);
    assert.equal(rows[0].n, 2);
  });

  it('a body that is not a report is a 400 and stores nothing', async () => {
    const { t, agent } = await setup();
    for (const body of [{}, { hello: 'world' }, { findings: 'many' }, { metadata: { coverage_type: 'everything' }, findings: [] }, { tool: { name: '' }, findings: [] }]) {
      const res = await postReport(agent, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.ok((res.body as any).error.details.length > 0);
    }
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM ingests WHERE tenant_id = $1`, [t.id]);
    assert.equal(rows[0].n, 0);
  });

  it('a full-coverage report on a branch other than the default resolves nothing; on the default branch it does', async () => {
    const { t, agent } = await setup();
    const finding = (rule: string) => ({ type: 'vulnerability', title: rule, severity: 'low', rule_id: rule, asset_type: 'repository', asset_value: 'github.com/acme/web' });
    const report = (branch: unknown, findings: unknown[]) => ({
      version: '1.0', metadata: { coverage_type: 'full', branch }, tool: { name: 'gitleaks' },
      assets: [{ id: 'r', type: 'repository', value: 'github.com/acme/web' }], findings,
    });
    await ingestReport(agent, report({ name: 'main', is_default_branch: true }, [finding('a'), finding('b')]));
    const feature = await ingestReport(agent, report({ name: 'feature/x', is_default_branch: false }, [finding('a')]));
    assert.equal(feature.findings_resolved, 0);
    const main = await ingestReport(agent, report({ name: 'main', is_default_branch: true }, [finding('a')]));
    assert.equal(main.findings_resolved, 1);
    const rows = await findingsOf(t.id);
    assert.deepEqual(rows.map((f) => [f.rule_id, f.status]), [['a', 'open'], ['b', 'resolved']]);
  });

  it('a full-coverage SARIF log of another branch resolves nothing: the branch from versionControlProvenance or X-Branch / X-Default-Branch', async () => {
    const { asset, agent } = await setup();
    const onBranch = (name: string, isDefault?: boolean) => {
      const log = sarif('eslint-fixed.sarif');
      log.runs[0].versionControlProvenance = [{ repositoryUri: 'https://example.test/webapp.git', branch: name, revisionId: 'abc123',
        ...(isDefault === undefined ? {} : { properties: { is_default_branch: isDefault } }) }];
      return log;
    };
    await ingestSarif(agent, sarif('eslint.sarif'), { 'x-asset-id': asset });
    assert.equal((await ingestSarif(agent, onBranch('feature/x', false), { 'x-asset-id': asset })).findings_resolved, 0);
    // A branch whose default-ness nobody states is not known to be the default one.
    assert.equal((await ingestSarif(agent, onBranch('main'), { 'x-asset-id': asset })).findings_resolved, 0);
    assert.equal((await ingestSarif(agent, sarif('eslint-fixed.sarif'), { 'x-asset-id': asset, 'x-branch': 'feature/y', 'x-default-branch': 'false' })).findings_resolved, 0);
    const bad = await postSarif(agent, sarif('eslint-fixed.sarif'), { 'x-asset-id': asset, 'x-default-branch': 'yes' });
    assert.equal(bad.status, 400);
    assert.equal((bad.body as any).error.details[0].path, 'X-Default-Branch');
    const main = await ingestSarif(agent, onBranch('main', true), { 'x-asset-id': asset });
    assert.ok(main.findings_resolved > 0, 'the default branch resolves what it no longer contains');
  });
});

describe('tied to the work', () => {
  it('X-Command-Id ties the findings to the run and step; the step counts them when complete gives none; the run has new_findings', async () => {
    const t = await createTenant(h);
    const agent = await TestAgent.create(h, t, { tools: ['eslint'] });
    const asset = await createAsset(h, t, { type: 'repository', name: 'webapp', value: `https://git.example/${randomUUID()}` });
    const pipeline = await createPipeline(h, t, { name: `lint-${randomUUID().slice(0, 6)}`, steps: [{ id: 'lint', name: 'lint', tool: 'eslint' }] });
    const run = await startRun(h, t, pipeline.id, { asset_id: asset.id });
    await h.settle();
    const [command] = await agent.poll();
    assert.equal((await agent.ack(command.id)).status, 200);

    // Another agent of the tenant does not hold it.
    const other = await TestAgent.create(h, t, { tools: ['eslint'] });
    const notHeld = await postSarif(other, sarif('eslint.sarif'), { 'x-command-id': command.id });
    assert.equal(notHeld.status, 404);

    const r = await ingestSarif(agent, sarif('eslint.sarif'), { 'x-command-id': command.id });
    assert.equal(r.findings_created, 7);
    const rows = await findingsOf(t.id);
    assert.ok(rows.every((f) => f.asset_id === asset.id), "the command's target asset");
    const { rows: sightings } = await h.pool.query(
      `SELECT DISTINCT pipeline_run_id, step_run_id, command_id FROM finding_sightings WHERE tenant_id = $1`, [t.id]);
    assert.equal(sightings.length, 1);
    assert.equal(sightings[0].pipeline_run_id, run.id);
    assert.equal(sightings[0].command_id, command.id);
    const { rows: last } = await h.pool.query(`SELECT DISTINCT last_run_id, last_step_key, first_run_id FROM findings WHERE tenant_id = $1`, [t.id]);
    assert.deepEqual(last, [{ last_run_id: run.id, last_step_key: 'lint', first_run_id: run.id }]);

    // The seed SDK's completion, without findings_count.
    const done = await agent.complete(command.id, { result: { status: 'completed', duration_ms: 1200, exit_code: 0, metadata: { files: 2 } } });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    await h.settle();
    const finished = await getRun(h, t, run.id);
    assert.equal(finished.status, 'completed');
    assert.equal(stepsByKey(finished).lint.findings_count, 7);
    assert.deepEqual([finished.total_findings, finished.new_findings], [7, 7]);
    // Finding events are the findings' own; the run's event list stays its progression.
    const events = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/events?limit=200`, { token: t.token });
    assert.ok(events.body.items.length > 0);
    assert.ok(events.body.items.every((e: any) => e.event.startsWith('pipeline.')), JSON.stringify(events.body.items.map((e: any) => e.event)));
    const { rows: created } = await h.pool.query(`SELECT data FROM events WHERE type = 'finding.created' AND data->>'pipeline_run_id' = $1`, [run.id]);
    assert.equal(created.length, 7);
    assert.equal(created[0].data.command_id, command.id);
  });

  it('metadata.command_id ties a report; a command of another tenant is a 404, and so is its asset', async () => {
    const a = await setup();
    const b = await setup();
    const pipeline = await createPipeline(h, a.t, { name: `p-${randomUUID().slice(0, 6)}`, steps: [{ id: 'sast', name: 'sast', tool: 'semgrep' }] });
    await startRun(h, a.t, pipeline.id, { asset_id: a.asset });
    await h.settle();
    const [command] = await a.agent.poll();
    await a.agent.ack(command.id);
    const report = (commandId: string) => ({
      version: '1.0', metadata: { command_id: commandId }, tool: { name: 'semgrep' },
      findings: [{ type: 'vulnerability', title: 'XSS', severity: 'medium', rule_id: 'xss', location: { path: 'a.js' } }],
    });
    const mine = await ingestReport(a.agent, report(command.id));
    assert.equal(mine.findings_created, 1);
    assert.equal((await findingsOf(a.t.id))[0].asset_id, a.asset);
    // Tenant B's agent cannot ingest into A's command, nor into A's asset.
    assert.equal((await postReport(b.agent, report(command.id))).status, 404);
    assert.equal((await postSarif(b.agent, sarif('eslint.sarif'), { 'x-asset-id': a.asset })).status, 404);
    assert.equal((await postSarif(b.agent, sarif('eslint.sarif'), { 'x-asset-id': 'not-a-uuid' })).status, 404);
    // B sees none of A's findings, and its check finds none of A's fingerprints.
    const list = await h.request('GET', '/api/v1/findings', { token: b.t.token });
    assert.equal(list.status, 200);
    assert.equal(list.body.items.length, 0);
    const fp = (await findingsOf(a.t.id))[0].fingerprint;
    const check = await h.request('POST', '/api/v1/agent/ingest/check', { apiKey: b.agent.apiKey, body: { fingerprints: [fp] } });
    assert.deepEqual(check.body, { existing: [], missing: [fp] });
  });

  it('agent scan sessions: open on an asset, ingest into it, close (count defaulted), replay, contradict', async () => {
    const { t, agent } = await setup();
    const opened = await h.request('POST', '/api/v1/agent/scans', {
      apiKey: agent.apiKey, body: { tool: 'gitleaks', asset: { type: 'repository', value: 'github.com/acme/tools' }, branch: 'main', commit_sha: 'abc123' },
    });
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    assert.equal(opened.body.status, 'running');
    const id = opened.body.id;
    const r = await ingestReport(agent, {
      version: '1.0', metadata: { scan_id: id },
      findings: [{ type: 'secret', title: 'Slack token', severity: 'high', rule_id: 'slack', location: { path: '.env' } }],
    });
    assert.deepEqual([r.findings_created, r.scan_id], [1, id]);
    const f = (await findingsOf(t.id))[0];
    assert.deepEqual([f.asset_id, (await findingsOf(t.id, opened.body.asset_id)).length], [opened.body.asset_id, 1]);
    const closed = await h.request('PATCH', `/api/v1/agent/scans/${id}`, { apiKey: agent.apiKey, body: { status: 'completed' } });
    assert.equal(closed.status, 200);
    assert.deepEqual([closed.body.status, closed.body.findings_count], ['completed', 1]);
    assert.equal((await h.request('PATCH', `/api/v1/agent/scans/${id}`, { apiKey: agent.apiKey, body: { status: 'completed' } })).status, 200);
    assert.equal((await h.request('PATCH', `/api/v1/agent/scans/${id}`, { apiKey: agent.apiKey, body: { status: 'failed' } })).status, 409);
    assert.equal((await h.request('GET', `/api/v1/agent/scans/${id}`, { apiKey: agent.apiKey })).body.status, 'completed');
    const other = await TestAgent.create(h, t, { tools: [] });
    assert.equal((await h.request('GET', `/api/v1/agent/scans/${id}`, { apiKey: other.apiKey })).status, 404);
    assert.equal((await postReport(other, { metadata: { scan_id: id }, findings: [] })).status, 404);
  });
});

describe('large reports and retries', () => {
  /** A report of n findings ('issue i', 13 rules) on one repository asset, but finding `skip`; `title` may rename some. */
  const bulkReport = (n: number, o: { tool: string; asset: string; coverage?: 'full'; skip?: number | null; title?: (i: number) => string }) => ({
    version: '1.0', tool: { name: o.tool }, ...(o.coverage ? { metadata: { coverage_type: o.coverage } } : {}),
    assets: [{ id: 'r', type: 'repository', value: o.asset }],
    findings: Array.from({ length: n }, (_, i) => i).filter((i) => i !== o.skip)
      .map((i) => ({ type: 'vulnerability', title: o.title?.(i) ?? `issue ${i}`, severity: 'low', rule_id: `r${i % 13}`, asset_ref: 'r', location: { path: `f${i}.js` } })),
  });

  it('a report of more than 5,000 findings is stored in batches: every finding once, the counts summed, full coverage resolved at the end', async () => {
    const { t, agent } = await setup();
    const report = (n: number, skip: number | null) => bulkReport(n, { tool: 'bulk', asset: 'github.com/acme/bulk', coverage: 'full', skip });
    const first = await ingestReport(agent, report(11_000, null));
    assert.deepEqual([first.findings_created, first.findings_updated, first.findings_resolved, first.assets_created], [11_000, 0, 0, 1]);
    const again = await ingestReport(agent, report(11_000, 10_999));
    assert.deepEqual([again.findings_created, again.findings_updated, again.findings_resolved], [0, 10_999, 1]);
    const { rows } = await h.pool.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE status = 'resolved')::int AS resolved, max(occurrences) AS most FROM findings WHERE tenant_id = $1`, [t.id]);
    assert.deepEqual(rows[0], { n: 11_000, resolved: 1, most: 2 });
  });

  it('with an Idempotency-Key, a large report is all or nothing: a failure in its last batch leaves nothing, and the retry stores it once', async () => {
    const { t, agent } = await setup();
    // A failure injected into the last batch (findings 10,000 to 10,999) by a trigger of this test.
    const marker = `explode-${randomUUID()}`;
    const fn = `test_explode_${randomUUID().replaceAll('-', '')}`;
    await h.pool.query(`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.title = '${marker}' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`);
    await h.pool.query(`CREATE TRIGGER ${fn} BEFORE INSERT ON findings FOR EACH ROW EXECUTE FUNCTION ${fn}()`);
    const report = bulkReport(11_000, { tool: 'bulk', asset: `github.com/acme/${randomUUID()}`, title: (i) => (i === 10_500 ? marker : `issue ${i}`) });
    const headers = { 'idempotency-key': `k-${randomUUID()}` };
    const stored = async () => (await h.pool.query(
      `SELECT (SELECT count(*)::int FROM ingests WHERE tenant_id = $1) AS ingests,
              (SELECT count(*)::int FROM findings WHERE tenant_id = $1) AS findings,
              (SELECT count(*)::int FROM finding_sightings s JOIN findings f ON f.id = s.finding_id WHERE f.tenant_id = $1) AS sightings,
              (SELECT count(*)::int FROM assets WHERE tenant_id = $1) AS assets`, [t.id])).rows[0];
    const before = await stored(); // setup's asset
    try {
      const failed = await postReport(agent, report, headers);
      assert.equal(failed.status, 500, JSON.stringify(failed.body));
      assert.deepEqual(await stored(), before, 'the batches before the failure rolled back with it');
    } finally {
      await h.pool.query(`DROP TRIGGER ${fn} ON findings; DROP FUNCTION ${fn}()`);
    }
    const retried = await postReport(agent, report, headers);
    assert.equal(retried.status, 201, JSON.stringify(retried.body));
    assert.deepEqual([retried.body.findings_created, retried.body.findings_updated, retried.body.assets_created], [11_000, 0, 1]);
    assert.deepEqual(await stored(), { ingests: 1, findings: 11_000, sightings: 11_000, assets: before.assets + 1 });
    const replay = await postReport(agent, report, headers);
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(replay.body, retried.body);
  });

  it('an ingest of 5,000 findings or more has the findings tables analyzed (one job for a burst of them); a small one does not', async () => {
    const { agent } = await setup();
    const jobs = async () => (await h.pool.query(`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = 'findings_analyze'`)).rows[0].n;
    const analyzed = async () => (await h.pool.query(
      `SELECT sum(analyze_count)::int AS n FROM pg_stat_user_tables WHERE relname IN ('findings', 'finding_sightings', 'finding_texts')`)).rows[0].n;
    // The job waits 5 s for more ingests to join it: made due now, as time passing would.
    const runNow = async () => {
      await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = 'findings_analyze'`);
      await h.settle();
    };
    await runNow(); // what earlier tests asked for
    assert.equal(await jobs(), 0);
    const report = (n: number, tool: string) => bulkReport(n, { tool, asset: `github.com/acme/${randomUUID()}` });
    await ingestReport(agent, report(4_999, 'small'));
    assert.equal(await jobs(), 0, 'an ingest of fewer findings asks for nothing');
    await ingestReport(agent, report(5_000, 'large'));
    await ingestReport(agent, report(6_000, 'larger'));
    assert.equal(await jobs(), 1, 'two large ingests, one job');
    const before = await analyzed();
    await runNow();
    assert.equal(await jobs(), 0);
    assert.equal(await analyzed(), before + 3, 'each of the three tables analyzed once');
  });

  it('an Idempotency-Key replays the answer and stores nothing twice', async () => {
    const { t, agent, asset } = await setup();
    const headers = { 'idempotency-key': `k-${randomUUID()}`, 'x-asset-id': asset };
    const first = await postSarif(agent, sarif('codeql.sarif'), headers);
    assert.equal(first.status, 201);
    const second = await postSarif(agent, sarif('codeql.sarif'), headers);
    assert.equal(second.status, 201);
    assert.equal(second.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(second.body, first.body);
    const rows = await findingsOf(t.id);
    assert.equal(rows.length, 4);
    assert.ok(rows.every((f) => f.occurrences === 1));
    // Another asset under the same key is another request: 422.
    const other = await createAsset(h, t, { type: 'repository', name: 'other', value: `https://git.example/${randomUUID()}` });
    assert.equal((await postSarif(agent, sarif('codeql.sarif'), { ...headers, 'x-asset-id': other.id })).status, 422);
  });
});

describe('/ingest/check', () => {
  it('answers for exactly the strings sent: our fingerprints and the tools\' own', async () => {
    const { t, agent, asset } = await setup();
    await ingestSarif(agent, sarif('trivy.sarif'), { 'x-asset-id': asset });
    const rows = await findingsOf(t.id);
    const ours = rows.find((f) => f.rule_id === 'CVE-2023-38545')!.fingerprint;
    const tools = rows.find((f) => f.rule_id === 'CVE-2023-44487')!.tool_fingerprint!;
    const unknown = 'f'.repeat(64);
    const res = await h.request('POST', '/api/v1/agent/ingest/check', { apiKey: agent.apiKey, body: { fingerprints: [unknown, ours, tools, ours] } });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { existing: [ours, tools], missing: [unknown] });
    const empty = await h.request('POST', '/api/v1/agent/ingest/check', { apiKey: agent.apiKey, body: { fingerprints: [] } });
    assert.deepEqual(empty.body, { existing: [], missing: [] });
  });

  it('10,000 fingerprints are answered; 10,001 are a 400', async () => {
    const { agent } = await setup();
    const many = Array.from({ length: 10_000 }, (_, i) => `fp-${i}`);
    const ok = await h.request('POST', '/api/v1/agent/ingest/check', { apiKey: agent.apiKey, body: { fingerprints: many } });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.missing.length, 10_000);
    const tooMany = await h.request('POST', '/api/v1/agent/ingest/check', { apiKey: agent.apiKey, body: { fingerprints: [...many, 'one-more'] } });
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.error.details[0].path, 'fingerprints');
  });
});

describe('modules', () => {
  it('a tenant without the scans module: 403 module_not_enabled; credentials need the credentials module', async () => {
    const none = await setup([]);
    for (const [path, body] of [['/api/v1/agent/ingest', { findings: [] }], ['/api/v1/agent/ingest/check', { fingerprints: [] }], ['/api/v1/agent/scans', { tool: 'x' }]] as const) {
      const res = await h.request('POST', path, { apiKey: none.agent.apiKey, body });
      assert.equal(res.status, 403, path);
      assert.equal(res.body.error.code, 'module_not_enabled');
    }
    const scansOnly = await setup();
    const creds = { credentials: [{ identifier: 'alice@acme.example', source: 'breach-2024', severity: 'critical' }, { identifier: 'bob@acme.example', source: 'paste' }, { source: 'x' }] };
    const refused = await h.request('POST', '/api/v1/agent/credentials/ingest', { apiKey: scansOnly.agent.apiKey, body: creds });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'module_not_enabled');

    const both = await setup(['scans', 'credentials']);
    const first = await h.request<Result>('POST', '/api/v1/agent/credentials/ingest', { apiKey: both.agent.apiKey, body: creds });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.deepEqual([first.body.findings_created, first.body.findings_skipped, first.body.details[0].path], [2, 1, 'credentials[2].identifier']);
    const again = await h.request<Result>('POST', '/api/v1/agent/credentials/ingest', { apiKey: both.agent.apiKey, body: creds });
    assert.deepEqual([again.body.findings_created, again.body.findings_updated], [0, 2]);
    const rows = await findingsOf(both.t.id);
    assert.deepEqual(rows.map((f) => [f.type, f.asset_id, f.severity]), [['credential_leak', null, 'critical'], ['credential_leak', null, 'high']]);
  });
});

/** A chunk envelope as the seed SDK's UploadChunk makes it. */
function chunkEnvelope(reportId: string, index: number, total: number, chunk: Record<string, unknown>, compression: 'zstd' | 'gzip' | 'none' = 'zstd') {
  const json = Buffer.from(JSON.stringify({ report_id: reportId, chunk_index: index, total_chunks: total, ...chunk, is_final: index === total - 1 }));
  const data = compression === 'zstd' ? zlib.zstdCompressSync(json) : compression === 'gzip' ? zlib.gzipSync(json) : json;
  return { report_id: reportId, chunk_index: index, total_chunks: total, compression, data: data.toString('base64'), is_final: index === total - 1 };
}

describe('/ingest/chunk', () => {
  it('chunks out of order are ingested in order; a finding may use an asset of an earlier chunk; a replay changes nothing; full coverage resolves only once all are in', async () => {
    const { t, agent } = await setup();
    const finding = (rule: string) => ({ type: 'vulnerability', title: `issue ${rule}`, severity: 'medium', rule_id: rule, asset_ref: 'svc', location: { path: `${rule}.py` } });
    const send = (env: unknown) => h.request('POST', '/api/v1/agent/ingest/chunk', { apiKey: agent.apiKey, body: env });
    const reportId = `large-${randomUUID()}`;
    const head = { tool: { name: 'bandit', version: '1.7' }, metadata: { id: reportId, coverage_type: 'full' } };
    const chunks = [
      chunkEnvelope(reportId, 0, 3, { ...head, assets: [{ id: 'svc', type: 'repository', value: 'github.com/acme/svc' }], findings: [finding('a'), finding('b')] }),
      chunkEnvelope(reportId, 1, 3, { findings: [finding('c'), finding('d')] }, 'gzip'),
      chunkEnvelope(reportId, 2, 3, { findings: [finding('e')] }),
    ];
    const third = await send(chunks[2]);
    assert.equal(third.status, 201, JSON.stringify(third.body));
    assert.deepEqual([third.body.status, third.body.findings_created], ['pending', 0]);
    const second = await send(chunks[1]);
    assert.deepEqual([second.body.status, second.body.chunk_index], ['pending', 1]);
    assert.equal((await findingsOf(t.id)).length, 0);
    const first = await send(chunks[0]);
    assert.equal(first.status, 201);
    assert.deepEqual([first.body.status, first.body.findings_created, first.body.assets_created], ['ingested', 2, 1]);
    const rows = await findingsOf(t.id);
    assert.deepEqual(rows.map((f) => f.rule_id), ['a', 'b', 'c', 'd', 'e']);
    assert.equal(new Set(rows.map((f) => f.asset_id)).size, 1);

    const replay = await send(chunks[1]);
    assert.equal(replay.status, 201);
    assert.deepEqual(replay.body, { ...replay.body, chunk_id: second.body.chunk_id, status: 'ingested', findings_created: 2 });
    assert.equal((await findingsOf(t.id)).reduce((n, f) => n + f.occurrences, 0), 5, 'a replay changes nothing');

    // The same report again without 'b': resolved only when its last chunk is in.
    const next = `large-${randomUUID()}`;
    const head2 = { ...head, metadata: { id: next, coverage_type: 'full' } };
    const r0 = await send(chunkEnvelope(next, 0, 2, { ...head2, assets: [{ id: 'svc', type: 'repository', value: 'github.com/acme/svc' }], findings: [finding('a'), finding('c')] }));
    assert.equal(r0.body.findings_resolved, 0);
    assert.equal((await findingsOf(t.id)).find((f) => f.rule_id === 'b')!.status, 'open');
    const r1 = await send(chunkEnvelope(next, 1, 2, { findings: [finding('d'), finding('e')] }));
    assert.deepEqual([r1.body.status, r1.body.findings_resolved], ['ingested', 1]);
    assert.deepEqual((await findingsOf(t.id)).map((f) => [f.rule_id, f.status]), [['a', 'open'], ['b', 'resolved'], ['c', 'open'], ['d', 'open'], ['e', 'open']]);

    // Chunks sent all at once, in any order (the SDK uploads two at a time): each once, in order.
    const burst = `burst-${randomUUID()}`;
    const all = Array.from({ length: 6 }, (_, i) => chunkEnvelope(burst, i, 6, {
      ...(i === 0 ? { tool: { name: 'burst' }, metadata: { id: burst } } : {}),
      ...(i === 0 ? { assets: [{ id: 'svc', type: 'repository', value: 'github.com/acme/burst' }] } : {}),
      findings: [finding(`burst-${i}`)],
    }));
    const answers = await Promise.all([...all.slice(3), ...all.slice(0, 3)].reverse().map(send));
    assert.ok(answers.every((a) => a.status === 201), JSON.stringify(answers.map((a) => a.body)));
    const { rows: burstRows } = await h.pool.query(
      `SELECT status, count(*)::int AS n FROM ingests WHERE tenant_id = $1 AND report_id = $2 GROUP BY status`, [t.id, burst]);
    assert.deepEqual(burstRows, [{ status: 'ingested', n: 6 }]);
    assert.equal((await findingsOf(t.id)).filter((f) => f.rule_id.startsWith('burst-')).length, 6);

    const mismatch = await send(chunkEnvelope(next, 1, 3, { findings: [] }));
    assert.equal(mismatch.status, 201, 'a chunk already received is a replay, whatever it says now');
    const wrongTotal = await send(chunkEnvelope(next, 2, 3, { findings: [] }));
    assert.equal(wrongTotal.status, 409);
    const inner = chunkEnvelope(`x-${randomUUID()}`, 0, 1, { findings: [] });
    const lying = { ...inner, data: Buffer.from(JSON.stringify({ report_id: 'another', findings: [] })).toString('base64'), compression: 'none' };
    const refused = await send(lying);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.details[0].path, 'data.report_id');
  });
});

describe('size', () => {
  let small: Harness;
  before(async () => {
    small = await startHarness({ worker: false, orchestration: { ingestMaxBytes: 1024 * 1024 } });
  });
  after(() => small.close());

  it('a gzip bomb is a 413 (the body layer), and so is a chunk whose data decompresses past INGEST_MAX_BYTES', async () => {
    const t = await createTenant(small);
    const agent = await TestAgent.create(small, t, { tools: [] });
    // 64 MiB of spaces inside a JSON object: gzip makes it ~64 KiB.
    const bomb = zlib.gzipSync(Buffer.concat([Buffer.from('{"findings": ['), Buffer.alloc(64 * 1024 * 1024, 0x20), Buffer.from(']}')]));
    assert.ok(bomb.byteLength < 200 * 1024);
    const res = await small.request('POST', '/api/v1/agent/ingest', {
      apiKey: agent.apiKey, raw: new Uint8Array(bomb), headers: { 'content-encoding': 'gzip', 'content-type': 'application/json' },
    });
    assert.equal(res.status, 413);

    const json = Buffer.concat([Buffer.from('{"findings": ['), Buffer.alloc(8 * 1024 * 1024, 0x20), Buffer.from(']}')]);
    const env = { report_id: `r-${randomUUID()}`, chunk_index: 0, total_chunks: 1, compression: 'zstd', data: zlib.zstdCompressSync(json).toString('base64') };
    const chunk = await small.request('POST', '/api/v1/agent/ingest/chunk', { apiKey: agent.apiKey, body: env });
    assert.equal(chunk.status, 413);
    const { rows } = await small.pool.query(`SELECT count(*)::int AS n FROM ingests`);
    assert.equal(rows[0].n, 0);
  });
});

describe('statements per ingest', () => {
  /** Counts what the app sends to PostgreSQL: round trips, and statements in them (prepares not counted: once per connection). */
  function counting() {
    const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
    const original = proto.query;
    const counts = { trips: 0, statements: 0 };
    proto.query = function (this: unknown, ...args: unknown[]) {
      const q = args[0] as { constructor?: { name?: string }; statements?: unknown[] } | string;
      if (typeof q === 'object' && q?.constructor?.name === 'Prepare') return original.apply(this, args);
      counts.trips++;
      counts.statements += typeof q === 'object' && Array.isArray(q.statements) ? q.statements.length : 1;
      return original.apply(this, args);
    };
    return { counts, stop: () => { proto.query = original; } };
  }

  /** A report of n findings on one new asset, tied to nothing. */
  const report = (n: number) => ({
    version: '1.0', tool: { name: 'semgrep' }, metadata: { coverage_type: 'full' },
    assets: [{ id: 'r', type: 'repository', value: `github.com/acme/${randomUUID()}` }],
    findings: Array.from({ length: n }, (_, i) => ({ type: 'vulnerability', title: `issue ${i}`, severity: 'low', rule_id: `rule-${i % 7}`, asset_ref: 'r', location: { path: `src/f${i}.js`, start_line: i } })),
  });

  it('is the same for 10 findings and for 2,000: bounded, not one per finding', async () => {
    const { agent } = await setup();
    await h.stopWorker();
    try {
      await ingestReport(agent, report(3)); // warm: the agent's credential is cached, statements prepared
      const measure = async (n: number) => {
        const body = report(n);
        const spy = counting();
        try {
          const r = await ingestReport(agent, body);
          assert.equal(r.findings_created, n);
        } finally {
          spy.stop();
        }
        return spy.counts;
      };
      const ten = await measure(10);
      const many = await measure(2_000);
      assert.deepEqual(many, ten);
      // Round trip 1: BEGIN, SET lock_timeout, InsertIngest, UpsertIngestAssets. Round trip 2:
      // UpsertFindings, ResolveUnseenFindings (full coverage), FinishIngest, COMMIT.
      assert.deepEqual(ten, { trips: 2, statements: 8 });
    } finally {
      await h.startWorker();
    }
  });
});
