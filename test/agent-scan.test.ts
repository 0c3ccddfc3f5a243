// The Local Security Scan template run end to end: the real server on a socket, the real
// agent process (src/agent/main.ts) and the real tools, on local targets only. A git
// repository made here (a planted AWS key, an eval of user input, a lockfile with a
// vulnerable minimist that npm audit asks a stub registry on 127.0.0.1 about) gets secretlint,
// eslint and npm audit; 127.0.0.1 with a TCP service and a TLS server with a weak self-signed
// certificate gets nmap, then sslscan only because nmap found the TLS port. The same run
// again creates no duplicate; the secret removed, the next run resolves its finding. A tool
// that is not installed skips its test, naming the Debian package.
import { describe, it, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { GIT_ENV, startScanTargets, type ScanTargets } from './support/scan-targets.ts';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createTenant, startRun, stepsByKey, type Tenant } from './support/fixtures.ts';
import { startAgentProcess, waitForRun, type AgentProcess } from './support/agent-process.ts';
import { findExecutable } from '../src/agent/tools/binaries.ts';

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let proc: AgentProcess;
let targets: ScanTargets;
let root: string;
let repo: string;
let pipeline: Record<string, any>;
let tcpPort: number;
let tlsPort = 0;

const git = (...args: string[]) => execFileSync('git', args, { cwd: repo, env: GIT_ENV });

before(async () => {
  h = await startHarness({ orchestration: { heartbeatIntervalSeconds: 1 } });
  const { url } = await h.listen();
  t = await createTenant(h);
  targets = await startScanTargets('scanflow-agent-scan-');
  ({ root, repo, tcpPort, tlsPort } = targets);
  const { registryUrl } = targets;

  // The template, copied; the port scan pointed at this test's two ports (the template
  // scans nmap's 1,000 most common ones), with a light service probe.
  pipeline = (await h.request('POST', '/api/v1/pipeline-templates/local-security-scan/use', { token: t.token })).body;
  const put = await h.request('PUT', `/api/v1/pipelines/${pipeline.id}/steps/infra`, {
    token: t.token, body: { config: { ports: [tcpPort, tlsPort || tcpPort], service_detection: true, version_intensity: 2 } },
  });
  assert.equal(put.status, 200, JSON.stringify(put.body));

  agent = await TestAgent.create(h, t, { tools: ['secretlint', 'eslint', 'npm-audit', 'nmap', 'sslscan', 'semgrep'], max_concurrent_jobs: 3 });
  proc = startAgentProcess({
    SCANFLOW_URL: url, SCANFLOW_AGENT_KEY: agent.apiKey, SCANFLOW_WORK_DIR: path.join(root, 'work'),
    npm_config_registry: registryUrl, npm_config_cache: path.join(root, 'npm-cache'),
  });
  await proc.waitFor(/polling for commands/);
});

after(async () => {
  await proc?.kill();
  await h?.close();
  await targets?.close();
});

function needs(ctx: TestContext, bin: string, install: string): boolean {
  if (findExecutable(bin)) return true;
  ctx.skip(`needs ${bin}: ${install}`);
  return false;
}

