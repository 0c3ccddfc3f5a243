// The agent's configuration: environment variables (ARCHITECTURE.md "The reference agent"),
// each mirrored by a flag (a flag wins). Validated with valibot; a bad value is a message
// naming the variable (or flag) and its problem, never a stack. The API key has no flag: a
// command line is visible to every user of the host (ps), the environment is not.
import * as v from 'valibot';
import { parseArgs } from 'node:util';
import { parseDuration, DURATION_HINT } from '../domain/durations.ts';

export type AgentConfig = {
  /** The API's base address, without a trailing slash. */
  url: string;
  apiKey: string;
  /** Commands run at once; null: the agent's max_concurrent_jobs, as the server says it. */
  concurrency: number | null;
  /** Where steps get their work directories; null: a new temporary directory, removed at exit. */
  workDir: string | null;
  toolsFile: string | null;
  logLevel: string;
  /** After SIGTERM, how long running tools may go on before they are stopped. */
  shutdownGraceSeconds: number;
  /** How long to keep trying to reach the server at start before giving up. */
  startTimeoutSeconds: number;
};

export class AgentConfigError extends Error {}

const Duration = v.pipe(v.string(), v.check((s) => parseDuration(s) !== null, DURATION_HINT), v.transform((s) => parseDuration(s)!));

const Env = v.object({
  SCANFLOW_URL: v.optional(v.pipe(
    v.string(),
    v.check((s) => {
      try {
        const u = new URL(s);
        return (u.protocol === 'http:' || u.protocol === 'https:') && !u.search && !u.hash && !u.username;
      } catch {
        return false;
      }
    }, 'must be the API\'s base address as an http(s) URL without credentials or query, e.g. http://127.0.0.1:8080'),
    v.transform((s) => s.replace(/\/+$/, '')),
  )),
  SCANFLOW_AGENT_KEY: v.optional(v.pipe(
    v.string(),
    v.regex(/^[\x21-\x7e]{8,512}$/, 'must be the agent\'s API key (printable characters, no spaces)'),
  )),
  SCANFLOW_AGENT_CONCURRENCY: v.optional(v.pipe(
    v.string(), v.regex(/^\d+$/, 'must be a whole number of commands run at once (1-100)'),
    v.transform(Number), v.minValue(1, 'must be at least 1'), v.maxValue(100, 'must be at most 100'),
  )),
  SCANFLOW_WORK_DIR: v.optional(v.pipe(v.string(), v.minLength(1))),
  SCANFLOW_TOOLS_FILE: v.optional(v.pipe(v.string(), v.minLength(1))),
  LOG_LEVEL: v.optional(v.picklist(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], 'must be one of trace, debug, info, warn, error, fatal, silent'), 'info'),
  SCANFLOW_SHUTDOWN_GRACE: v.optional(Duration, '30s'),
  SCANFLOW_START_TIMEOUT: v.optional(Duration, '60s'),
});

/** Flag → the variable it mirrors. */
const FLAGS = {
  url: 'SCANFLOW_URL',
  concurrency: 'SCANFLOW_AGENT_CONCURRENCY',
  'work-dir': 'SCANFLOW_WORK_DIR',
  'tools-file': 'SCANFLOW_TOOLS_FILE',
  'log-level': 'LOG_LEVEL',
  'shutdown-grace': 'SCANFLOW_SHUTDOWN_GRACE',
  'start-timeout': 'SCANFLOW_START_TIMEOUT',
} as const;

export const USAGE = `Usage: scanflow-agent [options]   (or: npm run agent -- [options])

The scanflow reference agent: polls the API for commands, runs the security tools they name
on this host, streams their output, ingests their findings and reports the result.

Options (each mirrors an environment variable; a flag wins):
  --url URL              SCANFLOW_URL               the API's base address (required)
                         SCANFLOW_AGENT_KEY         the agent's API key (required; environment only)
  --concurrency N        SCANFLOW_AGENT_CONCURRENCY commands run at once (default: the agent's max_concurrent_jobs)
  --work-dir DIR         SCANFLOW_WORK_DIR          where checkouts and scratch files go (default: a temporary directory)
  --tools-file FILE      SCANFLOW_TOOLS_FILE        extra tools (YAML: name, command, output, timeout)
  --log-level LEVEL      LOG_LEVEL                  trace, debug, info (default), warn, error, fatal, silent
  --shutdown-grace DUR   SCANFLOW_SHUTDOWN_GRACE    on SIGTERM, how long running tools may finish (default 30s)
  --start-timeout DUR    SCANFLOW_START_TIMEOUT     how long to retry reaching the server at start (default 60s)
  --detect               print the tools found on this host and exit (needs no server)
  --help                 this text
`;

export type Invocation = { help: boolean; detect: boolean; env: Record<string, string | undefined> };

/** The flags, folded into the environment they mirror. */
export function readArgs(argv: string[], env: Record<string, string | undefined>): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        ...Object.fromEntries(Object.keys(FLAGS).map((f) => [f, { type: 'string' as const }])),
        help: { type: 'boolean', short: 'h' },
        detect: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new AgentConfigError(`scanflow-agent: ${(err as Error).message}\n(scanflow-agent --help lists the options)`);
  }
  const merged = { ...env };
  for (const [flag, name] of Object.entries(FLAGS)) {
    const value = (parsed.values as Record<string, unknown>)[flag];
    if (typeof value === 'string') merged[name] = value;
  }
  return { help: parsed.values.help === true, detect: parsed.values.detect === true, env: merged };
}

export function loadAgentConfig(env: Record<string, string | undefined>): AgentConfig {
  const present = Object.fromEntries(
    Object.keys(Env.entries).flatMap((k) => (env[k] !== undefined && env[k] !== '' ? [[k, env[k]]] : [])),
  );
  const parsed = v.safeParse(Env, present);
  const flagOf: Record<string, string> = Object.fromEntries(Object.entries(FLAGS).map(([f, n]) => [n, f]));
  const line = (name: string, message: string) => `${name}${flagOf[name] ? ` (--${flagOf[name]})` : ''}: ${message}`;
  const lines = parsed.success ? [] : parsed.issues.map((i) => line(v.getDotPath(i) ?? '(environment)', i.message));
  if (present.SCANFLOW_URL === undefined) lines.unshift(line('SCANFLOW_URL', 'is required: the API\'s base address, e.g. http://127.0.0.1:8080'));
  if (present.SCANFLOW_AGENT_KEY === undefined) lines.push(line('SCANFLOW_AGENT_KEY', 'is required: the API key shown once when the agent was created (POST /api/v1/agents)'));
  if (!parsed.success || lines.length > 0) throw new AgentConfigError(`scanflow-agent: invalid configuration:\n  ${lines.join('\n  ')}`);
  const e = parsed.output;
  return {
    url: e.SCANFLOW_URL!,
    apiKey: e.SCANFLOW_AGENT_KEY!,
    concurrency: e.SCANFLOW_AGENT_CONCURRENCY ?? null,
    workDir: e.SCANFLOW_WORK_DIR ?? null,
    toolsFile: e.SCANFLOW_TOOLS_FILE ?? null,
    logLevel: e.LOG_LEVEL,
    shutdownGraceSeconds: e.SCANFLOW_SHUTDOWN_GRACE,
    startTimeoutSeconds: e.SCANFLOW_START_TIMEOUT,
  };
}
