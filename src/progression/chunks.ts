// Chunked reports (`/ingest/chunk`, the seed SDK's pkg/chunk): each chunk is ingested when it
// arrives, in index order, each in a transaction of its own holding the report's lock (an
// advisory lock on tenant and report_id: two chunks of one report never interleave). A chunk
// that arrives before a chunk below it is kept (its data as received) and ingested by the
// request that fills the gap: a chunk may use a report asset sent in an earlier chunk, and
// the first chunk carries the tool, the metadata and the command the others inherit. A chunk
// sent again is answered from its row and changes nothing. A full-coverage report resolves
// what it no longer contains when its last chunk is ingested, over the scope of all of them.
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import { withTransaction, type Tx } from '../db/transaction.ts';
import { one } from '../store/query.ts';
import { ingestsSql } from '../store/queries.ts';
import type { IngestRow } from '../store/rows.ts';
import { nestingProblem } from '../domain/json.ts';
import type { Problem } from '../domain/problems.ts';
import { parseChunkReport, type ChunkCompression, type ChunkEnvelopeInput } from '../domain/findings/chunk.ts';
import { NotFindingsInput } from '../domain/findings/model.ts';
import { planFindings, resolvesUnseen } from '../domain/findings/plan.ts';
import type { ParsedReport, ReportBranchInfo } from '../domain/findings/report.ts';
import { NO_TIE, finishIngest, queueFindings, queueResolve, scopePairs, upsertAssets, type IngestTie } from './ingest.ts';

const gunzip = promisify(zlib.gunzip);
const zstdDecompress = promisify(zlib.zstdDecompress);

/** A chunk's data that cannot be decoded: too large once decompressed (413), or not what it says it is (400). */
export class ChunkDataError extends Error {
  readonly tooLarge: boolean;
  readonly problems: Problem[];
  constructor(tooLarge: boolean, message: string) {
    super(message);
    this.tooLarge = tooLarge;
    this.problems = [{ path: 'data', message }];
  }
}

/** A chunk that contradicts the chunks of its report received before (a 409). */
export class ChunkConflict extends Error {}

/**
 * The JSON text of a chunk's data (base64-decoded bytes), decompressed on the thread pool and
 * never past `maxBytes` of output (zlib stops at maxOutputLength: a zstd or gzip bomb costs
 * at most that much memory).
 */
export async function chunkText(data: Buffer, compression: ChunkCompression, maxBytes: number): Promise<string> {
  let out: Buffer;
  try {
    if (compression === 'none') out = data;
    else if (compression === 'gzip') out = await gunzip(data, { maxOutputLength: maxBytes });
    else out = await zstdDecompress(data, { maxOutputLength: maxBytes });
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new ChunkDataError(true, `is larger than ${maxBytes} bytes once decompressed`);
    }
    throw new ChunkDataError(false, `is not ${compression} data: ${(err as Error).message}`);
  }
  if (out.byteLength > maxBytes) throw new ChunkDataError(true, `is larger than ${maxBytes} bytes`);
  return out.toString('utf8');
}

/** A chunk's data as a report (a 400 when it is not one). */
export async function decodeChunk(data: Buffer, envelope: ChunkEnvelopeInput, maxBytes: number): Promise<ParsedReport> {
  const text = await chunkText(data, envelope.compression, maxBytes);
  const tooDeep = nestingProblem(text);
  if (tooDeep) throw new NotFindingsInput('The chunk is too deep', [{ path: `data.${tooDeep.path}`, message: tooDeep.message }]);
  let chunk: unknown;
  try {
    chunk = JSON.parse(text);
  } catch (err) {
    throw new NotFindingsInput('The chunk is not JSON', [{ path: 'data', message: `must be JSON once decompressed: ${(err as Error).message}` }]);
  }
  return parseChunkReport(chunk, envelope);
}

type ChunkRow = Pick<IngestRow,
  'id' | 'chunk_index' | 'total_chunks' | 'status' | 'report_key' | 'tool' | 'coverage_type' | 'branch' | 'is_default_branch'
  | 'command_id' | 'pipeline_run_id' | 'step_run_id' | 'step_key' | 'agent_scan_id' | 'default_asset_id' | 'scope_tools'
  | 'scope_asset_ids' | 'asset_refs'>;

