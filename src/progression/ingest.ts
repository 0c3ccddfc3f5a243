// Storing findings. An ingest is one transaction per report (per batch of INGEST_BATCH_SIZE
// findings of a larger one, each complete on its own, unless the request carries an
// Idempotency-Key) of a bounded number of statements, whatever the number of findings:
//   round trip 1: BEGIN, InsertIngest, UpsertIngestAssets (the assets the report names, and
//                 the ids it names checked);
//   round trip 2: UpsertFindings (findings, sightings, finding.created/reopened events, the
//                 ingest's counters), ResolveUnseenFindings (full coverage only: the
//                 finding.resolved events with it), FinishIngest, COMMIT.
// An input that names no assets skips the first trip (everything goes out together). The
// mapping of inputs to rows is pure (src/domain/findings/); this module only does I/O.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import { carriesWrites, withTransaction, type Tx } from '../db/transaction.ts';
import { finalMany, many, one } from '../store/query.ts';
import { assetsSql, findingsSql, ingestsSql } from '../store/queries.ts';
import type { IngestRow } from '../store/rows.ts';
import type { Coverage, ParsedFindings } from '../domain/findings/model.ts';
import { listedProblems } from '../domain/findings/model.ts';
import {
  assetIdsNamed, assetUpserts, planFindings, resolvesUnseen, type FindingRowInput, type FindingsPlan, type ResolvedAsset,
} from '../domain/findings/plan.ts';
import type { ReportBranchInfo } from '../domain/findings/report.ts';
import { findingsIngested } from '../observability/transitions.ts';

/**
 * Findings per transaction. One statement takes any number (measured: 50,000 in one
 * UpsertFindings is one statement); batches keep each transaction's row locks short, so a
 * concurrent ingest of the same findings waits a batch, not the whole report.
 */
export const INGEST_BATCH_SIZE = 5_000;

/**
 * Batches of one report stored at once: two keep both cores of a small machine busy with
 * PostgreSQL's part (most of an ingest's time), more only queue behind each other.
 */
export const INGEST_PARALLEL = 2;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What an ingest is tied to, checked. */
export type IngestTie = {
  commandId: string | null;
  pipelineRunId: string | null;
  stepRunId: string | null;
  stepKey: string | null;
  agentScanId: string | null;
  /** Where findings that name no asset go: X-Asset-Id, else the command's target, else the session's asset. */
  defaultAssetId: string | null;
  /** The tool of findings whose report names none: the command's, else the session's. */
  fallbackTool: string | null;
};

export const NO_TIE: IngestTie = {
  commandId: null, pipelineRunId: null, stepRunId: null, stepKey: null, agentScanId: null, defaultAssetId: null, fallbackTool: null,
};

/** An id the ingest names that this agent may not use: unknown, another tenant's, another agent's (a 404). */
export class TieNotFound extends Error {
  readonly what: 'command' | 'asset' | 'scan';
  constructor(what: 'command' | 'asset' | 'scan') {
    super(`${what} not found`);
    this.what = what;
  }
}

type ContextRow = {
  command_id: string | null; pipeline_run_id: string | null; step_run_id: string | null; step_key: string | null;
  command_tool: string | null; command_asset_id: string | null; asset_id: string | null;
  scan_id: string | null; scan_tool: string | null; scan_asset_id: string | null;
};

/**
 * Checks what an ingest names, in one read: a command this agent holds, an asset of the
 * tenant, a scan session this agent opened. Anything else is TieNotFound.
 */
export async function resolveTie(
  db: Queryable, tenantId: string, agentId: string, ids: { commandId?: string | null; assetId?: string | null; scanId?: string | null },
): Promise<IngestTie> {
  const given = (id: string | null | undefined, what: TieNotFound['what']) => {
    if (id === null || id === undefined) return null;
    if (!UUID.test(id)) throw new TieNotFound(what);
    return id.toLowerCase();
  };
  const commandId = given(ids.commandId, 'command');
  const assetId = given(ids.assetId, 'asset');
  const scanId = given(ids.scanId, 'scan');
  if (!commandId && !assetId && !scanId) return NO_TIE;
  const row = (await one<ContextRow>(db, ingestsSql.IngestContext, [tenantId, agentId, commandId, assetId, scanId]))!;
  if (commandId && !row.command_id) throw new TieNotFound('command');
  if (assetId && !row.asset_id) throw new TieNotFound('asset');
  if (scanId && !row.scan_id) throw new TieNotFound('scan');
  return {
    commandId: row.command_id,
    pipelineRunId: row.pipeline_run_id,
    stepRunId: row.step_run_id,
    stepKey: row.step_key,
    agentScanId: row.scan_id,
    defaultAssetId: row.asset_id ?? row.command_asset_id ?? row.scan_asset_id,
    fallbackTool: row.command_tool ?? row.scan_tool,
  };
}

