// What a command's target asset (`payload.target`, API.md Part 1 "A command") becomes for a
// tool: a shallow checkout of a repository in the step's work directory, or a host (and a
// port, from a URL). Clones run git without a shell, with a timeout and the step's cancel.
import * as v from 'valibot';
import { isIP } from 'node:net';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { runTool, type OutputStream } from './run-tool.ts';
import { ToolError, tail } from './tools/tool.ts';

export type BranchInfo = { name: string; is_default_branch: boolean; commit_sha: string };

export const TargetAsset = v.looseObject({
  id: v.optional(v.string()),
  type: v.string(),
  name: v.optional(v.string()),
  value: v.nullish(v.string()),
  metadata: v.nullish(v.record(v.string(), v.unknown())),
});
export type TargetAsset = v.InferOutput<typeof TargetAsset>;

export const RunContext = v.looseObject({
  branch: v.optional(v.pipe(v.string(), v.minLength(1))),
  commit: v.optional(v.pipe(v.string(), v.minLength(1))),
});

export type RepositoryTarget = {
  kind: 'repository';
  asset: TargetAsset;
  /** Where it was cloned from (a local path is given as its file:// URL). */
  url: string;
  /** The checkout. */
  dir: string;
  branch: BranchInfo;
};
export type HostTarget = {
  kind: 'host';
  asset: TargetAsset;
  host: string;
  /** From the asset's URL or `host:port` value; null when the asset names none. */
  port: number | null;
  /** The asset's URL (web_application, api), with a scheme. */
  url: string | null;
};
export type Target = RepositoryTarget | HostTarget;

export type PreparedTarget = { target: Target; cleanup: () => Promise<void> };

const HOST_TYPES = new Set(['server', 'host', 'ip_address', 'domain', 'subdomain']);
const URL_TYPES = new Set(['web_application', 'api']);
const REPOSITORY_SCHEMES = new Set(['file:', 'https:', 'http:', 'ssh:', 'git:']);
const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/;
const COMMIT = /^[0-9a-f]{7,64}$/i;
const GIT_TIMEOUT_MS = 10 * 60_000;

export type PrepareOptions = {
  signal?: AbortSignal;
  /** The step's time left: git gets the smaller of this and its own 10 minutes. */
  timeoutMs?: number;
  /** git's progress and errors, for the step's log. */
  onOutput?: (stream: OutputStream, chunk: Buffer) => void;
};

/**
 * The target of a command, ready for a tool. Repositories are cloned into `workdir/checkout`
 * (call `cleanup` when the step ends); hosts need nothing prepared.
 */
export async function prepareTarget(
  asset: unknown, context: unknown, workdir: string, opts: PrepareOptions = {},
): Promise<PreparedTarget> {
  const parsedAsset = v.safeParse(TargetAsset, asset);
  if (!parsedAsset.success) throw new ToolError('target_unsupported', 'the command has no target asset (payload.target)');
  const a = parsedAsset.output;
  const gitOpts: GitOptions = { ...opts, deadline: Date.now() + Math.min(GIT_TIMEOUT_MS, opts.timeoutMs ?? GIT_TIMEOUT_MS) };
  if (a.type === 'repository') return cloneRepository(a, v.parse(RunContext, context ?? {}), workdir, gitOpts);
  return { target: hostTarget(a), cleanup: async () => {} };
}

/** The host (and port) of a host-like asset; pure. */
export function hostTarget(a: TargetAsset): HostTarget {
  const value = (a.value ?? stringMeta(a, 'url') ?? stringMeta(a, 'host') ?? a.name ?? '').trim();
  if (URL_TYPES.has(a.type)) {
    const url = parseUrl(value);
    if (!url) throw new ToolError('target_unsupported', `${a.type} asset "${value}" is not an http(s) URL`);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return { kind: 'host', asset: a, host: checkHost(host, a), port, url: url.toString() };
  }
  if (!HOST_TYPES.has(a.type)) {
    throw new ToolError('target_unsupported', `asset type ${a.type} is not something the agent can scan (a repository, a host or a URL)`);
  }
  const { host, port } = splitHostPort(value);
  return { kind: 'host', asset: a, host: checkHost(host, a), port, url: null };
}

function parseUrl(value: string): URL | null {
  try {
    const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `https://${value}`);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : null;
  } catch {
    return null;
  }
}

function splitHostPort(value: string): { host: string; port: number | null } {
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(value);
  if (bracketed) return { host: bracketed[1], port: bracketed[2] ? Number(bracketed[2]) : null };
  const hostPort = /^([^:]+):(\d{1,5})$/.exec(value);
  if (hostPort) return { host: hostPort[1], port: Number(hostPort[2]) };
  return { host: value, port: null };
}

function checkHost(host: string, a: TargetAsset): string {
  // Never an option to the tool (a leading "-"), never a list, never a shell word.
  if (isIP(host) || HOSTNAME.test(host)) return host;
  throw new ToolError('target_unsupported', `${a.type} asset "${host}" is not a host name or an IP address`);
}

