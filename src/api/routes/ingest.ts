// Findings ingestion (API.md Part 2 "Findings ingestion"; seed 002 "Module Gating for Agent
// Routes"): the seed's report format, raw SARIF 2.1.0, chunked reports as the seed SDK makes
// them, leaked credentials, the fingerprint check, and agent scan sessions. Agent key auth;
// module `scans` (credentials: `credentials`). Bodies up to INGEST_MAX_BYTES once decoded.
import { Hono, type Context } from 'hono';
import type { AppDeps } from '../app.ts';
import { requireAgent, type AppEnv, type AuthAgent } from '../auth.ts';
import { bodyLimitOf } from '../body.ts';
import { endpoints } from '../contract.ts';
import { ApiError, conflict, invalid, notFound } from '../errors.ts';
import { idempotent } from '../idempotency.ts';
import { pathId, readBody, readBodyJson } from '../input.ts';
import { presentAgentScan } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { finalMany, many, one } from '../../store/query.ts';
import { agentScansSql, assetsSql, findingsSql } from '../../store/queries.ts';
import type { AgentScanRow } from '../../store/rows.ts';
import { COVERAGE_TYPES, NotFindingsInput, type Coverage } from '../../domain/findings/model.ts';
import { parseReport, unwrapReport, type ReportBranchInfo } from '../../domain/findings/report.ts';
import { sarifFindings } from '../../domain/findings/sarif.ts';
import { credentialFindings } from '../../domain/findings/credentials.ts';
import type { ChunkEnvelopeInput } from '../../domain/findings/chunk.ts';
import { ingestFindings, ingestResult, resolveTie, TieNotFound, upsertAssets, type IngestTie } from '../../progression/ingest.ts';
import { ChunkConflict, ChunkDataError, decodeChunk, receiveChunk } from '../../progression/chunks.ts';

/** Request headers that change what an ingest does: an Idempotency-Key's request hash includes them. */
const INGEST_HEADERS = [
  'x-command-id', 'x-asset-id', 'x-scan-id', 'x-coverage', 'x-checkout-uri', 'x-branch', 'x-default-branch', 'content-type',
] as const;

const SARIF_MEDIA = /^application\/(sarif\+json|json)\s*(;|$)/i;

/** Runs fn, turning the domain's and progression's refusals into API errors. */
async function refusing<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof NotFindingsInput) throw invalid(err.problems, err.message);
    if (err instanceof TieNotFound) throw notFound(err.what === 'scan' ? 'scan session' : err.what);
    if (err instanceof ChunkDataError) {
      throw err.tooLarge
        ? new ApiError(413, 'payload_too_large', `The chunk's data ${err.message}`)
        : invalid(err.problems, 'The chunk\'s data cannot be decoded');
    }
    if (err instanceof ChunkConflict) throw conflict('chunk_conflict', `This chunk does not fit its report: ${err.message}`);
    throw err;
  }
}

/** A header that is absent or empty is not given. */
function header(c: Context, name: string): string | null {
  const value = c.req.header(name)?.trim();
  return value ? value : null;
}

function coverageHeader(c: Context, fallback: Coverage): Coverage {
  const value = header(c, 'x-coverage')?.toLowerCase();
  if (value === undefined || value === null) return fallback;
  if (!(COVERAGE_TYPES as readonly string[]).includes(value)) {
    throw invalid([{ path: 'X-Coverage', message: `must be one of ${COVERAGE_TYPES.join(', ')}` }]);
  }
  return value as Coverage;
}

/**
 * The branch a SARIF upload scanned: X-Branch / X-Default-Branch (true|false) when given,
 * over what the log's versionControlProvenance says. A full-coverage log that names a
 * branch resolves only when that branch is known to be the default one.
 */
function sarifBranch(c: Context, fromLog: ReportBranchInfo | null): ReportBranchInfo | null {
  const name = header(c, 'x-branch');
  const flag = header(c, 'x-default-branch')?.toLowerCase() ?? null;
  if (flag !== null && flag !== 'true' && flag !== 'false') {
    throw invalid([{ path: 'X-Default-Branch', message: 'must be true or false' }]);
  }
  if (name === null && flag === null) return fromLog;
  if (name !== null && name.length > 255) throw invalid([{ path: 'X-Branch', message: 'must be at most 255 characters' }]);
  return {
    name: name ?? fromLog?.name ?? null,
    is_default: flag === null ? (name === null ? fromLog?.is_default ?? null : null) : flag === 'true',
    commit_sha: fromLog?.commit_sha ?? null,
  };
}

