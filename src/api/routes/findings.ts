// A tenant's findings (API.md Part 2 "Findings (tenant)"): the list with its filters and
// sorts, one finding with its history, triage, summary counts, and a run's findings.
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { endpoints } from '../contract.ts';
import { conflict, invalid, notFound } from '../errors.ts';
import { limitOf, parseInput, pathId, queryOf, readBody, UUID } from '../input.ts';
import { presentFinding } from '../present.ts';
import type { Queryable } from '../../db/pool.ts';
import { withTransaction } from '../../db/transaction.ts';
import { finalMany, many, one } from '../../store/query.ts';
import { findingsApiSql } from '../../store/queries.ts';
import type { FindingRow } from '../../store/rows.ts';
import {
  FINDING_GROUPS, FINDING_SEVERITIES, FINDING_SORTS, FINDING_STATUSES, FINDING_TYPES, groupFindingsStatement,
  listFindingsStatement, summarizeFindingsStatement, type ComposedStatement, type FindingFilters, type FindingKeyset,
  type FindingSort, SEVERITY_RANK,
} from '../../store/findings-api.ts';

const SEVERITY_OF_RANK = Object.fromEntries(Object.entries(SEVERITY_RANK).map(([name, rank]) => [rank, name])) as Record<number, string>;

// ---- query strings ------------------------------------------------------------------------

/** One value or several separated by commas, each one of `allowed`; duplicates dropped. */
const oneOrMore = <T extends string>(allowed: readonly T[]) => v.pipe(
  v.string(),
  v.transform((s) => [...new Set(s.split(',').map((x) => x.trim()))]),
  v.check((xs) => xs.every((x) => (allowed as readonly string[]).includes(x)),
    `must be one of ${allowed.join(', ')} (several separated by commas)`),
  v.transform((xs) => xs as T[]),
);

const Text = (max: number) => v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(max));

// RFC 3339 with an offset, or a date (midnight UTC).
const INSTANT = /^\d{4}-\d\d-\d\d(?:[Tt ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:[Zz]|[+-]\d\d:\d\d))?$/;
const Instant = v.pipe(
  v.string(),
  v.regex(INSTANT, 'must be an RFC 3339 timestamp with an offset (2026-03-01T12:00:00Z) or a date (2026-03-01)'),
  v.transform((s) => (s.length === 10 ? `${s}T00:00:00Z` : s)),
  v.check((s) => !Number.isNaN(Date.parse(s.replace(' ', 'T'))), 'is not a real date and time'),
);

const Filters = v.object({
  status: v.optional(oneOrMore(FINDING_STATUSES)),
  severity: v.optional(oneOrMore(FINDING_SEVERITIES)),
  min_severity: v.optional(v.picklist(FINDING_SEVERITIES, `must be one of ${FINDING_SEVERITIES.join(', ')}`)),
  type: v.optional(oneOrMore(FINDING_TYPES)),
  tool: v.optional(Text(255)),
  rule_id: v.optional(Text(512)),
  asset_id: v.optional(v.pipe(v.string(), v.regex(UUID, 'must be an asset id (UUID)'))),
  pipeline_run_id: v.optional(v.pipe(v.string(), v.regex(UUID, 'must be a pipeline run id (UUID)'))),
  scan_id: v.optional(v.pipe(v.string(), v.regex(UUID, 'must be a scan id (UUID)'))),
  // A newline joins title and path in the text index: q may not contain one (nor any other
  // control character), so a match never spans the two. The trigram index can look up only
  // text with 3 letters or digits in a row; shorter text would read every finding.
  q: v.optional(v.pipe(
    Text(200),
    v.regex(/^[^\p{Cc}]*$/u, 'must not contain control characters'),
    v.regex(/[\p{L}\p{N}]{3}/u, 'must contain at least 3 letters or digits in a row'),
  )),
  first_seen_after: v.optional(Instant),
});
const FILTER_NAMES = Object.keys(Filters.entries);

export const ListQuery = v.object({
  ...Filters.entries,
  sort: v.optional(v.picklist(FINDING_SORTS, `must be one of ${FINDING_SORTS.join(', ')}`), 'first_seen'),
  cursor: v.optional(v.string()),
});

