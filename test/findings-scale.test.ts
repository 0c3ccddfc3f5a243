// The findings list on a big table: 100,000 findings of three tenants (one holds 60 % of
// them, the hardest case for the planner), sightings of runs and scans, statistics up to
// date. Every filtered first page (each filter alone, combinations, each sort) must use an
// index, never a sequential scan of findings, and must be the right page: the same rows, in
// the same order, as filtering and sorting the tenant's findings in JavaScript.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, step, type Tenant } from './support/fixtures.ts';
import {
  SEVERITY_RANK, listFindingsStatement, type FindingFilters, type FindingSort,
} from '../src/store/findings-api.ts';
import { findingsApiSql, findingsSql } from '../src/store/queries.ts';

const FINDINGS = 100_000;
const RUNS = 20;

let h: Harness;
let big: Tenant; // 60 % of the findings
let small: Tenant; // 10 %
let runs: string[];
let scanId: string;
const agentScanId = randomUUID();
let bigAgentKey: string;

type Ref = {
  id: string; status: string; rank: number; type: string; tool: string; rule_id: string | null; asset_id: string;
  text: string; first_us: number; last_us: number; runs: Set<string>; scans: Set<string>;
};
const reference = new Map<string, Ref[]>();
let assetsOf: Record<string, string[]> = {};

