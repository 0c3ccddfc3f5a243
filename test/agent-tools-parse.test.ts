// The tool adapters' pure parts on recorded real output (test/fixtures/agent/README.md says
// how each was captured): step_config allow-lists → argv, and output → report or SARIF + the
// step's output.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Log as SarifLog } from 'sarif';
import type { Report } from '../src/agent/report.ts';
import type { HostTarget, RepositoryTarget, Target } from '../src/agent/targets.ts';
import { eslint } from '../src/agent/tools/eslint.ts';
import { flawfinder } from '../src/agent/tools/flawfinder.ts';
import { nmap } from '../src/agent/tools/nmap.ts';
import { firstFixedVersion, npmAudit } from '../src/agent/tools/npm-audit.ts';
import { lineHash, relativeUri } from '../src/agent/tools/sarif.ts';
import { secretlint } from '../src/agent/tools/secretlint.ts';
import { sslscan, sslscanPorts } from '../src/agent/tools/sslscan.ts';
import { ToolError, type ParseContext, type ToolResult } from '../src/agent/tools/tool.ts';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/agent/${name}`, import.meta.url), 'utf8');
const NOW = new Date('2026-12-01T12:00:00Z'); // the day the fixtures were captured

function hostCtx(host: string, port: number | null = null, type = 'server'): ParseContext {
  const target: HostTarget = { kind: 'host', asset: { type, name: host, value: host }, host, port, url: null };
  return { target, now: NOW, readSource: () => null };
}
function repoCtx(files: Record<string, string> = {}, dir = '/tmp/cap/repo', stepConfig?: unknown): ParseContext {
  const target: RepositoryTarget = {
    kind: 'repository', asset: { type: 'repository', name: 'r', value: 'file:///src/r' }, url: 'file:///src/r', dir,
    branch: { name: 'main', is_default_branch: true, commit_sha: 'c'.repeat(40) },
  };
  return { target, now: NOW, readSource: (p) => files[p] ?? null, stepConfig };
}
const report = (r: ToolResult) => {
  assert.equal(r.format, 'report');
  return r.document as Report;
};
const sarif = (r: ToolResult) => {
  assert.equal(r.format, 'sarif');
  return r.document as SarifLog;
};
const toolError = (code: string, pattern?: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ToolError, `a ToolError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (pattern) assert.match(err.message, pattern);
  return true;
};
const host = (ctx: ParseContext) => ctx.target as Target;

// ---------------------------------------------------------------- nmap

