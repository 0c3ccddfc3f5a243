// End to end: an agent ingests reports through /api/v1/agent/ingest for the commands of two
// runs, and the tenant reads and triages them through the findings API: the list and its
// filters, a finding's sightings (which run, step, command, where that time) and status
// changes, a run's findings with `new`, triage that survives the next full-coverage report,
// and the summary.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, startRun, step, type Tenant } from './support/fixtures.ts';

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let pipelineId: string;
let assetId: string;

before(async () => {
  h = await startHarness();
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['semgrep'] });
  assetId = (await createAsset(h, t, { type: 'repository', name: 'shop', value: `https://git.example/${randomUUID()}` })).id;
  pipelineId = (await createPipeline(h, t, { name: 'SAST', steps: [step('sast', { tool: 'semgrep' })] })).id;
});
after(() => h.close());

const get = (path: string) => h.request('GET', path, { token: t.token });

/** A run on the asset whose one command the agent holds (acknowledged and started). */
async function runHeldByAgent(): Promise<{ runId: string; commandId: string }> {
  const run = await startRun(h, t, pipelineId, { asset_id: assetId });
  await h.settle();
  const [command] = await agent.poll();
  assert.equal((await agent.ack(command.id)).status, 200);
  assert.equal((await agent.start(command.id)).status, 200);
  return { runId: run.id, commandId: command.id };
}

type ReportFinding = { rule_id: string; title: string; severity: string; path: string; line: number };

function report(findings: ReportFinding[]) {
  return {
    version: '1.0',
    metadata: { timestamp: new Date().toISOString(), coverage_type: 'full' },
    tool: { name: 'semgrep', version: '1.80.0' },
    findings: findings.map((f) => ({
      type: 'vulnerability', rule_id: f.rule_id, title: f.title, severity: f.severity,
      location: { path: f.path, start_line: f.line, snippet: `// ${f.rule_id}` },
    })),
  };
}

