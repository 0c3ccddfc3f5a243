// Starting and stopping the orchestrator: database (embedded or DATABASE_URL), migrations,
// admin credential, worker, LISTEN connection and HTTP server. Used by main.ts and by the
// benchmark, which drives the real server.
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import type pg from 'pg';
import type { Runner } from 'graphile-worker';
import type { Config } from './config.ts';
import { createPool } from './db/pool.ts';
import { ReadRouting } from './db/reads.ts';
import { migrate } from './db/migrate.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts';
import { startWorker } from './worker.ts';
import { createApp } from './api/app.ts';
import { NotificationListener } from './db/listener.ts';
import { CommandSignals } from './api/signals.ts';
import { EventStream } from './api/event-stream.ts';
import { secretBox } from './delivery/secrets.ts';
import { hashToken, newSecret } from './api/auth.ts';
import { one } from './store/query.ts';
import { scansSql, tenantsSql } from './store/queries.ts';
import { applyConfigFile, formatReport } from './config-file/index.ts';

export type Orchestrator = {
  url: string;
  databaseUrl: string;
  pool: pg.Pool;
  logger: Logger;
  /** With DATABASE_READ_URL (and the API role): where reads go, and how many went where. */
  reads: ReadRouting | null;
  /** Set when this start generated the admin token (shown once). */
  generatedAdminToken: string | null;
  stop: () => Promise<void>;
};

const ADMIN_TOKEN_SETTING = 'admin_token_sha256';

/**
 * The admin credential: ADMIN_TOKEN when given (never printed); otherwise the one stored
 * in the database, generated on the first start and returned once so it can be shown.
 */
async function adminCredential(pool: pg.Pool, given: string | undefined): Promise<{ hash: Buffer; generated: string | null }> {
  if (given) return { hash: hashToken(given), generated: null };
  const secret = newSecret('sfadm');
  const stored = await one<{ value: string }>(pool, tenantsSql.InsertSettingIfAbsent, [ADMIN_TOKEN_SETTING, JSON.stringify(secret.hash.toString('hex'))]);
  if (stored) return { hash: secret.hash, generated: secret.token };
  const existing = await one<{ value: string }>(pool, tenantsSql.GetSetting, [ADMIN_TOKEN_SETTING]);
  return { hash: Buffer.from(existing!.value, 'hex'), generated: null };
}

/**
 * DATABASE_READ_URL's pool and the routing of reads (src/db/reads.ts). A replica that cannot be
 * reached now is no reason not to start (reads go to the primary until it answers); one that
 * is not a standby in recovery is said at once: reads that must wait for its replay never go there.
 */
async function readReplica(url: string, primary: pg.Pool, logger: Logger): Promise<ReadRouting> {
  // Named, so pg_stat_activity on the replica shows which sessions are scanflow's reads.
  const replica = createPool(url, 20, { connectionTimeoutMillis: 5_000, application_name: 'scanflow reads' });
  try {
    const { rows } = await replica.query('SELECT pg_is_in_recovery() AS standby');
    if (!rows[0].standby) logger.warn('DATABASE_READ_URL is not a standby in recovery: reads that must see recent writes go to DATABASE_URL');
    else logger.info('read replica: list and detail reads go to DATABASE_READ_URL');
  } catch (err) {
    logger.warn({ err }, 'DATABASE_READ_URL does not answer yet; reads go to DATABASE_URL until it does');
  }
  return new ReadRouting(primary, replica, logger.child({ component: 'reads' }));
}

export async function startOrchestrator(config: Config, logger: Logger = pino({ level: config.logLevel })): Promise<Orchestrator> {
  let embedded: EmbeddedDatabase | null = null;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbeddedPostgres({
      dataDir: config.dataDir,
      port: config.embeddedPgPort,
      database: 'scanflow',
      onLog: (m) => logger.debug({ component: 'postgres' }, m.trim()),
    });
    databaseUrl = embedded.url;
    logger.info({ dataDir: config.dataDir, port: config.embeddedPgPort }, 'embedded PostgreSQL started');
  }

  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((err) => logger.error({ err }, 'error while stopping'));
    stops.length = 0;
  };
  if (embedded) stops.push(embedded.stop);

  try {
    await migrate(databaseUrl, { info: (m) => logger.info(m) });
    const pool = createPool(databaseUrl, 20);
    stops.push(() => pool.end());
    if (config.configFile) {
      const report = await applyConfigFile(pool, config.configFile);
      logger.info(`applied ${config.configFile}:\n${formatReport(report)}`);
    }
    // The scheduler's job may be missing (a database restored from a backup, jobs cleared):
    // arm it for the earliest due scan. Scans missed while everything was down fire once.
    await one(pool, scansSql.ArmScheduler, []);
    const admin = await adminCredential(pool, config.adminToken);
    // Webhook signing secrets are stored encrypted (src/delivery/secrets.ts); say so when the key is beside them.
    if ((await secretBox(pool, config.orchestration.delivery.secretsKey)).keyInDatabase) {
      logger.warn('SECRETS_KEY is not set: webhook signing secrets are encrypted under a key stored in the database itself, ' +
        'so a copy of the database reveals them; set SECRETS_KEY (32 bytes: openssl rand -base64 32) and keep it apart from the database');
    }

    let worker: Runner | null = null;
    if (config.role !== 'api') {
      const workerPool = createPool(databaseUrl, config.workerConcurrency + 2);
      stops.push(() => workerPool.end());
      worker = await startWorker({ pgPool: workerPool, concurrency: config.workerConcurrency, orchestration: config.orchestration, logger });
      stops.push(() => worker!.stop());
    }

    let url = '';
    let reads: ReadRouting | null = null;
    if (config.role !== 'worker') {
      // One LISTEN connection for the process: new commands for long polls, events for streams.
      const listener = new NotificationListener(databaseUrl, logger.child({ component: 'listener' }));
      const signals = new CommandSignals(listener);
      const eventStream = new EventStream(listener, pool, logger.child({ component: 'event-stream' }));
      await listener.start();
      eventStream.start();
      const routing = config.databaseReadUrl ? await readReplica(config.databaseReadUrl, pool, logger) : null;
      if (routing) stops.push(() => routing.replica!.end());
      reads = routing;
      const app = createApp({
        pool, orchestration: config.orchestration, signals, eventStream, adminTokenHash: () => admin.hash, logger, metricsToken: config.metricsToken,
        reads: routing ?? undefined,
      });
      const server = await new Promise<ServerType>((resolve) => {
        const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s));
      });
      const address = server.address() as AddressInfo;
      url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${address.port}`;
      // Stop order on shutdown: stop accepting, wake long polls (they answer at once),
      // let in-flight requests finish, then the worker finishes its jobs, then connections.
      stops.push(async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        signals.stop();
        await eventStream.stop(); // streams never end by themselves: their clients reconnect elsewhere
        await listener.stop();
        (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
        await closed;
      });
    }

    return {
      url,
      databaseUrl,
      pool,
      logger,
      generatedAdminToken: admin.generated,
      reads,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

