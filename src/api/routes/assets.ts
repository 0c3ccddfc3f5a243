// Assets of a tenant.
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { notFound } from '../errors.ts';
import { pageOf, pageResult, parseBody, parseInput, pathId, queryOf } from '../input.ts';
import { presentAsset } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { many, one } from '../../store/query.ts';
import { assetsSql } from '../../store/queries.ts';
import type { AssetRow } from '../../store/rows.ts';
import { AssetFields, CreateAsset, UpdateAsset } from '../../domain/assets.ts';

const ListQuery = v.object({ type: v.optional(AssetFields.type), tag: v.optional(v.string()) });

export function assetRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.post('/', async (c) => {
    const a = await parseBody(c, CreateAsset);
    const row = await one<AssetRow>(deps.pool, assetsSql.InsertAsset, [
      c.get('tenant').id, a.type, a.name, a.value, a.tags, a.criticality, a.metadata,
    ]);
    return c.json(presentAsset(row!), 201);
  });

  r.get('/', async (c) => {
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['type', 'tag']);
    const rows = await many<AssetRow & { cursor_at: string }>(deps.pool, assetsSql.ListAssets, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, f.type ?? null, f.tag ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentAsset));
  });

  r.get('/:id', async (c) => {
    const row = await one<AssetRow>(deps.pool, assetsSql.GetAsset, [c.get('tenant').id, pathId(c, 'id', 'asset')]);
    if (!row) throw notFound('asset');
    return c.json(presentAsset(row));
  });

  // PUT merges: fields left out keep their value; null clears `value`.
  r.put('/:id', async (c) => {
    const id = pathId(c, 'id', 'asset');
    const patch = await parseBody(c, UpdateAsset);
    const row = await withTransaction(deps.pool, async (tx) => {
      const current = await one<AssetRow>(tx, assetsSql.LockAsset, [c.get('tenant').id, id]);
      if (!current) throw notFound('asset');
      const next = parseInput(CreateAsset, {
        type: current.type, name: current.name, value: current.value, tags: current.tags,
        criticality: current.criticality, metadata: current.metadata, ...stripUndefined(patch),
      });
      return one<AssetRow>(tx, assetsSql.UpdateAsset, [
        current.tenant_id, id, next.type, next.name, next.value, next.tags, next.criticality, next.metadata,
      ]);
    });
    return c.json(presentAsset(row!));
  });

  r.delete('/:id', async (c) => {
    const row = await one(deps.pool, assetsSql.DeleteAsset, [c.get('tenant').id, pathId(c, 'id', 'asset')]);
    if (!row) throw notFound('asset');
    return c.body(null, 204);
  });

  return r;
}

export function stripUndefined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
