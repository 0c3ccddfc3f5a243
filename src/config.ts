// Process configuration from the environment, validated once at start; a bad value stops
// the process with the variable's name.
import * as v from 'valibot';
import { parseDuration, DURATION_HINT } from './domain/durations.ts';

const Duration = v.pipe(
  v.string(),
  v.check((s) => parseDuration(s) !== null, DURATION_HINT),
  v.transform((s) => parseDuration(s)!),
);
const Int = (min: number, max: number) =>
  v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.minValue(min), v.maxValue(max));

const EnvSchema = v.object({
  DATABASE_URL: v.optional(v.pipe(v.string(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
  PORT: v.optional(Int(0, 65535), '8080'),
  HOST: v.optional(v.string(), '127.0.0.1'),
  ADMIN_TOKEN: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  LOG_LEVEL: v.optional(v.picklist(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']), 'info'),
  ROLE: v.optional(v.picklist(['all', 'api', 'worker']), 'all'),
  DATA_DIR: v.optional(v.string(), '.data'),
  EMBEDDED_PG_PORT: v.optional(Int(1, 65535), '54329'),
  WORKER_CONCURRENCY: v.optional(Int(1, 100), '8'),
  ACK_TIMEOUT: v.optional(Duration, '30s'),
  QUEUE_TIMEOUT: v.optional(Duration, '1h'),
  AGENT_OFFLINE_AFTER: v.optional(Duration, '45s'),
  HEARTBEAT_INTERVAL: v.optional(Duration, '15s'),
  POLL_INTERVAL: v.optional(Duration, '5s'),
  CONFIG_FILE: v.optional(v.pipe(v.string(), v.minLength(1))),
});

export type Config = {
  databaseUrl: string | undefined;
  port: number;
  host: string;
  adminToken: string | undefined;
  logLevel: string;
  role: 'all' | 'api' | 'worker';
  dataDir: string;
  embeddedPgPort: number;
  workerConcurrency: number;
  /** Pipelines and scans declared in a file, applied at every start. */
  configFile: string | undefined;
  orchestration: OrchestrationConfig;
};

export type OrchestrationConfig = {
  /** An un-acknowledged claim returns to the queue after this many seconds. */
  ackTimeoutSeconds: number;
  /** A command nobody claims expires after this many seconds (pipeline settings.queue_timeout wins). */
  queueTimeoutSeconds: number;
  /** An agent silent for this long is offline and its running commands fail as agent_lost. */
  agentOfflineAfterSeconds: number;
  heartbeatIntervalSeconds: number;
  pollIntervalSeconds: number;
};

export const DEFAULT_ORCHESTRATION: OrchestrationConfig = {
  ackTimeoutSeconds: 30,
  queueTimeoutSeconds: 3600,
  agentOfflineAfterSeconds: 45,
  heartbeatIntervalSeconds: 15,
  pollIntervalSeconds: 5,
};

export class ConfigError extends Error {}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const present = Object.fromEntries(
    Object.keys(EnvSchema.entries).flatMap((k) => (env[k] !== undefined && env[k] !== '' ? [[k, env[k]]] : [])),
  );
  const parsed = v.safeParse(EnvSchema, present);
  if (!parsed.success) {
    const lines = parsed.issues.map((i) => `${v.getDotPath(i) ?? '(env)'}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.output;
  return {
    databaseUrl: e.DATABASE_URL,
    port: e.PORT,
    host: e.HOST,
    adminToken: e.ADMIN_TOKEN,
    logLevel: e.LOG_LEVEL,
    role: e.ROLE,
    dataDir: e.DATA_DIR,
    embeddedPgPort: e.EMBEDDED_PG_PORT,
    workerConcurrency: e.WORKER_CONCURRENCY,
    configFile: e.CONFIG_FILE,
    orchestration: {
      ackTimeoutSeconds: e.ACK_TIMEOUT,
      queueTimeoutSeconds: e.QUEUE_TIMEOUT,
      agentOfflineAfterSeconds: e.AGENT_OFFLINE_AFTER,
      heartbeatIntervalSeconds: e.HEARTBEAT_INTERVAL,
      pollIntervalSeconds: e.POLL_INTERVAL,
    },
  };
}
