// The pure side of findings ingestion (src/domain/findings/): the report format, SARIF mapping
// of real tool output, credentials, chunk envelopes, identity, and the plan of one ingest.
// No database.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as v from 'valibot';
import { NotFindingsInput, listedProblems, type FindingDraft } from '../src/domain/findings/model.ts';
import { parseReport, unwrapReport } from '../src/domain/findings/report.ts';
import { sarifFindings, severityOfScore, firstFingerprint } from '../src/domain/findings/sarif.ts';
import { credentialFindings } from '../src/domain/findings/credentials.ts';
import { ChunkEnvelope, parseChunkReport } from '../src/domain/findings/chunk.ts';
import { fingerprintsOf, normalizeTitle, type IdentityParts } from '../src/domain/findings/identity.ts';
import { assetUpserts, planFindings, resolvesUnseen } from '../src/domain/findings/plan.ts';

const sarif = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/sarif/${name}`, import.meta.url), 'utf8')) as Record<string, any>;

function refused(fn: () => unknown): NotFindingsInput {
  try {
    fn();
  } catch (err) {
    if (err instanceof NotFindingsInput) return err;
    throw err;
  }
  throw new Error('not refused');
}

describe('the report format', () => {
  const report = {
    version: '1.0',
    $schema: 'https://schemas.example/eis.json',
    metadata: { id: 'r-1', timestamp: '2026-01-29T10:00:00Z', coverage_type: 'FULL', source_type: 'scanner', branch: { name: 'main', is_default_branch: true, commit_sha: 'abc' }, command_id: 'c', scan_id: '' },
    tool: { name: 'semgrep', version: '1.50', vendor: 'r2c' },
    assets: [{ id: 'repo', type: 'repository', value: 'github.com/a/b', criticality: '', properties: { stars: 3 }, technical: { repository: { default_branch: 'main' } } }],
    findings: [
      { type: 'vulnerability', title: 'SQLi', severity: 'High', rule_id: 'sqli', asset_ref: 'repo', location: { path: 'a.go', start_line: 3, branch: 'main' }, category: 'injection' },
      { type: 'secret', title: 'key', severity: 'critical', asset_type: 'domain', asset_value: 'a.example', partial_fingerprints: { primaryLocationLineHash: 'h:1' } },
      { type: 'vulnerability', title: 'on id', severity: 'low', asset_id: '5E8F3C2A-1B4D-4E6F-8A9B-0C1D2E3F4A5B' },
      { type: 'vulnerability', title: 'on nothing', severity: 'info' },
      { type: 'credential_leak', title: 'leak', severity: 'high' },
    ],
    dependencies: [{ name: 'lodash' }],
  };

  it('reads every finding, names its asset in API.md\'s order, keeps what it does not know', () => {
    const r = parseReport(report);
    assert.deepEqual([r.tool, r.coverage, r.branch, r.command_id, r.scan_id, r.report_id, r.skipped, r.problems],
      [{ name: 'semgrep', version: '1.50' }, 'full', { name: 'main', is_default: true, commit_sha: 'abc' }, 'c', null, 'r-1', 0, []]);
    assert.deepEqual(r.findings.map((f) => f.asset), [
      { kind: 'ref', ref: 'repo' }, { kind: 'inline', type: 'domain', value: 'a.example' },
      { kind: 'id', id: '5e8f3c2a-1b4d-4e6f-8a9b-0c1d2e3f4a5b' }, { kind: 'default' }, { kind: 'none' },
    ]);
    assert.deepEqual(r.findings[0].properties, { category: 'injection' });
    assert.deepEqual(r.findings[0].location, { path: 'a.go', start_line: 3, branch: 'main' });
    assert.equal(r.findings[0].severity, 'high');
    assert.equal(r.findings[1].line_hash, 'h:1');
    assert.ok(r.findings.every((f) => f.tool === 'semgrep'));
    assert.deepEqual(r.assets[0], {
      ref: 'repo', type: 'repository', value: 'github.com/a/b', name: null, tags: [], criticality: null,
      metadata: { technical: { repository: { default_branch: 'main' } }, stars: 3 },
    });
    assert.deepEqual(r.properties, {
      $schema: 'https://schemas.example/eis.json', dependencies: [{ name: 'lodash' }], version: '1.0',
      metadata: { source_type: 'scanner' }, tool_version: '1.50',
    });
    assert.deepEqual(parseReport(unwrapReport({ report })), r);
  });

  it('skips a finding that cannot be stored, with the path of each problem', () => {
    const r = parseReport({ tool: { name: 't' }, findings: [
      { type: 'vulnerability', title: 'ok', severity: 'low' },
      { type: 'bug', title: '', severity: 'severe' },
      { type: 'vulnerability', title: 'half an asset', severity: 'low', asset_type: 'domain' },
      'not an object',
    ] });
    assert.equal(r.findings.length, 1);
    assert.equal(r.skipped, 3);
    assert.deepEqual(r.problems.map((p) => p.path), ['findings[1].type', 'findings[1].title', 'findings[1].severity', 'findings[2].asset_value', 'findings[3]']);
  });

  it('an assets-only report, and a report without a tool, are reports', () => {
    const r = parseReport({ assets: [{ type: 'domain', value: 'a.example' }, { type: 'Bad Type', value: 'x' }] });
    assert.deepEqual([r.assets.length, r.findings.length, r.tool, r.coverage], [1, 0, null, 'partial']);
    assert.deepEqual(r.problems.map((p) => p.path), ['assets[1].type']);
    const noTool = parseReport({ findings: [{ type: 'vulnerability', title: 'x', severity: 'low' }] });
    assert.equal(noTool.findings[0].tool, null);
  });

  it('a body that is not a report is refused whole, naming where', () => {
    assert.deepEqual(refused(() => parseReport([])).problems[0].path, '(body)');
    assert.match(refused(() => parseReport({ hello: 1 })).problems[0].message, /none of version, metadata, tool, assets, findings/);
    assert.equal(refused(() => parseReport({ findings: {} })).problems[0].path, 'findings');
    assert.equal(refused(() => parseReport({ metadata: { coverage_type: 'most' } })).problems[0].path, 'metadata.coverage_type');
    assert.equal(refused(() => parseReport({ tool: {}, findings: [] })).problems[0].path, 'tool.name');
  });

  it('long titles are cut, not refused; problems past 1,000 are summed up', () => {
    const r = parseReport({ tool: { name: 't' }, findings: [{ type: 'vulnerability', title: 'x'.repeat(5000), severity: 'low' }] });
    assert.equal(r.findings[0].title.length, 1000);
    const many = Array.from({ length: 1500 }, (_, i) => ({ path: `findings[${i}]`, message: 'bad' }));
    const listed = listedProblems(many);
    assert.equal(listed.length, 1001);
    assert.match(listed[1000].message, /and 500 more/);
  });
});

describe('SARIF mapping (real tool output)', () => {
  it('ESLint (eslint-plugin-security): one finding per result, title from the rule, level warning → medium, absolute paths kept', () => {
    const r = sarifFindings(sarif('eslint.sarif'));
    assert.deepEqual(r.tools, ['ESLint']);
    assert.equal(r.findings.length, 7);
    const f = r.findings[0];
    assert.deepEqual([f.type, f.tool, f.rule_id, f.severity, f.location.path, f.location.start_line],
      ['vulnerability', 'ESLint', 'security/detect-child-process', 'medium', '/tmp/scanflow-fixture/webapp/src/server.js', 6]);
    assert.equal(f.title, 'Detects instances of "child_process" & non-literal "exec()" calls.');
    assert.equal(f.description, 'Found child_process.exec() with non Literal first argument');
    assert.deepEqual(f.references, ['https://github.com/eslint-community/eslint-plugin-security/blob/main/docs/rules/detect-child-process.md']);
    const relative = sarifFindings(sarif('eslint.sarif'), { checkoutUri: '/tmp/scanflow-fixture/webapp' });
    assert.equal(relative.findings[0].location.path, 'src/server.js');
  });

  it('secretlint: relative URIs, level error → high, rules not tagged secret stay vulnerabilities (as API.md says)', () => {
    const r = sarifFindings(sarif('secretlint.sarif'));
    assert.deepEqual(r.findings.map((f) => [f.severity, f.type, f.location.path]), [
      ['high', 'vulnerability', 'config/deploy.env'], ['high', 'vulnerability', 'config/deploy.env'],
      ['high', 'vulnerability', 'config/deploy.env'], ['high', 'vulnerability', 'config/id_deploy'],
    ]);
  });

  it('security-severity wins over level, on the result or its rule; the rule\'s defaultConfiguration when the result has no level', () => {
    assert.deepEqual([9.8, 9, 8.9, 7, 6.9, 4, 3.9, 0.1, 0].map(severityOfScore),
      ['critical', 'critical', 'high', 'high', 'medium', 'medium', 'low', 'low', 'info']);
    const trivy = sarifFindings(sarif('trivy.sarif')).findings;
    assert.deepEqual(trivy.map((f) => [f.rule_id, f.severity, f.type]), [
      ['CVE-2023-38545', 'critical', 'vulnerability'], ['CVE-2023-44487', 'high', 'vulnerability'],
      ['CVE-2023-39325', 'medium', 'vulnerability'], ['CVE-2024-2511', 'low', 'vulnerability'],
      ['aws-access-key-id', 'critical', 'secret'], ['DS002', 'medium', 'vulnerability'],
    ]);
    assert.deepEqual(trivy[0].vulnerability, { cve_id: 'CVE-2023-38545' });
    assert.equal(trivy[4].location.snippet, 'AWS_ACCESS_KEY_ID=********************');
    const log = sarif('trivy.sarif');
    log.runs[0].results[0].properties = { 'security-severity': '2.0' };
    log.runs[0].results[5].level = 'none';
    const changed = sarifFindings(log).findings;
    assert.deepEqual([changed[0].severity, changed[5].severity], ['low', 'info']);
    const codeql = sarifFindings(sarif('codeql.sarif')).findings;
    assert.deepEqual(codeql.map((f) => f.severity), ['high', 'high', 'high', 'low']);
    assert.deepEqual(codeql[0].vulnerability, { cwe: ['CWE-89'] });
    assert.equal(codeql[0].line_hash, '5e9a7c1b0d3f4a21:1');
  });

  it('the tool\'s fingerprints: the first key in sorted order', () => {
    assert.equal(firstFingerprint({ 'zeta/v1': 'z', 'alpha/v2': 'a', 'beta/v1': 'b' }), 'a');
    assert.equal(firstFingerprint({ 'a/v1': ' ', 'b/v1': 'b' }), 'b');
    assert.equal(firstFingerprint(undefined), null);
  });

  it('rules by index in the driver or an extension (CodeQL), messages from message strings with arguments; pass results are not findings', () => {
    const log = {
      version: '2.1.0',
      runs: [{
        tool: {
          driver: { name: 'CodeQL', rules: [] },
          extensions: [{ name: 'codeql/js-queries', rules: [{ id: 'js/xss', shortDescription: { text: 'Reflected XSS' }, messageStrings: { m: { text: 'Flows from {0} to {1}.' } }, properties: { 'security-severity': '6.1' } }] }],
        },
        results: [
          { rule: { id: 'js/xss', index: 0, toolComponent: { index: 0 } }, message: { id: 'm', arguments: ['req.query', 'res.send'] } },
          { ruleId: 'js/xss', kind: 'pass', message: { text: 'fine' } },
          { ruleId: 'unknown-rule' },
        ],
      }],
    };
    const r = sarifFindings(log);
    assert.equal(r.findings.length, 2);
    assert.deepEqual([r.findings[0].title, r.findings[0].description, r.findings[0].severity], ['Reflected XSS', 'Flows from req.query to res.send.', 'medium']);
    assert.deepEqual([r.findings[1].title, r.findings[1].severity], ['unknown-rule', 'medium']);
  });

  it('malformed logs are refused with the path; malformed results are skipped with theirs', () => {
    assert.equal(refused(() => sarifFindings({ version: '2.1.0' })).problems[0].path, 'runs');
    assert.equal(refused(() => sarifFindings({ version: '2.1.0', runs: [{ tool: { driver: {} } }] })).problems[0].path, 'runs[0].tool.driver.name');
    const r = sarifFindings({ version: '2.1.0', runs: [{ tool: { driver: { name: 't' } }, results: [{ message: {} }, { ruleId: 7 }, { message: { text: 'ok' } }] }] });
    assert.deepEqual(r.problems.map((p) => p.path), ['runs[0].results[0].message', 'runs[0].results[1].ruleId']);
    assert.deepEqual([r.findings.length, r.skipped], [1, 2]);
  });
});

describe('credentials', () => {
  it('each a credential_leak finding of the tool credentials, on no asset; bad ones skipped', () => {
    const r = credentialFindings({ credentials: [{ identifier: 'a@x.example', source: 'breach', leaked_at: '2026-01-01T00:00:00Z', details: { hash: 'md5' } }, { identifier: 'b' }] });
    assert.equal(r.findings.length, 1);
    const f = r.findings[0];
    assert.deepEqual([f.type, f.tool, f.rule_id, f.severity, f.asset], ['credential_leak', 'credentials', 'breach', 'high', { kind: 'none' }]);
    assert.deepEqual(f.properties, { identifier: 'a@x.example', source: 'breach', leaked_at: '2026-01-01T00:00:00.000Z', details: { hash: 'md5' } });
    assert.deepEqual(r.problems.map((p) => p.path), ['credentials[1].source']);
    assert.equal(refused(() => credentialFindings({ creds: [] })).problems[0].path, 'credentials');
  });
});

describe('chunk envelopes', () => {
  it('the SDK\'s envelope; the chunk must agree with it; a chunk may carry nothing', () => {
    const env = v.parse(ChunkEnvelope, { report_id: 'r', chunk_index: 1, total_chunks: 3, compression: 'zstd', data: 'KLUv/Q==', is_final: false });
    assert.equal(env.chunk_index, 1);
    assert.equal(v.safeParse(ChunkEnvelope, { report_id: 'r', chunk_index: 3, total_chunks: 3, data: '' }).success, false);
    assert.equal(v.safeParse(ChunkEnvelope, { report_id: 'r', chunk_index: 0, total_chunks: 1, compression: 'brotli', data: '' }).success, false);
    assert.equal(v.safeParse(ChunkEnvelope, { report_id: 'r', chunk_index: 0, total_chunks: 1, data: 'not base64!' }).success, false);
    const empty = parseChunkReport({ report_id: 'r', chunk_index: 1, total_chunks: 3, is_final: false }, env);
    assert.deepEqual([empty.findings.length, empty.properties], [0, {}]);
    assert.equal(refused(() => parseChunkReport({ chunk_index: 2 }, env)).problems[0].path, 'data.chunk_index');
    assert.equal(refused(() => parseChunkReport({ findings: 'x' }, env)).problems[0].path, 'data.findings');
  });
});

describe('identity', () => {
  const base: IdentityParts = {
    tool: 'ESLint', rule_id: 'r', asset_id: 'asset', path: 'src/a.js', tool_fingerprint: null, line_hash: null, snippet: null,
    title: 'Generic Object Injection Sink', start_line: 10, start_column: 3,
  };

  it('never a line number: the same finding ten lines lower keeps its fingerprint', () => {
    const [a] = fingerprintsOf([base]);
    const [b] = fingerprintsOf([{ ...base, start_line: 20, start_column: 9 }]);
    assert.equal(a, b);
    assert.match(a, /^[0-9a-f]{64}$/);
  });

  it('the tool\'s fingerprint first, then the line hash with tool, rule and path, then the computed hash', () => {
    assert.equal(fingerprintsOf([{ ...base, tool_fingerprint: 'tool-fp', line_hash: 'h:1' }])[0], 'tool-fp');
    const long = fingerprintsOf([{ ...base, tool_fingerprint: 'x'.repeat(600) }])[0];
    assert.match(long, /^sha256:[0-9a-f]{64}$/);
    const lh = fingerprintsOf([{ ...base, line_hash: 'h:1' }])[0];
    assert.notEqual(lh, fingerprintsOf([base])[0]);
    assert.equal(lh, fingerprintsOf([{ ...base, line_hash: 'h:1', asset_id: 'other', title: 'other', start_line: 99 }])[0], 'the line hash does not use asset or title');
    assert.notEqual(lh, fingerprintsOf([{ ...base, line_hash: 'h:1', path: 'src/b.js' }])[0]);
    // Computed: each of tool, rule, asset, path and text matters.
    const one = fingerprintsOf([base])[0];
    for (const change of [{ tool: 'x' }, { rule_id: 'x' }, { asset_id: 'x' }, { path: 'x' }, { title: 'x' }, { snippet: 'x' }]) {
      assert.notEqual(fingerprintsOf([{ ...base, ...change }])[0], one, JSON.stringify(change));
    }
  });

  it('the snippet and title are normalized: spacing, case, positions written into messages', () => {
    const a = fingerprintsOf([{ ...base, snippet: 'if (a)   {\n  eval(x) }' }])[0];
    assert.equal(fingerprintsOf([{ ...base, snippet: ' if (a) {  eval(x) } ' }])[0], a);
    assert.equal(normalizeTitle('Unused variable on Line 42, column 7'), normalizeTitle('unused  variable on line 52, column 1'));
    assert.equal(normalizeTitle('error at src/a.js:12:4'), normalizeTitle('error at src/a.js:99:1'));
    assert.notEqual(normalizeTitle('CVE-2021-1234 in lodash'), normalizeTitle('CVE-2021-5678 in lodash'));
  });

  it('equal computed identities are numbered by position in the file; moving them all keeps every identity', () => {
    const two = fingerprintsOf([{ ...base, start_line: 30 }, { ...base, start_line: 12 }]);
    assert.notEqual(two[0], two[1]);
    assert.equal(two[1], fingerprintsOf([base])[0], 'the first in the file keeps the plain identity');
    const moved = fingerprintsOf([{ ...base, start_line: 22 }, { ...base, start_line: 40 }]);
    assert.deepEqual(moved, [two[1], two[0]]);
  });
});

describe('the plan of one ingest', () => {
  const draft = (over: Partial<FindingDraft>): FindingDraft => ({
    path: 'findings[0]', asset: { kind: 'default' }, type: 'vulnerability', tool: 't', rule_id: 'r', title: 'x', description: null,
    severity: 'low', location: {}, vulnerability: null, references: [], properties: {}, tool_fingerprint: null, line_hash: null, ...over,
  });
  const rows = [
    { id: 'A1', type: 'repository', value: 'r1', created: true, by_id: false },
    { id: 'A2', type: 'domain', value: 'd1', created: false, by_id: false },
    { id: 'A3', type: 'server', value: null, created: false, by_id: true },
  ];
  const parsed = {
    assets: [{ ref: 'repo', type: 'repository', value: 'r1', name: null, tags: [], criticality: null, metadata: {} }],
    findings: [
      draft({ path: 'findings[0]', asset: { kind: 'ref', ref: 'repo' }, title: 'a' }),
      draft({ path: 'findings[1]', asset: { kind: 'inline', type: 'domain', value: 'd1' }, title: 'b' }),
      draft({ path: 'findings[2]', asset: { kind: 'id', id: 'A3' }, title: 'c' }),
      draft({ path: 'findings[3]', asset: { kind: 'id', id: 'nope' }, title: 'd' }),
      draft({ path: 'findings[4]', asset: { kind: 'ref', ref: 'missing' }, title: 'e' }),
      draft({ path: 'findings[5]', title: 'f' }),
      draft({ path: 'findings[6]', title: 'f' }),
      draft({ path: 'findings[7]', tool: null, title: 'g' }),
      draft({ path: 'findings[8]', tool_fingerprint: 'same', title: 'h1' }),
      draft({ path: 'findings[9]', tool_fingerprint: 'same', title: 'h2' }),
    ],
    problems: [{ path: 'findings[10].severity', message: 'bad' }],
    skipped: 1,
  };

  it('assets by reference, type and value, id, default (else the report\'s only one); duplicates merged; rows sorted by identity', () => {
    const plan = planFindings({ parsed, assetRows: rows, defaultAssetId: null, fallbackTool: null });
    assert.deepEqual(plan.problems.map((p) => p.path), ['findings[10].severity', 'findings[3].asset_id', 'findings[4].asset_ref', 'findings[7]']);
    assert.equal(plan.skipped, 4);
    // f twice (numbered: two findings), h twice with one tool fingerprint (one finding).
    assert.deepEqual(plan.findings.map((f) => f.title).sort(), ['a', 'b', 'c', 'f', 'f', 'h1']);
    assert.deepEqual(plan.findings.filter((f) => f.title === 'f').map((f) => f.asset_id), ['A1', 'A1'], "no default: the report's only asset");
    const keys = plan.findings.map((f) => `${f.asset_id}\u0000${f.fingerprint}`);
    assert.deepEqual(keys, [...keys].sort());
    assert.deepEqual([plan.assetsCreated, plan.assetsUpdated, plan.assetRefs, plan.scopeAssetIds], [1, 1, { repo: 'A1' }, ['A1', 'A2', 'A3']]);

    const tied = planFindings({ parsed, assetRows: rows, defaultAssetId: 'A9', fallbackTool: 'semgrep' });
    assert.deepEqual(tied.findings.filter((f) => f.title === 'f').map((f) => f.asset_id), ['A9', 'A9']);
    assert.equal(tied.findings.find((f) => f.title === 'g')!.tool, 'semgrep');
    assert.deepEqual(tied.scopeAssetIds, ['A1', 'A2', 'A3', 'A9']);
  });

  it('a chunk uses the report assets of earlier chunks', () => {
    const chunk = { assets: [], findings: [draft({ asset: { kind: 'ref', ref: 'repo' } })], problems: [], skipped: 0 };
    const plan = planFindings({ parsed: chunk, assetRows: [], knownRefs: { repo: 'A1' }, defaultAssetId: null, fallbackTool: null });
    assert.deepEqual(plan.findings.map((f) => f.asset_id), ['A1']);
  });

  it('assets to upsert: once each by (type, value), the report\'s entry winning; sorted', () => {
    const ups = assetUpserts({
      assets: [{ ref: 'x', type: 'repository', value: 'b', name: 'B', tags: ['t'], criticality: 'high', metadata: { k: 1 } }],
      findings: [draft({ asset: { kind: 'inline', type: 'repository', value: 'b' } }), draft({ asset: { kind: 'inline', type: 'domain', value: 'a' } })],
      problems: [], skipped: 0,
    });
    assert.deepEqual(ups.map((a) => [a.type, a.value, a.name]), [['domain', 'a', null], ['repository', 'b', 'B']]);
  });

  it('only full coverage resolves, and when a branch is named only its default branch', () => {
    assert.equal(resolvesUnseen('full', null), true);
    assert.equal(resolvesUnseen('full', { name: 'main', is_default: true, commit_sha: null }), true);
    assert.equal(resolvesUnseen('full', { name: 'feat', is_default: false, commit_sha: null }), false);
    assert.equal(resolvesUnseen('full', { name: 'feat', is_default: null, commit_sha: null }), false);
    assert.equal(resolvesUnseen('incremental', null), false);
    assert.equal(resolvesUnseen('partial', null), false);
  });
});
