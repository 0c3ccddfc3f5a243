// The runs page: the tenant's runs newest first, 50 a page (cursor paging), filtered by
// status, pipeline, asset and scan; new runs and status changes come in live.
import { ApiAnswer, type ApiClient } from './api-client.ts';
import { chip, h, hrefWith, notice, region, select, shortId, span, time, type Html, type Option } from './layout.ts';

export const RUN_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled', 'timeout'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Rows a page: enough to see a day of a busy tenant, few enough to render and refresh at once. */
export const RUNS_PER_PAGE = 50;

export type Run = {
  id: string; pipeline_id: string; asset_id: string | null; scan_id: string | null; trigger_type: string;
  triggered_by: string | null; status: string; total_steps: number; completed_steps: number; failed_steps: number;
  skipped_steps: number; total_findings: number; new_findings: number; started_at: string | null;
  completed_at: string | null; created_at: string; error_message: string | null;
};
type Page<T> = { items: T[]; next_cursor: string | null };
type Named = { id: string; name: string };

export type RunsQuery = { status?: string; pipeline_id?: string; asset_id?: string; scan_id?: string; cursor?: string };

/** The filters of the page's URL that can be filters (anything else is dropped, not sent on). */
export function runsQueryOf(q: Record<string, string>): RunsQuery {
  const out: RunsQuery = {};
  if (RUN_STATUSES.includes(q.status)) out.status = q.status;
  for (const k of ['pipeline_id', 'asset_id', 'scan_id'] as const) if (UUID.test(q[k] ?? '')) out[k] = q[k].toLowerCase();
  if (q.cursor && /^[A-Za-z0-9_-]{1,500}$/.test(q.cursor)) out.cursor = q.cursor;
  return out;
}

type RunsData = {
  query: RunsQuery;
  runs: Page<Run>;
  pipelines: Map<string, string>;
  assets: Map<string, string>;
  error: string | null;
};

async function listAll(api: ApiClient, path: string): Promise<Named[]> {
  // The first 200 (the API's largest page) fill the filters; a run of another one still shows its name.
  return (await api.get<Page<Named>>(path, { limit: 200 })).items;
}

export async function loadRuns(api: ApiClient, query: RunsQuery, lists?: { pipelines: Named[]; assets: Named[] }): Promise<RunsData> {
  let runs: Page<Run> = { items: [], next_cursor: null };
  let error: string | null = null;
  try {
    runs = await api.get<Page<Run>>('/api/v1/pipeline-runs', { ...query, limit: RUNS_PER_PAGE });
  } catch (err) {
    // A cursor the API refuses (made for another list): its words, not a broken page.
    if (!(err instanceof ApiAnswer && err.status === 400)) throw err;
    error = err.message;
  }
  const pipelines = new Map(lists?.pipelines.map((p) => [p.id, p.name]));
  const assets = new Map(lists?.assets.map((a) => [a.id, a.name]));
  await Promise.all([
    api.names('/api/v1/pipelines', runs.items.map((r) => r.pipeline_id), pipelines),
    api.names('/api/v1/assets', runs.items.map((r) => r.asset_id), assets),
  ]);
  return { query, runs, pipelines, assets, error };
}

export async function loadRunsFilters(api: ApiClient) {
  const [pipelines, assets, scans] = await Promise.all([
    listAll(api, '/api/v1/pipelines'), listAll(api, '/api/v1/assets'), listAll(api, '/api/v1/scans'),
  ]);
  return { pipelines, assets, scans };
}

