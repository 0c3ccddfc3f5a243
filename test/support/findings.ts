// Findings made with direct SQL, for tests of reading and triaging them (ingest has its own
// tests): one finding, one sighting.
import { randomUUID } from 'node:crypto';
import type { Harness } from './harness.ts';

export type FindingSeed = {
  asset_id?: string | null;
  fingerprint?: string;
  type?: string;
  tool?: string;
  rule_id?: string | null;
  title?: string;
  description?: string | null;
  severity?: string;
  status?: string;
  resolution?: string | null;
  location?: Record<string, unknown>;
  vulnerability?: Record<string, unknown> | null;
  first_seen_at?: string;
  last_seen_at?: string;
  occurrences?: number;
  first_run_id?: string | null;
  last_run_id?: string | null;
  last_step_key?: string | null;
};

export type StoredFinding = Record<string, any> & { id: string; tenant_id: string };

/** A finding of the tenant; the row as stored. */
export async function insertFinding(h: Harness, tenantId: string, seed: FindingSeed = {}): Promise<StoredFinding> {
  const s = {
    asset_id: null, fingerprint: `fp-${randomUUID()}`, type: 'vulnerability', tool: 'semgrep', rule_id: 'rule-1',
    title: 'A finding', description: null, severity: 'medium', status: 'open', resolution: null,
    location: { path: 'src/app.ts', start_line: 1 }, vulnerability: null, first_seen_at: new Date().toISOString(),
    occurrences: 1, first_run_id: null, last_run_id: null, last_step_key: null, ...seed,
  };
  const type = s.asset_id === null && seed.type === undefined ? 'credential_leak' : s.type;
  const { rows } = await h.pool.query(
    `INSERT INTO findings (tenant_id, asset_id, fingerprint, type, tool, rule_id, title, description, severity, status,
                           resolution, location, vulnerability, first_seen_at, last_seen_at, occurrences, first_run_id,
                           last_run_id, last_step_key, resolved_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::timestamptz, coalesce($15::timestamptz, $14::timestamptz), $16, $17, $18, $19,
             CASE WHEN $10::text = 'resolved' THEN now() END)
     RETURNING *`,
    [tenantId, s.asset_id, s.fingerprint, type, s.tool, s.rule_id, s.title, s.description, s.severity, s.status,
      s.resolution, s.location, s.vulnerability, s.first_seen_at, seed.last_seen_at ?? null, s.occurrences, s.first_run_id,
      s.last_run_id, s.last_step_key],
  );
  return rows[0];
}

export type SightingSeed = {
  pipeline_run_id?: string | null;
  step_run_id?: string | null;
  command_id?: string | null;
  agent_scan_id?: string | null;
  ingest_id?: string;
  new?: boolean;
  location?: Record<string, unknown>;
  seen_at?: string;
};

/** A sighting of a finding; its id. */
export async function insertSighting(h: Harness, finding: { id: string; tenant_id: string }, seed: SightingSeed = {}): Promise<number> {
  const { rows } = await h.pool.query<{ id: string }>(
    `INSERT INTO finding_sightings (tenant_id, finding_id, ingest_id, pipeline_run_id, step_run_id, command_id, agent_scan_id,
                                    new, location, seen_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10::timestamptz, now())) RETURNING id`,
    [finding.tenant_id, finding.id, seed.ingest_id ?? randomUUID(), seed.pipeline_run_id ?? null, seed.step_run_id ?? null,
      seed.command_id ?? null, seed.agent_scan_id ?? null, seed.new ?? false, seed.location ?? {}, seed.seen_at ?? null],
  );
  return Number(rows[0].id);
}