before(async () => {
  h = await startHarness({ worker: false });
  big = await createTenant(h);
  bigAgentKey = (await TestAgent.create(h, big, { tools: ['semgrep'] })).apiKey;
  const middle = await createTenant(h);
  small = await createTenant(h);
  const tenants = [big.id, middle.id, small.id];
  const p = await createPipeline(h, big, { name: 'Scale', steps: [step('a')] });
  const scan = await h.request('POST', '/api/v1/scans', { token: big.token, body: { name: 'nightly', pipeline_id: p.id } });
  assert.equal(scan.status, 201, JSON.stringify(scan.body));
  scanId = scan.body.id;

  const seeded = Date.now();
  await h.pool.query(
    `INSERT INTO assets (tenant_id, type, name, value)
     SELECT tid, 'repository', 'repo-' || a, 'https://git.example/' || tid || '/' || a
     FROM unnest($1::uuid[]) tid, generate_series(0, 39) a`, [tenants]);
  // Skewed like real findings: mostly open, few suppressed; mostly low and info, few
  // critical; one tool used once in a hundred; a tenant per i % 10 (6 : 3 : 1).
  await h.pool.query(
    `WITH tenant AS (SELECT tid, k FROM unnest($1::uuid[]) WITH ORDINALITY AS x(tid, k)),
          asset AS (SELECT tenant_id, array_agg(id ORDER BY id) AS ids FROM assets WHERE tenant_id = ANY ($1) GROUP BY tenant_id)
     INSERT INTO findings (tenant_id, asset_id, fingerprint, type, tool, rule_id, title, severity, status, resolution, location,
                           first_seen_at, last_seen_at, resolved_at, occurrences)
     SELECT tenant.tid, asset.ids[1 + g.i / 10 % 40], 'fp-' || g.i,
            CASE WHEN g.tool = 'gitleaks' THEN 'secret' WHEN g.tool = 'zap' THEN 'misconfiguration'
                 WHEN g.i % 997 = 0 THEN 'web3' ELSE 'vulnerability' END,
            g.tool, CASE WHEN g.i % 50 = 0 THEN NULL ELSE g.tool || '-rule-' || (g.i % 300) END,
            'Finding ' || g.i || ' in module ' || (g.i % 1000), g.severity, g.status,
            CASE WHEN g.status = 'resolved' THEN 'auto_fixed' END,
            jsonb_build_object('path', 'src/module_' || (g.i % 1000) || '/file_' || (g.i % 37) || '.ts', 'start_line', g.i % 500),
            g.first_seen, g.first_seen + (g.i % 30) * interval '1 day',
            CASE WHEN g.status = 'resolved' THEN g.first_seen + interval '31 days' END, 1 + g.i % 5
     FROM (SELECT i, 1 + (i % 10 >= 6)::int + (i % 10 >= 9)::int AS k,
                  CASE WHEN i / 10 % 100 < 40 THEN 'semgrep' WHEN i / 10 % 100 < 70 THEN 'trivy'
                       WHEN i / 10 % 100 < 85 THEN 'gitleaks' WHEN i / 10 % 100 < 99 THEN 'zap' ELSE 'bandit' END AS tool,
                  CASE WHEN i % 97 < 3 THEN 'critical' WHEN i % 97 < 15 THEN 'high' WHEN i % 97 < 40 THEN 'medium'
                       WHEN i % 97 < 70 THEN 'low' ELSE 'info' END AS severity,
                  CASE WHEN i % 89 < 53 THEN 'open' WHEN i % 89 < 75 THEN 'resolved' WHEN i % 89 < 80 THEN 'in_progress'
                       WHEN i % 89 < 84 THEN 'false_positive' WHEN i % 89 < 88 THEN 'accepted_risk' ELSE 'suppressed' END AS status,
                  timestamptz '2026-01-01' - i * interval '4 minutes' AS first_seen
           FROM generate_series(1, $2::int) i) g
     JOIN tenant ON tenant.k = g.k
     JOIN asset ON asset.tenant_id = tenant.tid
     -- Each tenant's findings newest first: the indexes that lead with (tenant_id, a time
     -- DESC) take them in their own order (the fast path of appending to the rightmost leaf).
     ORDER BY g.k, g.i`, [tenants, FINDINGS]);
  const inserted = Date.now();
  // Runs of the big tenant (the first three of the scan), each sighting 1 in 20 of its findings.
  runs = (await h.pool.query<{ id: string }>(
    `INSERT INTO pipeline_runs (tenant_id, pipeline_id, pipeline_version, scan_id, status)
     SELECT $1, $2, 1, CASE WHEN n < 3 THEN $3::uuid END, 'completed' FROM generate_series(0, $4::int - 1) n
     RETURNING id`, [big.id, p.id, scanId, RUNS])).rows.map((r) => r.id);
  await h.pool.query(
    `INSERT INTO finding_sightings (tenant_id, finding_id, ingest_id, pipeline_run_id, agent_scan_id, new, seen_at)
     SELECT f.tenant_id, f.id, gen_random_uuid(), ($2::uuid[])[1 + f.n % $4], CASE WHEN f.n % 7 = 0 THEN $3::uuid END,
            f.n % 3 = 0, f.first_seen_at
     FROM (SELECT id, tenant_id, first_seen_at, row_number() OVER (ORDER BY id) AS n FROM findings WHERE tenant_id = $1) f`,
    [big.id, runs, agentScanId, RUNS]);
  await h.pool.query('ANALYZE findings, finding_sightings, pipeline_runs, assets');
  console.log(`# seeded ${FINDINGS} findings in ${inserted - seeded} ms, their sightings and statistics in ${Date.now() - inserted} ms`);

  for (const t of [big, small]) {
    const { rows } = await h.pool.query(
      `SELECT f.id, f.status, f.severity_rank AS rank, f.type, f.tool, f.rule_id, f.asset_id,
              f.title || E'\n' || coalesce(f.location ->> 'path', '') AS text,
              (extract(epoch FROM f.first_seen_at) * 1e6)::bigint AS first_us, (extract(epoch FROM f.last_seen_at) * 1e6)::bigint AS last_us,
              coalesce(array_agg(DISTINCT s.pipeline_run_id) FILTER (WHERE s.pipeline_run_id IS NOT NULL), '{}') AS runs,
              coalesce(array_agg(DISTINCT s.agent_scan_id) FILTER (WHERE s.agent_scan_id IS NOT NULL), '{}') AS agent_scans
       FROM findings f LEFT JOIN finding_sightings s ON s.finding_id = f.id
       WHERE f.tenant_id = $1 GROUP BY f.id`, [t.id]);
    const scanRuns = new Set(runs.slice(0, 3));
    reference.set(t.id, rows.map((r) => ({
      ...r, first_us: Number(r.first_us), last_us: Number(r.last_us), runs: new Set(r.runs),
      scans: new Set([...r.agent_scans, ...(r.runs.some((x: string) => scanRuns.has(x)) ? [scanId] : [])]),
    })));
  }
  assetsOf = Object.fromEntries((await h.pool.query(
    `SELECT tenant_id, array_agg(id ORDER BY id) AS ids FROM assets GROUP BY tenant_id`)).rows.map((r) => [r.tenant_id, r.ids]));
});
after(() => h.close());

