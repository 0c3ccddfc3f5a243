// Reading and writing pipeline versions.
import type { Queryable } from '../db/pool.ts';
import { many, one } from './query.ts';
import { pipelinesSql } from './queries.ts';
import type { PipelineRow, PipelineStepRow } from './rows.ts';
import { stepToDocument, type PipelineDoc, type StepDef } from '../domain/pipeline.ts';
import type { Condition } from '../domain/conditions.ts';
import { syncScheduleTriggers } from '../progression/triggers.ts';

export type PipelineVersionRow = PipelineRow & { version: number };

/** Records a version of a pipeline with its steps. */
export async function insertVersion(tx: Queryable, tenantId: string, pipelineId: string, version: number, doc: PipelineDoc): Promise<void> {
  await many(tx, pipelinesSql.InsertPipelineVersion, [
    tenantId, pipelineId, version, doc.name, doc.description, JSON.stringify(doc.triggers), doc.settings, doc.tags,
    JSON.stringify(doc.steps.map((s) => ({ ...s, order: s.order }))),
  ]);
}

export async function createPipeline(tx: Queryable, tenantId: string, doc: PipelineDoc, managedBy: string | null = null): Promise<PipelineRow> {
  const row = (await one<PipelineRow>(tx, pipelinesSql.InsertPipeline, [
    tenantId, doc.name, doc.description, JSON.stringify(doc.triggers), doc.settings, doc.tags, managedBy,
  ]))!;
  await insertVersion(tx, tenantId, row.id, 1, doc);
  await syncScheduleTriggers(tx, row);
  return row;
}

/** Makes doc the next version of a pipeline the caller has locked. */
export async function bumpPipeline(tx: Queryable, tenantId: string, id: string, doc: PipelineDoc): Promise<PipelineRow> {
  const row = (await one<PipelineRow>(tx, pipelinesSql.BumpPipelineVersion, [
    tenantId, id, doc.name, doc.description, JSON.stringify(doc.triggers), doc.settings, doc.tags,
  ]))!;
  await insertVersion(tx, tenantId, id, row.version, doc);
  await syncScheduleTriggers(tx, row);
  return row;
}

export function versionSteps(db: Queryable, pipelineId: string, version: number): Promise<PipelineStepRow[]> {
  return many<PipelineStepRow>(db, pipelinesSql.ListVersionSteps, [pipelineId, version]);
}

/** Steps of many pipelines' current versions, grouped by pipeline id. */
export async function stepsOfPipelines(db: Queryable, pipelines: PipelineRow[]): Promise<Map<string, PipelineStepRow[]>> {
  const rows = await many<PipelineStepRow>(db, pipelinesSql.ListStepsOfVersions, [
    pipelines.map((p) => p.id), pipelines.map((p) => p.version),
  ]);
  const out = new Map<string, PipelineStepRow[]>(pipelines.map((p) => [p.id, []]));
  for (const s of rows) out.get(s.pipeline_id)?.push(s);
  return out;
}

/** A stored step as the domain's step definition. */
export function stepDefOf(s: PipelineStepRow): StepDef {
  return {
    step_key: s.step_key, name: s.name, order: s.step_order, tool: s.tool, capabilities: s.capabilities, config: s.config,
    timeout_seconds: s.timeout_seconds, depends_on: s.depends_on, condition: (s.condition ?? null) as Condition | null,
    max_retries: s.max_retries, retry_delay_seconds: s.retry_delay_seconds,
  };
}

/**
 * The document of a pipeline's current version, in the form clients send: what step edits
 * change, and what a new document is compared with.
 */
export async function versionDocument(db: Queryable, p: PipelineRow): Promise<Record<string, unknown> & { steps: Record<string, unknown>[] }> {
  const steps = await versionSteps(db, p.id, p.version);
  return {
    name: p.name, description: p.description, tags: p.tags, triggers: p.triggers, settings: p.settings,
    steps: steps.map((s) => stepToDocument(stepDefOf(s))),
  };
}
