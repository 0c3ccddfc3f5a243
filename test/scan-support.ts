// Helpers for the scan, scheduler and trigger tests (not a test file itself). Time is moved
// in the database: a scan is made due by setting its next_run_at to the past, and the
// scheduler's tick is made due with arm_scheduler() (or an extra scheduler_tick job).
import assert from 'node:assert/strict';
import type { Harness } from './support/harness.ts';
import { TestAgent, step, type Tenant } from './support/fixtures.ts';

export type Json = Record<string, any>;

/** A one-step pipeline document (tool `tool-a`). */
export function oneStep(name: string, extra: Json = {}): Json {
  return { name, steps: [step('a')], ...extra };
}

export async function createScan(h: Harness, t: Tenant, body: Json): Promise<Json> {
  const res = await h.request('POST', '/api/v1/scans', { token: t.token, body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

export async function getScan(h: Harness, t: Tenant, id: string): Promise<Json> {
  const res = await h.request('GET', `/api/v1/scans/${id}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

export async function updateScan(h: Harness, t: Tenant, id: string, body: Json): Promise<Json> {
  const res = await h.request('PUT', `/api/v1/scans/${id}`, { token: t.token, body });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

export async function triggerScan(h: Harness, t: Tenant, id: string, body: Json = {}): Promise<Json> {
  const res = await h.request('POST', `/api/v1/scans/${id}/trigger`, { token: t.token, body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

/** The scan's fires, oldest first. */
export async function scanFires(h: Harness, t: Tenant, id: string): Promise<Json[]> {
  const res = await h.request('GET', `/api/v1/scans/${id}/fires?limit=200`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return [...res.body.items].reverse();
}

/** The scan's runs (GET /scans/{id}/runs), oldest first. */
export async function scanRuns(h: Harness, t: Tenant, id: string): Promise<Json[]> {
  const out: Json[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const res = await h.request('GET', `/api/v1/scans/${id}/runs?limit=200${q}`, { token: t.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    out.push(...res.body.items);
    cursor = res.body.next_cursor;
  } while (cursor);
  return out.reverse();
}

/** The scan is due: its next_run_at is `ago` in the past (an SQL interval). */
export async function makeDue(h: Harness, scanId: string, ago = '1 second'): Promise<Date> {
  const { rows } = await h.pool.query<{ next_run_at: Date }>(
    `UPDATE scans SET next_run_at = now() - $2::interval WHERE id = $1 RETURNING next_run_at`, [scanId, ago]);
  assert.equal(rows.length, 1, `scan ${scanId} exists`);
  return rows[0].next_run_at;
}

/** The scheduler's tick is due now (arm_scheduler sets it to the earliest next_run_at); waits for it. */
export async function tick(h: Harness): Promise<void> {
  await h.pool.query(`SELECT arm_scheduler()`);
  await h.settle();
}

/** A scan's row as the database has it. */
export async function scanRow(h: Harness, scanId: string): Promise<Json> {
  const { rows } = await h.pool.query(`SELECT * FROM scans WHERE id = $1`, [scanId]);
  return rows[0];
}

/** The keyed scheduler_tick job (not locked), or null. */
export async function schedulerJob(h: Harness): Promise<{ run_at: Date } | null> {
  const { rows } = await h.pool.query<{ run_at: Date }>(
    `SELECT run_at FROM graphile_worker.jobs WHERE key = 'scheduler_tick' AND locked_at IS NULL`);
  return rows[0] ?? null;
}

/** A job that threw is retried later with backoff, which settle() does not wait for: fail loudly instead. */
export async function assertNoFailedJobs(h: Harness): Promise<void> {
  const { rows } = await h.pool.query<{ task_identifier: string; key: string | null; last_error: string }>(
    `SELECT task_identifier, key, last_error FROM graphile_worker.jobs WHERE last_error IS NOT NULL`,
  );
  assert.deepEqual(rows, [], 'jobs that failed');
}

/**
 * Finishes the commands of the given runs with this agent (polling claims what is
 * dispatched; commands it already holds are finished too), until those runs dispatch
 * nothing more. Other runs' commands it claims stay held. Returns how many it finished.
 */
export async function finishRuns(h: Harness, agent: TestAgent, runIds: string[]): Promise<number> {
  let finished = 0;
  for (let i = 0; i < 10; i++) {
    await h.settle();
    await agent.poll({ limit: 100 });
    const { rows } = await h.pool.query<{ id: string }>(
      `SELECT id FROM commands WHERE pipeline_run_id = ANY ($1::uuid[]) AND agent_id = $2
         AND status IN ('pending', 'acknowledged', 'running') ORDER BY seq`, [runIds, agent.id]);
    if (rows.length === 0) break;
    for (const c of rows) await agent.finish(c.id);
    finished += rows.length;
  }
  await h.settle();
  return finished;
}

/** Runs of a scan by status, from the database. */
export async function runStates(h: Harness, scanId: string): Promise<{ id: string; asset_id: string | null; status: string; admitted: boolean; created_at: Date }[]> {
  const { rows } = await h.pool.query(
    `SELECT id, asset_id, status, admitted_at IS NOT NULL AS admitted, created_at FROM pipeline_runs
     WHERE scan_id = $1 ORDER BY created_at, id`, [scanId]);
  return rows;
}

export function expectProblem(res: { status: number; body: any }, path: string | RegExp, message?: RegExp): void {
  assert.equal(res.status, 400, JSON.stringify(res.body));
  const details: { path: string; message: string }[] = res.body.error?.details ?? [];
  const hit = details.find((d) => (typeof path === 'string' ? d.path === path : path.test(d.path)));
  assert.ok(hit, `a problem at ${path} in ${JSON.stringify(details)}`);
  if (message) assert.match(hit.message, message, JSON.stringify(details));
}
