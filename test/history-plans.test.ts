// The hot statements on a database with history (issue 13): every one uses its index and reads
// none of the big tables whole (test/support/hot-plans.ts lists them: the claim, the command's
// transitions, heartbeats' commands to stop, the advance, the run, command and findings lists,
// a run's findings). The history is test/support/history.ts's, sized so the planner's choices
// are real ones (12,000 runs: 48,000 step runs, 46,800 commands, 75,000 events, 60,000
// sightings of 15,000 findings; statistics up to date), a run that saw 2,000 findings three times (so a run's
// findings page walks the severity order) and 300 runs in flight. Prepared statements are checked under their generic
// plan too (what PostgreSQL may switch to after five executions). npm run bench -- scale-history
// measures the same paths on 1,000,000 runs.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from './support/db.ts';
import { createPool } from '../src/db/pool.ts';
import { findingsApiSql } from '../src/store/queries.ts';
import { fillHistory } from './support/history.ts';
import { hotStatements, planProblems, putWorkInFlight, type HotIds, type HotStatement } from './support/hot-plans.ts';

let db: TestDatabase;
let pool: pg.Pool;
let statements: HotStatement[];
let ids: HotIds;

before(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 3);
  const tenantId = (await pool.query<{ id: string }>(`INSERT INTO tenants (name) VALUES ('plans') RETURNING id`)).rows[0].id;
  await fillHistory(pool, { runs: 12_000, sightings: 60_000, outputBytes: 1 << 20, tenantId, tenants: 4, share: 25 });
  const one = async <T extends Record<string, any>>(q: string, v: unknown[] = []) => (await pool.query<T>(q, v)).rows[0];
  // The tenant's latest run of a scan (it has a pipeline, an asset, a scan, commands of an agent).
  const run = await one<{ id: string; pipeline_id: string; asset_id: string; scan_id: string }>(`
    SELECT id, pipeline_id, asset_id, scan_id FROM pipeline_runs WHERE tenant_id = $1 AND scan_id IS NOT NULL
    ORDER BY created_at DESC LIMIT 1`, [tenantId]);
  const command = await one<{ id: string; agent_id: string }>(
    `SELECT id, agent_id FROM commands WHERE pipeline_run_id = $1 AND agent_id IS NOT NULL ORDER BY created_at LIMIT 1`, [run.id]);
  // A run that saw 2,000 of the tenant's findings, three times each (three ingests).
  const big = await one<{ id: string; command_id: string; step_run_id: string }>(`
    SELECT r.id, c.id AS command_id, c.step_run_id FROM pipeline_runs r JOIN commands c ON c.pipeline_run_id = r.id
    WHERE r.tenant_id = $1 AND r.id <> $2 ORDER BY r.created_at DESC LIMIT 1`, [tenantId, run.id]);
  await pool.query(`
    WITH f AS (
      INSERT INTO findings (tenant_id, asset_id, fingerprint, type, tool, rule_id, title, severity, status, first_seen_at, last_seen_at)
      SELECT $1, $4::uuid, 'big-' || g, 'vulnerability', 'semgrep', 'rule-' || (g % 50), 'Finding ' || g,
             (ARRAY['critical', 'high', 'medium', 'low', 'info'])[1 + g % 5], 'open', now() - g * interval '1 second', now()
      FROM generate_series(1, 2000) g
      RETURNING id
    )
    INSERT INTO finding_sightings (tenant_id, finding_id, ingest_id, pipeline_run_id, step_run_id, command_id, new)
    SELECT $1, f.id, $3, $2, $5, $3, i = 1 AND hashtext(f.id::text) % 2 = 0 FROM f, generate_series(1, 3) i`,
  [tenantId, big.id, big.command_id, run.asset_id, big.step_run_id]);
  await pool.query('ANALYZE findings, finding_sightings');
  // And work in flight (300 runs, their commands pending, acknowledged or running), as on any
  // busy database: the live states' partial indexes are not empty.
  await putWorkInFlight(pool, tenantId, 300);
  ids = {
    tenantId, agentId: command.agent_id, runId: run.id, bigRunId: big.id, pipelineId: run.pipeline_id, assetId: run.asset_id,
    scanId: run.scan_id, commandId: command.id,
  };
  statements = await hotStatements(pool, ids);
});

after(async () => {
  await pool?.end();
  await db?.drop();
});

describe('hot statements on a database with history', () => {
  it('each uses its index and reads no big table whole, under its plan and its generic plan', async () => {
    assert.ok(statements.length >= 30, `${statements.length} statements`);
    const problems: string[] = [];
    for (const s of statements) problems.push(...(await planProblems(pool, s)));
    assert.deepEqual(problems, []);
  });

  it('a run\'s findings walked in severity order are the pages that grouping its sightings gives', async () => {
    // The run with 6,000 sightings takes the walk; its pages must be what grouping and
    // sorting all of them gives, `new` included, page after page by the cursor.
    const { rows: want } = await pool.query<{ id: string; new: boolean }>(`
      SELECT f.id, bool_or(s.new) AS new FROM finding_sightings s JOIN findings f ON f.id = s.finding_id
      WHERE s.pipeline_run_id = $1 GROUP BY f.id, f.severity_rank, f.first_seen_at
      ORDER BY f.severity_rank DESC, f.first_seen_at DESC, f.id DESC`, [ids.bigRunId]);
    assert.ok(want.length >= 2000, `${want.length} findings`); // and what the history gave it
    const got: { id: string; new: boolean }[] = [];
    let after: unknown[] = [5, 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff'];
    for (let page = 0; page < 3; page++) {
      const { rows } = await pool.query<{ id: string; new: boolean; severity_rank: number; first_seen_key: string }>(
        findingsApiSql.ListRunFindings.text, [ids.tenantId, ids.bigRunId, ...after, 400]);
      assert.equal(rows.length, 400);
      got.push(...rows.map((r) => ({ id: r.id, new: r.new })));
      const last = rows[rows.length - 1];
      after = [last.severity_rank, last.first_seen_key, last.id];
    }
    assert.deepEqual(got, want.slice(0, 1200));
  });
});
