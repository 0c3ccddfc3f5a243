// A run's page: what it is and does now (cancel and retry when they can be done), its DAG,
// the selected step (its state, attempt, agent, why it was skipped or failed, its output
// tailing while it runs, its findings), the timeline of every attempt, the run's findings.
import type { ApiClient } from './api-client.ts';
import { dagSvg, stateOf } from './dag.ts';
import { chip, h, notice, region, shortId, span, time, type Html } from './layout.ts';
import { waterfall, type Command, type StepRun } from './waterfall.ts';
import type { Run } from './runs-page.ts';

type RunStep = StepRun & {
  agent_id: string | null; command_id: string | null; condition_evaluated: boolean; condition_result: boolean | null;
  findings_count: number; error_code: string | null; order: number;
};
type RunWithSteps = Run & { pipeline_version: number; context: Record<string, unknown>; step_runs: RunStep[] };
export type Finding = {
  id: string; title: string; severity: string; status: string; tool: string; rule_id: string | null; type: string;
  location: { path?: string; start_line?: number; url?: string; host?: string; port?: number } | null;
  last_run_id: string | null; last_step_key: string | null; new?: boolean; asset_id: string | null;
};
type Page<T> = { items: T[]; next_cursor: string | null };

/** The run's findings shown on its page (most severe first); the findings page has them all. */
const FINDINGS_SHOWN = 100;
const STEP_KEY = /^[A-Za-z0-9_.-]{1,100}$/;
const ENDED_BADLY = new Set(['failed', 'timeout', 'cancelled']);

export type RunData = {
  run: RunWithSteps;
  pipelineName: string | null;
  assetName: string | null;
  commands: Command[];
  findings: Page<Finding>;
  selected: RunStep | null;
  agentName: string | null;
};

/** The step to show: the one asked for, else the first running, failed or queued step, else the first. */
function selectedStep(steps: RunStep[], asked: string | undefined): RunStep | null {
  if (asked && STEP_KEY.test(asked)) {
    const s = steps.find((x) => x.step_key === asked);
    if (s) return s;
  }
  for (const status of ['running', 'failed', 'timeout', 'queued']) {
    const s = steps.find((x) => x.status === status);
    if (s) return s;
  }
  return steps[0] ?? null;
}

export async function loadRun(api: ApiClient, runId: string, askedStep: string | undefined): Promise<RunData> {
  const run = await api.get<RunWithSteps>(`/api/v1/pipeline-runs/${runId}`);
  run.step_runs.sort((a, b) => a.order - b.order);
  const selected = selectedStep(run.step_runs, askedStep);
  const [pipeline, asset, commands, findings, agent] = await Promise.all([
    api.find<{ name: string }>(`/api/v1/pipelines/${run.pipeline_id}?version=${run.pipeline_version}`),
    run.asset_id ? api.find<{ name: string }>(`/api/v1/assets/${run.asset_id}`) : null,
    // Every attempt of a 50-step run with retries fits the API's largest page.
    api.get<Page<Command>>('/api/v1/commands', { pipeline_run_id: run.id, limit: 200 }),
    api.get<Page<Finding>>(`/api/v1/pipeline-runs/${run.id}/findings`, { limit: FINDINGS_SHOWN }),
    selected?.agent_id ? api.find<{ name: string }>(`/api/v1/agents/${selected.agent_id}`) : null,
  ]);
  return {
    run, pipelineName: pipeline?.name ?? null, assetName: asset?.name ?? null, commands: commands.items, findings,
    selected, agentName: agent?.name ?? null,
  };
}

function canRetry(run: RunWithSteps): boolean {
  return !['pending', 'running'].includes(run.status) && run.step_runs.some((s) => ENDED_BADLY.has(s.status));
}

function summary(d: RunData): Html {
  const r = d.run;
  const actions = [
    ['pending', 'running'].includes(r.status)
      ? h`<form data-api-method="POST" data-api-path="/api/v1/pipeline-runs/${r.id}/cancel"><button type="submit" class="danger" id="cancel-run">Cancel run</button></form>` : '',
    canRetry(r)
      ? h`<form data-api-method="POST" data-api-path="/api/v1/pipeline-runs/${r.id}/retry"><button type="submit" id="retry-run">Retry failed steps</button></form>` : '',
  ];
  return h`<div class="run-title">
      <h1>${d.pipelineName ?? 'Deleted pipeline'} <span class="muted">run</span> ${shortId(r.id)}</h1>
      <span id="run-status" data-status="${r.status}">${chip(r.status)}</span>
      <div class="actions">${actions}<output class="form-error" role="alert"></output></div>
    </div>
    <dl class="facts">
      <div><dt>Asset</dt><dd>${r.asset_id ? h`<a href="/?asset_id=${r.asset_id}">${d.assetName ?? r.asset_id.slice(0, 8)}</a>` : '—'}</dd></div>
      <div><dt>Trigger</dt><dd>${r.trigger_type}${r.triggered_by ? h` (${r.triggered_by})` : ''}${r.scan_id ? h` · <a href="/?scan_id=${r.scan_id}">scan</a>` : ''}</dd></div>
      <div><dt>Started</dt><dd>${time(r.started_at, 'not started')}</dd></div>
      <div><dt>Duration</dt><dd>${span(r.started_at, r.completed_at)}</dd></div>
      <div><dt>Steps</dt><dd>${r.completed_steps} of ${r.total_steps} completed${r.failed_steps ? h`, <span class="bad">${r.failed_steps} failed</span>` : ''}${r.skipped_steps ? `, ${r.skipped_steps} skipped` : ''}</dd></div>
      <div><dt>Findings</dt><dd><a href="/findings?pipeline_run_id=${r.id}">${r.total_findings}</a>${r.new_findings ? ` (${r.new_findings} new)` : ''}</dd></div>
      <div><dt>Pipeline version</dt><dd>${r.pipeline_version}</dd></div>
    </dl>
    ${r.error_message ? notice('error', r.error_message) : ''}`;
}