async function ingest(commandId: string, findings: ReportFinding[]): Promise<Record<string, any>> {
  const res = await h.request('POST', '/api/v1/agent/ingest', {
    apiKey: agent.apiKey, headers: { 'x-command-id': commandId }, body: { report: report(findings) },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

const sqli: ReportFinding = { rule_id: 'sql-injection', title: 'SQL injection in checkout', severity: 'critical', path: 'src/checkout.ts', line: 40 };
const xss: ReportFinding = { rule_id: 'xss', title: 'Reflected XSS in search', severity: 'high', path: 'src/search.tsx', line: 12 };
const md5: ReportFinding = { rule_id: 'weak-hash', title: 'MD5 for passwords', severity: 'medium', path: 'src/auth/hash.ts', line: 7 };

describe('ingested findings through the findings API', () => {
  it('lists, shows, triages and summarizes what two runs ingested', async () => {
    // Run 1 sees three findings: all new.
    const first = await runHeldByAgent();
    const result1 = await ingest(first.commandId, [sqli, xss, md5]);
    assert.equal(result1.findings_created, 3, JSON.stringify(result1));

    const listed = (await get(`/api/v1/findings?pipeline_run_id=${first.runId}&sort=severity`)).body.items;
    assert.deepEqual(listed.map((f: any) => [f.title, f.severity, f.status, f.tool, f.asset_id, f.first_run_id, f.last_step_key]), [
      [sqli.title, 'critical', 'open', 'semgrep', assetId, first.runId, 'sast'],
      [xss.title, 'high', 'open', 'semgrep', assetId, first.runId, 'sast'],
      [md5.title, 'medium', 'open', 'semgrep', assetId, first.runId, 'sast'],
    ]);
    const run1 = (await get(`/api/v1/pipeline-runs/${first.runId}/findings`)).body.items;
    assert.deepEqual(run1.map((f: any) => [f.title, f.new]), [[sqli.title, true], [xss.title, true], [md5.title, true]]);
    const byTitle = Object.fromEntries(listed.map((f: any) => [f.title, f]));

    // Triage: the XSS is a false positive.
    const triaged = await h.request('PATCH', `/api/v1/findings/${byTitle[xss.title].id}`, {
      token: t.token, body: { status: 'false_positive', reason: 'input is escaped by the template engine' },
    });
    assert.equal(triaged.status, 200, JSON.stringify(triaged.body));
    assert.equal((await agent.complete(first.commandId, {})).status, 200);

    // Run 2, a full-coverage report: the SQL injection moved down 10 lines (same finding), the
    // XSS is still reported (triaged: stays a false positive), the MD5 is gone (resolved).
    const second = await runHeldByAgent();
    const result2 = await ingest(second.commandId, [{ ...sqli, line: sqli.line + 10 }, xss]);
    assert.equal(result2.findings_created, 0, JSON.stringify(result2));
    assert.equal(result2.findings_resolved, 1, JSON.stringify(result2));

    const run2 = (await get(`/api/v1/pipeline-runs/${second.runId}/findings`)).body.items;
    assert.deepEqual(run2.map((f: any) => [f.title, f.new, f.status]), [[sqli.title, false, 'open'], [xss.title, false, 'false_positive']]);

    const finding = (await get(`/api/v1/findings/${byTitle[sqli.title].id}`)).body;
    assert.deepEqual([finding.occurrences, finding.first_run_id, finding.last_run_id], [2, first.runId, second.runId]);
    assert.deepEqual(finding.sightings.items.map((s: any) => [s.pipeline_run_id, s.step_key, s.command_id, s.new, s.location.start_line]), [
      [second.runId, 'sast', second.commandId, false, 50],
      [first.runId, 'sast', first.commandId, true, 40],
    ]);
    assert.ok(finding.status_changes.items.some((e: any) => e.event === 'finding.created'), JSON.stringify(finding.status_changes));

    const fp = (await get(`/api/v1/findings/${byTitle[xss.title].id}`)).body;
    assert.equal(fp.status, 'false_positive');
    assert.equal(fp.resolution, 'input is escaped by the template engine');
    assert.deepEqual(fp.status_changes.items.filter((e: any) => e.event === 'finding.status_changed').map((e: any) => [e.data.from, e.data.to]),
      [['open', 'false_positive']]);

    const resolved = (await get('/api/v1/findings?status=resolved')).body.items;
    assert.deepEqual(resolved.map((f: any) => [f.title, f.resolution]), [[md5.title, 'auto_fixed']]);
    assert.deepEqual(ids((await get('/api/v1/findings?q=checkout')).body.items), [byTitle[sqli.title].id]);

    const summary = (await get('/api/v1/findings/summary?group_by=rule')).body;
    assert.deepEqual([summary.total, summary.by_status.open, summary.by_status.false_positive, summary.by_status.resolved], [3, 1, 1, 1]);
    assert.deepEqual(summary.groups.map((g: any) => g.rule_id), ['sql-injection', 'xss', 'weak-hash']);

    // The first run, finished, counts what it saw first.
    await h.settle();
    assert.equal((await get(`/api/v1/pipeline-runs/${first.runId}`)).body.new_findings, 3);
  });

  it('q follows a finding\'s title and path when a re-ingest changes them, and forgets a deleted one', async () => {
    const moving = (await createAsset(h, t, { type: 'repository', name: 'moving', value: `https://git.example/${randomUUID()}` })).id;
    const send = async (title: string, path: string) => {
      const body = {
        ...report([]),
        findings: [{
          type: 'vulnerability', rule_id: 'open-redirect', title, severity: 'low', fingerprint: 'tool-fp-moving',
          location: { path, start_line: 3 },
        }],
      };
      const res = await h.request('POST', '/api/v1/agent/ingest', { apiKey: agent.apiKey, headers: { 'x-asset-id': moving }, body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body;
    };
    const search = async (q: string) => ids((await get(`/api/v1/findings?q=${encodeURIComponent(q)}&asset_id=${moving}`)).body.items);
    assert.equal((await send('Redirect to a user-given URL', 'legacy/redirect.js')).findings_created, 1);
    const [id] = await search('user-given');
    assert.ok(id);
    assert.deepEqual(await search('legacy/redirect'), [id]);

    const again = await send('Open redirect', 'src/web/redirect.ts');
    assert.deepEqual([again.findings_created, again.findings_updated], [0, 1]);
    assert.deepEqual(await search('user-given'), []);
    assert.deepEqual(await search('legacy/'), []);
    assert.deepEqual(await search('OPEN REDIRECT'), [id]);
    assert.deepEqual(await search('src/web/'), [id]);
    // The same text again writes nothing to the search table.
    const text = async () => (await h.pool.query(`SELECT xmin::text AS x, text FROM finding_texts WHERE finding_id = $1`, [id])).rows[0];
    const before = await text();
    assert.equal(before.text, 'Open redirect\nsrc/web/redirect.ts');
    assert.equal((await send('Open redirect', 'src/web/redirect.ts')).findings_updated, 1);
    assert.deepEqual(await text(), before);

    assert.equal((await h.request('DELETE', `/api/v1/assets/${moving}`, { token: t.token })).status, 204);
    assert.equal(await text(), undefined);
  });
});

const ids = (items: { id: string }[]) => items.map((i) => i.id);
