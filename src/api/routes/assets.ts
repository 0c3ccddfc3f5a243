// Assets of a tenant.
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { notFound } from '../errors.ts';
import { idempotent } from '../idempotency.ts';
import { endpoints } from '../contract.ts';
import { pageOf, pageResult, parseInput, pathId, queryOf, readBody } from '../input.ts';
import { presentAsset } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { finalMany, many, one } from '../../store/query.ts';
import { assetsSql } from '../../store/queries.ts';
import type { AssetRow } from '../../store/rows.ts';
import { AssetFields, CreateAsset } from '../../domain/assets.ts';

export const ListQuery = v.object({ type: v.optional(AssetFields.type), tag: v.optional(v.string()) });

export function assetRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.post('/', idempotent(deps), async (c) => {
    const a = await readBody(c, endpoints.createAsset);
    // A transaction (still one round trip: BEGIN, the insert and COMMIT go out together) so
    // that an Idempotency-Key's marker commits with the row.
    const [row] = await withTransaction(deps.pool, (tx) => finalMany<AssetRow>(tx, assetsSql.InsertAsset, [
      c.get('tenant').id, a.type, a.name, a.value, a.tags, a.criticality, a.metadata,
    ]));
    return c.json(presentAsset(row), 201);
  });

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['type', 'tag']);
    const rows = await many<AssetRow & { cursor_at: string }>(db, assetsSql.ListAssets, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, f.type ?? null, f.tag ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentAsset));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const row = await one<AssetRow>(db, assetsSql.GetAsset, [c.get('tenant').id, pathId(c, 'id', 'asset')]);
    if (!row) throw notFound('asset');
    return c.json(presentAsset(row));
  });

  // PUT merges: fields left out keep their value; null clears `value`.
  r.put('/:id', async (c) => {
    const id = pathId(c, 'id', 'asset');
    const patch = await readBody(c, endpoints.updateAsset);
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
