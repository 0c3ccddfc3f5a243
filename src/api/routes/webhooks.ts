// Webhook triggers (seed 001 "trigger: webhook"): an authenticated POST that starts runs of
// a pipeline and answers which. Authenticated by the pipeline's webhook token (POST
// /pipelines/{id}/webhook-token) or by a token of the pipeline's tenant.
import { Hono, type MiddlewareHandler } from 'hono';
import type { AppDeps } from '../app.ts';
import { tenantOfToken, webhookCredentialHash, type AppEnv } from '../auth.ts';
import { ApiError, conflict, invalid, notFound } from '../errors.ts';
import { idempotent } from '../idempotency.ts';
import { endpoints } from '../contract.ts';
import { pathId, readBody } from '../input.ts';
import { presentRun } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { one } from '../../store/query.ts';
import { pipelinesSql } from '../../store/queries.ts';
import type { PipelineRow } from '../../store/rows.ts';
import { isPlainObject } from '../../domain/json.ts';
import { normalizeEvent, startWebhookRuns } from '../../progression/triggers.ts';

// The event may come from a header; it is part of what an Idempotency-Key stands for.
const EVENT_HEADERS = ['x-github-event', 'x-gitlab-event', 'x-event'] as const;

type WebhookEnv = AppEnv & { Variables: { pipeline: PipelineRow; triggeredBy: string } };

export function webhookRoutes(deps: AppDeps) {
  const r = new Hono<WebhookEnv>();

  const authenticate: MiddlewareHandler<WebhookEnv> = async (c, next) => {
    const hash = webhookCredentialHash(c);
    const id = pathId(c, 'pipelineId', 'pipeline');
    let pipeline = await one<PipelineRow>(deps.pool, pipelinesSql.FindPipelineByWebhookToken, [id, hash]);
    let triggeredBy = 'webhook';
    if (!pipeline) {
      const tenant = await tenantOfToken(deps, hash);
      if (!tenant) throw new ApiError(401, 'unauthorized', "The credential is not valid: use the pipeline's webhook token or a tenant token");
      pipeline = await one<PipelineRow>(deps.pool, pipelinesSql.GetPipeline, [tenant.id, id]);
      if (!pipeline) throw notFound('pipeline');
      triggeredBy = 'webhook (tenant token)';
    }
    c.set('pipeline', pipeline);
    c.set('triggeredBy', triggeredBy);
    await next();
  };

  // An Idempotency-Key belongs to the pipeline's tenant, whichever credential was used.
  const once = idempotent<WebhookEnv>(deps, { tenantOf: (c) => c.get('pipeline').tenant_id, hashHeaders: EVENT_HEADERS });

  r.post('/:pipelineId', authenticate, once, async (c) => {
    const pipeline = c.get('pipeline');
    const triggeredBy = c.get('triggeredBy');
    const body = await readBody(c, endpoints.triggerWebhook);
    const bodyEvent = typeof body.event === 'string' && body.event.length <= 100 ? body.event : undefined;
    const context = isPlainObject(body.context) ? body.context : {};
    const raw = bodyEvent ?? EVENT_HEADERS.map((name) => c.req.header(name)).find((v) => v !== undefined) ?? null;
    const event = raw === null ? null : normalizeEvent(raw);
    const outcome = await withTransaction(deps.pool, (tx) =>
      startWebhookRuns(tx, pipeline, { event, assetId: body.asset_id?.toLowerCase() ?? null, context, triggeredBy }),
    );
    if (outcome === 'no_trigger') throw conflict('no_webhook_trigger', `Pipeline '${pipeline.name}' has no webhook trigger`);
    if (outcome === 'unknown_asset') throw invalid([{ path: 'asset_id', message: 'unknown asset' }]);
    if (outcome.ignored) return c.json({ runs: [], ignored: outcome.ignored }, 202);
    return c.json({ runs: outcome.runs.map((run) => presentRun(run)) }, 201);
  });

  return r;
}