export const SummaryQuery = v.object({
  ...Filters.entries,
  group_by: v.optional(v.picklist(FINDING_GROUPS, `must be one of ${FINDING_GROUPS.join(', ')}`)),
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number between 1 and 1000'), v.transform(Number),
    v.minValue(1, 'must be at least 1'), v.maxValue(1000, 'must be at most 1000')), '100'),
});

function filtersOf(q: v.InferOutput<typeof Filters>): FindingFilters {
  const f: FindingFilters = {};
  for (const name of FILTER_NAMES) {
    const value = q[name as keyof typeof q];
    if (value !== undefined) (f as Record<string, unknown>)[name] = value;
  }
  return f;
}

// ---- cursors ------------------------------------------------------------------------------

// A list cursor carries the sort it was made for and that sort's keys of the page's last
// row: [sort, severity rank or null, timestamp as PostgreSQL printed it, id].
const PG_TIMESTAMP = /^\d{4}-\d\d-\d\d[ T][\d:.+-]+$/;

function encodeCursor(parts: unknown[]): string {
  return Buffer.from(JSON.stringify(parts)).toString('base64url');
}

function badCursor(): never {
  throw invalid([{ path: 'cursor', message: 'is not a cursor returned by this API' }]);
}

function decodeListCursor(cursor: string, sort: FindingSort): FindingKeyset {
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    badCursor();
  }
  if (!Array.isArray(parts) || parts.length !== 4) badCursor();
  const [s, rank, at, id] = parts as unknown[];
  if (typeof s !== 'string' || !(FINDING_SORTS as readonly string[]).includes(s)) badCursor();
  if (s !== sort) throw invalid([{ path: 'cursor', message: `was made for sort=${s}, not sort=${sort}` }]);
  if (typeof at !== 'string' || !PG_TIMESTAMP.test(at) || typeof id !== 'string' || !UUID.test(id)) badCursor();
  if (sort === 'severity' ? !(Number.isInteger(rank) && (rank as number) >= 0 && (rank as number) <= 4) : rank !== null) badCursor();
  return { sort, rank: rank as number | null, at, id };
}

type ListedRow = FindingRow & { first_seen_key: string; last_seen_key: string };

function keysetOf(row: ListedRow, sort: FindingSort): unknown[] {
  switch (sort) {
    case 'first_seen': return [sort, null, row.first_seen_key, row.id];
    case 'last_seen': return [sort, null, row.last_seen_key, row.id];
    case 'severity': return [sort, row.severity_rank, row.first_seen_key, row.id];
  }
}

/** A history cursor: the id (bigint) of the last sighting or event of a page; the first page starts below every id. */
const MAX_BIGINT = '9223372036854775807';
export const HistoryQuery = v.object({
  cursor: v.optional(v.pipe(v.string(), v.check((s) => /^[1-9]\d{0,18}$/.test(s) && BigInt(s) <= BigInt(MAX_BIGINT),
    'is not a cursor returned by this API')), MAX_BIGINT),
});

// ---- the history of a finding -----------------------------------------------------------

/** How much of a finding's history GET /findings/{id} shows; the rest is paged through its own routes. */
const HISTORY_ON_FINDING = 20;

type SightingRow = {
  id: string; ingest_id: string; pipeline_run_id: string | null; step_run_id: string | null; step_key: string | null;
  command_id: string | null; agent_scan_id: string | null; new: boolean; location: Record<string, unknown>; seen_at: Date;
};
type FindingEventRow = { id: string; type: string; data: Record<string, unknown>; created_at: Date };

async function sightingsPage(db: Queryable, findingId: string, before: string, limit: number) {
  const rows = await many<SightingRow>(db, findingsApiSql.ListFindingSightings, [findingId, before, limit + 1]);
  const items = rows.slice(0, limit);
  return {
    items: items.map((s) => ({
      id: Number(s.id), seen_at: s.seen_at.toISOString(), new: s.new, ingest_id: s.ingest_id,
      pipeline_run_id: s.pipeline_run_id, step_run_id: s.step_run_id, step_key: s.step_key, command_id: s.command_id,
      scan_id: s.agent_scan_id, location: s.location,
    })),
    next_cursor: rows.length > limit ? String(items[items.length - 1].id) : null,
  };
}

