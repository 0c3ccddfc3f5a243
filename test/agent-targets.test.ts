// Targets: a repository cloned shallowly from a local path or file:// URL at the run's branch
// or commit (and whether that is the default branch), removed afterwards; hosts and URLs.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { hostTarget, parseLsRemoteHead, prepareTarget, repositoryUrl } from '../src/agent/targets.ts';
import { ToolError } from '../src/agent/tools/tool.ts';

const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.test', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.test' };
const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, env: GIT_ENV, encoding: 'utf8' }).trim();

let root: string;
let repo: string;
let first: string;
let tip: string;
let featureTip: string;

before(() => {
  root = mkdtempSync(path.join(tmpdir(), 'scanflow-targets-'));
  repo = path.join(root, 'origin');
  git(root, 'init', '--quiet', '--initial-branch', 'trunk', repo);
  writeFileSync(path.join(repo, 'a.txt'), 'one\n');
  git(repo, 'add', 'a.txt');
  git(repo, 'commit', '--quiet', '-m', 'one');
  first = git(repo, 'rev-parse', 'HEAD');
  writeFileSync(path.join(repo, 'a.txt'), 'two\n');
  git(repo, 'commit', '--quiet', '-am', 'two');
  tip = git(repo, 'rev-parse', 'HEAD');
  git(repo, 'checkout', '--quiet', '-b', 'feature');
  writeFileSync(path.join(repo, 'b.txt'), 'feature\n');
  git(repo, 'add', 'b.txt');
  git(repo, 'commit', '--quiet', '-m', 'feature');
  featureTip = git(repo, 'rev-parse', 'HEAD');
  git(repo, 'checkout', '--quiet', 'trunk');
});
after(() => rmSync(root, { recursive: true, force: true }));

const asset = (value: string) => ({ id: 'a1', type: 'repository', name: 'repo', value, tags: [], criticality: 'medium', metadata: {} });

describe('repository targets', () => {
  it('a local path: a shallow clone of the default branch, is_default_branch, removed by cleanup', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    const { target, cleanup } = await prepareTarget(asset(repo), {}, work);
    assert.equal(target.kind, 'repository');
    if (target.kind !== 'repository') return;
    assert.deepEqual(target.branch, { name: 'trunk', is_default_branch: true, commit_sha: tip });
    assert.equal(git(target.dir, 'rev-list', '--count', 'HEAD'), '1', 'shallow: one commit of history');
    assert.equal(git(target.dir, 'show', 'HEAD:a.txt'), 'two');
    assert.equal(existsSync(path.join(target.dir, 'b.txt')), false);
    await cleanup();
    assert.equal(existsSync(target.dir), false);
  });

  it('a file:// URL and context.branch: that branch, not the default', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    const { target, cleanup } = await prepareTarget(asset(pathToFileURL(repo).toString()), { branch: 'feature' }, work);
    assert.ok(target.kind === 'repository');
    assert.deepEqual(target.branch, { name: 'feature', is_default_branch: false, commit_sha: featureTip });
    assert.equal(existsSync(path.join(target.dir, 'b.txt')), true);
    await cleanup();
  });

  it('context.branch naming the default branch is the default branch', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    const { target, cleanup } = await prepareTarget(asset(repo), { branch: 'trunk' }, work);
    assert.ok(target.kind === 'repository');
    assert.equal(target.branch.is_default_branch, true);
    await cleanup();
  });

  it('context.commit: that commit is checked out; an old commit is not the default branch', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    const { target, cleanup } = await prepareTarget(asset(repo), { commit: first }, work);
    assert.ok(target.kind === 'repository');
    assert.equal(target.branch.commit_sha, first);
    assert.equal(target.branch.is_default_branch, false, 'scanning an old commit must not resolve findings of the branch tip');
    assert.equal(git(target.dir, 'show', 'HEAD:a.txt'), 'one');
    await cleanup();

    const again = await prepareTarget(asset(repo), { commit: tip }, mkdtempSync(path.join(root, 'w-')));
    assert.ok(again.target.kind === 'repository');
    assert.deepEqual(again.target.branch, { name: 'trunk', is_default_branch: true, commit_sha: tip });
    await again.cleanup();
  });

  it('a short commit SHA falls back to a full fetch and still checks it out', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    const { target, cleanup } = await prepareTarget(asset(repo), { commit: first.slice(0, 10) }, work);
    assert.ok(target.kind === 'repository');
    assert.equal(target.branch.commit_sha, first);
    await cleanup();
  });

  it('an unknown branch fails as clone_failed with git\'s reason, and leaves no checkout', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    await assert.rejects(prepareTarget(asset(repo), { branch: 'nope' }, work), (err: ToolError) => {
      assert.equal(err.code, 'clone_failed');
      assert.match(err.message, /nope/);
      return true;
    });
    assert.equal(existsSync(path.join(work, 'checkout')), false);
  });

  it('refuses option-like branches, non-SHA commits and transports that run commands', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    await assert.rejects(prepareTarget(asset(repo), { branch: '--upload-pack=touch /tmp/x' }, work), (e: ToolError) => e.code === 'invalid_config');
    await assert.rejects(prepareTarget(asset(repo), { commit: 'HEAD~1' }, work), (e: ToolError) => e.code === 'invalid_config');
    assert.throws(() => repositoryUrl(asset('ext::sh -c touch% /tmp/pwned')), (e: ToolError) => e.code === 'target_unsupported');
    assert.throws(() => repositoryUrl(asset('fd::3')), (e: ToolError) => e.code === 'target_unsupported');
    assert.throws(() => repositoryUrl(asset('relative/path')), (e: ToolError) => e.code === 'target_unsupported');
    assert.equal(repositoryUrl(asset('git@github.com:owner/repo.git')), 'git@github.com:owner/repo.git');
    assert.equal(repositoryUrl({ ...asset(''), value: null, metadata: { clone_url: 'https://example.test/r.git' } }), 'https://example.test/r.git');
  });

  it('the clone shares the step\'s time: none left is a timeout, not a ten-minute git', async () => {
    const work = mkdtempSync(path.join(root, 'w-'));
    await assert.rejects(prepareTarget(asset(repo), {}, work, { timeoutMs: 1 }), (e: ToolError) => e.code === 'timeout');
    assert.equal(existsSync(path.join(work, 'checkout')), false);
  });

  it('reads the default branch and its tip from ls-remote', () => {
    const sha = 'a'.repeat(40);
    assert.deepEqual(parseLsRemoteHead(`ref: refs/heads/main\tHEAD\n${sha}\tHEAD\n`), { name: 'main', sha });
    assert.deepEqual(parseLsRemoteHead(''), { name: null, sha: null });
  });
});

