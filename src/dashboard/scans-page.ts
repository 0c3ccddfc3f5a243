// The scans page: each scan's schedule, its next fire in the scan's own time zone, its last
// fires (the runs each made, what each skipped and why), and pause/resume.
import type { ApiClient } from './api-client.ts';
import { chip, h, notice, region, time, type Html } from './layout.ts';

type Scan = {
  id: string; name: string; pipeline_id: string; schedule_type: string; cron_expression: string | null; timezone: string;
  status: string; next_run_at: string | null; last_run_at: string | null; managed_by: string | null; max_active_runs: number | null;
};
type Fire = {
  id: number; trigger_type: string; triggered_by: string | null; due_at: string | null; fired_at: string;
  run_ids: string[]; waiting_runs: number; skipped: { asset_id: string | null; reason: string }[];
};
type Page<T> = { items: T[]; next_cursor: string | null };

/** Fires shown per scan: what an operator checks ("did last night's run happen, and what did it skip?"). */
const FIRES_SHOWN = 3;

export type ScansData = { scans: Page<Scan>; fires: Map<string, Fire[]>; pipelines: Map<string, string>; assets: Map<string, string> };

export async function loadScans(api: ApiClient): Promise<ScansData> {
  const scans = await api.get<Page<Scan>>('/api/v1/scans', { limit: 200 });
  const fires = new Map<string, Fire[]>();
  const pipelines = new Map<string, string>();
  await Promise.all([
    ...scans.items.map(async (s) => fires.set(s.id, (await api.get<Page<Fire>>(`/api/v1/scans/${s.id}/fires`, { limit: FIRES_SHOWN })).items)),
    api.names('/api/v1/pipelines', scans.items.map((s) => s.pipeline_id), pipelines),
  ]);
  const assets = await api.names('/api/v1/assets', [...fires.values()].flat().flatMap((f) => f.skipped.map((k) => k.asset_id)));
  return { scans, fires, pipelines, assets };
}

/** An instant in the scan's time zone, as its schedule is written ("02:00 Europe/Berlin"). */
export function inZone(iso: string, timeZone: string): string {
  try {
    return new Intl.DateTimeFormat('en-GB', {
      timeZone, weekday: 'short', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', timeZoneName: 'short',
    }).format(new Date(iso));
  } catch {
    return iso;
  }
}

function schedule(s: Scan): string {
  if (s.schedule_type === 'manual') return 'manual';
  return `${s.schedule_type}${s.cron_expression ? ` (${s.cron_expression})` : ''} · ${s.timezone}`;
}

function fireItem(f: Fire, d: ScansData): Html {
  const runs = f.run_ids.length;
  return h`<li>
    ${time(f.fired_at)} <span class="muted small">${f.trigger_type}</span>:
    ${runs ? h`<a href="/runs/${f.run_ids[0]}">${runs} run${runs === 1 ? '' : 's'}</a>` : 'no run'}${f.waiting_runs ? `, ${f.waiting_runs} waiting` : ''}${f.skipped.length ? h`, <span class="warn">${f.skipped.length} skipped</span>
      <ul class="skips">${f.skipped.map((k) => h`<li>${k.asset_id ? d.assets.get(k.asset_id) ?? k.asset_id.slice(0, 8) : 'a target'}: ${k.reason}</li>`)}</ul>` : ''}
  </li>`;
}

function actions(s: Scan): Html {
  if (s.managed_by === 'config') return h`<span class="muted small">managed by the config file</span>`;
  if (s.managed_by === 'pipeline-trigger') return h`<span class="muted small">a schedule trigger of its pipeline</span>`;
  const to = s.status === 'active' ? 'paused' : s.status === 'paused' ? 'active' : null;
  if (!to) return h``;
  return h`<form data-api-method="PUT" data-api-path="/api/v1/scans/${s.id}">
    <input type="hidden" name="status" value="${to}">
    <button type="submit" aria-label="${to === 'paused' ? 'Pause' : 'Resume'} ${s.name}">${to === 'paused' ? 'Pause' : 'Resume'}</button>
    <output class="form-error" role="alert"></output>
  </form>`;
}

function scanRow(s: Scan, d: ScansData): Html {
  const fires = d.fires.get(s.id) ?? [];
  return h`<tr data-scan-id="${s.id}" data-status="${s.status}">
    <th scope="row">${s.name}<div class="muted small"><a href="/?scan_id=${s.id}">runs</a> of ${d.pipelines.get(s.pipeline_id) ?? 'a deleted pipeline'}</div></th>
    <td>${chip(s.status)}</td>
    <td class="opt">${schedule(s)}</td>
    <td>${s.next_run_at ? h`<time class="in-zone" datetime="${s.next_run_at}">${inZone(s.next_run_at, s.timezone)}</time>` : h`<span class="muted">${s.status === 'active' ? 'not scheduled' : s.status}</span>`}</td>
    <td>${fires.length ? h`<ul class="fires">${fires.map((f) => fireItem(f, d))}</ul>` : h`<span class="muted">never fired</span>`}</td>
    <td>${actions(s)}</td>
  </tr>`;
}

export function scansRegions(d: ScansData): Html[] {
  const table = d.scans.items.length === 0
    ? notice('info', 'No scans yet. Create one with POST /api/v1/scans.')
    : h`<div class="table-wrap"><table class="scans">
      <thead><tr><th scope="col">Scan</th><th scope="col">Status</th><th scope="col" class="opt">Schedule</th><th scope="col">Next fire (scan's time zone)</th><th scope="col">Last fires</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${d.scans.items.map((s) => scanRow(s, d))}</tbody>
    </table></div>`;
  return [region('scans-table', table, 'div')];
}

export function scansBody(d: ScansData): Html {
  return h`<h1>Scans</h1>${scansRegions(d)}`;
}
