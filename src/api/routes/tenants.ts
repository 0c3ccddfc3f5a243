// Tenants and tenant tokens (instance admin only).
import { Hono } from 'hono';
import type { AppDeps } from '../app.ts';
import { newSecret, requireAdmin, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { notFound } from '../errors.ts';
import { endpoints } from '../contract.ts';
import { pageOf, pageResult, pathId, readBody } from '../input.ts';
import { presentTenant } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { many, one } from '../../store/query.ts';
import { tenantsSql } from '../../store/queries.ts';
import type { TenantRow } from '../../store/rows.ts';

export function tenantRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireAdmin(deps));

  r.post('/', async (c) => {
    const body = await readBody(c, endpoints.createTenant);
    const secret = newSecret('sft');
    const tenant = await withTransaction(deps.pool, async (tx) => {
      const t = (await one<TenantRow>(tx, tenantsSql.InsertTenant, [body.name, [...new Set(body.modules)]]))!;
      await one(tx, tenantsSql.InsertApiToken, [t.id, 'initial', secret.hash, secret.display]);
      return t;
    });
    return c.json({ tenant: presentTenant(tenant), token: secret.token }, 201);
  });

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const rows = await many<TenantRow & { cursor_at: string }>(db, tenantsSql.ListTenants, [
      page.after?.at ?? null, page.after?.id ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentTenant));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const tenant = await one<TenantRow>(db, tenantsSql.GetTenant, [pathId(c, 'id', 'tenant')]);
    if (!tenant) throw notFound('tenant');
    return c.json(presentTenant(tenant));
  });

  r.post('/:id/tokens', async (c) => {
    const id = pathId(c, 'id', 'tenant');
    const body = await readBody(c, endpoints.createTenantToken);
    const secret = newSecret('sft');
    const token = await withTransaction(deps.pool, async (tx) => {
      if (!(await one(tx, tenantsSql.GetTenant, [id]))) throw notFound('tenant');
      return one<{ id: string; name: string | null; created_at: Date }>(tx, tenantsSql.InsertApiToken, [
        id, body.name ?? null, secret.hash, secret.display,
      ]);
    });
    return c.json({ id: token!.id, name: token!.name, tenant_id: id, token: secret.token, created_at: token!.created_at.toISOString() }, 201);
  });

  return r;
}