function runRow(r: Run, d: RunsData): Html {
  const pipeline = d.pipelines.get(r.pipeline_id);
  const asset = r.asset_id ? d.assets.get(r.asset_id) : null;
  const q = d.query as Record<string, string | undefined>;
  return h`<tr data-run-id="${r.id}" data-status="${r.status}">
    <td>${chip(r.status)}</td>
    <td><a href="/runs/${r.id}" aria-label="Run ${r.id.slice(0, 8)} of ${pipeline ?? 'a deleted pipeline'}">${shortId(r.id)}</a></td>
    <td><a class="filter-link" href="${hrefWith('/', q, { pipeline_id: r.pipeline_id, cursor: null })}" title="Only this pipeline's runs">${pipeline ?? r.pipeline_id.slice(0, 8)}</a></td>
    <td class="opt">${r.asset_id ? h`<a class="filter-link" href="${hrefWith('/', q, { asset_id: r.asset_id, cursor: null })}" title="Only this asset's runs">${asset ?? r.asset_id.slice(0, 8)}</a>` : h`<span class="muted">—</span>`}</td>
    <td class="opt">${r.trigger_type}${r.scan_id ? h` · <a class="filter-link" href="${hrefWith('/', q, { scan_id: r.scan_id, cursor: null })}" title="Only this scan's runs">scan</a>` : ''}${r.triggered_by ? h`<div class="muted small">${r.triggered_by}</div>` : ''}</td>
    <td class="opt">${time(r.started_at, 'not started')}</td>
    <td>${span(r.started_at, r.completed_at)}</td>
    <td class="num">${r.completed_steps}/${r.total_steps}${r.failed_steps ? h` <span class="bad" title="failed">✕${r.failed_steps}</span>` : ''}${r.skipped_steps ? h` <span class="muted" title="skipped">⤼${r.skipped_steps}</span>` : ''}</td>
    <td class="num">${r.total_findings}${r.new_findings ? h` <span class="muted small">(${r.new_findings} new)</span>` : ''}</td>
  </tr>`;
}

/** The live part: the table and its paging. */
export function runsRegions(d: RunsData): Html[] {
  const q = d.query as Record<string, string | undefined>;
  const table = d.runs.items.length === 0
    ? notice('info', d.query.cursor ? 'No more runs.' : 'No runs match. Start one with POST /api/v1/pipelines/{id}/run.')
    : h`<div class="table-wrap"><table class="runs">
      <caption class="visually-hidden">Runs, newest first</caption>
      <thead><tr><th scope="col">Status</th><th scope="col">Run</th><th scope="col">Pipeline</th><th scope="col" class="opt">Asset</th>
      <th scope="col" class="opt">Trigger</th><th scope="col" class="opt">Started</th><th scope="col">Duration</th><th scope="col" class="num">Steps</th><th scope="col" class="num">Findings</th></tr></thead>
      <tbody>${d.runs.items.map((r) => runRow(r, d))}</tbody>
    </table></div>`;
  const paging = h`<nav class="paging" aria-label="Pages">
    ${d.query.cursor ? h`<a href="${hrefWith('/', q, { cursor: null })}">« Newest</a>` : ''}
    ${d.runs.next_cursor ? h`<a href="${hrefWith('/', q, { cursor: d.runs.next_cursor })}" rel="next">Older »</a>` : ''}
  </nav>`;
  return [region('runs-table', h`${d.error ? notice('error', d.error) : ''}${table}${paging}`, 'div', h` data-first-page="${d.query.cursor ? 'false' : 'true'}"`)];
}

export function runsBody(d: RunsData, filters: { pipelines: Named[]; assets: Named[]; scans: Named[] }): Html {
  const opts = (xs: Named[]): Option[] => xs.map((x) => ({ value: x.id, label: x.name }));
  // A filter on something past the first 200 still shows as chosen.
  const withCurrent = (xs: Option[], id: string | undefined, names: Map<string, string>): Option[] =>
    id && !xs.some((o) => o.value === id) ? [...xs, { value: id, label: names.get(id) ?? id.slice(0, 8) }] : xs;
  const q = d.query;
  return h`<h1>Runs</h1>
  <form class="filters" method="get" action="/" aria-label="Filter runs">
    ${select('status', 'Status', RUN_STATUSES.map((s) => ({ value: s, label: s })), q.status)}
    ${select('pipeline_id', 'Pipeline', withCurrent(opts(filters.pipelines), q.pipeline_id, d.pipelines), q.pipeline_id)}
    ${select('asset_id', 'Asset', withCurrent(opts(filters.assets), q.asset_id, d.assets), q.asset_id)}
    ${select('scan_id', 'Scan', withCurrent(opts(filters.scans), q.scan_id, new Map()), q.scan_id)}
    <button type="submit">Filter</button>
    ${q.status || q.pipeline_id || q.asset_id || q.scan_id ? h`<a href="/">Clear</a>` : ''}
  </form>
  ${runsRegions(d)}`;
}
