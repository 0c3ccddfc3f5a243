// System templates (seed 001 "System Templates"): the same five for every tenant, listed
// and copied into a tenant as an ordinary pipeline at version 1. A template is named by its
// id or its slug.
import { Hono, type Context } from 'hono';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { notFound } from '../errors.ts';
import { endpoints } from '../contract.ts';
import { readBody } from '../input.ts';
import { presentPipeline } from '../present.ts';
import { copyNames, createUnderFreeName } from './pipelines.ts';
import { withTransaction } from '../../db/transaction.ts';
import { versionSteps } from '../../store/pipelines.ts';
import { stepToDocument, type PipelineDoc } from '../../domain/pipeline.ts';
import { findSystemTemplate, SYSTEM_TEMPLATES, templatePipeline, type SystemTemplate } from '../../domain/templates.ts';

function presentTemplate(t: SystemTemplate, doc: PipelineDoc) {
  return {
    id: t.id, slug: t.slug, name: doc.name, description: doc.description, is_template: true, tags: doc.tags,
    triggers: doc.triggers, settings: doc.settings, steps: doc.steps.map(stepToDocument),
  };
}

export function templateRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  // Validated once: a template that does not validate fails the app at start, not a request.
  const presented = new Map(SYSTEM_TEMPLATES.map((t) => [t.id, presentTemplate(t, templatePipeline(t))]));

  const templateOf = (c: Context<AppEnv>): SystemTemplate => {
    const t = findSystemTemplate(c.req.param('id') ?? '');
    if (!t) throw notFound('pipeline template');
    return t;
  };

  r.get('/', (c) => c.json({ items: [...presented.values()], next_cursor: null }));

  r.get('/:id', (c) => c.json(presented.get(templateOf(c).id)!));

  r.post('/:id/use', async (c) => {
    const t = templateOf(c);
    const { name } = await readBody(c, endpoints.useTemplate);
    const tenantId = c.get('tenant').id;
    const body = await withTransaction(deps.pool, async (tx) => {
      const names = name ? [name] : [t.document.name, ...copyNames(t.document.name)];
      const created = await createUnderFreeName(tx, tenantId, t.document, names);
      return presentPipeline(created, await versionSteps(tx, created.id, created.version));
    });
    return c.json(body, 201);
  });

  return r;
}
