// Applying a validated config file, idempotently, in one transaction: tenants it names are
// created when missing; its pipelines and scans are created, updated (a pipeline gets a new
// version only when its document changed) or left alone; config-managed pipelines and scans
// it no longer declares are removed. Objects it manages are marked managed_by 'config' and
// the API refuses to change them. A problem found against the database (a name taken by an
// object the file does not manage, an unknown pipeline or asset) applies nothing.
import type { Queryable } from '../db/pool.ts';
import { many, one } from '../store/query.ts';
import { assetsSql, pipelinesSql, scansSql, tenantsSql } from '../store/queries.ts';
import type { PipelineRow, ScanRow, TenantRow } from '../store/rows.ts';
import { bumpPipeline, createPipeline, versionDocument } from '../store/pipelines.ts';
import { validatePipeline, type PipelineDoc } from '../domain/pipeline.ts';
import { scheduleOf, targetsToDocument, TargetsSchema } from '../domain/scans.ts';
import { canonicalJson } from '../domain/json.ts';
import type { ConfigDoc, DeclaredScan, FileProblem } from './parse.ts';
import * as v from 'valibot';

export type ApplyReport = { created: string[]; updated: string[]; removed: string[]; unchanged: number };

export class ApplyError extends Error {
  readonly problems: FileProblem[];
  constructor(problems: FileProblem[]) {
    super(`the config file was not applied: ${problems.length} problem(s)`);
    this.problems = problems;
  }
}

/** The document of a pipeline's current version, normalized like a declared one. */
async function currentDocument(tx: Queryable, p: PipelineRow): Promise<PipelineDoc | null> {
  const checked = validatePipeline(await versionDocument(tx, p));
  return checked.ok ? checked.value : null;
}

function scanShape(s: { name: string; description: string | null; pipeline_id: string; targets: unknown; schedule_type: string;
  cron_expression: string | null; timezone: string; status: string; context: unknown; max_active_runs: number }) {
  return canonicalJson({
    name: s.name, description: s.description ?? null, pipeline_id: s.pipeline_id, targets: s.targets,
    schedule_type: s.schedule_type, cron_expression: s.cron_expression, timezone: s.timezone, status: s.status,
    context: s.context, max_active_runs: s.max_active_runs,
  });
}