describe('nmap', () => {
  it('argv: a connect scan of the top 100 ports, XML on stdout, the host after --', () => {
    const [inv] = nmap.command({}, host(hostCtx('192.0.2.7')), '/w');
    assert.deepEqual(inv.argv.slice(1), ['-sT', '-Pn', '-n', '--open', '--top-ports', '100', '-oX', '-', '--', '192.0.2.7']);
    assert.equal(inv.cwd, '/w');
  });

  it('argv from the allow-listed options', () => {
    const [inv] = nmap.command({ ports: [22, 443], service_detection: true, version_intensity: 2, timing: 4, max_retries: 1 }, host(hostCtx('::1')), '/w');
    assert.deepEqual(inv.argv.slice(1), ['-sT', '-Pn', '-n', '--open', '-6', '-p', '22,443', '-sV', '--version-intensity', '2', '-T4', '--max-retries', '1', '-oX', '-', '--', '::1']);
    assert.deepEqual(nmap.command({ ports: '1-1024,8443' }, host(hostCtx('h.example')), '/w')[0].argv.slice(5, 7), ['-p', '1-1024,8443']);
  });

  it('refuses options outside the allow-list, naming them', () => {
    assert.throws(() => nmap.checkConfig({ scripts: 'vuln' }), toolError('invalid_config', /step_config\.scripts is not an option of nmap \(allowed: max_retries, ports, service_detection, timing, top_ports, version_intensity\)/));
    assert.throws(() => nmap.checkConfig({ ports: '22; rm -rf /' }), toolError('invalid_config', /step_config\.ports/));
    assert.throws(() => nmap.checkConfig({ ports: '70000' }), toolError('invalid_config', /1-65535/));
    assert.throws(() => nmap.checkConfig({ timing: 5 }), toolError('invalid_config', /timing/));
    assert.throws(() => nmap.checkConfig({ ports: '22', top_ports: 10 }), toolError('invalid_config', /exclude/));
    assert.throws(() => nmap.checkConfig('fast'), toolError('invalid_config', /must be an object/));
    nmap.checkConfig(null);
    nmap.checkConfig(undefined);
  });

  it('scans hosts only', () => {
    assert.throws(() => nmap.command({}, repoCtx().target, '/w'), toolError('target_unsupported', /repository/));
  });

  it('-sV output: a finding per open port with its service; tls_ports from the tunnel', () => {
    const r = nmap.parse(fixture('nmap-service-detection.xml'), '', 0, hostCtx('127.0.0.1'));
    const doc = report(r);
    assert.equal(doc.version, '1.0');
    assert.equal(doc.metadata.coverage_type, 'full');
    assert.deepEqual(doc.tool, { name: 'nmap', version: '7.93' });
    assert.deepEqual(r.output.open_ports, [18022, 18443]);
    assert.deepEqual(r.output.tls_ports, [18443]);
    assert.deepEqual(doc.findings.map((f) => [f.title, f.severity, f.fingerprint]), [
      ['Open port 18022/tcp: ssh (OpenSSH 8.9)', 'info', 'nmap:127.0.0.1:18022/tcp'],
      ['Open port 18443/tcp', 'info', 'nmap:127.0.0.1:18443/tcp'],
    ]);
    assert.deepEqual(doc.findings[0].location, { host: '127.0.0.1', port: 18022 });
    assert.deepEqual(doc.findings[0].properties?.cpe, ['cpe:/a:openbsd:openssh:8.9']);
    assert.equal(doc.findings[1].properties?.tls, true);
    assert.ok(doc.findings.every((f) => f.type === 'misconfiguration'));
  });

  it('services that should not face a network are low', () => {
    const r = nmap.parse(fixture('nmap-top-ports.xml'), '', 0, hostCtx('127.0.0.1'));
    assert.deepEqual(report(r).findings.map((f) => [f.title, f.severity, f.rule_id]), [
      ['Open port 3306/tcp: mysql', 'low', 'exposed-service'],
      ['Open port 5432/tcp: postgresql', 'low', 'exposed-service'],
    ]);
    assert.deepEqual(r.output.tls_ports, []);
  });

  it('a name that does not resolve is target_unreachable with nmap\'s words; a failed nmap is tool_failed', () => {
    assert.throws(() => nmap.parse(fixture('nmap-unresolved.xml'), fixture('nmap-unresolved.stderr'), 0, hostCtx('nonexistent.invalid')),
      toolError('target_unreachable', /Failed to resolve "nonexistent.invalid"/));
    assert.throws(() => nmap.parse('', 'QUITTING!', 1, hostCtx('h')), toolError('tool_failed', /exited with 1: QUITTING!/));
    assert.throws(() => nmap.parse('<html>', '', 0, hostCtx('h')), toolError('output_invalid'));
  });
});

// ---------------------------------------------------------------- sslscan