/** Locks the report and reads its chunks so far (one round trip, with BEGIN). */
async function lockChunks(tx: Tx, tenantId: string, reportId: string): Promise<ChunkRow[]> {
  const [, rows] = await tx.batch([
    { q: ingestsSql.LockReportChunks, values: [tenantId, reportId] },
    { q: ingestsSql.ReportChunks, values: [tenantId, reportId] },
  ]);
  return rows.rows as ChunkRow[];
}

/** How many chunks, from 0 up, are ingested: the index of the next one to ingest. */
function nextIndex(rows: ChunkRow[]): number {
  let n = 0;
  while (n < rows.length && rows[n].chunk_index === n && rows[n].status === 'ingested') n++;
  return n;
}

/** What every chunk of a report shares: the first chunk's tool, coverage, branch and tie. */
type ReportContext = {
  reportKey: string;
  tool: string | null;
  coverage: IngestRow['coverage_type'];
  branch: ReportBranchInfo | null;
  tie: IngestTie;
};

function contextOfFirst(first: ChunkRow): ReportContext {
  return {
    reportKey: first.report_key!,
    tool: first.tool,
    coverage: first.coverage_type,
    branch: first.branch !== null || first.is_default_branch !== null
      ? { name: first.branch, is_default: first.is_default_branch, commit_sha: null } : null,
    tie: {
      commandId: first.command_id, pipelineRunId: first.pipeline_run_id, stepRunId: first.step_run_id, stepKey: first.step_key,
      agentScanId: first.agent_scan_id, defaultAssetId: first.default_asset_id, fallbackTool: first.tool,
    },
  };
}

/**
 * Ingests chunk `index` of the report in `tx`; every chunk below it is ingested (`rows`). The
 * first chunk's context comes from its report (and `firstTie`, checked by the caller); the
 * others inherit it from the first chunk's row.
 */
async function ingestChunkNow(tx: Tx, at: {
  tenantId: string; agentId: string | null; reportId: string; total: number; index: number; rows: ChunkRow[];
  parsed: ParsedReport; firstTie: IngestTie | null; pendingId: string | null;
}): Promise<IngestRow> {
  const { tenantId, reportId, total, index, rows, parsed } = at;
  const ingestId = at.pendingId ?? randomUUID();
  const ctx: ReportContext = index === 0
    ? {
      reportKey: `report:${reportId}`, tool: parsed.tool?.name ?? at.firstTie?.fallbackTool ?? null, coverage: parsed.coverage,
      branch: parsed.branch, tie: at.firstTie ?? NO_TIE,
    }
    : contextOfFirst(rows[0]);
  const tie = ctx.tie;
  const columns = [
    ctx.reportKey, ctx.tool, ctx.coverage, ctx.branch?.name ?? null, ctx.branch?.is_default ?? null, tie.commandId,
    tie.pipelineRunId, tie.stepRunId, tie.stepKey, tie.agentScanId, tie.defaultAssetId, parsed.properties,
  ];
  if (at.pendingId) tx.later(ingestsSql.StartPendingChunk, [ingestId, ...columns]);
  else tx.later(ingestsSql.InsertIngest, [ingestId, tenantId, at.agentId, 'chunk', reportId, index, total, ...columns]);

  const knownRefs: Record<string, string> = Object.assign({}, ...rows.filter((r) => r.chunk_index! < index).map((r) => r.asset_refs));
  const assetRows = await upsertAssets(tx, tenantId, parsed);
  const plan = planFindings({ parsed, assetRows, knownRefs, defaultAssetId: tie.defaultAssetId, fallbackTool: ctx.tool });
  queueFindings(tx, ingestId, tenantId, ctx.reportKey, tie, plan.findings);
  const scope = scopePairs(ctx.tool ? [ctx.tool] : [], plan.scopeAssetIds);
  if (index === total - 1 && resolvesUnseen(ctx.coverage, ctx.branch)) {
    // The last chunk: the report is whole, and its scope is every chunk's.
    const whole = {
      tools: [...rows.flatMap((r) => r.scope_tools), ...scope.tools],
      assetIds: [...rows.flatMap((r) => r.scope_asset_ids), ...scope.assetIds],
    };
    queueResolve(tx, ingestId, tenantId, ctx.reportKey, tie, whole, [...rows.map((r) => r.id), ingestId]);
  }
  return finishIngest(tx, ingestId, plan, scope);
}

