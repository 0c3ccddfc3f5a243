// GET /metrics: Prometheus text (src/observability/metrics.ts). With METRICS_TOKEN set, the
// scraper sends it as a bearer token (Prometheus' `authorization` scrape setting).
import { timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import type { AppDeps } from '../app.ts';
import type { AppEnv } from '../auth.ts';
import { hashToken } from '../auth.ts';
import { ApiError } from '../errors.ts';
import { gaugeReads } from '../reads.ts';
import { many } from '../../store/query.ts';
import { metricsSql } from '../../store/queries.ts';
import { METRICS_CONTENT_TYPE, metricsText, type TenantGauges } from '../../observability/metrics.ts';

export function metricsRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  const wanted = deps.metricsToken ? hashToken(deps.metricsToken) : null;
  r.get('/metrics', async (c) => {
    if (wanted) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '');
      if (!m || !timingSafeEqual(hashToken(m[1]), wanted)) {
        c.header('WWW-Authenticate', 'Bearer realm="metrics"');
        throw new ApiError(401, 'unauthorized', 'GET /metrics needs the METRICS_TOKEN: Authorization: Bearer <token>');
      }
    }
    const gauges = await many<TenantGauges>(gaugeReads(deps), metricsSql.TenantGauges, []);
    return c.body(await metricsText(gauges), 200, { 'Content-Type': METRICS_CONTENT_TYPE });
  });
  return r;
}
