// Process configuration from the environment, validated once at start; a bad value stops
// the process with the variable's name.
import * as v from 'valibot';
import { parseDuration, DURATION_HINT } from './domain/durations.ts';
import type { PrivateNetworks } from './domain/destinations.ts';

const Duration = v.pipe(
  v.string(),
  v.check((s) => parseDuration(s) !== null, DURATION_HINT),
  v.transform((s) => parseDuration(s)!),
);
// How long a kind of history is kept (src/progression/retention.ts): a duration of at least
// `min`, or 0 / off to keep it forever (null).
const Retention = (min: number, minText: string) =>
  v.pipe(
    v.string(),
    v.check((s) => /^(0|off)$/i.test(s.trim()) || parseDuration(s) !== null,
      'must be a duration like "30d" or "12h", or 0 or off to keep it forever'),
    v.transform((s) => (/^(0|off)$/i.test(s.trim()) ? null : parseDuration(s)!)),
    v.check((n) => n === null || n >= min, `must be at least ${minText} (or 0 or off to keep it forever)`),
  );
const Int = (min: number, max: number) =>
  v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.minValue(min), v.maxValue(max));

const EnvSchema = v.object({
  DATABASE_URL: v.optional(v.pipe(v.string(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
  DATABASE_READ_URL: v.optional(v.pipe(v.string(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
  PORT: v.optional(Int(0, 65535), '8080'),
  HOST: v.optional(v.string(), '127.0.0.1'),
  ADMIN_TOKEN: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  METRICS_TOKEN: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
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
  WORKER_HEARTBEAT_INTERVAL: v.optional(Duration, '5s'),
  WORKER_DEAD_AFTER: v.optional(Duration, '20s'),
  CONFIG_FILE: v.optional(v.pipe(v.string(), v.minLength(1))),
  LOG_MAX_BYTES: v.optional(Int(1024, 1024 * 1024 * 1024), String(10 * 1024 * 1024)),
  // Retention: see RetentionConfig.
  OUTPUT_RETENTION: v.optional(Retention(3600, '1h'), '30d'),
  EVENT_RETENTION: v.optional(Retention(7 * 86_400, '7d'), '30d'),
  COMMAND_RETENTION: v.optional(Retention(86_400, '1d'), '90d'),
  DELIVERY_RETENTION: v.optional(Retention(86_400, '1d'), '30d'),
  INGEST_MAX_BYTES: v.optional(Int(1024 * 1024, 1024 * 1024 * 1024), String(50 * 1024 * 1024)),
  // Events out (src/delivery/): see DeliveryConfig.
  SECRETS_KEY: v.optional(v.pipe(
    v.string(),
    v.check((s) => secretsKeyOf(s) !== null, 'must be 32 bytes as 64 hex digits or base64 (openssl rand -base64 32)'),
    v.transform((s) => secretsKeyOf(s)!),
  )),
  SMTP_URL: v.optional(v.pipe(v.string(), v.regex(/^smtps?:\/\/[^/]/, 'must be an smtp:// or smtps:// URL'))),
  SMTP_FROM: v.optional(v.pipe(v.string(), v.minLength(3), v.maxLength(320))),
  PUBLIC_URL: v.optional(v.pipe(v.string(), v.regex(/^https?:\/\/[^/]/, 'must be an http:// or https:// URL'))),
  DELIVERY_TIMEOUT: v.optional(v.pipe(Duration, v.minValue(1, 'must be at least 1s'), v.maxValue(300, 'must be at most 5m')), '10s'),
  DELIVERY_CONCURRENCY: v.optional(Int(1, 1000), '10'),
  DELIVERY_PRIVATE_NETWORKS: v.optional(v.picklist(['allow', 'deny'], 'must be allow or deny'), 'allow'),
});

/** SECRETS_KEY's 32 bytes: 64 hex digits or base64 (standard or URL-safe). */
function secretsKeyOf(s: string): Buffer | null {
  const t = s.trim();
  if (/^[0-9a-f]{64}$/i.test(t)) return Buffer.from(t, 'hex');
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) return null;
  const key = Buffer.from(t, 'base64');
  return key.length === 32 ? key : null;
}

export type Config = {
  databaseUrl: string | undefined;
  /**
   * A streaming replica of DATABASE_URL (DATABASE_READ_URL): list and detail reads of the
   * API and the dashboard, and /metrics gauges, go there (src/db/reads.ts); none: one pool.
   */
  databaseReadUrl: string | undefined;
  port: number;
  host: string;
  adminToken: string | undefined;
  /** When set, GET /metrics wants it as a bearer token. */
  metricsToken: string | undefined;
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
  /** Worker processes heartbeat (and sweep: src/progression/maintenance.ts) this often. */
  workerHeartbeatSeconds: number;
  /** A worker process silent this long is dead: its jobs are released, its runs move on. */
  workerDeadAfterSeconds: number;
  /** A command's stored output is at most this many bytes (then a truncation marker). */
  logMaxBytes: number;
  /** How long each kind of history is kept (the retention task, src/progression/retention.ts). */
  retention: RetentionConfig;
  /**
   * The largest request body of the ingest routes, after decoding (their bodyLimitOf; every
   * other route takes at most MAX_BODY_BYTES).
   */
  ingestMaxBytes: number;
  delivery: DeliveryConfig;
};

/**
 * Seconds each kind of history is kept after it ended; null: forever (a setting of 0 or off).
 * Findings, their sightings and events, runs and step runs are never deleted.
 */
export type RetentionConfig = {
  /** OUTPUT_RETENTION: step output of commands finished longer ago (the output's lengths stay). */
  output: number | null;
  /**
   * EVENT_RETENTION: run, step, scan, agent and channel events (a finding's events stay).
   * At least 7 days: a delivery retrying for up to 3 days reads its events.
   */
  events: number | null;
  /** COMMAND_RETENTION: finished commands (their step runs stay, without the command). */
  commands: number | null;
  /** DELIVERY_RETENTION: finished deliveries of notification channels and their attempts. */
  deliveries: number | null;
};

export const DEFAULT_RETENTION: RetentionConfig = {
  output: 30 * 86_400,
  events: 30 * 86_400,
  commands: 90 * 86_400,
  deliveries: 30 * 86_400,
};

/** Events out: how notification channels are delivered to (src/delivery/, tasks/event_deliver.ts). */
export type DeliveryConfig = {
  /** One attempt's limit, from connecting to the answer (DELIVERY_TIMEOUT). */
  timeoutSeconds: number;
  /** Deliveries in flight per worker process, apart from progression's jobs (DELIVERY_CONCURRENCY). */
  concurrency: number;
  /** Email channels send through this (SMTP_URL); none: email channels cannot be created. */
  smtpUrl: string | null;
  smtpFrom: string;
  /** Links in messages start with this (PUBLIC_URL; by default this process's HOST and PORT). */
  publicUrl: string;
  /**
   * The key channel secrets are encrypted with (SECRETS_KEY, AES-256-GCM). null: the key
   * generated on first use and stored in the database (src/delivery/secrets.ts).
   */
  secretsKey: Buffer | null;
  /**
   * Whether webhook and Slack channels may reach loopback and private addresses
   * (DELIVERY_PRIVATE_NETWORKS); link-local, multicast and unspecified ones never
   * (domain/destinations.ts).
   */
  privateNetworks: PrivateNetworks;
};

export const DEFAULT_DELIVERY: DeliveryConfig = {
  timeoutSeconds: 10,
  concurrency: 10,
  smtpUrl: null,
  smtpFrom: 'scanflow@localhost',
  publicUrl: 'http://127.0.0.1:8080',
  secretsKey: null,
  privateNetworks: 'allow',
};

export const DEFAULT_ORCHESTRATION: OrchestrationConfig = {
  ackTimeoutSeconds: 30,
  queueTimeoutSeconds: 3600,
  agentOfflineAfterSeconds: 45,
  heartbeatIntervalSeconds: 15,
  pollIntervalSeconds: 5,
  workerHeartbeatSeconds: 5,
  workerDeadAfterSeconds: 20,
  logMaxBytes: 10 * 1024 * 1024,
  retention: DEFAULT_RETENTION,
  ingestMaxBytes: 50 * 1024 * 1024,
  delivery: DEFAULT_DELIVERY,
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
  if (e.WORKER_DEAD_AFTER < 2 * e.WORKER_HEARTBEAT_INTERVAL) {
    // One late heartbeat must not make a live process look dead (and its jobs run twice).
    throw new ConfigError('invalid configuration:\n  WORKER_DEAD_AFTER: must be at least twice WORKER_HEARTBEAT_INTERVAL');
  }
  return {
    databaseUrl: e.DATABASE_URL,
    databaseReadUrl: e.DATABASE_READ_URL,
    port: e.PORT,
    host: e.HOST,
    adminToken: e.ADMIN_TOKEN,
    metricsToken: e.METRICS_TOKEN,
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
      workerHeartbeatSeconds: e.WORKER_HEARTBEAT_INTERVAL,
      workerDeadAfterSeconds: e.WORKER_DEAD_AFTER,
      logMaxBytes: e.LOG_MAX_BYTES,
      retention: {
        output: e.OUTPUT_RETENTION,
        events: e.EVENT_RETENTION,
        commands: e.COMMAND_RETENTION,
        deliveries: e.DELIVERY_RETENTION,
      },
      ingestMaxBytes: e.INGEST_MAX_BYTES,
      delivery: {
        timeoutSeconds: e.DELIVERY_TIMEOUT,
        concurrency: e.DELIVERY_CONCURRENCY,
        smtpUrl: e.SMTP_URL ?? null,
        smtpFrom: e.SMTP_FROM ?? DEFAULT_DELIVERY.smtpFrom,
        publicUrl: (e.PUBLIC_URL ?? `http://${e.HOST === '0.0.0.0' ? '127.0.0.1' : e.HOST}:${e.PORT}`).replace(/\/+$/, ''),
        secretsKey: e.SECRETS_KEY ?? null,
        privateNetworks: e.DELIVERY_PRIVATE_NETWORKS,
      },
    },
  };
}
