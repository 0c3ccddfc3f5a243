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
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { plantedAwsKeys } from './support/secrets.ts';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createTenant, startRun, stepsByKey, type Tenant } from './support/fixtures.ts';
import { startAgentProcess, waitForRun, type AgentProcess } from './support/agent-process.ts';
import { findExecutable } from '../src/agent/tools/binaries.ts';

const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.test', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.test' };
const fixture = (name: string) => new URL(`./fixtures/agent/${name}`, import.meta.url);

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let proc: AgentProcess;
let root: string;
let repo: string;
let pipeline: Record<string, any>;
let tcpPort: number;
let tlsPort = 0;
const servers: (Server | HttpServer)[] = [];


/** Every connection to the test's servers, destroyed at the end (a probe may leave one half open). */
const sockets = new Set<Socket>();

async function listen(server: Server | HttpServer): Promise<number> {
  servers.push(server);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

const git = (...args: string[]) => execFileSync('git', args, { cwd: repo, env: GIT_ENV });

// npm audit's registry: the minimist advisory and the two packuments npm needs.
const ADVISORY = {
  id: 2, url: 'https://github.com/advisories/GHSA-xvch-5gv4-984h', title: 'Prototype Pollution in minimist', severity: 'critical',
  vulnerable_versions: '<0.2.4', cwe: ['CWE-1321'], cvss: { score: 9.8, vectorString: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H' },
};
const packument = (name: string, versions: [string, Record<string, string>?][], latest: string) => ({
  name, 'dist-tags': { latest },
  versions: Object.fromEntries(versions.map(([v, dependencies = {}]) => [v, { name, version: v, dependencies, dist: { tarball: `http://127.0.0.1/${name}-${v}.tgz` } }])),
});
const PACKUMENTS: Record<string, unknown> = {
  minimist: packument('minimist', [['0.0.8'], ['0.2.0'], ['0.2.4'], ['1.2.6']], '1.2.6'),
  mkdirp: packument('mkdirp', [['0.5.1', { minimist: '0.0.8' }], ['0.5.6', { minimist: '^1.2.6' }]], '0.5.6'),
};

before(async () => {
  h = await startHarness({ orchestration: { heartbeatIntervalSeconds: 1 } });
  const { url } = await h.listen();
  t = await createTenant(h);
  root = mkdtempSync(path.join(tmpdir(), 'scanflow-agent-scan-'));

  repo = path.join(root, 'origin');
  mkdirSync(repo);
  const keys = plantedAwsKeys();
  writeFileSync(path.join(repo, 'config.js'), `// deployment settings\nexport const aws = {\n  accessKeyId: "${keys.id}",\n  secretAccessKey: "${keys.secret}",\n};\n`);
  writeFileSync(path.join(repo, 'app.js'), [
    "const http = require('http');",
    'http.createServer((req, res) => {',
    "  const q = new URL(req.url, 'http://x').searchParams.get('expr');",
    '  res.end(String(eval(q)));',
    '}).listen(3000);',
    '',
  ].join('\n'));
  copyFileSync(fixture('npm-audit.package.json'), path.join(repo, 'package.json'));
  copyFileSync(fixture('npm-audit.package-lock.json'), path.join(repo, 'package-lock.json'));
  execFileSync('git', ['init', '--quiet', '--initial-branch', 'main', repo], { env: GIT_ENV });
  git('add', '.');
  git('commit', '--quiet', '-m', 'app');

  const tcp = createTcpServer((s) => {
    s.on('error', () => {});
    s.end('SSH-2.0-OpenSSH_8.9\r\n');
  });
  tcpPort = await listen(tcp);
  if (findExecutable('openssl')) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:1024', '-nodes', '-days', '2', '-subj', '/CN=scanflow-test',
      '-keyout', path.join(root, 'key.pem'), '-out', path.join(root, 'cert.pem')], { stdio: 'ignore' });
    const tls = createTlsServer({
      key: readFileSync(path.join(root, 'key.pem')), cert: readFileSync(path.join(root, 'cert.pem')), minVersion: 'TLSv1', ciphers: 'DEFAULT:@SECLEVEL=0',
    }, (s) => {
      s.on('error', () => {});
      s.end('HTTP/1.0 200 OK\r\n\r\nok');
    });
    tls.on('tlsClientError', () => {});
    tlsPort = await listen(tls);
  }
  const registry = createHttpServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    res.setHeader('content-type', 'application/json');
    if (req.method === 'POST' && req.url?.endsWith('/-/npm/v1/security/advisories/bulk')) {
      const body = Buffer.concat(chunks);
      const asked = JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString()) as Record<string, string[]>;
      res.end(JSON.stringify(asked.minimist ? { minimist: [ADVISORY] } : {}));
      return;
    }
    const found = PACKUMENTS[decodeURIComponent((req.url ?? '/').slice(1))];
    res.statusCode = found ? 200 : 404;
    res.end(JSON.stringify(found ?? {}));
  });
  const registryUrl = `http://127.0.0.1:${await listen(registry)}/`;

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
  await Promise.all(servers.map((s) => new Promise((r) => {
    s.close(r);
    for (const socket of sockets) socket.destroy();
  })));
  await h?.close();
  if (root) rmSync(root, { recursive: true, force: true });
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