// ---- the expected page, computed in JavaScript -------------------------------------------

function matches(r: Ref, f: FindingFilters): boolean {
  if (f.status && !f.status.includes(r.status)) return false;
  if (f.severity && !f.severity.some((s) => SEVERITY_RANK[s] === r.rank)) return false;
  if (f.min_severity && r.rank < SEVERITY_RANK[f.min_severity]) return false;
  if (f.type && !f.type.includes(r.type)) return false;
  if (f.tool !== undefined && r.tool !== f.tool) return false;
  if (f.rule_id !== undefined && r.rule_id !== f.rule_id) return false;
  if (f.asset_id && r.asset_id !== f.asset_id) return false;
  if (f.pipeline_run_id && !r.runs.has(f.pipeline_run_id)) return false;
  if (f.scan_id && !r.scans.has(f.scan_id)) return false;
  if (f.q !== undefined && !r.text.toLowerCase().includes(f.q.toLowerCase())) return false;
  if (f.first_seen_after && r.first_us <= Date.parse(f.first_seen_after) * 1000) return false;
  return true;
}

const byIdDesc = (a: Ref, b: Ref) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
const ORDER: Record<FindingSort, (a: Ref, b: Ref) => number> = {
  first_seen: (a, b) => b.first_us - a.first_us || byIdDesc(a, b),
  last_seen: (a, b) => b.last_us - a.last_us || byIdDesc(a, b),
  severity: (a, b) => b.rank - a.rank || b.first_us - a.first_us || byIdDesc(a, b),
};

function expected(t: Tenant, f: FindingFilters, sort: FindingSort): string[] {
  return reference.get(t.id)!.filter((r) => matches(r, f)).sort(ORDER[sort]).map((r) => r.id);
}

// ---- plans --------------------------------------------------------------------------------

type PlanNode = { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; Plans?: PlanNode[] };

function walkPlan(node: PlanNode, out: PlanNode[] = []): PlanNode[] {
  out.push(node);
  for (const child of node.Plans ?? []) walkPlan(child, out);
  return out;
}

async function planOf(statement: { text: string; values: unknown[] }): Promise<PlanNode[]> {
  // The values bound, as the route sends them: the plan the route gets.
  const { rows } = await h.pool.query({ text: `EXPLAIN (FORMAT JSON) ${statement.text}`, values: statement.values });
  return walkPlan(rows[0]['QUERY PLAN'][0].Plan);
}

const describePlan = (nodes: PlanNode[]) =>
  nodes.filter((n) => /Scan/.test(n['Node Type'])).map((n) => `${n['Node Type']}(${n['Index Name'] ?? n['Relation Name']})`).join(' ');

/** findings is read, and only through its indexes (an index scan, or a bitmap heap scan of index bitmaps). */
function assertNoSeqScanOfFindings(nodes: PlanNode[], what: string) {
  const reads = nodes.filter((n) => n['Relation Name'] === 'findings');
  assert.ok(reads.length > 0, `${what}: ${describePlan(nodes)}`);
  for (const n of reads) {
    assert.match(n['Node Type'], /^(Index Scan|Index Only Scan|Bitmap Heap Scan)$/, `${what}: ${describePlan(nodes)}`);
  }
  // q reads the text of findings (finding_texts) by an index, never all of it: its trigram
  // index for a rare text, or (a common one) its primary key for each finding the sort's
  // index walk meets.
  for (const n of nodes.filter((x) => x['Relation Name'] === 'finding_texts')) {
    assert.match(n['Node Type'], /^(Index Scan|Index Only Scan|Bitmap Heap Scan)$/, `${what}: ${describePlan(nodes)}`);
  }
}