function findingRows(items: Finding[], withStep: boolean): Html {
  return h`<div class="table-wrap"><table class="findings">
    <thead><tr><th scope="col">Severity</th><th scope="col">Finding</th><th scope="col" class="opt">Where</th><th scope="col">Status</th>${withStep ? h`<th scope="col" class="opt">Step</th>` : ''}</tr></thead>
    <tbody>${items.map((f) => h`<tr data-finding-id="${f.id}">
      <td>${chip(f.severity)}</td>
      <td>${f.title}${f.new ? h` <span class="badge new">new</span>` : ''}<div class="muted small">${f.tool}${f.rule_id ? ` · ${f.rule_id}` : ''}</div></td>
      <td class="opt small">${whereOf(f)}</td>
      <td>${chip(f.status)}</td>
      ${withStep ? h`<td class="opt">${f.last_step_key ?? '—'}</td>` : ''}
    </tr>`)}</tbody>
  </table></div>`;
}

export function whereOf(f: Pick<Finding, 'location'>): string {
  const l = f.location ?? {};
  if (l.path) return l.start_line ? `${l.path}:${l.start_line}` : l.path;
  if (l.url) return l.url;
  if (l.host) return l.port ? `${l.host}:${l.port}` : l.host;
  return '—';
}

function stepDetail(d: RunData): Html {
  const s = d.selected;
  if (!s) return notice('info', 'This run has no steps.');
  const findings = d.findings.items.filter((f) => f.last_step_key === s.step_key && f.last_run_id === d.run.id);
  const condition = !s.condition_evaluated ? 'not evaluated yet' : s.condition_result === false ? 'not met' : 'met';
  return h`<h2>${s.name} ${chip(stateOf(s))}</h2>
    <dl class="facts">
      <div><dt>Key</dt><dd><code>${s.step_key}</code></dd></div>
      <div><dt>Attempt</dt><dd>${s.attempt} of ${s.max_attempts}${s.retry_at ? h`, next at ${time(s.retry_at)}` : ''}</dd></div>
      <div><dt>Agent</dt><dd>${s.agent_id ? d.agentName ?? s.agent_id.slice(0, 8) : '—'}</dd></div>
      <div><dt>Queued</dt><dd>${time(s.queued_at)}</dd></div>
      <div><dt>Started</dt><dd>${time(s.started_at)}</dd></div>
      <div><dt>Ran</dt><dd>${span(s.started_at, s.completed_at)}</dd></div>
      <div><dt>Condition</dt><dd>${condition}</dd></div>
      <div><dt>Findings</dt><dd>${s.findings_count}</dd></div>
      ${s.depends_on.length ? h`<div><dt>After</dt><dd>${s.depends_on.join(', ')}</dd></div>` : ''}
    </dl>
    ${s.status === 'skipped' ? notice('info', `Skipped: ${s.skip_reason ?? 'no reason given'}`) : ''}
    ${s.error_message || s.error_code
      ? notice('error', `${['queued', 'running'].includes(s.status) ? `Attempt ${s.attempt - 1} ended: ` : ''}${s.error_code ? `${s.error_code}: ` : ''}${s.error_message ?? ''}`)
      : ''}
    ${findings.length ? h`<h3>Its findings</h3>${findingRows(findings, false)}` : ''}`;
}

export function runRegions(d: RunData): Html[] {
  const s = d.selected;
  const hrefOf = (key: string) => `?step=${encodeURIComponent(key)}`;
  return [
    region('run-summary', summary(d), 'section', h` aria-label="Run"`),
    region('run-dag', h`<div class="dag-wrap" tabindex="-1">${dagSvg(d.run.step_runs, s?.step_key ?? null, hrefOf)}</div>
      <p class="legend" aria-hidden="true">${['pending', 'queued', 'running', 'completed', 'failed', 'timeout', 'cancelled', 'skipped', 'retrying'].map((x) => h`<span class="chip s-${x}">${x}</span> `)}</p>`,
    'section', h` aria-label="Steps"`),
    region('step-detail', stepDetail(d), 'div',
      h` data-step="${s?.step_key ?? ''}" data-state="${s ? stateOf(s) : ''}" data-status="${s?.status ?? ''}" data-attempt="${s?.attempt ?? ''}"`),
    region('run-waterfall', waterfall(d.run.step_runs, d.commands, d.run), 'section', h` aria-label="Timeline"`),
    region('run-findings', h`<h2>Findings of this run</h2>${d.findings.items.length
      ? h`${findingRows(d.findings.items, true)}${d.findings.next_cursor ? h`<p><a href="/findings?pipeline_run_id=${d.run.id}">All of this run's findings</a></p>` : ''}`
      : notice('info', 'None yet.')}`, 'section', h` aria-label="Findings"`),
  ];
}

export function runBody(d: RunData): Html {
  const [summaryRegion, dag, detail, timeline, findings] = runRegions(d);
  return h`<p class="crumbs"><a href="/">Runs</a> ›</p>
    ${summaryRegion}
    ${dag}
    <div class="columns">
      <section class="step" aria-label="Selected step">
        ${detail}
        <h3 id="output-heading">Output${d.selected ? h` <span class="muted small" id="output-state"></span>` : ''}</h3>
        <pre id="step-output" class="output" tabindex="0" aria-labelledby="output-heading" data-run="${d.run.id}"></pre>
      </section>
      ${timeline}
    </div>
    ${findings}`;
}
