// A running orchestrator for a test file: its own database, the real Hono app (requests go
// through app.request), the real LISTEN connection and a real graphile-worker runner.
// Time is controlled through the database: deadlines and job run_at are moved to now().
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import pino, { type Logger } from 'pino';
import { serve, type ServerType } from '@hono/node-server';
import type { Runner } from 'graphile-worker';
import type { Hono } from 'hono';
import { createApp, type AppDeps } from '../../src/api/app.ts';
import type { AppEnv } from '../../src/api/auth.ts';
import { AgentContacts } from '../../src/api/contacts.ts';
import { NotificationListener } from '../../src/db/listener.ts';
import { CommandSignals } from '../../src/api/signals.ts';
import { EventStream } from '../../src/api/event-stream.ts';
import { hashToken } from '../../src/api/auth.ts';
import { createPool } from '../../src/db/pool.ts';
import { startWorker } from '../../src/worker.ts';
import { DEFAULT_ORCHESTRATION, type OrchestrationConfig } from '../../src/config.ts';
import { createTestDatabase, type TestDatabase } from './db.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export type Response<T = any> = { status: number; body: T; headers: Headers };

export type RequestOptions = { token?: string; apiKey?: string; body?: unknown; raw?: string | Uint8Array<ArrayBuffer>; headers?: Record<string, string> };

export type Harness = {
  /** The Hono app requests go to (its routes: app.routes). */
  app: Hono<AppEnv>;
  db: TestDatabase;
  pool: pg.Pool;
  orchestration: OrchestrationConfig;
  request: <T = any>(method: string, path: string, opts?: RequestOptions) => Promise<Response<T>>;
  /** Waits until graphile-worker has no job that is due or running. */
  settle: (timeoutMs?: number) => Promise<void>;
  startWorker: () => Promise<void>;
  stopWorker: () => Promise<void>;
  /** Serves the same app on a real socket (127.0.0.1, a free port), as src/server.ts does; closed by close(). */
  listen: () => Promise<{ port: number; url: string }>;
  close: () => Promise<void>;
};

export async function startHarness(
  opts: { orchestration?: Partial<OrchestrationConfig>; worker?: boolean; logger?: Logger; metricsToken?: string } = {},
): Promise<Harness> {
  const db = await createTestDatabase();
  const logger = opts.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const pool = createPool(db.url, 20);
  const orchestration = { ...DEFAULT_ORCHESTRATION, ...opts.orchestration };
  const listener = new NotificationListener(db.url, logger);
  const signals = new CommandSignals(listener);
  const eventStream = new EventStream(listener, pool, logger);
  await listener.start();
  eventStream.start();
  const deps: AppDeps = { pool, orchestration, signals, eventStream, adminTokenHash: () => hashToken(ADMIN_TOKEN), logger, metricsToken: opts.metricsToken };
  const app = createApp(deps);

  let worker: Runner | null = null;
  let workerPool: pg.Pool | null = null;
  const startW = async () => {
    if (worker) return;
    workerPool = createPool(db.url, 8);
    worker = await startWorker({ pgPool: workerPool, concurrency: 4, orchestration, logger });
  };
  const stopW = async () => {
    const w = worker;
    const p = workerPool;
    worker = null;
    workerPool = null;
    await w?.stop();
    await p?.end();
  };
  if (opts.worker !== false) await startW();

  const request = async <T = any>(method: string, path: string, o: RequestOptions = {}): Promise<Response<T>> => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    if (o.apiKey) headers['x-api-key'] = o.apiKey;
    let body: string | Uint8Array<ArrayBuffer> | undefined;
    if (o.raw !== undefined) body = o.raw;
    else if (o.body !== undefined) body = JSON.stringify(o.body);
    if (body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
    const res = await app.request(path, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  };

  const settle = async (timeoutMs = 15_000) => {
    const until = Date.now() + timeoutMs;
    // Agents' contact is written in batches, after the requests that made it were answered.
    await AgentContacts.settled();
    for (;;) {
      const { rows } = await pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM graphile_worker.jobs
         WHERE (run_at <= now() AND attempts < max_attempts) OR locked_at IS NOT NULL`,
      );
      if (rows[0].n === 0) return;
      if (Date.now() > until) throw new Error(`jobs did not settle within ${timeoutMs}ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  let listening: Promise<ServerType> | null = null;
  const listen = async () => {
    listening ??= new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
    });
    const { port } = (await listening).address() as AddressInfo;
    return { port, url: `http://127.0.0.1:${port}` };
  };
  const closeServer = async () => {
    const pending = listening;
    listening = null;
    if (!pending) return;
    const s = await pending;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    (s as { closeAllConnections?: () => void }).closeAllConnections?.();
    await closed;
  };

  return {
    app,
    db,
    pool,
    orchestration,
    request,
    settle,
    startWorker: startW,
    stopWorker: stopW,
    listen,
    close: async () => {
      await closeServer();
      await stopW();
      signals.stop();
      await eventStream.stop();
      await listener.stop();
      await pool.end();
      await db.drop();
    },
  };
}
