// Test helpers in the domain's words: tenants, agents, pipelines, runs, and agents that poll
// and report over the real HTTP app. Time control moves deadlines and job run_at to now().
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ADMIN_TOKEN, type Harness } from './harness.ts';

export const FULL_SECURITY_SCAN = JSON.parse(
  readFileSync(new URL('../fixtures/full-security-scan.json', import.meta.url), 'utf8'),
) as Record<string, any>;

export type Tenant = { id: string; token: string };

export async function createTenant(h: Harness, name = `tenant-${Math.random().toString(36).slice(2, 10)}`): Promise<Tenant> {
  const res = await h.request('POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return { id: res.body.tenant.id, token: res.body.token };
}

export async function createAsset(h: Harness, t: Tenant, body: Record<string, unknown>): Promise<Record<string, any>> {
  const res = await h.request('POST', '/api/v1/assets', { token: t.token, body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

export async function createPipeline(h: Harness, t: Tenant, doc: Record<string, unknown>): Promise<Record<string, any>> {
  const res = await h.request('POST', '/api/v1/pipelines', { token: t.token, body: doc });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

export async function startRun(h: Harness, t: Tenant, pipelineId: string, body: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const res = await h.request('POST', `/api/v1/pipelines/${pipelineId}/run`, { token: t.token, body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

export async function getRun(h: Harness, t: Tenant, runId: string): Promise<Record<string, any>> {
  const res = await h.request('GET', `/api/v1/pipeline-runs/${runId}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/** step_key → step run, from a run with step_runs. */
export function stepsByKey(run: Record<string, any>): Record<string, Record<string, any>> {
  return Object.fromEntries((run.step_runs as Record<string, any>[]).map((s) => [s.step_key, s]));
}

export type CommandInfo = {
  id: string;
  status: string;
  attempt: number;
  agent_id: string | null;
  error_code: string | null;
  step_key: string;
  claim_expires_at: Date | null;
  /** Seconds until the command's deadline. */
  expires_in: number;
};

/** A run's commands (optionally of one step), in creation order, from the database. */
export async function runCommands(h: Harness, runId: string, stepKey?: string): Promise<CommandInfo[]> {
  const { rows } = await h.pool.query<CommandInfo>(
    `SELECT c.id, c.status, c.attempt, c.agent_id, c.error_code, s.step_key, c.claim_expires_at,
            extract(epoch FROM c.expires_at - now())::float AS expires_in
     FROM commands c JOIN step_runs s ON s.id = c.step_run_id
     WHERE c.pipeline_run_id = $1 AND ($2::text IS NULL OR s.step_key = $2)
     ORDER BY c.seq`,
    [runId, stepKey ?? null],
  );
  return rows;
}

/** step_key → step run of a run, through the API. */
export async function runSteps(h: Harness, t: Tenant, runId: string): Promise<Record<string, Record<string, any>>> {
  return stepsByKey(await getRun(h, t, runId));
}

export async function runEvents(h: Harness, t: Tenant, runId: string): Promise<{ event: string; data: Record<string, any> }[]> {
  const res = await h.request('GET', `/api/v1/pipeline-runs/${runId}/events?limit=1000`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
}

/** A pipeline step in document form. */
export function step(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, name: id, tool: `tool-${id}`, ...extra };
}

export class TestAgent {
  readonly h: Harness;
  readonly id: string;
  readonly apiKey: string;
  constructor(h: Harness, id: string, apiKey: string) {
    this.h = h;
    this.id = id;
    this.apiKey = apiKey;
  }

  static async create(h: Harness, t: Tenant, body: Record<string, unknown>): Promise<TestAgent> {
    const res = await h.request('POST', '/api/v1/agents', { token: t.token, body: { name: `agent-${Math.random().toString(36).slice(2, 8)}`, ...body } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return new TestAgent(h, res.body.agent.id, res.body.api_key);
  }

  heartbeat(body: Record<string, unknown> = {}) {
    return this.h.request('POST', '/api/v1/agent/heartbeat', { apiKey: this.apiKey, body });
  }

  /** The commands claimed: the poll answers a bare array (the seed SDK's PollCommands decodes one). */
  async poll(opts: { limit?: number; wait?: number } = {}): Promise<Record<string, any>[]> {
    const res = await this.h.request('GET', `/api/v1/agent/commands?limit=${opts.limit ?? 10}&wait=${opts.wait ?? 0}`, { apiKey: this.apiKey });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(Array.isArray(res.body), `a poll answers a bare array: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  ack(id: string) {
    return this.h.request('POST', `/api/v1/agent/commands/${id}/ack`, { apiKey: this.apiKey });
  }

  start(id: string) {
    return this.h.request('POST', `/api/v1/agent/commands/${id}/start`, { apiKey: this.apiKey });
  }

  complete(id: string, body: Record<string, unknown> = {}) {
    return this.h.request('POST', `/api/v1/agent/commands/${id}/complete`, { apiKey: this.apiKey, body });
  }

  fail(id: string, body: Record<string, unknown> = { error_message: 'tool crashed' }) {
    return this.h.request('POST', `/api/v1/agent/commands/${id}/fail`, { apiKey: this.apiKey, body });
  }

  /** Acknowledges, starts and completes a command, asserting each step succeeds. */
  async finish(id: string, result: Record<string, unknown> = {}): Promise<Record<string, any>> {
    let last: Record<string, any> = {};
    for (const send of [() => this.ack(id), () => this.start(id), () => this.complete(id, result)]) {
      const res = await send();
      assert.equal(res.status, 200, JSON.stringify(res.body));
      last = res.body;
    }
    return last;
  }
}

// ---- time control: deadlines and job run_at are moved, nobody sleeps ----

/** The command's current deadline (queue or step timeout) has passed; its run's expiry timer is due. */
export async function passCommandDeadline(h: Harness, commandId: string): Promise<void> {
  const { rows } = await h.pool.query<{ pipeline_run_id: string }>(
    `UPDATE commands SET expires_at = now() WHERE id = $1 RETURNING pipeline_run_id`, [commandId]);
  const runId = rows[0].pipeline_run_id;
  await h.pool.query(
    `SELECT graphile_worker.add_job('command_expire', json_build_object('run_id', $1::uuid), job_key => 'command_expire:' || $1)`,
    [runId]);
}

/** The command's ack deadline has passed (it is claimable again). */
export async function passClaimDeadline(h: Harness, commandId: string): Promise<void> {
  await h.pool.query(`UPDATE commands SET claim_expires_at = now() - interval '1 second' WHERE id = $1`, [commandId]);
}

/** Every step of the run waiting for a retry delay is due now. */
export async function passRetryDelays(h: Harness, runId: string): Promise<void> {
  const { rows } = await h.pool.query<{ id: string }>(
    `UPDATE step_runs SET retry_at = now() WHERE pipeline_run_id = $1 AND retry_at IS NOT NULL RETURNING id`,
    [runId],
  );
  await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = ANY ($1)`, [
    rows.map((r) => `step_retry:${r.id}`),
  ]);
}

/** The agent has been silent for longer than its grace; its health check is due now. */
export async function silenceAgent(h: Harness, agentId: string): Promise<void> {
  await h.pool.query(`UPDATE agents SET last_seen_at = now() - interval '1 hour', last_heartbeat_at = now() - interval '1 hour' WHERE id = $1`, [agentId]);
  const { rowCount } = await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = $1`, [`agent_health:${agentId}`]);
  if (!rowCount) {
    await h.pool.query(`SELECT graphile_worker.add_job('agent_health', json_build_object('agent_id', $1::uuid), job_key => 'agent_health:' || $1)`, [agentId]);
  }
}
