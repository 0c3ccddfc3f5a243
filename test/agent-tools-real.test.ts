// The real tools through runScanStep, on local targets only: a git repository made here
// with a planted AWS key, an eval of user input (JS and TS), a strcpy in C and a vulnerable
// lockfile; a TCP listener and a TLS server with a self-signed 1024-bit certificate on
// 127.0.0.1. npm audit asks a stub registry on 127.0.0.1 (no outside traffic). A test whose
// binary is missing is skipped, naming the package to install.
import { describe, it, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Log as SarifLog } from 'sarif';
import type { Report } from '../src/agent/report.ts';
import { runScanStep, type ScanStepResult } from '../src/agent/scan-step.ts';
import { detectTools, loadToolbox, type Toolbox } from '../src/agent/toolbox.ts';
import { findExecutable } from '../src/agent/tools/binaries.ts';
import { ToolError } from '../src/agent/tools/tool.ts';
import { startScanTargets, type ScanTargets } from './support/scan-targets.ts';
import { freePort } from './support/ports.ts';

let targets: ScanTargets;
let workRoot: string;
let repo: string;
let toolbox: Toolbox;
let tcpPort: number;
let tlsPort: number;
let closedPort: number;
let registryUrl: string;

before(async () => {
  targets = await startScanTargets('scanflow-tools-', { moreSources: true });
  ({ repo, tcpPort, tlsPort, registryUrl } = targets);
  workRoot = path.join(targets.root, 'work');
  toolbox = await loadToolbox();
  closedPort = await freePort();
});

after(async () => {
  await targets?.close();
});

/** Skips the test (naming the package to install) when a binary is missing. */
function needs(t: TestContext, bin: string, install: string): boolean {
  if (findExecutable(bin)) return true;
  t.skip(`needs ${bin}: ${install}`);
  return false;
}

const repoAsset = () => ({ id: 'a-repo', type: 'repository', name: 'app', value: repo, tags: [], criticality: 'high', metadata: {} });
const hostAsset = (value = '127.0.0.1') => ({ id: 'a-host', type: 'server', name: 'local', value, tags: [], criticality: 'medium', metadata: {} });

async function scan(tool: string, target: unknown, extra: Record<string, unknown> = {}, opts: { signal?: AbortSignal; onOutput?: (s: string, c: Buffer) => void } = {}): Promise<ScanStepResult> {
  const result = await runScanStep({
    toolbox, workRoot, signal: opts.signal, onOutput: opts.onOutput, killGraceMs: 1_000,
    payload: { tool, step_config: {}, timeout_seconds: 120, target, context: {}, steps: {}, ...extra },
  });
  assert.deepEqual(readdirSync(workRoot), [], 'the step\'s work directory (and checkout) is removed');
  return result;
}
const sarifOf = (r: ScanStepResult) => {
  assert.equal(r.format, 'sarif');
  return r.document as SarifLog;
};
const reportOf = (r: ScanStepResult) => {
  assert.equal(r.format, 'report');
  return r.document as Report;
};
const locations = (log: SarifLog) => log.runs.flatMap((run) => (run.results ?? []).map((x) => `${x.ruleId} ${x.locations?.[0]?.physicalLocation?.artifactLocation?.uri}:${x.locations?.[0]?.physicalLocation?.region?.startLine}`));

