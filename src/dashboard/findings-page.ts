// The findings page: counts by severity of what the filters select, the findings 50 a page,
// and triage: a new status with a reason, recorded in the finding's history.
import { ApiAnswer, type ApiClient } from './api-client.ts';
import { chip, h, hrefWith, notice, region, select, time, type Html } from './layout.ts';
import { whereOf, type Finding } from './run-page.ts';

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'];
export const FINDING_STATUSES = ['open', 'in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FINDINGS_PER_PAGE = 50;

type Page<T> = { items: T[]; next_cursor: string | null };
type Listed = Finding & { first_seen_at: string; last_seen_at: string; occurrences: number };
type Summary = { total: number; by_severity: Record<string, number>; by_status: Record<string, number> };

export type FindingsQuery = {
  status?: string; severity?: string; tool?: string; q?: string; asset_id?: string; pipeline_run_id?: string; sort?: string; cursor?: string;
};

export function findingsQueryOf(q: Record<string, string>): FindingsQuery {
  const out: FindingsQuery = {};
  const statuses = (q.status ?? '').split(',').filter((s) => FINDING_STATUSES.includes(s));
  if (statuses.length) out.status = statuses.join(',');
  if (SEVERITIES.includes(q.severity)) out.severity = q.severity;
  for (const k of ['tool', 'q'] as const) if (q[k]?.trim()) out[k] = q[k].trim().slice(0, 200);
  for (const k of ['asset_id', 'pipeline_run_id'] as const) if (UUID.test(q[k] ?? '')) out[k] = q[k].toLowerCase();
  if (['severity', 'last_seen', 'first_seen'].includes(q.sort)) out.sort = q.sort;
  if (q.cursor && /^[A-Za-z0-9_-]{1,500}$/.test(q.cursor)) out.cursor = q.cursor;
  return out;
}

export type FindingsData = { query: FindingsQuery; summary: Summary | null; findings: Page<Listed>; assets: Map<string, string>; error: string | null };

export async function loadFindings(api: ApiClient, query: FindingsQuery): Promise<FindingsData> {
  const { cursor, sort, ...filters } = query;
  try {
    const [summary, findings] = await Promise.all([
      api.get<Summary>('/api/v1/findings/summary', { ...filters, severity: undefined }),
      api.get<Page<Listed>>('/api/v1/findings', { ...query, sort: sort ?? 'severity', limit: FINDINGS_PER_PAGE, cursor }),
    ]);
    const assets = await api.names('/api/v1/assets', findings.items.map((f) => f.asset_id));
    return { query, summary, findings, assets, error: null };
  } catch (err) {
    // A filter the API refuses (text too short to search, say): its words, not a broken page.
    if (err instanceof ApiAnswer && err.status === 400) {
      return { query, summary: null, findings: { items: [], next_cursor: null }, assets: new Map(), error: err.message };
    }
    throw err;
  }
}

function triageForm(f: Listed): Html {
  return h`<form class="triage" data-api-method="PATCH" data-api-path="/api/v1/findings/${f.id}">
    <label><span class="visually-hidden">New status of “${f.title}”</span>
      <select name="status">${FINDING_STATUSES.map((s) => h`<option value="${s}"${s === f.status ? h` selected` : ''}>${s.replace(/_/g, ' ')}</option>`)}</select></label>
    <label><span class="visually-hidden">Reason</span><input name="reason" type="text" maxlength="1000" placeholder="reason" autocomplete="off"></label>
    <button type="submit">Set</button>
    <output class="form-error" role="alert"></output>
  </form>`;
}

function row(f: Listed, d: FindingsData): Html {
  return h`<tr data-finding-id="${f.id}" data-status="${f.status}">
    <td>${chip(f.severity)}</td>
    <td>${f.title}<div class="muted small">${f.tool}${f.rule_id ? ` · ${f.rule_id}` : ''} · ${f.occurrences}× · last ${time(f.last_seen_at)}</div></td>
    <td class="opt small">${whereOf(f)}${f.asset_id ? h`<div class="muted">${d.assets.get(f.asset_id) ?? ''}</div>` : ''}</td>
    <td class="finding-status">${chip(f.status)}${f.last_run_id ? h`<div class="small"><a href="/runs/${f.last_run_id}">last run</a></div>` : ''}</td>
    <td>${triageForm(f)}</td>
  </tr>`;
}

export function findingsRegions(d: FindingsData): Html[] {
  const q = d.query as Record<string, string | undefined>;
  const counts = d.summary
    ? h`<ul class="counts" aria-label="Findings by severity">${SEVERITIES.map((s) => h`<li><a href="${hrefWith('/findings', q, { severity: d.query.severity === s ? null : s, cursor: null })}"${d.query.severity === s ? h` aria-current="true"` : ''}>${chip(s, `${d.summary!.by_severity[s] ?? 0} ${s}`)}</a></li>`)}
        <li class="muted">${d.summary.total} in all</li></ul>`
    : '';
  const table = d.findings.items.length === 0
    ? notice('info', 'No findings match.')
    : h`<div class="table-wrap"><table class="findings">
      <thead><tr><th scope="col">Severity</th><th scope="col">Finding</th><th scope="col" class="opt">Where</th><th scope="col">Status</th><th scope="col">Triage</th></tr></thead>
      <tbody>${d.findings.items.map((f) => row(f, d))}</tbody></table></div>`;
  const paging = h`<nav class="paging" aria-label="Pages">
    ${d.query.cursor ? h`<a href="${hrefWith('/findings', q, { cursor: null })}">« First</a>` : ''}
    ${d.findings.next_cursor ? h`<a href="${hrefWith('/findings', q, { cursor: d.findings.next_cursor })}" rel="next">More »</a>` : ''}
  </nav>`;
  return [region('findings-list', h`${d.error ? notice('error', d.error) : ''}${counts}${table}${paging}`, 'div')];
}

export function findingsBody(d: FindingsData): Html {
  const q = d.query;
  return h`<h1>Findings</h1>
  <form class="filters" method="get" action="/findings" aria-label="Filter findings">
    ${select('status', 'Status', [{ value: 'open,in_progress', label: 'open or in progress' }, ...FINDING_STATUSES.map((s) => ({ value: s, label: s.replace(/_/g, ' ') }))], q.status)}
    ${select('severity', 'Severity', SEVERITIES.map((s) => ({ value: s, label: s })), q.severity)}
    <label>Tool <input name="tool" value="${q.tool ?? ''}" size="10" autocomplete="off"></label>
    <label>Text <input name="q" type="search" value="${q.q ?? ''}" size="14" autocomplete="off"></label>
    ${select('sort', 'Sort', [{ value: 'last_seen', label: 'last seen' }, { value: 'first_seen', label: 'newest' }], q.sort, 'most severe')}
    ${q.pipeline_run_id ? h`<input type="hidden" name="pipeline_run_id" value="${q.pipeline_run_id}"><span class="small">of run <a href="/runs/${q.pipeline_run_id}">${q.pipeline_run_id.slice(0, 8)}</a></span>` : ''}
    ${q.asset_id ? h`<input type="hidden" name="asset_id" value="${q.asset_id}">` : ''}
    <button type="submit">Filter</button>
    <a href="/findings">Clear</a>
  </form>
  ${findingsRegions(d)}`;
}
