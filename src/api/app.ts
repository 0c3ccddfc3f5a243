// createApp(deps): the Hono application, separate from the server entry point so tests
// call app.request(...) on the real app.
import { Hono } from 'hono';
import type pg from 'pg';
import type { Logger } from 'pino';
import { ApiError } from './errors.ts';
import { requestBodies, settleRequestBody } from './body.ts';
import { responseHeaders } from './http.ts';
import { RESERVATION_LOST, reservationLost } from './idempotency.ts';
import type { AppEnv } from './auth.ts';
import type { OrchestrationConfig } from '../config.ts';
import type { CommandSignals } from './signals.ts';
import type { ReadRouting } from '../db/reads.ts';
import { recordWrites } from './reads.ts';
import { healthRoutes } from './routes/health.ts';
import { tenantRoutes } from './routes/tenants.ts';
import { assetRoutes } from './routes/assets.ts';
import { agentRoutes } from './routes/agents.ts';
import { pipelineRoutes } from './routes/pipelines.ts';
import { templateRoutes } from './routes/templates.ts';
import { runRoutes } from './routes/runs.ts';
import { commandRoutes } from './routes/commands.ts';
import { agentApiRoutes } from './routes/agent-api.ts';
import { ingestRoutes } from './routes/ingest.ts';
import { commandOutputRoutes } from './routes/command-output.ts';
import { scanRoutes } from './routes/scans.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import { findingRoutes } from './routes/findings.ts';
import { channelRoutes } from './routes/channels.ts';
import { eventRoutes } from './routes/events.ts';
import type { EventStream } from './event-stream.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { docsRoutes } from './routes/docs.ts';
import { sessionRoutes } from './routes/session.ts';
import { dashboardRoutes } from '../dashboard/routes.ts';
import { requestScope } from '../observability/http.ts';
import { currentLog } from '../observability/context.ts';

export type AppDeps = {
  pool: pg.Pool;
  orchestration: OrchestrationConfig;
  signals: CommandSignals;
  /** SHA-256 of the instance admin token, or null when there is none yet. */
  adminTokenHash: () => Buffer | null;
  logger: Logger;
  /** The process's live event stream (GET /api/v1/events/stream); without one, that route answers 503. */
  eventStream?: EventStream;
  /** METRICS_TOKEN: when set, GET /metrics wants it as a bearer token. */
  metricsToken?: string;
  /** With DATABASE_READ_URL: where list and detail reads go (api/reads.ts); without, they read `pool`. */
  reads?: ReadRouting;
};

/** The largest request body of a route without its own bodyLimitOf, after decoding. */
export const MAX_BODY_BYTES = 1024 * 1024;

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  // Outermost, so they see the final response of every request, errors and 404s included.
  // The request's id and logger first: everything after it logs with them.
  app.use('*', requestScope(deps.logger));
  app.use('*', responseHeaders());
  app.use('*', settleRequestBody(MAX_BODY_BYTES));
  // Bodies decoded (gzip, zstd) and bounded: MAX_BODY_BYTES unless the route's bodyLimitOf says more.
  app.use('*', requestBodies(MAX_BODY_BYTES));
  // With a read replica: a tenant's reads after its own writes wait for the replica to have them.
  if (deps.reads?.replica) app.use('*', recordWrites(deps));

  app.route('/', healthRoutes(deps));
  app.route('/', metricsRoutes(deps));
  app.route('/', docsRoutes());
  app.route('/api/v1/session', sessionRoutes(deps));
  app.route('/api/v1/tenants', tenantRoutes(deps));
  app.route('/api/v1/assets', assetRoutes(deps));
  app.route('/api/v1/agents', agentRoutes(deps));
  app.route('/api/v1/pipelines', pipelineRoutes(deps));
  app.route('/api/v1/pipeline-templates', templateRoutes(deps));
  app.route('/api/v1/pipeline-runs', runRoutes(deps));
  app.route('/api/v1/commands', commandRoutes(deps));
  app.route('/api/v1/scans', scanRoutes(deps));
  app.route('/api/v1/webhooks', webhookRoutes(deps));
  app.route('/api/v1/findings', findingRoutes(deps));
  app.route('/api/v1/channels', channelRoutes(deps));
  app.route('/api/v1/events', eventRoutes(deps));
  app.route('/api/v1/agent', agentApiRoutes(deps));
  app.route('/api/v1/agent', ingestRoutes(deps));
  app.route('/api/v1/agent/commands', commandOutputRoutes(deps));
  // The dashboard: pages that read the API above in-process, as a client would.
  app.route('/', dashboardRoutes({ fetch: (request) => app.fetch(request) }));

  app.notFound((c) => c.json(new ApiError(404, 'not_found', `No route for ${c.req.method} ${c.req.path}`).toBody(), 404));

  // The one place errors become responses. Bad input never reaches here as anything but an
  // ApiError; anything else is a bug: logged with its stack, answered without it.
  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json(err.toBody(), err.status);
    const pgCode = (err as { code?: string }).code;
    if (pgCode === '23505') {
      return c.json(new ApiError(409, 'conflict', 'A resource with these values already exists').toBody(), 409);
    }
    if (pgCode && /^22/.test(pgCode)) {
      // A data exception (a value the database cannot store or convert) is bad input that
      // slipped past validation: still the client's 400, logged so validation can catch it.
      currentLog(deps.logger).warn({ err, method: c.req.method, path: c.req.path }, 'data exception from input');
      return c.json(new ApiError(400, 'invalid_request', 'The request contains a value the database cannot store').toBody(), 400);
    }
    if (pgCode === RESERVATION_LOST) return c.json(reservationLost().toBody(), 409);
    if (pgCode === '55P03' || pgCode === '57014') {
      return c.json(new ApiError(503, 'busy', 'The database is busy; retry shortly').toBody(), 503);
    }
    currentLog(deps.logger).error({ err, method: c.req.method, path: c.req.path }, 'unhandled error');
    return c.json(new ApiError(500, 'internal_error', 'Internal server error').toBody(), 500);
  });

  return app;
}