async function findingsOf(runId: string): Promise<any[]> {
  const res = await h.request('GET', `/api/v1/pipeline-runs/${runId}/findings?limit=200`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
}

async function tenantFindings(): Promise<any[]> {
  const res = await h.request('GET', '/api/v1/findings?limit=200', { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
}

const summary = (findings: any[]) => findings.map((f) => `${f.tool} ${f.rule_id} ${f.status}`).sort();

let repoAsset: Record<string, any>;
let firstRun: Record<string, any>;
const REPO_FINDINGS = [
  'ESLint security/detect-eval-with-expression open',
  'npm-audit GHSA-xvch-5gv4-984h open',
  'secretlint @secretlint/secretlint-rule-preset-recommend > @secretlint/secretlint-rule-aws open',
];

describe('the agent process', () => {
  it('says which tools this host has and how they compare with the tools the tenant assigned', () => {
    const out = proc.output();
    assert.match(out, /tools on this host:\n\s+nmap\s/);
    assert.match(out, /secretlint\s+\d+\.\d+/);
    assert.match(out, new RegExp(`connected to http://127\\.0\\.0\\.1:\\d+ as agent ${agent.id}`));
    assert.match(out, /concurrency: 3 \(the agent's max_concurrent_jobs\)/);
    assert.match(out, /! semgrep: assigned to this agent on the server but this agent has no such tool/);
  });

  it('heartbeats: the agent is online with the tools it has as its scanners', async () => {
    const res = await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token });
    assert.equal(res.body.health, 'online');
    for (const tool of ['secretlint', 'eslint', 'npm-audit']) assert.ok(res.body.scanners.includes(tool), JSON.stringify(res.body.scanners));
  });
});

describe('Local Security Scan of a repository', () => {
  it('secretlint, eslint and npm audit find what was planted; the host steps are skipped by their conditions', async (ctx) => {
    if (!needs(ctx, 'git', 'apt-get install -y git') || !needs(ctx, 'npm', 'install Node.js with npm')) return;
    repoAsset = await createAsset(h, t, { type: 'repository', name: 'app', value: repo });
    firstRun = await startRun(h, t, pipeline.id, { asset_id: repoAsset.id });
    const run = await waitForRun(h, t, firstRun.id);
    const steps = stepsByKey(run);
    assert.equal(run.status, 'completed', `${JSON.stringify(run)}\n${proc.output().slice(-3000)}`);
    assert.deepEqual(
      Object.fromEntries(Object.entries(steps).map(([k, s]) => [k, [s.status, s.findings_count]])),
      { secrets: ['completed', 1], sast: ['completed', 1], sca: ['completed', 1], infra: ['skipped', 0], tls: ['skipped', 0] },
    );
    assert.match(steps.tls.skip_reason, /Condition not met: steps\.infra\.status == 'completed'/);
    assert.deepEqual(steps.secrets.output, { secrets_found: 1, files: ['config.js'] });
    assert.equal(steps.sca.output.vulnerable_packages, 1);

    const findings = await findingsOf(run.id);
    assert.deepEqual(summary(findings), REPO_FINDINGS);
    assert.ok(findings.every((f) => f.new === true && f.asset_id === repoAsset.id));
    const secret = findings.find((f) => f.tool === 'secretlint');
    assert.equal(secret.type, 'secret');
    assert.equal(secret.location.path, 'config.js');
    const advisory = findings.find((f) => f.tool === 'npm-audit');
    assert.equal(advisory.severity, 'critical');
    assert.deepEqual([advisory.vulnerability.package, advisory.vulnerability.version, advisory.vulnerability.fixed_version], ['minimist', '0.0.8', '0.2.4']);
    assert.equal(run.new_findings, 3);

    // The tool's output was streamed to the step's log.
    const log = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps/sast/logs`, { token: t.token, headers: { accept: 'text/plain' } });
    assert.equal(log.status, 200);
    assert.match(String(log.body), /detect-eval-with-expression/);
    // The command's exit code and duration, as the agent reported them.
    const command = await h.request('GET', `/api/v1/commands/${steps.secrets.command_id}`, { token: t.token });
    assert.equal(command.body.exit_code, 1, 'secretlint exits 1 when it finds a secret');
    assert.ok(command.body.duration_ms > 0);
  });

  it('the same run again creates no duplicate: every finding is seen twice, none is new', async (ctx) => {
    if (!repoAsset) return ctx.skip('the first run did not happen');
    const before = await tenantFindings();
    const again = await startRun(h, t, pipeline.id, { asset_id: repoAsset.id });
    const run = await waitForRun(h, t, again.id);
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.new_findings, 0);
    const after = await tenantFindings();
    assert.deepEqual(after.map((f) => f.id).sort(), before.map((f) => f.id).sort());
    assert.ok(after.every((f) => f.occurrences === 2 && f.last_run_id === again.id), JSON.stringify(after.map((f) => [f.tool, f.occurrences])));
    assert.ok((await findingsOf(run.id)).every((f) => f.new === false));
  });

  it('a run of another branch where the secret is gone resolves nothing: it is not the default branch', async (ctx) => {
    if (!repoAsset) return ctx.skip('the first run did not happen');
    git('checkout', '--quiet', '-b', 'feature');
    writeFileSync(path.join(repo, 'config.js'), '// deployment settings\nexport const aws = {};\n');
    git('commit', '--quiet', '-am', 'feature: no key');
    git('checkout', '--quiet', 'main');
    const started = await startRun(h, t, pipeline.id, { asset_id: repoAsset.id, context: { branch: 'feature' } });
    const run = await waitForRun(h, t, started.id);
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(stepsByKey(run).secrets.findings_count, 0, 'the feature branch has no secret');
    assert.deepEqual(summary(await tenantFindings()), REPO_FINDINGS, 'the default branch\'s secret stays open');
  });

  it('with the secret removed, the next run resolves that finding and leaves the others open', async (ctx) => {
    if (!repoAsset) return ctx.skip('the first run did not happen');
    writeFileSync(path.join(repo, 'config.js'), '// deployment settings\nexport const aws = { region: process.env.AWS_REGION };\n');
    git('commit', '--quiet', '-am', 'no key in the code');
    const third = await startRun(h, t, pipeline.id, { asset_id: repoAsset.id });
    const run = await waitForRun(h, t, third.id);
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(stepsByKey(run).secrets.findings_count, 0);
    const all = await tenantFindings();
    assert.deepEqual(summary(all), REPO_FINDINGS.map((s) => (s.startsWith('secretlint') ? s.replace(/open$/, 'resolved') : s)).sort());
    const secret = all.find((f) => f.tool === 'secretlint');
    assert.equal(secret.resolution, 'auto_fixed');
  });
});

describe('Local Security Scan of a host', () => {
  it('nmap finds the two ports; sslscan runs because one is TLS, and finds the weak protocols and certificate', async (ctx) => {
    if (!needs(ctx, 'nmap', 'apt-get install -y nmap') || !needs(ctx, 'sslscan', 'apt-get install -y sslscan') || !needs(ctx, 'openssl', 'apt-get install -y openssl')) return;
    const host = await createAsset(h, t, { type: 'server', name: 'this host', value: '127.0.0.1' });
    const started = await startRun(h, t, pipeline.id, { asset_id: host.id });
    const run = await waitForRun(h, t, started.id);
    const steps = stepsByKey(run);
    assert.equal(run.status, 'completed', `${JSON.stringify(run)}\n${proc.output().slice(-3000)}`);
    assert.deepEqual(Object.fromEntries(Object.entries(steps).map(([k, s]) => [k, s.status])),
      { secrets: 'skipped', sast: 'skipped', sca: 'skipped', infra: 'completed', tls: 'completed' });
    assert.deepEqual(steps.infra.output.open_ports, [tcpPort, tlsPort].sort((a, b) => a - b));
    assert.deepEqual(steps.infra.output.tls_ports, [tlsPort]);
    assert.equal(steps.tls.condition_result, true);
    assert.deepEqual(steps.tls.output.tls_ports, [tlsPort]);

    const findings = await findingsOf(run.id);
    const nmap = findings.filter((f) => f.tool === 'nmap').map((f) => f.location.port).sort((a: number, b: number) => a - b);
    assert.deepEqual(nmap, [tcpPort, tlsPort].sort((a, b) => a - b));
    const tls = new Set(findings.filter((f) => f.tool === 'sslscan').map((f) => f.rule_id));
    for (const rule of ['weak-protocol', 'certificate-self-signed', 'certificate-short-key']) assert.ok(tls.has(rule), `${rule} in ${[...tls].join(', ')}`);
    assert.equal(steps.infra.findings_count, 2);
    assert.equal(steps.tls.findings_count, findings.filter((f) => f.tool === 'sslscan').length);
  });
});