// ---- the cases ----------------------------------------------------------------------------

function queryString(f: FindingFilters): string {
  return Object.entries(f).map(([k, v]) => `${k}=${encodeURIComponent(Array.isArray(v) ? v.join(',') : String(v))}`).join('&');
}

function casesFor(t: Tenant): [string, FindingFilters][] {
  const asset = assetsOf[t.id][7];
  return [
    ['no filter', {}],
    ['status (common)', { status: ['open'] }],
    ['status (rare)', { status: ['suppressed'] }],
    ['statuses', { status: ['open', 'in_progress'] }],
    ['severity (rare)', { severity: ['critical'] }],
    ['severities', { severity: ['critical', 'high'] }],
    ['min_severity', { min_severity: 'high' }],
    ['type (rare)', { type: ['web3'] }],
    ['types', { type: ['secret', 'misconfiguration'] }],
    ['tool (common)', { tool: 'semgrep' }],
    ['tool (rare)', { tool: 'bandit' }],
    ['tool (none)', { tool: 'nessus' }],
    ['rule_id', { rule_id: 'trivy-rule-57' }],
    ['asset_id', { asset_id: asset }],
    ['pipeline_run_id', { pipeline_run_id: runs[5] }],
    ['scan_id (scheduled)', { scan_id: scanId }],
    ['scan_id (agent session)', { scan_id: agentScanId }],
    ['q (title)', { q: 'Finding 1234' }],
    ['q (path)', { q: 'module_42/' }],
    ['q (common)', { q: 'file_3' }],
    ['q (nothing)', { q: 'nowhere' }],
    ['first_seen_after', { first_seen_after: '2025-12-20T00:00:00Z' }],
    ['status + severity', { status: ['open'], severity: ['critical'] }],
    ['status + asset', { status: ['open', 'in_progress'], asset_id: asset }],
    ['tool + rule + status', { tool: 'trivy', rule_id: 'trivy-rule-57', status: ['open'] }],
    ['min_severity + tool + type', { min_severity: 'medium', tool: 'gitleaks', type: ['secret'] }],
    ['rare status + q', { status: ['false_positive'], q: 'module_1' }],
    ['run + min_severity', { pipeline_run_id: runs[5], min_severity: 'high' }],
    ['first_seen_after + status', { first_seen_after: '2025-12-01T00:00:00Z', status: ['resolved'] }],
  ];
}

