// Webhook triggers (seed 001 "trigger: webhook"): an authenticated POST that starts runs of
// a pipeline and answers which. Authenticated by the pipeline's webhook token (POST
// /pipelines/{id}/webhook-token) or by a token of the pipeline's tenant.
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { tenantOfToken, webhookCredentialHash, type AppEnv } from '../auth.ts';
import { ApiError, conflict, invalid, notFound } from '../errors.ts';
import { parseInput, pathId, readJson, UUID } from '../input.ts';
import { presentRun } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { one } from '../../store/query.ts';
import { pipelinesSql } from '../../store/queries.ts';
import type { PipelineRow } from '../../store/rows.ts';
import { isPlainObject } from '../../domain/json.ts';
import { normalizeEvent, startWebhookRuns } from '../../progression/triggers.ts';

// The body may be a whole provider payload (a GitHub push, say): only these fields are read,
// and `event` and `context` only when they have our shape (a GitHub status event carries a
// string `context`). asset_id is ours alone and must be an asset id.
const WebhookBody = v.looseObject({
  asset_id: v.optional(v.pipe(v.string(), v.regex(UUID, 'must be an asset id (UUID)'))),
});

export function webhookRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();

  r.post('/:pipelineId', async (c) => {
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
    const body = parseInput(WebhookBody, await readJson(c));
    const bodyEvent = typeof body.event === 'string' && body.event.length <= 100 ? body.event : undefined;
    const context = isPlainObject(body.context) ? body.context : {};
    const raw = bodyEvent ?? c.req.header('x-github-event') ?? c.req.header('x-gitlab-event') ?? c.req.header('x-event') ?? null;
    const event = raw === null ? null : normalizeEvent(raw);
    const found = pipeline;
    const outcome = await withTransaction(deps.pool, (tx) =>
      startWebhookRuns(tx, found, { event, assetId: body.asset_id?.toLowerCase() ?? null, context, triggeredBy }),
    );
    if (outcome === 'no_trigger') throw conflict('no_webhook_trigger', `Pipeline '${found.name}' has no webhook trigger`);
    if (outcome === 'unknown_asset') throw invalid([{ path: 'asset_id', message: 'unknown asset' }]);
    if (outcome.ignored) return c.json({ runs: [], ignored: outcome.ignored }, 202);
    return c.json({ runs: outcome.runs.map((run) => presentRun(run)) }, 201);
  });

  return r;
}