async function statusChangesPage(db: Queryable, tenantId: string, findingId: string, before: string, limit: number) {
  const rows = await many<FindingEventRow>(db, findingsApiSql.ListFindingEvents, [tenantId, findingId, before, limit + 1]);
  const items = rows.slice(0, limit);
  return {
    items: items.map((e) => ({ id: Number(e.id), event: e.type, timestamp: e.created_at.toISOString(), data: e.data })),
    next_cursor: rows.length > limit ? String(items[items.length - 1].id) : null,
  };
}

async function getFinding(db: Queryable, tenantId: string, id: string): Promise<FindingRow> {
  const row = await one<FindingRow>(db, findingsApiSql.GetFinding, [tenantId, id]);
  if (!row) throw notFound('finding');
  return row;
}

async function rowsOf<T>(db: Queryable, statement: ComposedStatement): Promise<T[]> {
  // Unnamed: planned with its values each time (see sql/findings_api.sql).
  return (await db.query({ text: statement.text, values: statement.values })).rows as T[];
}

// ---- the routes -------------------------------------------------------------------------

export function findingRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const q = queryOf(c, ListQuery, [...FILTER_NAMES, 'sort', 'cursor']);
    const limit = limitOf(c);
    const after = q.cursor ? decodeListCursor(q.cursor, q.sort) : null;
    const rows = await rowsOf<ListedRow>(db, listFindingsStatement(c.get('tenant').id, filtersOf(q), q.sort, after, limit + 1));
    const items = rows.slice(0, limit);
    const last = items[items.length - 1];
    return c.json({
      items: items.map(presentFinding),
      next_cursor: rows.length > limit && last ? encodeCursor(keysetOf(last, q.sort)) : null,
    });
  });

  // Counts by severity and by status (and crossed), of the findings that pass the list's
  // filters; with group_by, the same per asset, tool or rule for the groups with the most
  // severe findings. One statement each, whatever the number of groups.
  r.get('/summary', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const q = queryOf(c, SummaryQuery, [...FILTER_NAMES, 'group_by', 'limit']);
    const filters = filtersOf(q);
    const [cells, groups] = await Promise.all([
      rowsOf<{ severity_rank: number; status: string; n: number }>(db, summarizeFindingsStatement(tenantId, filters)),
      q.group_by ? rowsOf<Record<string, unknown>>(db, groupFindingsStatement(tenantId, filters, q.group_by, q.limit)) : null,
    ]);
    const bySeverity = Object.fromEntries(FINDING_SEVERITIES.map((s) => [s, 0])) as Record<string, number>;
    const byStatus = Object.fromEntries(FINDING_STATUSES.map((s) => [s, 0])) as Record<string, number>;
    const crossed = Object.fromEntries(FINDING_SEVERITIES.map((s) => [s, { ...byStatus }])) as Record<string, Record<string, number>>;
    let total = 0;
    for (const cell of cells) {
      const severity = SEVERITY_OF_RANK[cell.severity_rank];
      total += cell.n;
      bySeverity[severity] += cell.n;
      byStatus[cell.status] += cell.n;
      crossed[severity][cell.status] = cell.n;
    }
    return c.json({
      total, by_severity: bySeverity, by_status: byStatus, by_severity_and_status: crossed,
      ...(q.group_by ? { group_by: q.group_by, groups: groups!.map(presentGroup) } : {}),
    });
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const finding = await getFinding(db, tenantId, pathId(c, 'id', 'finding'));
    const [sightings, statusChanges] = await Promise.all([
      sightingsPage(db, finding.id, MAX_BIGINT, HISTORY_ON_FINDING),
      statusChangesPage(db, tenantId, finding.id, MAX_BIGINT, HISTORY_ON_FINDING),
    ]);
    return c.json({ ...presentFinding(finding), sightings, status_changes: statusChanges });
  });

  // The rest of a finding's history, newest first, from a next_cursor of the finding's
  // sightings or status_changes.
  r.get('/:id/sightings', async (c) => {
    const db = readsOf(deps, c);
    const finding = await getFinding(db, c.get('tenant').id, pathId(c, 'id', 'finding'));
    const { cursor } = queryOf(c, HistoryQuery, ['cursor']);
    return c.json(await sightingsPage(db, finding.id, cursor, limitOf(c)));
  });

  r.get('/:id/status-changes', async (c) => {
    const db = readsOf(deps, c);
    const tenantId = c.get('tenant').id;
    const finding = await getFinding(db, tenantId, pathId(c, 'id', 'finding'));
    const { cursor } = queryOf(c, HistoryQuery, ['cursor']);
    return c.json(await statusChangesPage(db, tenantId, finding.id, cursor, limitOf(c)));
  });

  // Triage, in one transaction: the finding locked (concurrent triage of it waits and then
  // starts from the status this one leaves), then the guarded UPDATE from that status and its
  // finding.status_changed event in one statement that goes out with the COMMIT. Asking for
  // the status it already has changes nothing and writes nothing (the reason is ignored).
  r.patch('/:id', async (c) => {
    const tenantId = c.get('tenant').id;
    const id = pathId(c, 'id', 'finding');
    const body = await readBody(c, endpoints.triageFinding);
    const actor = c.get('actor');
    const finding = await withTransaction(deps.pool, async (tx) => {
      const current = await one<FindingRow>(tx, findingsApiSql.LockFinding, [tenantId, id]);
      if (!current) throw notFound('finding');
      if (current.status === body.status) return current;
      const [changed] = await finalMany<FindingRow>(tx, findingsApiSql.TriageFinding, [
        tenantId, id, current.status, body.status, body.reason ?? null, actor.tokenHash,
        actor.admin ? { type: 'admin', via: 'dashboard' } : null,
      ]);
      // Cannot happen while the lock is held; said rather than ignored if it ever does.
      if (!changed) throw conflict('finding_changed', 'The finding changed while it was being triaged; retry');
      return changed;
    });
    return c.json(presentFinding(finding));
  });

  return r;
}