function stringMeta(a: TargetAsset, key: string): string | undefined {
  const value = a.metadata?.[key];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The clone URL of a repository asset: its value, else metadata url/clone_url. Pure. */
export function repositoryUrl(a: TargetAsset): string {
  const raw = (a.value ?? stringMeta(a, 'clone_url') ?? stringMeta(a, 'url') ?? '').trim();
  if (raw === '') throw new ToolError('target_unsupported', 'repository asset has no URL or path (value, metadata.clone_url or metadata.url)');
  if (raw.startsWith('/')) return pathToFileURL(raw).toString(); // so --depth applies (git ignores it for plain paths)
  if (/^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/]/.test(raw) && !raw.includes('://')) return raw; // scp-like git@host:owner/repo
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ToolError('target_unsupported', `repository "${raw}" is neither an absolute path nor a URL`);
  }
  if (!REPOSITORY_SCHEMES.has(url.protocol)) {
    throw new ToolError('target_unsupported', `repository URL scheme ${url.protocol} is not allowed (file, https, http, ssh, git)`);
  }
  return raw;
}

function checkBranch(branch: string): string {
  if (branch.startsWith('-') || branch.includes('..') || /[\s~^:?*[\\\x00-\x1f\x7f]/.test(branch) || branch.endsWith('.lock')) {
    throw new ToolError('invalid_config', `context.branch "${branch}" is not a valid branch name`);
  }
  return branch;
}

function gitEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GIT_TERMINAL_PROMPT: '0', // a private repository without credentials fails instead of waiting for a password
    GIT_ALLOW_PROTOCOL: 'file:git:http:https:ssh', // never ext:: (it runs commands) nor fd::
  };
}

/** Every git command of one preparation shares one deadline (the step's, at most 10 minutes). */
type GitOptions = PrepareOptions & { deadline: number };

async function git(args: string[], cwd: string, opts: GitOptions): Promise<string> {
  const timeoutMs = opts.deadline - Date.now();
  if (timeoutMs <= 0) throw new ToolError('timeout', `no time left for git ${args[0]}`);
  const run = await runTool({ argv: ['git', ...args], cwd, env: gitEnv(), timeoutMs, signal: opts.signal, onOutput: opts.onOutput });
  if (run.cancelled) throw new ToolError('cancelled', 'cancelled while cloning');
  if (run.timedOut) throw new ToolError('timeout', `git ${args[0]} ran out of the step's time`);
  if (run.exitCode !== 0) throw new ToolError('clone_failed', `git ${args[0]} failed (exit ${run.exitCode}): ${tail(run.stderr, 1_000)}`, run.exitCode);
  return run.stdout;
}

/** The remote's default branch and its tip, from `git ls-remote --symref <url> HEAD`; pure. */
export function parseLsRemoteHead(out: string): { name: string | null; sha: string | null } {
  const name = /^ref: refs\/heads\/(\S+)\s+HEAD$/m.exec(out)?.[1] ?? null;
  const sha = /^([0-9a-f]{40,64})\s+HEAD$/m.exec(out)?.[1] ?? null;
  return { name, sha };
}

async function cloneRepository(
  a: TargetAsset, context: v.InferOutput<typeof RunContext>, workdir: string, opts: GitOptions,
): Promise<PreparedTarget> {
  const url = repositoryUrl(a);
  const branch = context.branch ? checkBranch(context.branch) : undefined;
  const commit = context.commit;
  if (commit !== undefined && !COMMIT.test(commit)) {
    throw new ToolError('invalid_config', `context.commit "${commit}" is not a commit SHA`);
  }
  const dir = path.join(workdir, 'checkout');
  await mkdir(workdir, { recursive: true });
  const cleanup = () => rm(dir, { recursive: true, force: true, maxRetries: 3 });
  try {
    const head = parseLsRemoteHead(await git(['ls-remote', '--symref', '--', url, 'HEAD'], workdir, opts).catch(() => ''));
    if (commit) {
      await mkdir(dir);
      await git(['init', '--quiet'], dir, opts);
      // A shallow fetch of one commit works where the server allows it (protocol v2, GitHub,
      // file://); otherwise the whole history, then the commit.
      const fetched = await git(['fetch', '--quiet', '--depth', '1', '--no-tags', '--', url, commit], dir, opts).then(() => true, (err) => {
        if (err instanceof ToolError && err.code === 'clone_failed') return false;
        throw err;
      });
      if (fetched) await git(['checkout', '--quiet', '--detach', 'FETCH_HEAD'], dir, opts);
      else {
        await git(['fetch', '--quiet', '--no-tags', '--', url, '+refs/heads/*:refs/remotes/origin/*'], dir, opts);
        await git(['checkout', '--quiet', '--detach', commit], dir, opts);
      }
    } else {
      const args = ['clone', '--quiet', '--depth', '1', '--no-tags'];
      if (branch) args.push('--branch', branch);
      await git([...args, '--', url, dir], workdir, opts);
    }
    const sha = (await git(['rev-parse', 'HEAD'], dir, opts)).trim();
    let name = branch ?? head.name;
    if (!name && !commit) name = (await git(['rev-parse', '--abbrev-ref', 'HEAD'], dir, opts)).trim();
    name ??= 'HEAD';
    // The default branch when the run names none (or names the remote's default); a commit
    // counts only when it is that branch's tip, so scanning an old commit resolves nothing.
    const onDefault = branch === undefined || (head.name !== null && branch === head.name);
    const atTip = commit === undefined || (head.sha !== null && head.sha.startsWith(commit.toLowerCase()));
    return { target: { kind: 'repository', asset: a, url, dir, branch: { name, is_default_branch: onDefault && atTip, commit_sha: sha } }, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