describe('the findings list on 100,000 findings', () => {
  for (const sort of ['first_seen', 'last_seen', 'severity'] as FindingSort[]) {
    it(`sort=${sort}: every filtered first page is an index scan and the right page, and so is the next`, async () => {
      const plans: string[] = [];
      for (const [t, cases] of [[big, casesFor(big)], [small, casesFor(small).slice(0, 14)]] as const) {
        for (const [name, filters] of cases) {
          const what = `${t === big ? 'big' : 'small'} tenant, ${name}, sort=${sort}`;
          const nodes = await planOf(listFindingsStatement(t.id, filters, sort, null, 51));
          assertNoSeqScanOfFindings(nodes, what);
          plans.push(`${what}: ${describePlan(nodes)}`);

          const want = expected(t, filters, sort);
          const first = await h.request('GET', `/api/v1/findings?${queryString(filters)}&sort=${sort}&limit=50`, { token: t.token });
          assert.equal(first.status, 200, JSON.stringify(first.body));
          assert.deepEqual(first.body.items.map((i: { id: string }) => i.id), want.slice(0, 50), what);
          assert.equal(first.body.next_cursor === null, want.length <= 50, what);
          if (first.body.next_cursor) {
            const next = await h.request('GET', `/api/v1/findings?${queryString(filters)}&sort=${sort}&limit=50&cursor=${first.body.next_cursor}`, { token: t.token });
            assert.deepEqual(next.body.items.map((i: { id: string }) => i.id), want.slice(50, 100), `${what}, page 2`);
          }
        }
      }
      // SHOW_PLANS=1 npm test -- test/findings-scale.test.ts prints each plan.
      if (process.env.SHOW_PLANS) console.log(plans.join('\n'));
    });
  }

  it('a page after a cursor deep in the list is an index scan too', async () => {
    for (const sort of ['first_seen', 'last_seen', 'severity'] as FindingSort[]) {
      const want = expected(big, {}, sort);
      const deep = reference.get(big.id)!.find((r) => r.id === want[30_000])!;
      const { rows: [row] } = await h.pool.query(
        `SELECT first_seen_at::text AS first, last_seen_at::text AS last FROM findings WHERE id = $1`, [deep.id]);
      const statement = listFindingsStatement(big.id, {}, sort, {
        sort, rank: sort === 'severity' ? deep.rank : null, at: sort === 'last_seen' ? row.last : row.first, id: deep.id,
      }, 51);
      assertNoSeqScanOfFindings(await planOf(statement), `after 30,000, sort=${sort}`);
      const { rows } = await h.pool.query({ text: statement.text, values: statement.values });
      assert.deepEqual(rows.map((r) => r.id), want.slice(30_001, 30_052), sort);
    }
  });

  // A run's findings are all sorted before the first page (a run sees a bounded number), so
  // for a run that saw 3 % of the table the planner may well hash-join a scan of findings;
  // what must hold is that the run's sightings are found by their index.
  it('a run\'s findings come from its sightings by index, and are the right page', async () => {
    const nodes = await planOf({ text: findingsApiSql.ListRunFindings.text, values: [big.id, runs[5], 5, 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 51] });
    assert.ok(!nodes.some((n) => n['Node Type'] === 'Seq Scan' && n['Relation Name'] === 'finding_sightings'), describePlan(nodes));
    const res = await h.request('GET', `/api/v1/pipeline-runs/${runs[5]}/findings?limit=50`, { token: big.token });
    assert.deepEqual(res.body.items.map((i: { id: string }) => i.id), expected(big, { pipeline_run_id: runs[5] }, 'severity').slice(0, 50));
  });

  // /ingest/check: 10,000 strings, each probed in the two fingerprint indexes, never a hash
  // of every finding of the tenant (what an EXISTS became right after a large ingest).
  it('/ingest/check probes the fingerprint indexes per string and answers which exist', async () => {
    const { rows } = await h.pool.query<{ fingerprint: string }>(
      `SELECT fingerprint FROM findings WHERE tenant_id = $1 ORDER BY fingerprint LIMIT 5000`, [big.id]);
    const asked = rows.flatMap((r, i) => [r.fingerprint, `absent-${i}`]);
    const nodes = await planOf({ text: findingsSql.ExistingFingerprints.text, values: [big.id, asked] });
    const reads = nodes.filter((n) => n['Relation Name'] === 'findings');
    assert.deepEqual(reads.map((n) => `${n['Node Type'].replace('Index Only Scan', 'Index Scan')}(${n['Index Name']})`).sort(),
      ['Index Scan(findings_fingerprint_idx)', 'Index Scan(findings_tool_fingerprint_idx)'], describePlan(nodes));
    const res = await h.request('POST', '/api/v1/agent/ingest/check', { apiKey: bigAgentKey, body: { fingerprints: asked } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual([res.body.existing, res.body.missing], [rows.map((r) => r.fingerprint), rows.map((_, i) => `absent-${i}`)]);
  });

  it('the summary counts what the table holds', async () => {
    const res = await h.request('GET', '/api/v1/findings/summary', { token: small.token });
    const refs = reference.get(small.id)!;
    assert.equal(res.body.total, refs.length);
    assert.equal(res.body.by_status.suppressed, refs.filter((r) => r.status === 'suppressed').length);
    assert.equal(res.body.by_severity.critical, refs.filter((r) => r.rank === 4).length);
    const byAsset = await h.request('GET', '/api/v1/findings/summary?group_by=asset&status=open', { token: big.token });
    const open = reference.get(big.id)!.filter((r) => r.status === 'open');
    assert.equal(byAsset.body.groups.length, new Set(open.map((r) => r.asset_id)).size);
    assert.equal(byAsset.body.groups.reduce((n: number, g: { total: number }) => n + g.total, 0), open.length);
  });
});
