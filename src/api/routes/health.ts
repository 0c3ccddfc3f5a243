import { Hono } from 'hono';
import type { AppDeps } from '../app.ts';
import type { AppEnv } from '../auth.ts';
import { migrationsCurrent } from '../../db/migrate.ts';

export function healthRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  // The process is up.
  r.get('/healthz', (c) => c.json({ status: 'ok' }));
  // The database answers and every migration is applied.
  r.get('/readyz', async (c) => {
    try {
      const current = await migrationsCurrent(deps.pool);
      if (!current) return c.json({ status: 'not_ready', reason: 'migrations pending' }, 503);
      return c.json({ status: 'ready' });
    } catch {
      return c.json({ status: 'not_ready', reason: 'database unreachable' }, 503);
    }
  });
  return r;
}