describe('repository tools', () => {
  it('secretlint finds the planted AWS secret key, as a secret, in the cloned repository', async () => {
    const r = await scan('secretlint', repoAsset());
    const log = sarifOf(r);
    assert.deepEqual(locations(log), ['@secretlint/secretlint-rule-preset-recommend > @secretlint/secretlint-rule-aws config.js:4']);
    assert.deepEqual(log.runs[0].tool.driver.rules![0].properties?.tags, ['secret', 'security']);
    assert.equal(r.exitCode, 1);
    assert.equal(r.toolVersion, JSON.parse(readFileSync('node_modules/secretlint/package.json', 'utf8')).version);
    assert.deepEqual(r.output, { secrets_found: 1, files: ['config.js'] });
    assert.deepEqual(r.target.kind === 'repository' && { ...r.target.branch, commit_sha: r.target.branch.commit_sha.length }, { name: 'main', is_default_branch: true, commit_sha: 40 });
  });

  it('eslint finds eval of user input in JavaScript and in TypeScript', async () => {
    const r = await scan('eslint', repoAsset());
    const log = sarifOf(r);
    assert.deepEqual(locations(log), ['security/detect-eval-with-expression app.js:4', 'security/detect-eval-with-expression handler.ts:3']);
    assert.ok(log.runs[0].results!.every((x) => x.level === 'error' && x.partialFingerprints?.primaryLocationLineHash));
    assert.deepEqual(r.output.files_not_parsed, []);
  });

  it('flawfinder finds the strcpy', async (t) => {
    if (!needs(t, 'flawfinder', 'apt-get install -y flawfinder')) return;
    const r = await scan('flawfinder', repoAsset());
    assert.deepEqual(locations(sarifOf(r)), ['FF1013 copy.c:3', 'FF1001 copy.c:4'], 'the fixed-size buffer and the strcpy into it');
    assert.match(r.toolVersion ?? '', /^\d+\.\d+/);
  });

  it('npm audit reports the advisory of the locked minimist, with the installed and fixed versions', async (t) => {
    if (!needs(t, 'npm', 'install Node.js with npm')) return;
    const saved = process.env.npm_config_registry;
    process.env.npm_config_registry = registryUrl;
    try {
      const r = await scan('npm-audit', repoAsset());
      const doc = reportOf(r);
      assert.deepEqual(doc.findings.map((f) => [f.rule_id, f.severity, f.vulnerability?.package, f.vulnerability?.version, f.vulnerability?.fixed_version]), [
        ['GHSA-xvch-5gv4-984h', 'critical', 'minimist', '0.0.8', '0.2.4'],
      ]);
      assert.equal(doc.metadata.branch?.is_default_branch, true);
      assert.equal(r.output.vulnerable_packages, 1);
    } finally {
      if (saved === undefined) delete process.env.npm_config_registry;
      else process.env.npm_config_registry = saved;
    }
  });

  it('a host tool on a repository is target_unsupported; the clone is still removed', async () => {
    await assert.rejects(scan('nmap', repoAsset()), (e: ToolError) => e.code === 'target_unsupported' && /nmap scans a host/.test(e.message));
    assert.deepEqual(readdirSync(workRoot), []);
  });
});

describe('host tools', () => {
  it('nmap: the open ports of 127.0.0.1 among those asked, streamed while it runs', async (t) => {
    if (!needs(t, 'nmap', 'apt-get install -y nmap')) return;
    let streamed = '';
    const r = await scan('nmap', hostAsset(), { step_config: { ports: [tcpPort, closedPort] } }, { onOutput: (_, c) => (streamed += c) });
    assert.deepEqual(r.output.open_ports, [tcpPort]);
    assert.deepEqual(reportOf(r).findings.map((f) => f.fingerprint), [`nmap:127.0.0.1:${tcpPort}/tcp`]);
    assert.match(streamed, /<nmaprun/);
  });

  it('nmap -sV: the service and the TLS port (tls_ports, for the sslscan step)', async (t) => {
    if (!needs(t, 'nmap', 'apt-get install -y nmap') || !needs(t, 'openssl', 'apt-get install -y openssl')) return;
    const r = await scan('nmap', hostAsset(), { step_config: { ports: [tcpPort, tlsPort], service_detection: true, version_intensity: 2 } });
    assert.deepEqual(r.output.open_ports, [tcpPort, tlsPort].sort((a, b) => a - b));
    assert.deepEqual(r.output.tls_ports, [tlsPort]);
    const ssh = reportOf(r).findings.find((f) => f.location?.port === tcpPort)!;
    assert.equal(ssh.title, `Open port ${tcpPort}/tcp: ssh (OpenSSH 8.9)`);
  });

  it('sslscan on the TLS port nmap found: TLS 1.0/1.1, self-signed, short key', async (t) => {
    if (!needs(t, 'sslscan', 'apt-get install -y sslscan') || !needs(t, 'openssl', 'apt-get install -y openssl')) return;
    const r = await scan('sslscan', hostAsset(), {
      step_config: { ports_from: 'infra' },
      steps: { infra: { status: 'completed', findings_count: 2, output: { open_ports: [tcpPort, tlsPort], tls_ports: [tlsPort] } } },
    });
    const rules = reportOf(r).findings.map((f) => `${f.rule_id}${f.properties?.protocol ? ` ${f.properties.protocol}` : ''}`);
    for (const expected of ['weak-protocol TLSv1.0', 'weak-protocol TLSv1.1', 'certificate-self-signed', 'certificate-short-key', 'certificate-expiring']) {
      assert.ok(rules.includes(expected), `${expected} in ${rules.join(', ')}`);
    }
    assert.deepEqual(r.output.tls_ports, [tlsPort]);
  });

  it('sslscan on a closed port is target_unreachable', async (t) => {
    if (!needs(t, 'sslscan', 'apt-get install -y sslscan')) return;
    await assert.rejects(scan('sslscan', hostAsset(`127.0.0.1:${closedPort}`)), (e: ToolError) => e.code === 'target_unreachable');
  });
});