describe('sslscan', () => {
  it('old protocols, weak ciphers and the certificate\'s problems', () => {
    const r = sslscan.parse(fixture('sslscan-weak.xml'), '', 0, hostCtx('127.0.0.1', 18445));
    const doc = report(r);
    const byRule = (rule: string) => doc.findings.filter((f) => f.rule_id === rule);
    assert.deepEqual(byRule('weak-protocol').map((f) => [f.title, f.severity]), [
      ['TLSv1.0 enabled on 127.0.0.1:18445', 'medium'],
      ['TLSv1.1 enabled on 127.0.0.1:18445', 'medium'],
    ]);
    const ciphers = byRule('weak-cipher');
    assert.deepEqual(ciphers.map((f) => f.properties?.cipher).sort(), [
      'AECDH-AES128-SHA', 'AECDH-AES256-SHA', 'AECDH-NULL-SHA', 'ECDHE-RSA-NULL-SHA', 'NULL-MD5', 'NULL-SHA', 'NULL-SHA256',
    ]);
    assert.ok(ciphers.every((f) => f.severity === 'high'));
    const nullMd5 = ciphers.find((f) => f.properties?.cipher === 'NULL-MD5')!;
    assert.deepEqual(nullMd5.properties?.protocols, ['TLSv1.2', 'TLSv1.1', 'TLSv1.0']);
    assert.match(nullMd5.description!, /no encryption/);
    assert.deepEqual(doc.findings.filter((f) => f.rule_id?.startsWith('certificate-')).map((f) => [f.rule_id, f.severity]), [
      ['certificate-expired', 'high'], ['certificate-self-signed', 'medium'], ['certificate-short-key', 'high'],
    ]);
    assert.equal(new Set(doc.findings.map((f) => f.fingerprint)).size, doc.findings.length, 'fingerprints are distinct');
    assert.ok(doc.findings.every((f) => f.location?.host === '127.0.0.1' && f.location.port === 18445));
    assert.deepEqual(r.output.weak_protocols, ['TLSv1.0', 'TLSv1.1']);
    assert.deepEqual(r.output.tls_ports, [18445]);
    const cert = (r.output.endpoints as { certificate: Record<string, unknown> }[])[0].certificate;
    assert.deepEqual([cert.subject, cert.key_bits, cert.expired, cert.not_after], ['expired.example', 1024, true, '2020-01-02T00:00:00.000Z']);
  });

  it('a modern endpoint: only what is wrong with its certificate, and the name checked for host names', () => {
    const forIp = report(sslscan.parse(fixture('sslscan-ec-altnames.xml'), '', 0, hostCtx('127.0.0.1', 18446)));
    assert.deepEqual(forIp.findings.map((f) => f.rule_id), ['certificate-expiring', 'certificate-self-signed'], 'P-256 (128 security bits) is not short');
    const matching = report(sslscan.parse(fixture('sslscan-ec-altnames.xml'), '', 0, hostCtx('www.example.test', 18446, 'domain')));
    assert.ok(!matching.findings.some((f) => f.rule_id === 'certificate-name-mismatch'));
    const other = report(sslscan.parse(fixture('sslscan-ec-altnames.xml'), '', 0, hostCtx('other.example', 18446, 'domain')));
    const mismatch = other.findings.find((f) => f.rule_id === 'certificate-name-mismatch');
    assert.ok(mismatch);
    assert.match(mismatch.title, /does not name other\.example/);
  });

  it('a closed port is target_unreachable with sslscan\'s message', () => {
    assert.throws(() => sslscan.parse(fixture('sslscan-closed.xml'), '', 0, hostCtx('127.0.0.1', 18099)),
      toolError('target_unreachable', /Could not open a connection to host 127\.0\.0\.1/));
  });

  it('ports: the step\'s, an earlier step\'s tls_ports, the target\'s, or 443', () => {
    const upstream = { infra: { status: 'completed', output: { tls_ports: [8443, 443] } }, other: { output: { tls_ports: [9443] } } };
    assert.deepEqual(sslscanPorts({ port: 4443 }, 8000, upstream), [4443]);
    assert.deepEqual(sslscanPorts({ ports: [1, 2, 1] }, null), [1, 2]);
    assert.deepEqual(sslscanPorts({ ports_from: 'infra' }, 8000, upstream), [8443, 443]);
    assert.deepEqual(sslscanPorts({}, 8000, upstream), [8000]);
    assert.deepEqual(sslscanPorts({}, null, upstream), [443, 8443, 9443]);
    assert.deepEqual(sslscanPorts({}, null, {}), [443]);
    assert.throws(() => sslscanPorts({ ports_from: 'nope' }, null, upstream), toolError('invalid_config', /"nope"/));
    assert.throws(() => sslscanPorts({ ports_from: 'x' }, null, { x: { output: { tls_ports: [] } } }), toolError('invalid_config', /no tls_ports/));
  });

  it('one invocation per port, host:port last, options from the allow-list', () => {
    const invs = sslscan.command({ ports: [443, 8443], sni_name: 'app.example.com', starttls: 'smtp', connect_timeout: 5 }, host(hostCtx('192.0.2.1')), '/w');
    assert.deepEqual(invs.map((i) => i.argv.slice(1)), [
      ['--xml=-', '--no-colour', '--sni-name=app.example.com', '--starttls-smtp', '--timeout=5', '192.0.2.1:443'],
      ['--xml=-', '--no-colour', '--sni-name=app.example.com', '--starttls-smtp', '--timeout=5', '192.0.2.1:8443'],
    ]);
    assert.deepEqual(sslscan.command({}, host(hostCtx('::1', 9443)), '/w')[0].argv.at(-1), '[::1]:9443');
    assert.throws(() => sslscan.checkConfig({ ssl2: true }), toolError('invalid_config', /step_config\.ssl2 is not an option of sslscan/));
    assert.throws(() => sslscan.checkConfig({ sni_name: '--xml=/etc/passwd' }), toolError('invalid_config', /sni_name/));
    assert.throws(() => sslscan.checkConfig({ port: 443, ports: [443] }), toolError('invalid_config', /one of/));
  });
});