export async function applyConfig(tx: Queryable, config: ConfigDoc, file: string): Promise<ApplyReport> {
  const report: ApplyReport = { created: [], updated: [], removed: [], unchanged: 0 };
  const problems: FileProblem[] = [];
  const problem = (path: string, message: string) => problems.push({ file, line: null, path, message });
  const declaredPipelines = new Set<string>();
  const declaredScans = new Set<string>();
  const now = new Date();

  for (const [ti, t] of config.tenants.entries()) {
    let tenant = await one<TenantRow>(tx, tenantsSql.TenantNamed, [t.name]);
    if (!tenant) {
      tenant = (await one<TenantRow>(tx, tenantsSql.InsertTenant, [t.name, t.modules ?? ['scans']]))!;
      report.created.push(`tenant ${t.name}`);
    }
    if (t.max_active_runs !== undefined || t.modules !== undefined) {
      const changed = await one(tx, tenantsSql.UpdateTenantDeclared, [tenant.id, t.modules ?? null, t.max_active_runs ?? null]);
      if (changed) report.updated.push(`tenant ${t.name}`);
    }

    const pipelineIds = new Map<string, string>();
    for (const [pi, doc] of t.pipelines.entries()) {
      const label = `pipeline ${t.name}/${doc.name}`;
      const existing = await one<PipelineRow>(tx, pipelinesSql.PipelineNamed, [tenant.id, doc.name]);
      if (existing && existing.managed_by !== 'config') {
        problem(`tenants[${ti}].pipelines[${pi}].name`, `a pipeline named '${doc.name}' already exists and is not managed by the config file (rename one of them)`);
        continue;
      }
      if (!existing) {
        const created = await createPipeline(tx, tenant.id, doc, 'config');
        pipelineIds.set(doc.name.toLowerCase(), created.id);
        report.created.push(label);
      } else {
        pipelineIds.set(doc.name.toLowerCase(), existing.id);
        const current = await currentDocument(tx, existing);
        if (current && canonicalJson(current) === canonicalJson(doc)) report.unchanged++;
        else {
          await one(tx, pipelinesSql.LockPipeline, [tenant.id, existing.id]);
          await bumpPipeline(tx, tenant.id, existing.id, doc);
          report.updated.push(label);
        }
      }
      declaredPipelines.add(pipelineIds.get(doc.name.toLowerCase())!);
    }

    for (const [si, s] of t.scans.entries()) {
      const label = `scan ${t.name}/${s.name}`;
      const at = `tenants[${ti}].scans[${si}]`;
      const pipelineId = pipelineIds.get(s.pipeline.toLowerCase()) ?? (await one<PipelineRow>(tx, pipelinesSql.PipelineNamed, [tenant.id, s.pipeline]))?.id;
      if (!pipelineId) {
        problem(`${at}.pipeline`, `no pipeline named '${s.pipeline}' in tenant '${t.name}' (declare it under pipelines)`);
        continue;
      }
      if (s.targets.kind === 'assets') {
        for (const id of s.targets.asset_ids) {
          if (!(await one(tx, assetsSql.GetAsset, [tenant.id, id]))) problem(`${at}.targets`, `unknown asset ${id} in tenant '${t.name}'`);
        }
      }
      const existing = await one<ScanRow>(tx, scansSql.ScanNamedRow, [tenant.id, s.name]);
      if (existing && existing.managed_by !== 'config') {
        problem(`${at}.name`, `a scan named '${s.name}' already exists and is not managed by the config file (rename one of them)`);
        continue;
      }
      const targets = targetsToDocument(s.targets);
      const { cron, next } = scheduleOf({ ...s, next_run_at: null }, now);
      const wanted = { ...s, pipeline_id: pipelineId, targets, cron_expression: cron, description: s.description ?? null };
      if (!existing) {
        const created = await one<ScanRow>(tx, scansSql.InsertScan, [
          tenant.id, s.name, s.description ?? null, pipelineId, targets, s.schedule_type, cron, s.timezone, s.status,
          s.context, s.max_active_runs, next, 'config', null,
        ]);
        declaredScans.add(created!.id);
        report.created.push(label);
        continue;
      }
      declaredScans.add(existing.id);
      const storedTargets = targetsToDocument(v.parse(TargetsSchema, existing.targets));
      if (scanShape({ ...existing, targets: storedTargets }) === scanShape(wanted)) {
        report.unchanged++;
        continue;
      }
      const scheduleSame = existing.cron_expression === cron && existing.timezone === s.timezone && existing.status === s.status;
      await one(tx, scansSql.UpdateScan, [
        tenant.id, existing.id, s.name, s.description ?? null, pipelineId, targets, s.schedule_type, cron, s.timezone,
        s.status, s.context, s.max_active_runs, scheduleSame ? existing.next_run_at : next,
      ]);
      report.updated.push(label);
    }
  }

  // What the file no longer declares, in any tenant.
  for (const s of await many<ScanRow & { tenant_name: string }>(tx, scansSql.ConfigScans, [])) {
    if (declaredScans.has(s.id)) continue;
    await one(tx, scansSql.DeleteScanById, [s.id]);
    report.removed.push(`scan ${s.tenant_name}/${s.name}`);
  }
  for (const p of await many<PipelineRow & { tenant_name: string }>(tx, pipelinesSql.ConfigPipelines, [])) {
    if (declaredPipelines.has(p.id)) continue;
    await one(tx, pipelinesSql.SoftDeletePipeline, [p.tenant_id, p.id]);
    report.removed.push(`pipeline ${p.tenant_name}/${p.name}`);
  }

  if (problems.length > 0) throw new ApplyError(problems);
  return report;
}

export function formatReport(r: ApplyReport): string {
  const lines = [
    ...r.created.map((x) => `  created  ${x}`),
    ...r.updated.map((x) => `  updated  ${x}`),
    ...r.removed.map((x) => `  removed  ${x}`),
  ];
  return `${lines.length ? lines.join('\n') + '\n' : ''}  ${r.created.length} created, ${r.updated.length} updated, ${r.removed.length} removed, ${r.unchanged} unchanged`;
}

export type { DeclaredScan };
