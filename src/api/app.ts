// createApp(deps): the Hono application, separate from the server entry point so tests
// call app.request(...) on the real app.
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type pg from 'pg';
import type { Logger } from 'pino';
import { ApiError } from './errors.ts';
import type { AppEnv } from './auth.ts';
import type { OrchestrationConfig } from '../config.ts';
import type { CommandSignals } from './signals.ts';
import { healthRoutes } from './routes/health.ts';
import { tenantRoutes } from './routes/tenants.ts';
import { assetRoutes } from './routes/assets.ts';
import { agentRoutes } from './routes/agents.ts';
import { pipelineRoutes } from './routes/pipelines.ts';
import { templateRoutes } from './routes/templates.ts';
import { runRoutes } from './routes/runs.ts';
import { commandRoutes } from './routes/commands.ts';
import { agentApiRoutes } from './routes/agent-api.ts';
import { scanRoutes } from './routes/scans.ts';
import { webhookRoutes } from './routes/webhooks.ts';

export type AppDeps = {
  pool: pg.Pool;
  orchestration: OrchestrationConfig;
  signals: CommandSignals;
  /** SHA-256 of the instance admin token, or null when there is none yet. */
  adminTokenHash: () => Buffer | null;
  logger: Logger;
};

export const MAX_BODY_BYTES = 1024 * 1024;

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use(
    '*',
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: () => {
        throw new ApiError(413, 'payload_too_large', `The request body is larger than ${MAX_BODY_BYTES} bytes`);
      },
    }),
  );

  app.route('/', healthRoutes(deps));
  app.route('/api/v1/tenants', tenantRoutes(deps));
  app.route('/api/v1/assets', assetRoutes(deps));
  app.route('/api/v1/agents', agentRoutes(deps));
  app.route('/api/v1/pipelines', pipelineRoutes(deps));
  app.route('/api/v1/pipeline-templates', templateRoutes(deps));
  app.route('/api/v1/pipeline-runs', runRoutes(deps));
  app.route('/api/v1/commands', commandRoutes(deps));
  app.route('/api/v1/scans', scanRoutes(deps));
  app.route('/api/v1/webhooks', webhookRoutes(deps));
  app.route('/api/v1/agent', agentApiRoutes(deps));

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
      deps.logger.warn({ err, method: c.req.method, path: c.req.path }, 'data exception from input');
      return c.json(new ApiError(400, 'invalid_request', 'The request contains a value the database cannot store').toBody(), 400);
    }
    if (pgCode === '55P03' || pgCode === '57014') {
      return c.json(new ApiError(503, 'busy', 'The database is busy; retry shortly').toBody(), 503);
    }
    deps.logger.error({ err, method: c.req.method, path: c.req.path }, 'unhandled error');
    return c.json(new ApiError(500, 'internal_error', 'Internal server error').toBody(), 500);
  });

  return app;
}