// ---------------------------------------------------------------- SARIF tools

const SECRET_LINE = '  secretAccessKey: "g/UJ/rvO2GDHIC6C9Byegrbr6H8rc+v1r6vZp42u",';

describe('secretlint', () => {
  const configJs = ['// deployment settings', 'export const aws = {', '  accessKeyId: "AKIAVEGJDRAT2QHCCQBF",', SECRET_LINE, '};'].join('\n');

  it('SARIF passed through, its rules tagged as secrets, the title from the (masked) message', () => {
    const r = secretlint.parse(fixture('secretlint.sarif'), '', 1, repoCtx({ 'config.js': configJs }));
    const log = sarif(r);
    const rule = log.runs[0].tool.driver.rules![0];
    assert.deepEqual(rule.properties?.tags, ['secret', 'security']);
    assert.equal(log.runs[0].tool.driver.version, JSON.parse(readFileSync('node_modules/secretlint/package.json', 'utf8')).version);
    assert.equal(rule.shortDescription, undefined, 'the placeholder "secretlint rule(…) error" is gone');
    const result = log.runs[0].results![0];
    assert.equal(result.message.text, 'found AWS Secret Access Key: ****************************************');
    assert.equal(result.locations![0].physicalLocation!.artifactLocation!.uri, 'config.js');
    assert.match(result.partialFingerprints!.primaryLocationLineHash, /^[0-9a-f]{32}:1$/);
    assert.ok(!JSON.stringify(log).includes('rvO2GDHIC6C9'), 'the secret itself is not in what is ingested');
    assert.deepEqual(log.runs[0].versionControlProvenance, [{
      repositoryUri: 'file:///src/r', revisionId: 'c'.repeat(40), branch: 'main', properties: { is_default_branch: true },
    }]);
    assert.deepEqual(r.output, { secrets_found: 1, files: ['config.js'] });
  });

  it('exit 2 (secretlint failed) is tool_failed with its stderr; no file to scan is no secret', () => {
    assert.throws(() => secretlint.parse('', 'Error: Failed to load rule module', 2, repoCtx()), toolError('tool_failed', /Failed to load rule module/));
    const empty = secretlint.parse('', 'Error: Not found target files\n    at lintFileOrText (file:///…/secretlint/module/index.js:14:19)', 2, repoCtx());
    assert.deepEqual(sarif(empty).runs[0].results, []);
    assert.deepEqual(empty.output, { secrets_found: 0, files: [] });
  });

  it('takes include globs inside the repository only', () => {
    const [inv] = secretlint.command({ include: ['src/**/*', '.env'] }, repoCtx().target, '/w');
    assert.deepEqual(inv.argv.slice(-2), ['src/**/*', '.env']);
    assert.equal(inv.argv[0], process.execPath);
    assert.equal(inv.cwd, '/tmp/cap/repo');
    for (const bad of ['/etc/**', '../x', '--format=json']) {
      assert.throws(() => secretlint.checkConfig({ include: [bad] }), toolError('invalid_config', /include\[0\]/), bad);
    }
  });
});