function presentGroup(g: Record<string, unknown>) {
  const key = 'asset_id' in g
    ? { asset_id: g.asset_id, asset_name: g.asset_name ?? null, asset_type: g.asset_type ?? null, asset_value: g.asset_value ?? null }
    : 'rule_id' in g ? { tool: g.tool, rule_id: g.rule_id } : { tool: g.tool };
  return {
    ...key,
    total: g.total,
    by_severity: Object.fromEntries(FINDING_SEVERITIES.map((s) => [s, g[s]])),
    by_status: Object.fromEntries(FINDING_STATUSES.map((s) => [s, g[s]])),
  };
}

// ---- GET /api/v1/pipeline-runs/{id}/findings (routed in routes/runs.ts) ------------------

type RunFindingRow = FindingRow & { new: boolean; first_seen_key: string };
const RUN_FIRST_PAGE = [5, 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff'];

/**
 * What a run saw: each finding it sighted once, `new: true` when the run first saw it;
 * highest severity first, then newest, in cursor pages. `runId` is a run of the tenant.
 */
export async function runFindingsPage(db: Queryable, c: Context<AppEnv>, tenantId: string, runId: string) {
  const limit = limitOf(c);
  const { cursor } = parseInput(v.object({ cursor: v.optional(v.string()) }), { cursor: c.req.query('cursor') });
  const after = cursor ? decodeListCursor(cursor, 'severity') : null;
  const rows = await many<RunFindingRow>(db, findingsApiSql.ListRunFindings, [
    tenantId, runId, ...(after ? [after.rank, after.at, after.id] : RUN_FIRST_PAGE), limit + 1,
  ]);
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return {
    items: items.map((f) => ({ ...presentFinding(f), new: f.new })),
    next_cursor: rows.length > limit && last ? encodeCursor(['severity', last.severity_rank, last.first_seen_key, last.id]) : null,
  };
}
