// A tenant's commands, read-only.
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { notFound } from '../errors.ts';
import { OptionalUuidQuery, pageOf, pageResult, pathId, queryOf } from '../input.ts';
import { presentCommand } from '../present.ts';
import { composed, one } from '../../store/query.ts';
import { listCommandsStatement } from '../../store/lists.ts';
import { commandsSql } from '../../store/queries.ts';
import type { CommandRow } from '../../store/rows.ts';

const STATUSES = ['pending', 'acknowledged', 'running', 'completed', 'failed', 'cancelled', 'expired'] as const;
export const ListQuery = v.object({
  status: v.optional(v.picklist(STATUSES, `must be one of ${STATUSES.join(', ')}`)),
  agent_id: OptionalUuidQuery,
  pipeline_run_id: OptionalUuidQuery,
});

export function commandRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['status', 'agent_id', 'pipeline_run_id']);
    const rows = await composed<CommandRow & { cursor_at: string }>(db, listCommandsStatement(c.get('tenant').id, f, page.after, page.limit + 1));
    return c.json(pageResult(rows, page, presentCommand));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const row = await one<CommandRow>(db, commandsSql.GetCommand, [c.get('tenant').id, pathId(c, 'id', 'command')]);
    if (!row) throw notFound('command');
    return c.json(presentCommand(row));
  });

  return r;
}