describe('eslint', () => {
  const appJs = fixtureLines('app.js');

  it('paths relative to the checkout, a line hash per result, unparsed files counted not reported', () => {
    const r = eslint.parse(fixture('eslint.sarif'), '', 1, repoCtx(sources()));
    const log = sarif(r);
    const results = log.runs[0].results!;
    assert.deepEqual(results.map((x) => [x.ruleId, x.locations![0].physicalLocation!.artifactLocation!.uri, x.level]), [
      ['security/detect-eval-with-expression', 'app.js', 'error'],
      ['security/detect-eval-with-expression', 'handler.ts', 'error'],
    ]);
    assert.ok(log.runs[0].artifacts!.every((a) => !a.location!.uri!.startsWith('file:')));
    assert.deepEqual(r.output, { problems: 2, files_scanned: 4, files_not_parsed: [{ path: 'bad.ts', message: 'Parsing error: TypeScript enum is not supported in strip-only mode' }] });
    const hashes = results.map((x) => x.partialFingerprints?.primaryLocationLineHash);
    assert.ok(hashes.every((h) => /^[0-9a-f]{32}:1$/.test(h ?? '')));
  });

  it('the line hash ignores the line number: code moved down is the same finding', () => {
    const moved = eslint.parse(fixture('eslint.sarif').replace('"startLine": 4', '"startLine": 14'), '', 1,
      repoCtx({ ...sources(), 'app.js': ['', '', '', '', '', '', '', '', '', '', ...appJs].join('\n') }));
    const original = eslint.parse(fixture('eslint.sarif'), '', 1, repoCtx(sources()));
    const hashOf = (r: ToolResult) => sarif(r).runs[0].results![0].partialFingerprints!.primaryLocationLineHash;
    assert.equal(hashOf(moved), hashOf(original));
    assert.equal(hashOf(original), `${lineHash('security/detect-eval-with-expression', appJs[3])}:1`);
  });

  it('exit 2 is tool_failed; options are allow-listed', () => {
    assert.throws(() => eslint.parse('', 'Oops! Something went wrong!', 2, repoCtx()), toolError('tool_failed', /Something went wrong/));
    const [inv] = eslint.command({ include: ['src'], disable_rules: ['security/detect-non-literal-fs-filename'] }, repoCtx().target, '/w');
    const args = inv.argv.slice(3);
    assert.equal(args[args.indexOf('--config') + 1].endsWith('src/agent/tools/eslint-security.config.js'), true);
    assert.ok(args.includes('--no-inline-config'));
    assert.equal(args[args.indexOf('--rule') + 1], '{"security/detect-non-literal-fs-filename":"off"}');
    assert.deepEqual(args.slice(-2), ['--', 'src']);
    assert.throws(() => eslint.checkConfig({ disable_rules: ['no-console'] }), toolError('invalid_config', /disable_rules\[0\]/));
    assert.throws(() => eslint.checkConfig({ config: './eslint.config.js' }), toolError('invalid_config', /step_config\.config is not an option of eslint/));
  });

  function sources() {
    return { 'app.js': appJs.join('\n'), 'handler.ts': 'type Q = { expr: string };\nexport function run(q: Q): unknown {\n  return eval(q.expr);\n}\n' };
  }
});

