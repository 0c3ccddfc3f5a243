// The run list and the command list: one statement per combination of filters, composed from
// the fragments of sql/pipeline_runs.sql and sql/commands.sql (why: the head of the run
// list's fragments). Values are always bound; only fragments of those files become text.
import { composeStatement, type ComposedStatement, type StatementPart } from '../db/sql.ts';
import { commandsSql, runsSql } from './queries.ts';

/** Where a page starts: the last row of the page before (created_at as PostgreSQL printed it). */
export type ListAfter = { at: string; id: string } | null;

export type RunFilters = { status?: string; pipeline_id?: string; asset_id?: string; scan_id?: string };

/** A page of a tenant's runs, newest first: the filters given, after the cursor, at most `limit` rows. */
export function listRunsStatement(tenantId: string, f: RunFilters, after: ListAfter, limit: number): ComposedStatement {
  const parts: StatementPart[] = [{ q: runsSql.RunListHead, values: [tenantId] }];
  if (f.status !== undefined) parts.push({ q: runsSql.RunWhereStatus, values: [f.status] });
  if (f.pipeline_id !== undefined) parts.push({ q: runsSql.RunWherePipeline, values: [f.pipeline_id] });
  if (f.asset_id !== undefined) parts.push({ q: runsSql.RunWhereAsset, values: [f.asset_id] });
  if (f.scan_id !== undefined) parts.push({ q: runsSql.RunWhereScan, values: [f.scan_id] });
  if (after) parts.push({ q: runsSql.RunListAfter, values: [after.at, after.id] });
  parts.push({ q: runsSql.RunListOrder, values: [limit] });
  return composeStatement(parts);
}

export type CommandFilters = { status?: string; agent_id?: string; pipeline_run_id?: string };

/** A page of a tenant's commands, newest first: the filters given, after the cursor, at most `limit` rows. */
export function listCommandsStatement(tenantId: string, f: CommandFilters, after: ListAfter, limit: number): ComposedStatement {
  const parts: StatementPart[] = [{ q: commandsSql.CommandListHead, values: [tenantId] }];
  if (f.status !== undefined) parts.push({ q: commandsSql.CommandWhereStatus, values: [f.status] });
  if (f.agent_id !== undefined) parts.push({ q: commandsSql.CommandWhereAgent, values: [f.agent_id] });
  if (f.pipeline_run_id !== undefined) parts.push({ q: commandsSql.CommandWhereRun, values: [f.pipeline_run_id] });
  if (after) parts.push({ q: commandsSql.CommandListAfter, values: [after.at, after.id] });
  parts.push({ q: commandsSql.CommandListOrder, values: [limit] });
  return composeStatement(parts);
}
