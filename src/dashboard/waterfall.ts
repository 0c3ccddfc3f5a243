// A run's timeline: per step, each attempt's queue wait (from its command's creation until
// an agent started it) and its run time, on one time axis from the run's start. Bars are SVG
// rectangles positioned by attributes (no inline styles: the page's CSP allows none).
import { formatDuration, h, type Html } from './layout.ts';
import { stateOf, type DagStep } from './dag.ts';

export type StepRun = DagStep & { id: string; queued_at: string | null; started_at: string | null; completed_at: string | null };

export type Command = {
  id: string; step_run_id: string | null; attempt: number; status: string; agent_id: string | null;
  created_at: string; acknowledged_at: string | null; started_at: string | null; completed_at: string | null;
};

const WIDTH = 1000;
const ACTIVE = new Set(['pending', 'acknowledged', 'running']);
const ms = (iso: string | null) => (iso ? Date.parse(iso) : null);

type Segment = { attempt: number; status: string; waitFrom: number; waitTo: number; runFrom: number | null; runTo: number | null };

function segmentsOf(commands: Command[], now: number): Segment[] {
  return commands
    .sort((a, b) => a.attempt - b.attempt || Date.parse(a.created_at) - Date.parse(b.created_at))
    .map((c) => {
      const active = ACTIVE.has(c.status);
      const began = ms(c.started_at) ?? ms(c.acknowledged_at);
      const ended = ms(c.completed_at) ?? (active ? now : null);
      const waitFrom = ms(c.created_at)!;
      return {
        attempt: c.attempt, status: c.status, waitFrom,
        waitTo: began ?? ended ?? waitFrom,
        runFrom: began,
        runTo: began === null ? null : (ended ?? began),
      };
    });
}

export function waterfall(steps: StepRun[], commands: Command[], run: { started_at: string | null; created_at: string; completed_at: string | null }): Html {
  const now = Date.now();
  const byStep = new Map<string, Command[]>();
  for (const c of commands) if (c.step_run_id) byStep.set(c.step_run_id, [...(byStep.get(c.step_run_id) ?? []), c]);
  const rows = steps.map((s) => ({ step: s, segments: segmentsOf(byStep.get(s.id) ?? [], now) }));
  const starts = rows.flatMap((r) => r.segments.map((g) => g.waitFrom));
  const from = Math.min(ms(run.started_at) ?? ms(run.created_at)!, ...starts);
  const ends = rows.flatMap((r) => r.segments.map((g) => Math.max(g.waitTo, g.runTo ?? 0)));
  const to = Math.max(from + 1000, ms(run.completed_at) ?? now, ...ends);
  const x = (t: number) => ((t - from) / (to - from)) * WIDTH;
  const bar = (cls: string, a: number, b: number, title: string) =>
    h`<rect class="${cls}" x="${x(a).toFixed(1)}" y="2" width="${Math.max(2, x(b) - x(a)).toFixed(1)}" height="12"><title>${title}</title></rect>`;

  const row = (r: (typeof rows)[number]) => {
    const s = r.step;
    const waited = r.segments.reduce((n, g) => n + (g.waitTo - g.waitFrom), 0) / 1000;
    const ran = r.segments.reduce((n, g) => n + (g.runTo !== null && g.runFrom !== null ? g.runTo - g.runFrom : 0), 0) / 1000;
    const words = r.segments.length === 0
      ? stateOf(s).replace(/_/g, ' ')
      : `${r.segments.length > 1 ? `${r.segments.length} attempts · ` : ''}waited ${formatDuration(waited)} · ran ${formatDuration(ran)}`;
    return h`<tr data-step="${s.step_key}" data-state="${stateOf(s)}">
      <th scope="row"><a href="?step=${encodeURIComponent(s.step_key)}">${s.name}</a></th>
      <td class="wf-cell"><svg class="wf-bars" viewBox="0 0 ${WIDTH} 16" preserveAspectRatio="none" aria-hidden="true">
        ${r.segments.map((g) => h`${bar('wait', g.waitFrom, g.waitTo, `attempt ${g.attempt}: waited ${formatDuration((g.waitTo - g.waitFrom) / 1000)} in the queue`)}${g.runFrom !== null ? bar(`run s-${g.status}`, g.runFrom, g.runTo!, `attempt ${g.attempt}: ran ${formatDuration((g.runTo! - g.runFrom) / 1000)} (${g.status})`) : ''}`)}
      </svg></td>
      <td class="wf-words">${words}</td>
    </tr>`;
  };
  return h`<table class="waterfall">
    <caption>Queue wait <span class="key wait" aria-hidden="true"></span> and run time <span class="key run" aria-hidden="true"></span> per step, over ${formatDuration((to - from) / 1000)}</caption>
    <thead class="visually-hidden"><tr><th scope="col">Step</th><th scope="col">Timeline</th><th scope="col">Times</th></tr></thead>
    <tbody>${rows.map(row)}</tbody>
  </table>`;
}