export type ChunkOutcome = { row: IngestRow; replayed: boolean };

/**
 * Receives chunk `envelope.chunk_index` of a report: ingests it now when every chunk below it
 * is in, else keeps it; then ingests the kept chunks that now follow in order. `firstTie`
 * checks what the first chunk names (its command, its scan session): called only when the
 * first chunk is ingested, inside its transaction (TieNotFound there stores nothing).
 * Returns this chunk's row as it is afterwards.
 */
export async function receiveChunk(pool: pg.Pool, at: {
  tenantId: string; agentId: string; envelope: ChunkEnvelopeInput; data: Buffer; parsed: ParsedReport;
  firstTie: (db: Queryable) => Promise<IngestTie>; maxBytes: number;
}): Promise<ChunkOutcome> {
  const { tenantId, agentId, envelope, data } = at;
  const reportId = envelope.report_id;
  const index = envelope.chunk_index;
  const total = envelope.total_chunks;

  const arrived = await withTransaction(pool, async (tx) => {
    const rows = await lockChunks(tx, tenantId, reportId);
    const mine = rows.find((r) => r.chunk_index === index);
    if (mine) return { id: mine.id, replayed: true };
    const other = rows.find((r) => r.total_chunks !== total);
    if (other) throw new ChunkConflict(`report '${reportId}' has ${other.total_chunks} chunks, not ${total}`);
    if (nextIndex(rows) === index) {
      const firstTie = index === 0 ? await at.firstTie(tx) : null;
      const row = await ingestChunkNow(tx, { tenantId, agentId, reportId, total, index, rows, parsed: at.parsed, firstTie, pendingId: null });
      return { id: row.id, replayed: false };
    }
    const id = randomUUID();
    tx.later(ingestsSql.InsertPendingChunk, [id, tenantId, agentId, reportId, index, total, data, envelope.compression]);
    return { id, replayed: false };
  });

  await ingestWaitingChunks(pool, tenantId, reportId, at.maxBytes);
  const row = (await one<IngestRow>(pool, ingestsSql.GetIngest, [arrived.id]))!;
  return { row, replayed: arrived.replayed };
}

/**
 * Ingests, one transaction each, the kept chunks that now follow the ingested ones in order.
 * Safe at any time and concurrently (each step re-reads under the report's lock); a replayed
 * chunk runs it too, so the chunks a request kept before it died are not left waiting.
 */
export async function ingestWaitingChunks(pool: pg.Pool, tenantId: string, reportId: string, maxBytes: number): Promise<void> {
  for (;;) {
    const moved = await withTransaction(pool, async (tx) => {
      const rows = await lockChunks(tx, tenantId, reportId);
      const next = nextIndex(rows);
      const waiting = rows[next];
      if (!waiting || waiting.chunk_index !== next || waiting.status !== 'pending') return false;
      const pending = (await one<{ agent_id: string | null; total_chunks: number; payload: Buffer; compression: ChunkCompression }>(
        tx, ingestsSql.GetPendingChunk, [waiting.id],
      ))!;
      const envelope: ChunkEnvelopeInput = {
        report_id: reportId, chunk_index: next, total_chunks: pending.total_chunks, compression: pending.compression, data: '',
      };
      let parsed: ParsedReport;
      try {
        parsed = await decodeChunk(pending.payload, envelope, maxBytes);
      } catch (err) {
        // It was decoded when it arrived; failing now (a lower limit since) skips its content.
        if (!(err instanceof ChunkDataError || err instanceof NotFindingsInput)) throw err;
        parsed = {
          assets: [], findings: [], problems: err.problems, skipped: 0, tool: null, coverage: 'partial', branch: null,
          command_id: null, scan_id: null, report_id: reportId, properties: {},
        };
      }
      await ingestChunkNow(tx, {
        tenantId, agentId: pending.agent_id, reportId, total: pending.total_chunks, index: next, rows, parsed, firstTie: null,
        pendingId: waiting.id,
      });
      return true;
    });
    if (!moved) return;
  }
}