function tieOf(deps: AppDeps, agent: AuthAgent, ids: { commandId: string | null; assetId: string | null; scanId: string | null }): Promise<IngestTie> {
  return refusing(() => resolveTie(deps.pool, agent.tenant_id, agent.id, ids));
}

/**
 * The request's SARIF log as findings. Its parsed JSON (three times the log's size in
 * memory: 81 MB for a 27 MB log) is dropped here, not held while its findings are stored.
 */
async function sarifOf(c: Context) {
  const body = await readBodyJson(c, endpoints.ingestSarif);
  return refusing(() => sarifFindings(body, { checkoutUri: header(c, 'x-checkout-uri') }));
}

export function ingestRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  const limit = bodyLimitOf(deps.orchestration.ingestMaxBytes);
  const scans = requireAgent(deps, 'scans');
  const once = idempotent(deps, { hashHeaders: INGEST_HEADERS });

  // A report of the seed's format, bare or as {report}.
  r.post('/ingest', limit, scans, once, async (c) => {
    const agent = c.get('agent');
    const body = await readBodyJson(c, endpoints.ingestReport);
    const report = await refusing(() => parseReport(unwrapReport(body)));
    const tie = await tieOf(deps, agent, {
      commandId: header(c, 'x-command-id') ?? report.command_id,
      assetId: header(c, 'x-asset-id'),
      scanId: header(c, 'x-scan-id') ?? report.scan_id,
    });
    const tool = report.tool?.name ?? tie.fallbackTool;
    const row = await ingestFindings(deps.pool, {
      kind: 'report', tenantId: agent.tenant_id, agentId: agent.id, reportId: report.report_id, tool,
      coverage: report.coverage, branch: report.branch, parsed: report, scopeTools: tool ? [tool] : [],
      properties: report.properties, tie,
    });
    return c.json(ingestResult(row), 201);
  });

  // A raw SARIF 2.1.0 log: full coverage unless X-Coverage says otherwise.
  r.post('/ingest/sarif', limit, scans, once, async (c) => {
    const agent = c.get('agent');
    const type = c.req.header('content-type');
    if (type && !SARIF_MEDIA.test(type)) {
      throw new ApiError(415, 'unsupported_media_type', `A SARIF log is sent as application/sarif+json or application/json, not ${type.slice(0, 100)}`);
    }
    const coverage = coverageHeader(c, 'full');
    const log = await sarifOf(c);
    const tie = await tieOf(deps, agent, {
      commandId: header(c, 'x-command-id'), assetId: header(c, 'x-asset-id'), scanId: header(c, 'x-scan-id'),
    });
    const row = await ingestFindings(deps.pool, {
      kind: 'sarif', tenantId: agent.tenant_id, agentId: agent.id, reportId: null,
      tool: log.tools.length > 0 ? [...new Set(log.tools)].join(', ').slice(0, 1000) : null,
      coverage, branch: sarifBranch(c, log.branch), parsed: log, scopeTools: log.tools, properties: {}, tie,
    });
    return c.json(ingestResult(row), 201);
  });

  // Which of these fingerprints the tenant's findings have (theirs or their tool's), in one query.
  r.post('/ingest/check', limit, scans, async (c) => {
    const agent = c.get('agent');
    const { fingerprints } = await readBody(c, endpoints.checkFingerprints);
    const asked = [...new Set(fingerprints)];
    const found = new Set(
      asked.length === 0 ? [] : (await many<{ fp: string }>(deps.pool, findingsSql.ExistingFingerprints, [agent.tenant_id, asked])).map((x) => x.fp),
    );
    return c.json({ existing: asked.filter((f) => found.has(f)), missing: asked.filter((f) => !found.has(f)) });
  });

  // One chunk of a chunked report, as the seed SDK uploads it.
  r.post('/ingest/chunk', limit, scans, once, async (c) => {
    const agent = c.get('agent');
    const envelope: ChunkEnvelopeInput = await readBody(c, endpoints.ingestChunk);
    const data = Buffer.from(envelope.data, 'base64');
    const maxBytes = deps.orchestration.ingestMaxBytes;
    const parsed = await refusing(() => decodeChunk(data, envelope, maxBytes));
    const { row } = await refusing(() => receiveChunk(deps.pool, {
      tenantId: agent.tenant_id, agentId: agent.id, envelope, data, parsed, maxBytes,
      // The first chunk names the command and the session the whole report is tied to.
      firstTie: (db) => resolveTie(db, agent.tenant_id, agent.id, {
        commandId: header(c, 'x-command-id') ?? parsed.command_id, scanId: header(c, 'x-scan-id') ?? parsed.scan_id,
      }),
    }));
    return c.json({
      chunk_id: row.id,
      report_id: row.report_id,
      chunk_index: row.chunk_index,
      status: row.status === 'ingested' ? 'ingested' : 'pending',
      assets_created: row.assets_created,
      assets_updated: row.assets_updated,
      findings_created: row.findings_created,
      findings_updated: row.findings_updated,
      findings_reopened: row.findings_reopened,
      findings_resolved: row.findings_resolved,
      findings_skipped: row.findings_skipped,
      errors: row.problems.map((p) => `${p.path}: ${p.message}`),
      details: row.problems,
    }, 201);
  });

  // Leaked credentials: findings of type credential_leak, on no asset.
  r.post('/credentials/ingest', limit, requireAgent(deps, 'credentials'), once, async (c) => {
    const agent = c.get('agent');
    const body = await readBodyJson(c, endpoints.ingestCredentials);
    const parsed = await refusing(() => credentialFindings(body));
    const tie = await tieOf(deps, agent, { commandId: header(c, 'x-command-id'), assetId: null, scanId: header(c, 'x-scan-id') });
    const row = await ingestFindings(deps.pool, {
      kind: 'credentials', tenantId: agent.tenant_id, agentId: agent.id, reportId: null, tool: 'credentials',
      coverage: 'partial', branch: null, parsed, scopeTools: [], properties: {}, tie,
    });
    return c.json(ingestResult(row), 201);
  });

  // Agent scan sessions: a scan the agent runs on its own, ingested into with X-Scan-Id or
  // metadata.scan_id, then closed.
  r.post('/scans', scans, once, async (c) => {
    const agent = c.get('agent');
    const b = await readBody(c, endpoints.createAgentScan);
    const [row] = await withTransaction(deps.pool, async (tx) => {
      let assetId: string | null = null;
      if (b.asset) {
        const [asset] = await upsertAssets(tx, agent.tenant_id, {
          assets: [{ ref: null, type: b.asset.type, value: b.asset.value, name: b.asset.name ?? null, tags: [], criticality: null, metadata: {} }],
          findings: [], problems: [], skipped: 0,
        });
        assetId = asset.id;
      } else if (b.asset_id) {
        if (!(await one(tx, assetsSql.GetAsset, [agent.tenant_id, b.asset_id.toLowerCase()]))) throw notFound('asset');
        assetId = b.asset_id.toLowerCase();
      }
      return finalMany<AgentScanRow>(tx, agentScansSql.InsertAgentScan, [
        agent.tenant_id, agent.id, b.tool, b.name ?? null, assetId, b.branch ?? null, b.commit_sha ?? null,
      ]);
    });
    return c.json(presentAgentScan(row), 201);
  });

  r.patch('/scans/:id', scans, async (c) => {
    const agent = c.get('agent');
    const id = pathId(c, 'id', 'scan session');
    const b = await readBody(c, endpoints.finishAgentScan);
    const finished = await one<AgentScanRow>(deps.pool, agentScansSql.FinishAgentScan, [
      agent.tenant_id, id, agent.id, b.status, b.findings_count ?? null, b.error_message ?? null,
    ]);
    if (finished) return c.json(presentAgentScan(finished));
    const current = await one<AgentScanRow>(deps.pool, agentScansSql.GetAgentScan, [agent.tenant_id, id, agent.id]);
    if (!current) throw notFound('scan session');
    // The same close sent again answers the session; closing it otherwise contradicts it.
    if (current.status === b.status) return c.json(presentAgentScan(current));
    throw conflict(`scan_${current.status}`, `The scan session is ${current.status}; it cannot become ${b.status}`);
  });

  r.get('/scans/:id', scans, async (c) => {
    const agent = c.get('agent');
    const row = await one<AgentScanRow>(deps.pool, agentScansSql.GetAgentScan, [agent.tenant_id, pathId(c, 'id', 'scan session'), agent.id]);
    if (!row) throw notFound('scan session');
    return c.json(presentAgentScan(row));
  });

  return r;
}
