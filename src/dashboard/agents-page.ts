// The agents page: each agent's health and status, version and host, the tools it has been
// given (and what its heartbeat says it has), what it runs now, and its last heartbeat.
import type { ApiClient } from './api-client.ts';
import { chip, h, notice, region, time, type Html } from './layout.ts';

type Agent = {
  id: string; name: string; status: string; health: string; version: string | null; hostname: string | null;
  tools: string[]; capabilities: string[]; scanners: string[]; max_concurrent_jobs: number; active_commands: number;
  last_heartbeat_at: string | null; last_seen_at: string | null;
  last_report: { message?: string | null; cpu_percent?: number | null; memory_percent?: number | null } | null;
};
type Command = { id: string; agent_id: string | null; pipeline_run_id: string | null; tool: string | null; status: string; payload: { step_key?: string; step_name?: string } };
type Page<T> = { items: T[]; next_cursor: string | null };

export type AgentsData = { agents: Page<Agent>; running: Map<string, Command[]> };

export async function loadAgents(api: ApiClient): Promise<AgentsData> {
  const [agents, acknowledged, running] = await Promise.all([
    api.get<Page<Agent>>('/api/v1/agents', { limit: 200 }),
    api.get<Page<Command>>('/api/v1/commands', { status: 'acknowledged', limit: 200 }),
    api.get<Page<Command>>('/api/v1/commands', { status: 'running', limit: 200 }),
  ]);
  const byAgent = new Map<string, Command[]>();
  for (const c of [...running.items, ...acknowledged.items]) {
    if (c.agent_id) byAgent.set(c.agent_id, [...(byAgent.get(c.agent_id) ?? []), c]);
  }
  return { agents, running: byAgent };
}

function agentRow(a: Agent, work: Command[]): Html {
  const missing = a.scanners.length ? a.tools.filter((t) => !a.scanners.includes(t)) : [];
  return h`<tr data-agent-id="${a.id}" data-health="${a.health}">
    <th scope="row">${a.name}<div class="muted small">${a.hostname ?? ''}</div></th>
    <td>${chip(a.health)}${a.status !== 'active' ? h` ${chip(a.status)}` : ''}</td>
    <td class="opt">${a.version ?? '—'}</td>
    <td>${a.tools.length ? a.tools.map((t) => h`<code class="tool${missing.includes(t) ? ' missing' : ''}"${missing.includes(t) ? h` title="Not among the tools its last heartbeat reported"` : ''}>${t}</code> `) : h`<span class="muted">any (by capability)</span>`}
      ${a.capabilities.length ? h`<div class="muted small">capabilities: ${a.capabilities.join(', ')}</div>` : ''}</td>
    <td>${work.length
      ? h`<ul class="plain">${work.map((c) => h`<li>${c.pipeline_run_id ? h`<a href="/runs/${c.pipeline_run_id}?step=${encodeURIComponent(c.payload?.step_key ?? '')}">${c.payload?.step_name ?? c.payload?.step_key ?? 'a step'}</a>` : 'a command'} <span class="muted small">${c.tool ?? ''} · ${c.status}</span></li>`)}</ul>`
      : h`<span class="muted">idle</span>`}
      <div class="muted small">${a.active_commands} of ${a.max_concurrent_jobs} slots</div></td>
    <td>${time(a.last_heartbeat_at, 'never')}${a.last_heartbeat_at ? h` <span class="muted small" data-ago="${a.last_heartbeat_at}"></span>` : ''}</td>
  </tr>`;
}

export function agentsRegions(d: AgentsData): Html[] {
  const table = d.agents.items.length === 0
    ? notice('info', 'No agents yet. Register one with POST /api/v1/agents and run it with npm run agent.')
    : h`<div class="table-wrap"><table class="agents">
      <thead><tr><th scope="col">Agent</th><th scope="col">Health</th><th scope="col" class="opt">Version</th><th scope="col">Tools</th><th scope="col">Runs now</th><th scope="col">Last heartbeat</th></tr></thead>
      <tbody>${d.agents.items.map((a) => agentRow(a, d.running.get(a.id) ?? []))}</tbody>
    </table></div>`;
  return [region('agents-table', table, 'div')];
}

export function agentsBody(d: AgentsData): Html {
  return h`<h1>Agents</h1>${agentsRegions(d)}`;
}