describe('flawfinder', () => {
  it('SARIF passed through: its own fingerprints kept, paths relative, CWE rules', () => {
    const r = flawfinder.parse(fixture('flawfinder.sarif'), '', 0, repoCtx());
    const log = sarif(r);
    const results = log.runs[0].results!;
    assert.deepEqual(results.map((x) => [x.ruleId, x.level, x.locations![0].physicalLocation!.artifactLocation!.uri]), [
      ['FF1013', 'note', 'copy.c'], ['FF1001', 'error', 'copy.c'],
    ]);
    assert.equal(results[1].locations![0].physicalLocation!.artifactLocation!.uriBaseId, undefined);
    assert.ok(results.every((x) => x.fingerprints?.['contextHash/v1'] && !x.partialFingerprints), 'the tool\'s fingerprint is the identity');
    assert.deepEqual(r.output, { hits: 2 });
  });

  it('argv and failures', () => {
    const [inv] = flawfinder.command({ min_level: 2, false_positive: true }, repoCtx().target, '/w');
    assert.deepEqual(inv.argv.slice(1), ['--sarif', '--minlevel=2', '--falsepositive', '--', '.']);
    assert.throws(() => flawfinder.parse('not json', 'Traceback …', 0, repoCtx()), toolError('output_invalid'));
    assert.throws(() => flawfinder.parse('', 'Error: no such file', 1, repoCtx()), toolError('tool_failed', /no such file/));
  });
});

describe('SARIF URIs', () => {
  it('relative to the checkout, whatever form the tool wrote', () => {
    assert.equal(relativeUri('file:///tmp/w/checkout/src/a%20b.js', '/tmp/w/checkout'), 'src/a b.js');
    assert.equal(relativeUri('./x/y.c', '/tmp/w/checkout'), 'x/y.c');
    assert.equal(relativeUri('/tmp/w/checkout/z.c', '/tmp/w/checkout'), 'z.c');
    assert.equal(relativeUri('/elsewhere/z.c', '/tmp/w/checkout'), '/elsewhere/z.c');
    assert.equal(relativeUri('src/a.js', null), 'src/a.js');
  });
});

// ---------------------------------------------------------------- npm audit