/** One ingest's input: its findings parsed, and what it is tied to. */
export type IngestInput = {
  kind: 'report' | 'sarif' | 'credentials';
  tenantId: string;
  agentId: string;
  /** The report's own id (metadata.id). */
  reportId: string | null;
  /** The report's tool (a SARIF log's tools, joined), for the record. */
  tool: string | null;
  coverage: Coverage;
  branch: ReportBranchInfo | null;
  parsed: ParsedFindings;
  /** The tools whose coverage the input asserts: the report's (or its fallback), each SARIF run's. */
  scopeTools: string[];
  properties: Record<string, unknown>;
  tie: IngestTie;
};

/** The ingest result API.md gives (the seed SDK reads `errors` as strings). */
export function ingestResult(row: IngestRow) {
  const details = row.problems;
  return {
    scan_id: row.agent_scan_id,
    findings_created: row.findings_created,
    findings_updated: row.findings_updated,
    findings_reopened: row.findings_reopened,
    findings_resolved: row.findings_resolved,
    findings_skipped: row.findings_skipped,
    assets_created: row.assets_created,
    assets_updated: row.assets_updated,
    errors: details.map((p) => `${p.path}: ${p.message}`),
    details,
  };
}

/** The values of InsertIngest. */
function ingestValues(
  id: string, input: Pick<IngestInput, 'tenantId' | 'agentId' | 'reportId' | 'tool' | 'coverage' | 'branch' | 'properties' | 'tie'>,
  kind: string, reportKey: string, chunk: { index: number; total: number } | null,
): unknown[] {
  const t = input.tie;
  return [
    id, input.tenantId, input.agentId, kind, input.reportId, chunk?.index ?? null, chunk?.total ?? null, reportKey, input.tool,
    input.coverage, input.branch?.name ?? null, input.branch?.is_default ?? null, t.commandId, t.pipelineRunId, t.stepRunId,
    t.stepKey, t.agentScanId, t.defaultAssetId, input.properties,
  ];
}

/** The assets an input names, upserted, and the ids it names checked: null when it names none (no statement). */
export async function upsertAssets(tx: Queryable, tenantId: string, parsed: ParsedFindings): Promise<ResolvedAsset[]> {
  const upserts = assetUpserts(parsed);
  const ids = assetIdsNamed(parsed);
  if (upserts.length === 0 && ids.length === 0) return [];
  return many<ResolvedAsset>(tx, assetsSql.UpsertIngestAssets, [tenantId, JSON.stringify(upserts), ids]);
}

/** Queues the upsert of a batch of findings (its result goes to the ingest's counters). */
export function queueFindings(tx: Tx, ingestId: string, tenantId: string, reportKey: string, tie: IngestTie, rows: FindingRowInput[]): void {
  if (rows.length === 0) return;
  const col = <K extends keyof FindingRowInput>(k: K) => rows.map((r) => r[k]);
  // jsonb[] elements as JSON text: pg would make a nested JS array a nested SQL array.
  const json = <K extends keyof FindingRowInput>(k: K) => rows.map((r) => (r[k] === null ? null : JSON.stringify(r[k])));
  tx.later(findingsSql.UpsertFindings, [
    tenantId, ingestId, tie.pipelineRunId, tie.stepRunId, tie.commandId, tie.agentScanId, tie.stepKey, reportKey,
    col('asset_id'), col('fingerprint'), col('tool_fingerprint'), col('type'), col('tool'), col('rule_id'), col('title'),
    col('description'), col('severity'), json('location'), json('vulnerability'), json('references'), json('properties'),
  ]);
  findingsIngested(tx, tenantId, col('severity'));
}

/** Queues the auto-resolve of a full-coverage report over its (tool, asset) scope. */
export function queueResolve(
  tx: Tx, ingestId: string, tenantId: string, reportKey: string, tie: IngestTie,
  scope: { tools: string[]; assetIds: string[] }, ingestIds: string[],
): void {
  if (scope.tools.length === 0) return;
  tx.later(findingsSql.ResolveUnseenFindings, [
    tenantId, reportKey, scope.tools, scope.assetIds, ingestIds, ingestId, tie.pipelineRunId, tie.stepRunId,
  ]);
}

/** Every (tool, asset) pair of some tools and some assets, as the two parallel arrays the statements take. */
export function scopePairs(tools: string[], assetIds: string[]): { tools: string[]; assetIds: string[] } {
  const out = { tools: [] as string[], assetIds: [] as string[] };
  for (const tool of new Set(tools)) {
    for (const asset of new Set(assetIds)) {
      out.tools.push(tool);
      out.assetIds.push(asset);
    }
  }
  return out;
}

/**
 * An ingest of at least this many findings asks for the findings tables' statistics to be
 * refreshed (tasks/findings_analyze.ts): enough rows of one tenant, one run or one ingest to
 * change the plans of their pages.
 */
