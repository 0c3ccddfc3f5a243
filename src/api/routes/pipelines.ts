// Pipelines of a tenant (seed 001 "Pipeline Templates"): versioned documents, their step
// sub-resources, clone, and the run trigger. Every change makes a new version; runs keep
// the version they started with.
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { newSecret, requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { conflict, invalid, notFound } from '../errors.ts';
import { idempotent } from '../idempotency.ts';
import { endpoints, type Endpoint } from '../contract.ts';
import { pageOf, pageResult, parseInput, pathId, readBody, readBodyJson, stepKeyParam } from '../input.ts';
import { presentPipeline, presentRun, presentStep } from '../present.ts';
import { withTransaction, type Tx } from '../../db/transaction.ts';
import type { Queryable } from '../../db/pool.ts';
import { many, one } from '../../store/query.ts';
import { assetsSql, pipelinesSql } from '../../store/queries.ts';
import type { AssetRow, PipelineRow } from '../../store/rows.ts';
import { bumpPipeline, createPipeline, stepsOfPipelines, versionDocument, versionSteps } from '../../store/pipelines.ts';
import { createRuns } from '../../progression/runs.ts';
import { validatePipeline, validateStep } from '../../domain/pipeline.ts';
import { assetSnapshot } from '../../domain/assets.ts';
import { canonicalJson } from '../../domain/json.ts';
import type { Problem } from '../../domain/problems.ts';
import { nameWithSuffix } from '../../domain/names.ts';

export const VersionQuery = v.object({
  version: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a version number'), v.transform(Number), v.minValue(1))),
});

function rejectDocument(problems: Problem[]): never {
  throw invalid(problems, 'The pipeline is invalid');
}

function nameTaken(err: unknown): boolean {
  return (err as { code?: string; constraint?: string }).code === '23505' &&
    (err as { constraint?: string }).constraint === 'pipeline_templates_name_key';
}

/** The names a copy takes when none is given: "<name> (copy)", "<name> (copy 2)", …, each within the name bound. */
export function copyNames(name: string): string[] {
  return Array.from({ length: 50 }, (_, i) => nameWithSuffix(name, ` (copy${i ? ` ${i + 1}` : ''})`));
}

/**
 * Saves doc as a new pipeline of the tenant under the first of names that is free (clone,
 * system templates); each try is under a savepoint so a taken name does not end the
 * transaction. 409 name_taken when every name is taken.
 */
export async function createUnderFreeName(tx: Tx, tenantId: string, doc: Record<string, unknown>, names: string[]): Promise<PipelineRow> {
  for (const candidate of names) {
    const checked = validatePipeline({ ...doc, name: candidate });
    if (!checked.ok) rejectDocument(checked.problems);
    await tx.query('SAVEPOINT pipeline_name');
    try {
      const created = await createPipeline(tx, tenantId, checked.value);
      await tx.query('RELEASE SAVEPOINT pipeline_name');
      return created;
    } catch (err) {
      await tx.query('ROLLBACK TO SAVEPOINT pipeline_name');
      if (!nameTaken(err)) throw err;
    }
  }
  throw conflict('name_taken', `A pipeline named '${names[0]}' already exists`);
}

/** A pipeline locked for a change; one the config file declares cannot be changed here. */
async function lockPipelineForChange(tx: Queryable, tenantId: string, id: string): Promise<PipelineRow> {
  const row = await one<PipelineRow>(tx, pipelinesSql.LockPipeline, [tenantId, id]);
  if (!row) throw notFound('pipeline');
  if (row.managed_by === 'config') {
    throw conflict('managed_by_config', `Pipeline '${row.name}' is declared in the config file; change it there and apply it`);
  }
  return row;
}

export function pipelineRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  const respond = async (db: Queryable, p: PipelineRow) => presentPipeline(p, await versionSteps(db, p.id, p.version));

  /**
   * Validates doc and saves it as the pipeline's next version (the caller holds the lock).
   * A document that normalizes to the current version changes nothing.
   */
  const saveVersion = async (tx: Queryable, tenantId: string, current: PipelineRow, doc: unknown) => {
    const id = current.id;
    const checked = validatePipeline(doc);
    if (!checked.ok) rejectDocument(checked.problems);
    const same = validatePipeline(await versionDocument(tx, current));
    if (same.ok && canonicalJson(same.value) === canonicalJson(checked.value)) return current;
    try {
      return await bumpPipeline(tx, tenantId, id, checked.value);
    } catch (err) {
      if (nameTaken(err)) throw conflict('name_taken', `A pipeline named '${checked.value.name}' already exists`);
      throw err;
    }
  };

  r.post('/', idempotent(deps), async (c) => {
    const checked = validatePipeline(await readBodyJson(c, endpoints.createPipeline));
    if (!checked.ok) rejectDocument(checked.problems);
    const tenantId = c.get('tenant').id;
    const body = await withTransaction(deps.pool, async (tx) => {
      try {
        return await respond(tx, await createPipeline(tx, tenantId, checked.value));
      } catch (err) {
        if (nameTaken(err)) throw conflict('name_taken', `A pipeline named '${checked.value.name}' already exists`);
        throw err;
      }
    });
    return c.json(body, 201);
  });

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const rows = await many<PipelineRow & { cursor_at: string }>(db, pipelinesSql.ListPipelines, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, page.limit + 1,
    ]);
    const steps = await stepsOfPipelines(db, rows.slice(0, page.limit));
    return c.json(pageResult(rows, page, (p) => presentPipeline(p, steps.get(p.id) ?? [])));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const id = pathId(c, 'id', 'pipeline');
    const tenantId = c.get('tenant').id;
    const { version } = parseInput(VersionQuery, { version: c.req.query('version') });
    const p = await one<PipelineRow>(db, pipelinesSql.GetPipeline, [tenantId, id]);
    if (!p) throw notFound('pipeline');
    if (version === undefined || version === p.version) return c.json(await respond(db, p));
    const old = await one<PipelineRow & { version: number }>(db, pipelinesSql.GetPipelineVersion, [tenantId, id, version]);
    if (!old) throw notFound('pipeline version');
    return c.json(presentPipeline(p, await versionSteps(db, id, version), old));
  });

  r.put('/:id', async (c) => {
    const id = pathId(c, 'id', 'pipeline');
    const tenantId = c.get('tenant').id;
    const doc = await readBodyJson(c, endpoints.updatePipeline);
    const body = await withTransaction(deps.pool, async (tx) => {
      const current = await lockPipelineForChange(tx, tenantId, id);
      return respond(tx, await saveVersion(tx, tenantId, current, doc));
    });
    return c.json(body);
  });

  r.delete('/:id', async (c) => {
    const tenantId = c.get('tenant').id;
    const id = pathId(c, 'id', 'pipeline');
    await withTransaction(deps.pool, async (tx) => {
      await lockPipelineForChange(tx, tenantId, id);
      await one(tx, pipelinesSql.SoftDeletePipeline, [tenantId, id]);
    });
    return c.body(null, 204);
  });

  // A new webhook token for the pipeline's webhook triggers (shown once; the old one stops
  // working). POST /api/v1/webhooks/{pipeline id} with it starts runs.
  r.post('/:id/webhook-token', async (c) => {
    const tenantId = c.get('tenant').id;
    const id = pathId(c, 'id', 'pipeline');
    const secret = newSecret('sfw');
    const row = await one(deps.pool, pipelinesSql.SetWebhookToken, [tenantId, id, secret.hash]);
    if (!row) throw notFound('pipeline');
    return c.json({ pipeline_id: id, token: secret.token, url: `/api/v1/webhooks/${id}` }, 201);
  });

  r.post('/:id/clone', async (c) => {
    const id = pathId(c, 'id', 'pipeline');
    const tenantId = c.get('tenant').id;
    const { name } = await readBody(c, endpoints.clonePipeline);
    const body = await withTransaction(deps.pool, async (tx) => {
      const source = await one<PipelineRow>(tx, pipelinesSql.GetPipeline, [tenantId, id]);
      if (!source) throw notFound('pipeline');
      const doc = await versionDocument(tx, source);
      return respond(tx, await createUnderFreeName(tx, tenantId, doc, name ? [name] : copyNames(source.name)));
    });
    return c.json(body, 201);
  });

  // Step sub-resources: each change is a new version of the whole document, validated as one.
  r.get('/:id/steps', async (c) => {
    const db = readsOf(deps, c);
    const p = await one<PipelineRow>(db, pipelinesSql.GetPipeline, [c.get('tenant').id, pathId(c, 'id', 'pipeline')]);
    if (!p) throw notFound('pipeline');
    const steps = await versionSteps(db, p.id, p.version);
    return c.json({ items: steps.map(presentStep), next_cursor: null, pipeline_version: p.version });
  });

  /** A handler that changes the steps of a pipeline; `endpoint` is the one it serves (null: it reads no body). */
  const editSteps = (
    endpoint: Endpoint<v.GenericSchema> | null,
    edit: (steps: Record<string, unknown>[], c: Context<AppEnv>, body: unknown) => { steps: Record<string, unknown>[]; focus: string | null },
    status: 200 | 201,
  ) => async (c: Context<AppEnv>) => {
    const id = pathId(c, 'id', 'pipeline');
    const tenantId = c.get('tenant').id;
    const input = endpoint ? await readBodyJson(c, endpoint) : {};
    const result = await withTransaction(deps.pool, async (tx) => {
      const p = await lockPipelineForChange(tx, tenantId, id);
      const doc = await versionDocument(tx, p);
      const { steps, focus } = edit(doc.steps, c, input);
      const saved = await saveVersion(tx, tenantId, p, { ...doc, steps });
      const savedSteps = await versionSteps(tx, id, saved.version);
      return { saved, savedSteps, focus };
    });
    if (result.focus === null) return c.json(presentPipeline(result.saved, result.savedSteps), status);
    const step = result.savedSteps.find((s) => s.step_key === result.focus)!;
    return c.json({ ...presentStep(step), pipeline_version: result.saved.version }, status);
  };

  const stepInput = (body: unknown): Record<string, unknown> => {
    const checked = validateStep(body);
    if (!checked.ok) throw invalid(checked.problems, 'The step is invalid');
    return checked.value;
  };

  r.post('/:id/steps', editSteps(endpoints.addStep, (steps, _c, body) => {
    const step = stepInput(body);
    const key = (step.id ?? step.step_key) as string | undefined;
    if (!key) throw invalid([{ path: 'id', message: 'a step needs an id (or step_key)' }], 'The step is invalid');
    if (steps.some((s) => s.id === key)) throw conflict('step_exists', `The pipeline already has a step '${key}'`);
    const order = step.order ?? Math.max(0, ...steps.map((s) => Number(s.order))) + 1;
    return { steps: [...steps, { ...step, id: key, step_key: key, order }], focus: key as string };
  }, 201));

  r.put('/:id/steps/:stepKey', editSteps(endpoints.updateStep, (steps, c, body) => {
    const key = stepKeyParam(c);
    const step = stepInput(body);
    const given = (step.id ?? step.step_key) as string | undefined;
    if (given !== undefined && given !== key) {
      throw invalid([{ path: step.id !== undefined ? 'id' : 'step_key', message: `must be '${key}' (a step key cannot be changed)` }]);
    }
    const index = steps.findIndex((s) => s.id === key);
    if (index < 0) throw notFound('step');
    const next = [...steps];
    // PUT merges: fields left out keep their value.
    next[index] = { ...steps[index], ...step, id: key, step_key: key };
    if ('timeout_seconds' in step && !('timeout' in step)) delete next[index].timeout;
    return { steps: next, focus: key };
  }, 200));

  r.delete('/:id/steps/:stepKey', editSteps(null, (steps, c) => {
    const key = stepKeyParam(c);
    if (!steps.some((s) => s.id === key)) throw notFound('step');
    const users = steps.filter((s) => Array.isArray(s.depends_on) && (s.depends_on as string[]).includes(key)).map((s) => s.id);
    if (users.length > 0) throw conflict('step_in_use', `Step '${key}' is a dependency of ${users.map((u) => `'${u}'`).join(', ')}`);
    if (steps.length === 1) throw conflict('last_step', 'A pipeline needs at least one step; delete the pipeline instead');
    return { steps: steps.filter((s) => s.id !== key), focus: null };
  }, 200));

  r.post('/:id/steps/reorder', editSteps(endpoints.reorderSteps, (steps, _c, body) => {
    const { order } = parseInput(endpoints.reorderSteps.body, body);
    const keys = steps.map((s) => s.id as string);
    const problems: Problem[] = [];
    order.forEach((k, i) => {
      if (!keys.includes(k)) problems.push({ path: `order[${i}]`, message: `unknown step '${k}'` });
      else if (order.indexOf(k) !== i) problems.push({ path: `order[${i}]`, message: `step '${k}' is listed twice` });
    });
    const missing = keys.filter((k) => !order.includes(k));
    if (missing.length) problems.push({ path: 'order', message: `must list every step; missing ${missing.map((m) => `'${m}'`).join(', ')}` });
    if (problems.length) throw invalid(problems);
    return { steps: steps.map((s) => ({ ...s, order: order.indexOf(s.id as string) + 1 })), focus: null };
  }, 200));

  r.post('/:id/run', idempotent(deps), async (c) => {
    const id = pathId(c, 'id', 'pipeline');
    const tenantId = c.get('tenant').id;
    const body = await readBody(c, endpoints.runPipeline);
    const run = await withTransaction(deps.pool, async (tx) => {
      let target: Record<string, unknown> = {};
      if (body.asset_id) {
        const asset = await one<AssetRow>(tx, assetsSql.GetAsset, [tenantId, body.asset_id]);
        if (!asset) throw invalid([{ path: 'asset_id', message: 'unknown asset' }]);
        target = assetSnapshot(asset);
      }
      const [row] = await createRuns(tx, [{
        tenantId, pipelineId: id, assetId: body.asset_id ?? null, target, scanId: null, triggerType: 'manual',
        triggeredBy: body.triggered_by ?? 'api', context: body.context,
      }], { last: true });
      if (!row) throw notFound('pipeline');
      return row;
    });
    return c.json(presentRun(run), 201);
  });

  return r;
}