describe('detect', () => {
  it('each tool here with its version; one missing from PATH is data, with the package to install', async () => {
    const detections = await detectTools(toolbox);
    assert.deepEqual(detections.map((d) => d.tool), ['nmap', 'sslscan', 'secretlint', 'eslint', 'npm-audit', 'flawfinder']);
    for (const d of detections) {
      if (d.available) assert.match(d.version ?? '', /^\d+\.\d+/, d.tool);
      else assert.match(d.install, /apt-get install -y|npm/, d.tool);
    }
    assert.ok(detections.find((d) => d.tool === 'secretlint')?.available, 'npm tools come with npm install');
    const saved = process.env.PATH;
    process.env.PATH = path.join(targets.root, 'empty-path');
    try {
      const missing = await toolbox.get('nmap')!.detect();
      assert.deepEqual(missing, { tool: 'nmap', available: false, reason: 'nmap is not on PATH', install: 'apt-get install -y nmap' });
      await assert.rejects(scan('nmap', hostAsset()), (e: ToolError) => e.code === 'tool_missing' && /tool nmap is not installed on this agent.*apt-get install -y nmap/.test(e.message));
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe('failures as error codes', () => {
  it('an unknown tool, a bad option, a tool missing on this host', async () => {
    await assert.rejects(scan('semgrep', repoAsset()), (e: ToolError) => e.code === 'tool_unknown' && /no tool semgrep/.test(e.message));
    await assert.rejects(scan('eslint', repoAsset(), { step_config: { fix: true } }), (e: ToolError) => e.code === 'invalid_config' && /step_config\.fix is not an option of eslint/.test(e.message));
    const file = path.join(targets.root, 'tools.yaml');
    writeFileSync(file, '- {name: trivy, command: [scanflow-no-such-trivy, fs, --format, sarif, "{target}"], output: sarif}\n');
    const box = await loadToolbox({ toolsFile: file });
    await assert.rejects(
      runScanStep({ toolbox: box, workRoot, payload: { tool: 'trivy', target: repoAsset() } }),
      (e: ToolError) => e.code === 'tool_missing' && /tool trivy is not installed on this agent/.test(e.message),
    );
  });

  it('a tools-file tool gets {host} and {port} and its report is passed through', async () => {
    const file = path.join(targets.root, 'tools-report.yaml');
    const script = 'const [h, p] = process.argv.slice(1); console.log(JSON.stringify({ version: "1.0", tool: { name: "probe" }, findings: [{ type: "misconfiguration", title: `probe ${h}:${p}`, severity: "info" }] }))';
    writeFileSync(file, `- name: probe\n  command: [${JSON.stringify(process.execPath)}, -e, ${JSON.stringify(script)}, "{host}", "{port}"]\n  output: report\n`);
    const box = await loadToolbox({ toolsFile: file });
    const r = await runScanStep({ toolbox: box, workRoot, payload: { tool: 'probe', target: { type: 'web_application', name: 'w', value: 'https://127.0.0.1:8443/' } } });
    assert.deepEqual((r.document as Report).findings.map((f) => f.title), ['probe 127.0.0.1:8443']);
  });

  it('the step\'s timeout kills the tool (timeout); a cancel stops it (cancelled)', async () => {
    const file = path.join(targets.root, 'tools-slow.yaml');
    writeFileSync(file, '- {name: slow, command: [sleep, "300"], output: text}\n- {name: slower, command: [sleep, "300"], output: text, timeout: 1s}\n');
    const box = await loadToolbox({ toolsFile: file });
    const started = Date.now();
    await assert.rejects(
      runScanStep({ toolbox: box, workRoot, killGraceMs: 500, payload: { tool: 'slow', timeout_seconds: 1, target: hostAsset() } }),
      (e: ToolError) => e.code === 'timeout' && /within 1 s/.test(e.message),
    );
    assert.ok(Date.now() - started < 10_000);
    await assert.rejects(
      runScanStep({ toolbox: box, workRoot, killGraceMs: 500, payload: { tool: 'slower', timeout_seconds: 600, target: hostAsset() } }),
      (e: ToolError) => e.code === 'timeout', 'the tools file\'s own timeout is a ceiling',
    );
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    await assert.rejects(
      runScanStep({ toolbox: box, workRoot, killGraceMs: 500, signal: controller.signal, payload: { tool: 'slow', target: hostAsset() } }),
      (e: ToolError) => e.code === 'cancelled',
    );
    assert.deepEqual(readdirSync(workRoot), []);
  });
});