export const ANALYZE_AFTER_FINDINGS = 5_000;

/** The ingest is done (the last statement of its transaction, with the COMMIT). */
export async function finishIngest(tx: Tx, ingestId: string, plan: FindingsPlan, scope: { tools: string[]; assetIds: string[] }): Promise<IngestRow> {
  if (plan.findings.length >= ANALYZE_AFTER_FINDINGS) tx.later(findingsSql.RequestFindingsAnalyze, []);
  const [row] = await finalMany<IngestRow>(tx, ingestsSql.FinishIngest, [
    ingestId, plan.assetsCreated, plan.assetsUpdated, plan.skipped, JSON.stringify(listedProblems(plan.problems)),
    scope.tools, scope.assetIds, plan.assetRefs,
  ]);
  return row;
}

/**
 * Stores a parsed report, SARIF log or credentials upload. A report of more than
 * INGEST_BATCH_SIZE findings is stored batch by batch, each batch its own transaction (a
 * concurrent ingest of the same findings waits for a batch, not the whole report; two
 * batches are stored at once); only the last one resolves what a full-coverage report no
 * longer contains. A request that dies midway leaves the batches it committed, and its
 * ingest 'ingesting'.
 *
 * Sent with an Idempotency-Key, a report of any size is one transaction (its batches one
 * statement and one round trip each, in order), which marks the key used: a request that dies midway leaves
 * nothing, and its retry stores the report once, as if the first attempt had never been.
 */
export async function ingestFindings(pool: pg.Pool, input: IngestInput): Promise<IngestRow> {
  const ingestId = randomUUID();
  const reportKey = ingestId;
  const tie = input.tie;
  const scopeTools = [...new Set(input.scopeTools)];
  const resolve = resolvesUnseen(input.coverage, input.branch);

  let plan: FindingsPlan | null = null;
  const finish = (tx: Tx, batch: FindingRowInput[]) => {
    queueFindings(tx, ingestId, input.tenantId, reportKey, tie, batch);
    const scope = scopePairs(scopeTools, plan!.scopeAssetIds);
    if (resolve) queueResolve(tx, ingestId, input.tenantId, reportKey, tie, scope, [ingestId]);
    return finishIngest(tx, ingestId, plan!, scope);
  };

  // One transaction or several is decided before the first, on the findings sent
  // (duplicates and skipped ones only make the batches fewer).
  const atomic = input.parsed.findings.length <= INGEST_BATCH_SIZE || carriesWrites();
  // The first transaction: the ingest and its assets (and when atomic, its findings and end).
  const first = async (tx: Tx): Promise<IngestRow | null> => {
    tx.later(ingestsSql.InsertIngest, ingestValues(ingestId, input, input.kind, reportKey, null));
    const assetRows = await upsertAssets(tx, input.tenantId, input.parsed);
    plan = planFindings({ parsed: input.parsed, assetRows, defaultAssetId: tie.defaultAssetId, fallbackTool: tie.fallbackTool });
    if (!atomic) return null;
    const { batches, last } = inBatches(plan.findings);
    for (const batch of batches) {
      queueFindings(tx, ingestId, input.tenantId, reportKey, tie, batch);
      await tx.batch([]); // sent now: one batch's parameters in memory at a time
    }
    return finish(tx, last);
  };
  if (atomic) return (await withTransaction(pool, first))!;
  await withTransaction(pool, first);

  // Every batch but the last, INGEST_PARALLEL at a time (each its own transaction on its own
  // connection: their findings are distinct, and the ingest's counters, the one row they
  // share, are updated at the end of each statement, so one waits only for the other's
  // commit); the last, with the resolve and the ingest's end, once all committed.
  const { batches, last } = inBatches((plan as FindingsPlan | null)!.findings);
  await eachAtOnce(batches, INGEST_PARALLEL, (batch) =>
    withTransaction(pool, async (tx) => queueFindings(tx, ingestId, input.tenantId, reportKey, tie, batch)));
  return withTransaction(pool, (tx) => finish(tx, last));
}

/** Findings in INGEST_BATCH_SIZE batches: every full one before the last, and the last (never empty unless all are). */
function inBatches(rows: FindingRowInput[]): { batches: FindingRowInput[][]; last: FindingRowInput[] } {
  const batches: FindingRowInput[][] = [];
  let at = 0;
  for (; at + INGEST_BATCH_SIZE < rows.length; at += INGEST_BATCH_SIZE) batches.push(rows.slice(at, at + INGEST_BATCH_SIZE));
  return { batches, last: rows.slice(at) };
}

/**
 * Runs fn on every item, at most `width` at once. The first failure is thrown once every
 * call already started has settled (none is left running behind the caller's back).
 */
async function eachAtOnce<T>(items: T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | null = null;
  const lane = async () => {
    while (failure === null && next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  if (failure) throw (failure as { err: unknown }).err;
}
