// A run's DAG as SVG, laid out left to right by @dagrejs/dagre: the maintained successor of
// dagre, the layered (Sugiyama) layout Argo, Airflow and GitLab-style graph views draw
// with. It ranks steps by dependency, orders each rank to cut edge crossings and routes the
// edges; writing that well is a project of its own. The layout runs here, in the server, so
// the page needs no script to show the graph and live updates only change its colours. A
// layout depends only on the steps and their dependencies, so it is kept (LAYOUTS of them)
// for the next render of any run of the same pipeline version.
import { Graph, layout } from '@dagrejs/dagre';
import { h, type Html } from './layout.ts';

export type DagStep = {
  step_key: string;
  name: string;
  status: string;
  depends_on: string[];
  attempt: number;
  max_attempts: number;
  skip_reason: string | null;
  error_message: string | null;
  retry_at: string | null;
};

const NODE_W = 184;
const NODE_H = 58;
const LAYOUTS = 200;

type Layout = {
  width: number;
  height: number;
  nodes: Map<string, { x: number; y: number }>;
  edges: { from: string; to: string; points: { x: number; y: number }[] }[];
};

const layouts = new Map<string, Layout>();

export function layoutOf(steps: Pick<DagStep, 'step_key' | 'depends_on'>[]): Layout {
  const signature = JSON.stringify(steps.map((s) => [s.step_key, s.depends_on]));
  const known = layouts.get(signature);
  if (known) {
    // Most recently used last: the oldest is dropped first.
    layouts.delete(signature);
    layouts.set(signature, known);
    return known;
  }
  const g = new Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 18, ranksep: 56, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const keys = new Set(steps.map((s) => s.step_key));
  for (const s of steps) g.setNode(s.step_key, { width: NODE_W, height: NODE_H });
  for (const s of steps) for (const dep of s.depends_on) if (keys.has(dep)) g.setEdge(dep, s.step_key);
  layout(g);
  const graph = g.graph();
  const result: Layout = {
    width: Math.ceil(graph.width ?? NODE_W),
    height: Math.ceil(graph.height ?? NODE_H),
    nodes: new Map(steps.map((s) => {
      const n = g.node(s.step_key);
      return [s.step_key, { x: n.x ?? 0, y: n.y ?? 0 }];
    })),
    edges: g.edges().map((e: { v: string; w: string }) => ({ from: e.v, to: e.w, points: g.edge(e).points ?? [] })),
  };
  layouts.set(signature, result);
  if (layouts.size > LAYOUTS) layouts.delete(layouts.keys().next().value!);
  return result;
}

/** What a node's colour stands for: the step's status, or 'retrying' while a retry waits. */
export function stateOf(s: Pick<DagStep, 'status' | 'retry_at'>): string {
  return s.status === 'queued' && s.retry_at ? 'retrying' : s.status;
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function detailOf(s: DagStep): string {
  if (s.status === 'skipped') return s.skip_reason ? `skipped: ${s.skip_reason}` : 'skipped';
  if (['failed', 'timeout', 'cancelled'].includes(s.status) && s.error_message) return s.error_message;
  return '';
}

function stateLine(s: DagStep): string {
  const state = stateOf(s).replace(/_/g, ' ');
  return s.max_attempts > 1 || s.attempt > 1 ? `${state} · attempt ${s.attempt}/${s.max_attempts}` : state;
}

/**
 * The SVG: one link per step (a keyboard stop that selects it), coloured by its state
 * through its class, the state also in words (never colour alone), the whole text in its
 * title. `selected` is outlined.
 */
export function dagSvg(steps: DagStep[], selected: string | null, hrefOf: (key: string) => string): Html {
  const l = layoutOf(steps);
  const edge = (e: Layout['edges'][number]) => {
    const d = e.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
    return h`<path class="edge" d="${d}" marker-end="url(#arrow)" data-from="${e.from}" data-to="${e.to}"/>`;
  };
  const node = (s: DagStep) => {
    const p = l.nodes.get(s.step_key)!;
    const x = p.x - NODE_W / 2;
    const y = p.y - NODE_H / 2;
    const state = stateOf(s);
    const detail = detailOf(s);
    const label = `${s.name} (${s.step_key}): ${stateLine(s)}${detail ? `. ${detail}` : ''}`;
    return h`<a href="${hrefOf(s.step_key)}" id="node-${s.step_key}" class="node s-${state}${s.step_key === selected ? ' selected' : ''}" data-step="${s.step_key}" data-state="${state}" data-attempt="${s.attempt}" aria-label="${label}"${s.step_key === selected ? h` aria-current="true"` : ''}>
      <title>${label}</title>
      <rect x="${x}" y="${y}" width="${NODE_W}" height="${NODE_H}" rx="8"/>
      <text x="${x + 10}" y="${y + 20}" class="name">${clip(s.name, 22)}</text>
      <text x="${x + 10}" y="${y + 36}" class="state">${stateLine(s)}</text>
      ${detail ? h`<text x="${x + 10}" y="${y + 50}" class="detail">${clip(detail, 28)}</text>` : ''}
    </a>`;
  };
  return h`<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="${l.width}" height="${l.height}" viewBox="0 0 ${l.width} ${l.height}" role="group" aria-label="The run's steps and their dependencies, left to right">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>
    <g class="edges">${l.edges.map(edge)}</g>
    <g class="nodes">${steps.map(node)}</g>
  </svg>`;
}