describe('host targets', () => {
  const host = (type: string, value: string | null, extra: Record<string, unknown> = {}) => hostTarget({ type, name: 'n', value, ...extra });

  it('server, ip_address, domain → the host; host:port and [v6]:port give a port', () => {
    assert.deepEqual(pick(host('server', 'db1.internal')), { host: 'db1.internal', port: null, url: null });
    assert.deepEqual(pick(host('ip_address', '192.0.2.7')), { host: '192.0.2.7', port: null, url: null });
    assert.deepEqual(pick(host('domain', 'example.com')), { host: 'example.com', port: null, url: null });
    assert.deepEqual(pick(host('server', '127.0.0.1:8443')), { host: '127.0.0.1', port: 8443, url: null });
    assert.deepEqual(pick(host('ip_address', '[::1]:443')), { host: '::1', port: 443, url: null });
    assert.deepEqual(pick(host('ip_address', '::1')), { host: '::1', port: null, url: null });
  });

  it('web_application and api → host and port from the URL (the scheme\'s port by default)', () => {
    assert.deepEqual(pick(host('web_application', 'https://app.example.com/login')), { host: 'app.example.com', port: 443, url: 'https://app.example.com/login' });
    assert.deepEqual(pick(host('api', 'http://127.0.0.1:8080/v1')), { host: '127.0.0.1', port: 8080, url: 'http://127.0.0.1:8080/v1' });
    assert.deepEqual(pick(host('web_application', 'shop.example.com')), { host: 'shop.example.com', port: 443, url: 'https://shop.example.com/' });
    assert.deepEqual(pick(host('api', null, { metadata: { url: 'https://[::1]:9443/' } })), { host: '::1', port: 9443, url: 'https://[::1]:9443/' });
  });

  it('refuses what is not a host: options, lists, other asset types, other schemes', () => {
    for (const [type, value] of [['server', '-sV'], ['domain', 'a.com b.com'], ['domain', 'a.com;id'], ['web_application', 'ftp://x.example'], ['container_image', 'nginx:1']]) {
      assert.throws(() => host(type, value), (e: ToolError) => e.code === 'target_unsupported', `${type} ${value}`);
    }
  });

  it('a command without a target asset is target_unsupported', async () => {
    await assert.rejects(prepareTarget(undefined, {}, tmpdir()), (e: ToolError) => e.code === 'target_unsupported');
  });
});

function pick(t: ReturnType<typeof hostTarget>) {
  return { host: t.host, port: t.port, url: t.url };
}