describe('npm-audit', () => {
  const lock = fixture('npm-audit.package-lock.json');
  const pkg = fixture('npm-audit.package.json');

  it('advisories → vulnerability findings with GHSA, CWE, CVSS, package, installed and fixed version', () => {
    const r = npmAudit.parse(fixture('npm-audit.json'), '', 1, repoCtx({ 'package.json': pkg, 'package-lock.json': lock }));
    const doc = report(r);
    assert.equal(doc.metadata.coverage_type, 'full');
    assert.deepEqual(doc.metadata.branch, { name: 'main', is_default_branch: true, commit_sha: 'c'.repeat(40) });
    assert.deepEqual(doc.findings.map((f) => [f.rule_id, f.severity, f.vulnerability?.package, f.vulnerability?.version, f.vulnerability?.fixed_version]), [
      ['GHSA-p6mc-m468-83gw', 'high', 'lodash', '4.17.15', '4.17.19'],
      ['GHSA-35jh-r3h4-6jhm', 'high', 'lodash', '4.17.15', '4.17.21'],
      ['GHSA-29mw-wpgm-hmr9', 'medium', 'lodash', '4.17.15', '4.17.21'],
      ['GHSA-vh95-rmgr-6w4m', 'medium', 'minimist', '0.0.8', '0.2.1'],
      ['GHSA-xvch-5gv4-984h', 'critical', 'minimist', '0.0.8', '0.2.4'],
    ]);
    const critical = doc.findings[4];
    assert.deepEqual(critical.vulnerability, {
      cve_id: 'GHSA-xvch-5gv4-984h', cwe: 'CWE-1321', cvss_score: 9.8, package: 'minimist', version: '0.0.8',
      purl: 'pkg:npm/minimist@0.0.8', fixed_version: '0.2.4',
    });
    assert.equal(critical.type, 'vulnerability');
    assert.equal(critical.title, 'Prototype Pollution in minimist');
    assert.equal(critical.fingerprint, 'npm-audit:GHSA-xvch-5gv4-984h:minimist');
    assert.deepEqual(critical.references, ['https://github.com/advisories/GHSA-xvch-5gv4-984h']);
    assert.deepEqual(critical.location, { path: 'package-lock.json' });
    assert.match(critical.description!, /upgrade mkdirp to 0\.5\.6.*reaches mkdirp/);
    assert.deepEqual(doc.findings[1].properties?.cwes, ['CWE-77', 'CWE-94']);
    assert.ok(!doc.findings.some((f) => f.vulnerability?.package === 'mkdirp'), 'mkdirp is vulnerable only through minimist');
    assert.deepEqual(r.output, {
      audited: true, vulnerable_packages: 2, advisories: 5,
      vulnerabilities: { info: 0, low: 0, moderate: 1, high: 1, critical: 1, total: 3 },
    });
  });

  it('the registry refusing the audit is tool_failed with its answer', () => {
    assert.throws(() => npmAudit.parse(fixture('npm-audit-registry-405.json'), 'npm error audit endpoint returned an error', 1, repoCtx({ 'package.json': pkg })),
      toolError('tool_failed', /405 Method Not Allowed - POST/));
  });

  it('no lockfile is no_lockfile; no package.json at all is a clean result', () => {
    assert.throws(() => npmAudit.parse(fixture('npm-audit-enolock.json'), '', 1, repoCtx({ 'package.json': pkg })), toolError('no_lockfile', /npm install --package-lock-only/));
    const r = npmAudit.parse(fixture('npm-audit-enolock.json'), '', 1, repoCtx({}));
    assert.deepEqual(report(r).findings, []);
    assert.equal(r.output.audited, false);
    const sub = npmAudit.parse(fixture('npm-audit.json'), '', 1, repoCtx({ 'web/package.json': pkg, 'web/package-lock.json': lock }, '/tmp/cap/repo', { path: 'web' }));
    assert.equal(report(sub).findings[0].location?.path, 'web/package-lock.json');
    assert.equal(report(sub).findings[0].vulnerability?.version, '4.17.15');
  });

  it('argv: npm audit --json with --prefix of the checkout (never a package.json above it)', () => {
    const [inv] = npmAudit.command({ path: 'web', omit: ['dev'] }, repoCtx().target, '/w');
    assert.deepEqual(inv.argv.slice(1), ['audit', '--json', '--prefix', '/tmp/cap/repo/web', '--omit=dev']);
    assert.throws(() => npmAudit.checkConfig({ path: '../..' }), toolError('invalid_config', /step_config\.path/));
    assert.throws(() => npmAudit.checkConfig({ audit_level: 'high' }), toolError('invalid_config', /audit_level is not an option of npm-audit/));
  });

  it('the first fixed version of the clause the installed version is in', () => {
    assert.equal(firstFixedVersion('<0.2.4', '0.0.8'), '0.2.4');
    assert.equal(firstFixedVersion('>=3.7.0 <4.17.19', '4.17.15'), '4.17.19');
    assert.equal(firstFixedVersion('<0.2.4 || >=1.0.0 <1.2.6', '1.2.5'), '1.2.6');
    assert.equal(firstFixedVersion('<0.2.4 || >=1.0.0 <1.2.6', '0.1.0'), '0.2.4');
    assert.equal(firstFixedVersion('<=4.17.22', '4.17.15'), null);
    assert.equal(firstFixedVersion('*', '1.0.0'), null);
    assert.equal(firstFixedVersion('<2.0.0', null), '2.0.0');
    assert.equal(firstFixedVersion('<1.0.0 || >=2.0.0 <2.1.0', null), null);
  });
});

function fixtureLines(name: string): string[] {
  // app.js as it was when eslint.sarif was recorded.
  if (name !== 'app.js') throw new Error(name);
  return [
    "const http = require('http');",
    'http.createServer((req, res) => {',
    "  const q = new URL(req.url, 'http://x').searchParams.get('expr');",
    '  res.end(String(eval(q)));',
    '}).listen(3000);',
  ];
}
