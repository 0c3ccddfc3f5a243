// Tenants and tenant tokens (instance admin only).
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { newSecret, requireAdmin, type AppEnv } from '../auth.ts';
import { notFound } from '../errors.ts';
import { pageOf, pageResult, parseBody, pathId } from '../input.ts';
import { presentTenant } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { many, one } from '../../store/query.ts';
import { tenantsSql } from '../../store/queries.ts';
import type { TenantRow } from '../../store/rows.ts';

const Module = v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_]{0,49}$/, 'must be a lowercase module name like "scans"'));
const CreateTenant = v.object({
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  modules: v.optional(v.array(Module), ['scans']),
});
const CreateToken = v.object({ name: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(255)))) });

export function tenantRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireAdmin(deps));

  r.post('/', async (c) => {
    const body = await parseBody(c, CreateTenant);
    const secret = newSecret('sft');
    const tenant = await withTransaction(deps.pool, async (tx) => {
      const t = (await one<TenantRow>(tx, tenantsSql.InsertTenant, [body.name, [...new Set(body.modules)]]))!;
      await one(tx, tenantsSql.InsertApiToken, [t.id, 'initial', secret.hash, secret.display]);
      return t;
    });
    return c.json({ tenant: presentTenant(tenant), token: secret.token }, 201);
  });

  r.get('/', async (c) => {
    const page = pageOf(c);
    const rows = await many<TenantRow & { cursor_at: string }>(deps.pool, tenantsSql.ListTenants, [
      page.after?.at ?? null, page.after?.id ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentTenant));
  });

  r.get('/:id', async (c) => {
    const tenant = await one<TenantRow>(deps.pool, tenantsSql.GetTenant, [pathId(c, 'id', 'tenant')]);
    if (!tenant) throw notFound('tenant');
    return c.json(presentTenant(tenant));
  });

  r.post('/:id/tokens', async (c) => {
    const id = pathId(c, 'id', 'tenant');
    const body = await parseBody(c, CreateToken);
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
