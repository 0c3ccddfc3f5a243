// Scans through the real app and real graphile-worker (seeds 002/003 "Scan Management", seed
// 000's Scan/ScanTask): CRUD and validation, tenant isolation, manual triggers, Crossfeed's
// in-progress rule, limits (waiting runs start oldest first when a slot frees), and fan-out
// of asset filters over many assets.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, getRun, startRun, type Tenant } from './support/fixtures.ts';
import { nextFire } from '../src/domain/scans.ts';
import {
  assertNoFailedJobs, createScan, expectProblem, finishRuns, getScan, makeDue, oneStep, runStates, scanFires, scanRuns,
  tick, triggerScan, updateScan, type Json,
} from './scan-support.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

/** A tenant with a one-step pipeline and an agent that runs it. */
async function setup(): Promise<{ t: Tenant; pipeline: Json; agent: TestAgent }> {
  const t = await createTenant(h);
  const pipeline = await createPipeline(h, t, oneStep(`p-${Math.random().toString(36).slice(2, 8)}`));
  const agent = await TestAgent.create(h, t, { tools: ['tool-a'], max_concurrent_jobs: 500 });
  return { t, pipeline, agent };
}

async function assets(t: Tenant, n: number, body: Json = {}): Promise<Json[]> {
  const out: Json[] = [];
  for (let i = 0; i < n; i++) out.push(await createAsset(h, t, { type: 'domain', name: `a${i}.example.com`, ...body }));
  return out;
}

describe('scans: create, read, update, delete', () => {
  it('creates a cron scan with its next fire computed in its time zone, and reads it back', async () => {
    const { t, pipeline } = await setup();
    const [asset] = await assets(t, 1);
    const scan = await createScan(h, t, {
      name: 'Nightly web scan', pipeline_id: pipeline.id, targets: { asset_id: asset.id },
      schedule_type: 'cron', cron_expression: '0 2 * * *', timezone: 'Europe/Berlin', context: { team: 'red' },
    });
    const expected = nextFire('0 2 * * *', 'Europe/Berlin', new Date())!;
    assert.equal(scan.name, 'Nightly web scan');
    assert.equal(scan.pipeline_id, pipeline.id);
    assert.equal(scan.tenant_id, t.id);
    assert.deepEqual(scan.targets, { asset_id: asset.id });
    assert.equal(scan.schedule_type, 'cron');
    assert.equal(scan.cron_expression, '0 2 * * *');
    assert.equal(scan.timezone, 'Europe/Berlin');
    assert.equal(scan.status, 'active');
    assert.equal(scan.max_active_runs, 10);
    assert.deepEqual(scan.context, { team: 'red' });
    assert.equal(scan.managed_by, null);
    assert.equal(scan.last_run_at, null);
    assert.equal(scan.next_run_at, expected.toISOString());
    assert.ok(new Date(scan.next_run_at).getTime() > Date.now());

    assert.deepEqual(await getScan(h, t, scan.id), scan);
    const list = await h.request('GET', '/api/v1/scans', { token: t.token });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.items.map((s: Json) => s.id), [scan.id]);
  });

  it('derives the cron of daily, weekly and monthly scans from next_run_at in the scan\'s time zone (or 00:00)', async () => {
    const { t, pipeline } = await setup();
    const daily = await createScan(h, t, {
      name: 'daily', pipeline_id: pipeline.id, schedule_type: 'daily', next_run_at: '2030-01-15T02:30:00Z',
    });
    assert.equal(daily.cron_expression, '30 2 * * *');
    assert.equal(daily.next_run_at, '2030-01-15T02:30:00.000Z');

    // 2030-01-16 is a Wednesday; 06:15 UTC is 07:15 in Berlin (CET).
    const weekly = await createScan(h, t, {
      name: 'weekly', pipeline_id: pipeline.id, schedule_type: 'weekly', timezone: 'Europe/Berlin', next_run_at: '2030-01-16T06:15:00Z',
    });
    assert.equal(weekly.cron_expression, '15 7 * * 3');
    assert.equal(weekly.next_run_at, '2030-01-16T06:15:00.000Z');

    // 23:30 UTC on the 15th is 00:30 on the 16th in Berlin.
    const monthly = await createScan(h, t, {
      name: 'monthly', pipeline_id: pipeline.id, schedule_type: 'monthly', timezone: 'Europe/Berlin', next_run_at: '2030-01-15T23:30:00Z',
    });
    assert.equal(monthly.cron_expression, '30 0 16 * *');

    const midnight = await createScan(h, t, { name: 'daily at midnight', pipeline_id: pipeline.id, schedule_type: 'daily' });
    assert.equal(midnight.cron_expression, '0 0 * * *');
    assert.equal(midnight.next_run_at, nextFire('0 0 * * *', 'UTC', new Date())!.toISOString());

    const manual = await createScan(h, t, { name: 'manual', pipeline_template_id: pipeline.id });
    assert.equal(manual.pipeline_id, pipeline.id, 'seed 003 clients send pipeline_template_id');
    assert.equal(manual.schedule_type, 'manual');
    assert.equal(manual.cron_expression, null);
    assert.equal(manual.next_run_at, null);
    assert.deepEqual(manual.targets, {});

    const paused = await createScan(h, t, {
      name: 'paused', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '*/5 * * * *', status: 'paused',
    });
    assert.equal(paused.status, 'paused');
    assert.equal(paused.next_run_at, null, 'a paused scan has no next fire');

    const byStatus = await h.request('GET', '/api/v1/scans?status=paused', { token: t.token });
    assert.deepEqual(byStatus.body.items.map((s: Json) => s.id), [paused.id]);
    const other = await createPipeline(h, t, oneStep('other pipeline'));
    const onOther = await createScan(h, t, { name: 'on other', pipeline_id: other.id });
    const byPipeline = await h.request('GET', `/api/v1/scans?pipeline_id=${other.id}`, { token: t.token });
    assert.deepEqual(byPipeline.body.items.map((s: Json) => s.id), [onOther.id]);
  });

  it('PUT merges: a rename keeps the schedule and the pending fire; a new cron recomputes the next fire from now', async () => {
    const { t, pipeline } = await setup();
    const scan = await createScan(h, t, {
      name: 'to edit', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 3 * * *', next_run_at: '2031-06-01T03:00:00Z',
    });
    assert.equal(scan.next_run_at, '2031-06-01T03:00:00.000Z', 'an explicit next_run_at is the first fire');

    const renamed = await updateScan(h, t, scan.id, { name: 'edited', description: 'now described' });
    assert.equal(renamed.name, 'edited');
    assert.equal(renamed.description, 'now described');
    assert.equal(renamed.cron_expression, '0 3 * * *');
    assert.equal(renamed.next_run_at, '2031-06-01T03:00:00.000Z');

    const recron = await updateScan(h, t, scan.id, { cron_expression: '30 4 * * *', timezone: 'America/New_York' });
    assert.equal(recron.cron_expression, '30 4 * * *');
    assert.equal(recron.timezone, 'America/New_York');
    assert.equal(recron.next_run_at, nextFire('30 4 * * *', 'America/New_York', new Date())!.toISOString());

    const manual = await updateScan(h, t, scan.id, { schedule_type: 'manual' });
    assert.equal(manual.cron_expression, null);
    assert.equal(manual.next_run_at, null);

    const limits = await updateScan(h, t, scan.id, { max_active_runs: 3 });
    assert.equal(limits.max_active_runs, 3);

    const del = await h.request('DELETE', `/api/v1/scans/${scan.id}`, { token: t.token });
    assert.equal(del.status, 204);
    assert.equal((await h.request('GET', `/api/v1/scans/${scan.id}`, { token: t.token })).status, 404);
    assert.equal((await h.request('DELETE', `/api/v1/scans/${scan.id}`, { token: t.token })).status, 404);
    assert.equal((await h.request('PUT', `/api/v1/scans/${scan.id}`, { token: t.token, body: { name: 'x' } })).status, 404);
  });

  it('scan names are unique per tenant, ignoring case (409)', async () => {
    const { t, pipeline } = await setup();
    await createScan(h, t, { name: 'Weekly', pipeline_id: pipeline.id });
    const dup = await h.request('POST', '/api/v1/scans', { token: t.token, body: { name: 'weekly', pipeline_id: pipeline.id } });
    assert.equal(dup.status, 409, JSON.stringify(dup.body));
    assert.equal(dup.body.error.code, 'name_taken');
    const second = await createScan(h, t, { name: 'Second', pipeline_id: pipeline.id });
    const rename = await h.request('PUT', `/api/v1/scans/${second.id}`, { token: t.token, body: { name: 'WEEKLY' } });
    assert.equal(rename.status, 409, JSON.stringify(rename.body));
    // Another tenant may use the name.
    const other = await setup();
    await createScan(h, other.t, { name: 'Weekly', pipeline_id: other.pipeline.id });
  });

  it('pausing and resuming a daily scan keeps its time of day (the derived cron); resume recomputes the next fire from now', async () => {
    const { t, pipeline } = await setup();
    const scan = await createScan(h, t, {
      name: 'daily 02:30', pipeline_id: pipeline.id, schedule_type: 'daily', timezone: 'UTC', next_run_at: '2030-03-01T02:30:00Z',
    });
    assert.equal(scan.cron_expression, '30 2 * * *');
    const paused = await updateScan(h, t, scan.id, { status: 'paused' });
    assert.equal(paused.status, 'paused');
    assert.equal(paused.next_run_at, null);
    assert.equal(paused.cron_expression, '30 2 * * *', 'pausing does not move a daily 02:30 scan to midnight');
    const resumed = await updateScan(h, t, scan.id, { status: 'active' });
    assert.equal(resumed.cron_expression, '30 2 * * *', 'resuming does not move a daily 02:30 scan to midnight');
    assert.equal(resumed.next_run_at, nextFire('30 2 * * *', 'UTC', new Date())!.toISOString());
  });

  it('changing only the time zone of a weekly scan keeps its weekday and time of day', async () => {
    const { t, pipeline } = await setup();
    // 2030-01-16 is a Wednesday.
    const scan = await createScan(h, t, {
      name: 'weekly wed 07:15', pipeline_id: pipeline.id, schedule_type: 'weekly', timezone: 'UTC', next_run_at: '2030-01-16T07:15:00Z',
    });
    assert.equal(scan.cron_expression, '15 7 * * 3');
    const moved = await updateScan(h, t, scan.id, { timezone: 'Europe/Berlin' });
    assert.equal(moved.timezone, 'Europe/Berlin');
    // Either the wall-clock time (07:15 Berlin) or the instant (08:15 Berlin) is defensible; a reset to Monday midnight is not.
    assert.ok(['15 7 * * 3', '15 8 * * 3'].includes(moved.cron_expression), `the weekly schedule keeps its Wednesday morning: ${moved.cron_expression}`);
  });
});

describe('scans: validation names the field', () => {
  it('refuses bad schedules, references, targets and statuses with 400 and the field', async () => {
    const { t, pipeline } = await setup();
    const [asset] = await assets(t, 1);
    const base = { name: 'v', pipeline_id: pipeline.id };
    const cases: { body: Json; path: string | RegExp; message?: RegExp }[] = [
      { body: { ...base, schedule_type: 'cron', cron_expression: 'not a cron' }, path: 'cron_expression', message: /cron/ },
      { body: { ...base, schedule_type: 'cron', cron_expression: '61 * * * *' }, path: 'cron_expression' },
      { body: { ...base, schedule_type: 'cron' }, path: 'cron_expression', message: /required/ },
      { body: { ...base, schedule_type: 'daily', cron_expression: '0 2 * * *' }, path: 'cron_expression', message: /only for schedule_type cron/ },
      { body: { ...base, schedule_type: 'hourly' }, path: 'schedule_type' },
      { body: { ...base, pipeline_id: '00000000-0000-4000-8000-000000000000' }, path: 'pipeline_id', message: /unknown pipeline/ },
      { body: { ...base, pipeline_id: 'nope' }, path: 'pipeline_id' },
      { body: { name: 'v' }, path: 'pipeline_id' },
      { body: { pipeline_id: pipeline.id }, path: 'name' },
      { body: { ...base, name: '   ' }, path: 'name' },
      { body: { ...base, targets: { asset_id: '00000000-0000-4000-8000-000000000000' } }, path: 'targets.asset_id', message: /unknown asset/ },
      { body: { ...base, targets: { asset_ids: [asset.id, '00000000-0000-4000-8000-000000000000'] } }, path: 'targets.asset_ids[1]', message: /unknown asset/ },
      { body: { ...base, targets: { asset_id: 'not-a-uuid' } }, path: 'targets.asset_id' },
      { body: { ...base, targets: { asset_ids: [] } }, path: 'targets.asset_ids' },
      { body: { ...base, timezone: 'Mars/Olympus' }, path: 'timezone', message: /IANA/ },
      { body: { ...base, targets: { asset_filter: "tags.contains('production'" } }, path: /^targets\.asset_filter/ },
      { body: { ...base, targets: { asset_filter: { expression: 'asset.tags.contains(' } } }, path: /^targets\.asset_filter/ },
      { body: { ...base, targets: { asset_filter: { type: 'spaceship' } } }, path: /^targets\.asset_filter/ },
      { body: { ...base, targets: { asset_filter: { colour: 'red' } } }, path: /^targets\.asset_filter/ },
      { body: { ...base, targets: { asset_id: asset.id, asset_filter: { type: 'domain' } } }, path: 'targets', message: /one of/ },
      { body: { ...base, targets: { hosts: ['x'] } }, path: /^targets/ },
      { body: { ...base, status: 'running' }, path: 'status', message: /active, paused, disabled/ },
      { body: { ...base, max_active_runs: 0 }, path: 'max_active_runs' },
      { body: { ...base, max_active_runs: 1.5 }, path: 'max_active_runs' },
      { body: { ...base, next_run_at: 'tomorrow' }, path: 'next_run_at' },
      { body: { ...base, context: [1, 2] }, path: 'context' },
    ];
    for (const c of cases) {
      const res = await h.request('POST', '/api/v1/scans', { token: t.token, body: c.body });
      expectProblem(res, c.path, c.message);
    }
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM scans WHERE tenant_id = $1`, [t.id]);
    assert.equal(rows[0].n, 0, 'nothing was created');

    // PUT validates the merged scan the same way and changes nothing when it is wrong.
    const scan = await createScan(h, t, { ...base, schedule_type: 'cron', cron_expression: '0 1 * * *' });
    expectProblem(await h.request('PUT', `/api/v1/scans/${scan.id}`, { token: t.token, body: { cron_expression: 'every day' } }), 'cron_expression');
    expectProblem(await h.request('PUT', `/api/v1/scans/${scan.id}`, { token: t.token, body: { status: 'gone' } }), 'status');
    expectProblem(await h.request('PUT', `/api/v1/scans/${scan.id}`, { token: t.token, body: { schedule_type: 'weekly', cron_expression: '0 1 * * 1' } }), 'cron_expression');
    expectProblem(await h.request('PUT', `/api/v1/scans/${scan.id}`, { token: t.token, body: { targets: { asset_id: '00000000-0000-4000-8000-000000000000' } } }), 'targets.asset_id');
    assert.deepEqual(await getScan(h, t, scan.id), scan);
  });

  it('a bad filter expression is reported with what is wrong with it', async () => {
    const { t, pipeline } = await setup();
    const res = await h.request('POST', '/api/v1/scans', {
      token: t.token, body: { name: 'v', pipeline_id: pipeline.id, targets: { asset_filter: { expression: "tags.contains('production'" } } },
    });
    expectProblem(res, /^targets\.asset_filter/, /expression/);
  });
});

describe('scans: tenant isolation', () => {
  it("another tenant's scan is 404 everywhere, and another tenant's pipeline or asset cannot be a scan's", async () => {
    const a = await setup();
    const b = await setup();
    const [assetA] = await assets(a.t, 1);
    const scan = await createScan(h, a.t, { name: 'private', pipeline_id: a.pipeline.id, targets: { asset_id: assetA.id } });
    for (const [method, path, body] of [
      ['GET', `/api/v1/scans/${scan.id}`, undefined],
      ['PUT', `/api/v1/scans/${scan.id}`, { name: 'stolen' }],
      ['DELETE', `/api/v1/scans/${scan.id}`, undefined],
      ['POST', `/api/v1/scans/${scan.id}/trigger`, {}],
      ['GET', `/api/v1/scans/${scan.id}/runs`, undefined],
      ['GET', `/api/v1/scans/${scan.id}/fires`, undefined],
    ] as const) {
      const res = await h.request(method, path, { token: b.t.token, body });
      assert.equal(res.status, 404, `${method} ${path}: ${JSON.stringify(res.body)}`);
    }
    const list = await h.request('GET', '/api/v1/scans', { token: b.t.token });
    assert.deepEqual(list.body.items, []);
    assert.equal((await getScan(h, a.t, scan.id)).name, 'private');
    assert.deepEqual(await scanFires(h, a.t, scan.id), [], 'the refused trigger fired nothing');

    expectProblem(await h.request('POST', '/api/v1/scans', { token: b.t.token, body: { name: 'x', pipeline_id: a.pipeline.id } }), 'pipeline_id');
    expectProblem(await h.request('POST', '/api/v1/scans', {
      token: b.t.token, body: { name: 'x', pipeline_id: b.pipeline.id, targets: { asset_id: assetA.id } },
    }), 'targets.asset_id');
    const mine = await createScan(h, b.t, { name: 'mine', pipeline_id: b.pipeline.id });
    expectProblem(await h.request('PUT', `/api/v1/scans/${mine.id}`, { token: b.t.token, body: { pipeline_id: a.pipeline.id } }), 'pipeline_id');
    expectProblem(await h.request('PUT', `/api/v1/scans/${mine.id}`, { token: b.t.token, body: { targets: { asset_ids: [assetA.id, assetA.id] } } }), /^targets\.asset_ids?/);

    // A filter never reaches another tenant's assets.
    const fan = await createScan(h, b.t, { name: 'all domains', pipeline_id: b.pipeline.id, targets: { asset_filter: { type: 'domain' } } });
    const fired = await triggerScan(h, b.t, fan.id);
    assert.deepEqual(fired.runs, []);
    assert.equal((await h.request('GET', '/api/v1/scans', { token: a.t.token })).status, 200);
    assert.equal((await h.request('GET', '/api/v1/scans')).status, 401);
  });
});

describe('scans: manual trigger (Crossfeed: run now)', () => {
  it('starts one run per target asset with the scan\'s and the request\'s context, and records the fire', async () => {
    const { t, pipeline, agent } = await setup();
    const targets = await assets(t, 3);
    const scan = await createScan(h, t, {
      name: 'three', pipeline_id: pipeline.id, targets: { asset_ids: targets.map((a) => a.id) }, context: { team: 'blue', depth: 1 },
    });
    const res = await triggerScan(h, t, scan.id, { context: { depth: 2, reason: 'release' } });
    assert.equal(res.runs.length, 3);
    assert.deepEqual(res.skipped, []);
    assert.equal(typeof res.fire_id === 'number' || typeof res.fire_id === 'string', true);
    assert.deepEqual(new Set(res.runs.map((r: Json) => r.asset_id)), new Set(targets.map((a) => a.id)));
    for (const run of res.runs) {
      assert.equal(run.scan_id, scan.id);
      assert.equal(run.pipeline_id, pipeline.id);
      assert.equal(run.trigger_type, 'manual');
      assert.deepEqual(run.context, { team: 'blue', depth: 2, reason: 'release' });
      assert.ok(run.admitted_at, 'under the limits: admitted at once');
    }
    await h.settle();
    // The runs really start: each has its command with the asset as target.
    const commands = await agent.poll({ limit: 10 });
    assert.deepEqual(new Set(commands.map((c) => c.payload.target.id)), new Set(targets.map((a) => a.id)));
    assert.deepEqual(new Set(commands.map((c) => c.payload.context.reason)), new Set(['release']));

    const listed = await scanRuns(h, t, scan.id);
    assert.deepEqual(new Set(listed.map((r) => r.id)), new Set(res.runs.map((r: Json) => r.id)));
    const byFilter = await h.request('GET', `/api/v1/pipeline-runs?scan_id=${scan.id}`, { token: t.token });
    assert.equal(byFilter.body.items.length, 3);

    const fires = await scanFires(h, t, scan.id);
    assert.equal(fires.length, 1);
    assert.equal(fires[0].id, res.fire_id);
    assert.equal(fires[0].trigger_type, 'manual');
    assert.deepEqual(new Set(fires[0].run_ids), new Set(res.runs.map((r: Json) => r.id)));
    assert.equal(fires[0].waiting_runs, 0);
    // A manual trigger does not move the schedule.
    assert.equal((await getScan(h, t, scan.id)).next_run_at, null);
  });

  it('a scan with no targets starts one run with no asset', async () => {
    const { t, pipeline } = await setup();
    const scan = await createScan(h, t, { name: 'no targets', pipeline_id: pipeline.id });
    const res = await triggerScan(h, t, scan.id);
    assert.equal(res.runs.length, 1);
    assert.equal(res.runs[0].asset_id, null);
  });

  it('a paused scan can be triggered by hand; a disabled one answers 409 and starts nothing', async () => {
    const { t, pipeline } = await setup();
    const scan = await createScan(h, t, {
      name: 'paused', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 2 * * *', status: 'paused',
    });
    const res = await triggerScan(h, t, scan.id);
    assert.equal(res.runs.length, 1);
    await updateScan(h, t, scan.id, { status: 'disabled' });
    const refused = await h.request('POST', `/api/v1/scans/${scan.id}/trigger`, { token: t.token, body: {} });
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'scan_disabled');
    assert.equal((await scanRuns(h, t, scan.id)).length, 1);
    assert.equal((await scanFires(h, t, scan.id)).length, 1);
    expectProblem(await h.request('POST', `/api/v1/scans/${scan.id}/trigger`, { token: t.token, body: { context: 'x' } }), 'context');
  });

  it('a deleted asset in the targets is skipped with its reason; the others run', async () => {
    const { t, pipeline } = await setup();
    const [keep, gone] = await assets(t, 2);
    const scan = await createScan(h, t, { name: 'two', pipeline_id: pipeline.id, targets: { asset_ids: [keep.id, gone.id] } });
    assert.equal((await h.request('DELETE', `/api/v1/assets/${gone.id}`, { token: t.token })).status, 204);
    const res = await triggerScan(h, t, scan.id);
    assert.deepEqual(res.runs.map((r: Json) => r.asset_id), [keep.id]);
    assert.equal(res.skipped.length, 1);
    assert.equal(res.skipped[0].asset_id, gone.id);
    assert.match(res.skipped[0].reason, /does not exist/);
  });
});

describe("scans: Crossfeed's in-progress rule", () => {
  it('does not start another run on an asset whose previous run of the scan is still in progress, and records the skip', async () => {
    const { t, pipeline, agent } = await setup();
    const [busy, free] = await assets(t, 2);
    const scan = await createScan(h, t, {
      name: 'in progress', pipeline_id: pipeline.id, targets: { asset_ids: [busy.id, free.id] },
      schedule_type: 'cron', cron_expression: '0 0 1 1 *',
    });
    const first = await triggerScan(h, t, scan.id);
    assert.equal(first.runs.length, 2);
    const busyRun = first.runs.find((r: Json) => r.asset_id === busy.id);
    const freeRun = first.runs.find((r: Json) => r.asset_id === free.id);
    assert.equal(await finishRuns(h, agent, [freeRun.id]), 1);
    assert.equal((await getRun(h, t, freeRun.id)).status, 'completed');
    assert.equal((await getRun(h, t, busyRun.id)).status, 'running');

    // Manual trigger: only the free asset gets a run.
    const second = await triggerScan(h, t, scan.id);
    assert.deepEqual(second.runs.map((r: Json) => r.asset_id), [free.id]);
    assert.equal(second.skipped.length, 1);
    assert.equal(second.skipped[0].asset_id, busy.id);
    assert.ok(second.skipped[0].reason.includes(busyRun.id), second.skipped[0].reason);
    assert.match(second.skipped[0].reason, /running/);

    // The scheduler follows the same rule, and the fire says so.
    await makeDue(h, scan.id);
    await tick(h);
    const fires = await scanFires(h, t, scan.id);
    assert.deepEqual(fires.map((f) => f.trigger_type), ['manual', 'manual', 'schedule']);
    const scheduled = fires[2];
    assert.deepEqual(scheduled.run_ids, [], 'both assets still have a run in progress');
    assert.deepEqual(new Set(scheduled.skipped.map((s: Json) => s.asset_id)), new Set([busy.id, free.id]));
    for (const s of scheduled.skipped) assert.match(s.reason, /still (running|waiting)/);
    assert.equal((await runStates(h, scan.id)).length, 3);

    // Once the runs finish, the next fire starts runs on both again.
    await finishRuns(h, agent, [busyRun.id, second.runs[0].id]);
    const third = await triggerScan(h, t, scan.id);
    assert.equal(third.runs.length, 2);
    assert.deepEqual(third.skipped, []);
    await assertNoFailedJobs(h);
  });

  it('concurrent manual triggers and a scheduled fire of one scan start one run per asset; the rest are recorded skips', async () => {
    const { t, pipeline } = await setup();
    const targets = await assets(t, 3);
    const scan = await createScan(h, t, {
      name: 'stampede', pipeline_id: pipeline.id, targets: { asset_ids: targets.map((a) => a.id) }, max_active_runs: 100,
      schedule_type: 'cron', cron_expression: '0 0 1 1 *',
    });
    await makeDue(h, scan.id);
    const [results] = await Promise.all([
      Promise.all(Array.from({ length: 8 }, () => h.request('POST', `/api/v1/scans/${scan.id}/trigger`, { token: t.token, body: {} }))),
      tick(h),
    ]);
    await h.settle();
    for (const r of results) assert.equal(r.status, 201, JSON.stringify(r.body));
    const runs = await runStates(h, scan.id);
    assert.equal(runs.length, 3, JSON.stringify(runs));
    assert.deepEqual(new Set(runs.map((r) => r.asset_id)), new Set(targets.map((a) => a.id)));
    const fires = await scanFires(h, t, scan.id);
    assert.equal(fires.length, 9, '8 manual fires and 1 scheduled');
    assert.equal(fires.reduce((n, f) => n + f.run_ids.length, 0), 3);
    assert.equal(fires.reduce((n, f) => n + f.skipped.length, 0), 9 * 3 - 3, 'every other target is a recorded skip');
  });

  it('a run still waiting for a slot also blocks the next run on its asset', async () => {
    const { t, pipeline } = await setup();
    const targets = await assets(t, 2);
    const scan = await createScan(h, t, {
      name: 'waiting blocks', pipeline_id: pipeline.id, targets: { asset_ids: targets.map((a) => a.id) }, max_active_runs: 1,
    });
    const first = await triggerScan(h, t, scan.id);
    const waiting = first.runs.find((r: Json) => r.admitted_at === null);
    assert.ok(waiting, JSON.stringify(first.runs));
    const second = await triggerScan(h, t, scan.id);
    assert.deepEqual(second.runs, []);
    const reasons = Object.fromEntries(second.skipped.map((s: Json) => [s.asset_id, s.reason]));
    assert.match(reasons[waiting.asset_id], /waiting/);
  });
});

describe('scans: limits (Crossfeed\'s queued tasks)', () => {
  it('scan max_active_runs 2 over 5 assets: 2 start, 3 wait as pending; each finished run admits the next', async () => {
    const { t, pipeline, agent } = await setup();
    const targets = await assets(t, 5);
    const scan = await createScan(h, t, {
      name: 'limited', pipeline_id: pipeline.id, targets: { asset_ids: targets.map((a) => a.id) }, max_active_runs: 2,
    });
    const fired = await triggerScan(h, t, scan.id);
    assert.equal(fired.runs.length, 5);
    assert.equal(fired.runs.filter((r: Json) => r.admitted_at !== null).length, 2);
    const waiting = fired.runs.filter((r: Json) => r.admitted_at === null);
    assert.equal(waiting.length, 3);
    for (const r of waiting) assert.equal(r.status, 'pending');
    assert.equal((await scanFires(h, t, scan.id))[0].waiting_runs, 3);
    await h.settle();
    let states = await runStates(h, scan.id);
    assert.deepEqual(states.map((s) => s.status).sort(), ['pending', 'pending', 'pending', 'running', 'running']);
    // Waiting runs have dispatched nothing and have no deadline.
    for (const r of waiting) {
      const run = await getRun(h, t, r.id);
      assert.equal(run.status, 'pending');
      assert.equal(run.admitted_at, null);
      assert.equal(run.started_at, null);
    }
    const commands = await agent.poll({ limit: 100 });
    assert.equal(commands.length, 2, 'only the two admitted runs dispatched');

    // Finish runs one at a time: never more than 2 in progress, and each finish admits one.
    const done = new Set<string>();
    for (let round = 0; round < 5; round++) {
      const running = states.filter((s) => s.status === 'running');
      assert.ok(running.length <= 2 && running.length >= 1, JSON.stringify(states));
      const victim = running[0];
      assert.equal(await finishRuns(h, agent, [victim.id]), 1);
      done.add(victim.id);
      states = await runStates(h, scan.id);
      const inProgress = states.filter((s) => s.status === 'running' || (s.status === 'pending' && s.admitted));
      assert.equal(inProgress.length, Math.min(2, 5 - done.size), `round ${round}: ${JSON.stringify(states)}`);
      assert.equal(states.filter((s) => s.status === 'completed').length, done.size);
    }
    assert.ok(states.every((s) => s.status === 'completed'));
    await assertNoFailedJobs(h);
  });

  it('raising a scan\'s max_active_runs admits its waiting runs at once', async () => {
    const { t, pipeline } = await setup();
    const targets = await assets(t, 4);
    const scan = await createScan(h, t, {
      name: 'raise me', pipeline_id: pipeline.id, targets: { asset_ids: targets.map((a) => a.id) }, max_active_runs: 1,
    });
    const fired = await triggerScan(h, t, scan.id);
    assert.equal(fired.runs.filter((r: Json) => r.admitted_at === null).length, 3);
    await updateScan(h, t, scan.id, { max_active_runs: 4 });
    await h.settle();
    const states = await runStates(h, scan.id);
    assert.deepEqual(states.map((s) => [s.status, s.admitted]), Array(4).fill(['running', true]),
      'a slot freed by a higher limit is a slot: the waiting runs start');
  });

  it('tenant max_active_runs across scans: waiting runs of any scan start oldest first when a slot frees', async () => {
    const { t, pipeline, agent } = await setup();
    await h.pool.query(`UPDATE tenants SET max_active_runs = 2 WHERE id = $1`, [t.id]);
    const [a1, a2, a3, a4] = await assets(t, 4);
    const s1 = await createScan(h, t, { name: 's1', pipeline_id: pipeline.id, targets: { asset_ids: [a1.id, a2.id] } });
    const s2 = await createScan(h, t, { name: 's2', pipeline_id: pipeline.id, targets: { asset_id: a3.id } });
    const s3 = await createScan(h, t, { name: 's3', pipeline_id: pipeline.id, targets: { asset_id: a4.id } });
    const f1 = await triggerScan(h, t, s1.id);
    assert.equal(f1.runs.filter((r: Json) => r.admitted_at).length, 2);
    const f2 = await triggerScan(h, t, s2.id); // older waiting run
    const f3 = await triggerScan(h, t, s3.id); // newer waiting run
    assert.equal(f2.runs[0].admitted_at, null);
    assert.equal(f3.runs[0].admitted_at, null);
    // A run started directly through the pipeline API counts against the tenant too.
    const direct = await startRun(h, t, pipeline.id);
    assert.equal(direct.admitted_at, null);
    assert.equal(direct.status, 'pending');
    await h.settle();

    // One slot frees: the oldest waiting run (s2's) starts, not s3's.
    await finishRuns(h, agent, [f1.runs[0].id]);
    assert.equal((await getRun(h, t, f2.runs[0].id)).status, 'running');
    assert.equal((await getRun(h, t, f3.runs[0].id)).status, 'pending');
    assert.equal((await getRun(h, t, direct.id)).status, 'pending');
    // The next slot: s3's run, then the direct run.
    await finishRuns(h, agent, [f1.runs[1].id]);
    assert.equal((await getRun(h, t, f3.runs[0].id)).status, 'running');
    assert.equal((await getRun(h, t, direct.id)).status, 'pending');
    await finishRuns(h, agent, [f2.runs[0].id]);
    assert.equal((await getRun(h, t, direct.id)).status, 'running');
    const { rows } = await h.pool.query(
      `SELECT count(*)::int AS n FROM pipeline_runs WHERE tenant_id = $1 AND status IN ('pending', 'running') AND admitted_at IS NOT NULL`, [t.id]);
    assert.equal(rows[0].n, 2);
    await assertNoFailedJobs(h);
  });

  it('one tenant at its limit does not hold back another tenant', async () => {
    const a = await setup();
    const b = await setup();
    await h.pool.query(`UPDATE tenants SET max_active_runs = 1 WHERE id = $1`, [a.t.id]);
    const scanA = await createScan(h, a.t, { name: 'a', pipeline_id: a.pipeline.id, targets: { asset_ids: (await assets(a.t, 3)).map((x) => x.id) } });
    const scanB = await createScan(h, b.t, { name: 'b', pipeline_id: b.pipeline.id, targets: { asset_ids: (await assets(b.t, 3)).map((x) => x.id) } });
    const fa = await triggerScan(h, a.t, scanA.id);
    const fb = await triggerScan(h, b.t, scanB.id);
    assert.equal(fa.runs.filter((r: Json) => r.admitted_at).length, 1);
    assert.equal(fb.runs.filter((r: Json) => r.admitted_at).length, 3);
  });
});

describe('scans: fan-out over many assets (Crossfeed runs a scan on every organization)', () => {
  it('one run per matching asset, for type/tags filters, CEL expressions (seed 001\'s tags.contains) and lists of filters', async () => {
    const { t, pipeline } = await setup();
    await h.pool.query(`UPDATE tenants SET max_active_runs = 1000 WHERE id = $1`, [t.id]);
    const made: Json[] = [];
    for (let i = 0; i < 50; i++) {
      const type = i % 5 === 0 ? 'repository' : 'web_application';
      const tags = i % 2 === 0 ? ['production', `team-${i % 3}`] : ['staging'];
      const criticality = i % 7 === 0 ? 'critical' : 'medium';
      made.push(await createAsset(h, t, { type, name: `asset-${i}`, value: `https://a${i}.example.com`, tags, criticality }));
    }
    // Another tenant's production web application never matches.
    const other = await setup();
    await createAsset(h, other.t, { type: 'web_application', name: 'foreign', tags: ['production'] });

    const expectIds = (pred: (a: Json) => boolean) => new Set(made.filter(pred).map((a) => a.id));
    const filters: { filter: unknown; pred: (a: Json) => boolean }[] = [
      { filter: { type: 'web_application', tags: ['production'] }, pred: (a) => a.type === 'web_application' && a.tags.includes('production') },
      { filter: "tags.contains('production')", pred: (a) => a.tags.includes('production') },
      { filter: { expression: "asset.type == 'repository' || asset.criticality == 'critical'" }, pred: (a) => a.type === 'repository' || a.criticality === 'critical' },
      { filter: { criticality: 'critical', tags: 'production' }, pred: (a) => a.criticality === 'critical' && a.tags.includes('production') },
      { filter: [{ type: 'repository' }, { tags: ['team-1'] }], pred: (a) => a.type === 'repository' || a.tags.includes('team-1') },
      { filter: { type: ['repository', 'web_application'], expression: "name.endsWith('7')" }, pred: (a) => a.name.endsWith('7') },
    ];
    for (const [i, { filter, pred }] of filters.entries()) {
      const scan = await createScan(h, t, {
        name: `fan-out ${i}`, pipeline_id: pipeline.id, targets: { asset_filter: filter }, max_active_runs: 100,
        schedule_type: 'cron', cron_expression: '0 0 1 1 *',
      });
      const expected = expectIds(pred);
      assert.ok(expected.size > 0 && expected.size < 50, `filter ${i} selects some: ${expected.size}`);
      // Through the scheduler: every matching asset gets exactly one run.
      await makeDue(h, scan.id);
      await tick(h);
      const runs = await scanRuns(h, t, scan.id);
      assert.deepEqual(new Set(runs.map((r) => r.asset_id)), expected, `filter ${i}: ${JSON.stringify(filter)}`);
      assert.equal(runs.length, expected.size, `filter ${i}: one run per asset`);
      for (const r of runs) assert.equal(r.trigger_type, 'schedule');
      const fires = await scanFires(h, t, scan.id);
      assert.equal(fires.length, 1);
      assert.equal(fires[0].run_ids.length, expected.size);
    }
    // The run's target is the asset's snapshot (commands and conditions see it).
    const scan = await createScan(h, t, { name: 'snapshot', pipeline_id: pipeline.id, targets: { asset_filter: { tags: ['team-2'], type: 'repository' } } });
    const fired = await triggerScan(h, t, scan.id);
    const run = await getRun(h, t, fired.runs[0].id);
    const asset = made.find((a) => a.id === run.asset_id)!;
    assert.ok(asset.tags.includes('team-2') && asset.type === 'repository');
    await assertNoFailedJobs(h);
  });

  it('a filter matching nothing fires with no runs (recorded)', async () => {
    const { t, pipeline } = await setup();
    await assets(t, 2);
    const scan = await createScan(h, t, { name: 'none', pipeline_id: pipeline.id, targets: { asset_filter: { type: 'certificate' } } });
    const res = await triggerScan(h, t, scan.id);
    assert.deepEqual(res.runs, []);
    const fires = await scanFires(h, t, scan.id);
    assert.equal(fires.length, 1);
    assert.deepEqual(fires[0].run_ids, []);
  });
});

it('GET /scans/{id}/fires pages with its cursor', async () => {
  const { t, pipeline } = await setup();
  const scan = await createScan(h, t, { name: 'paged', pipeline_id: pipeline.id, max_active_runs: 100 });
  for (let i = 0; i < 3; i++) await triggerScan(h, t, scan.id);
  const first = await h.request('GET', `/api/v1/scans/${scan.id}/fires?limit=2`, { token: t.token });
  assert.equal(first.status, 200);
  assert.equal(first.body.items.length, 2);
  assert.ok(first.body.next_cursor);
  const second = await h.request('GET', `/api/v1/scans/${scan.id}/fires?limit=2&cursor=${first.body.next_cursor}`, { token: t.token });
  assert.equal(second.body.items.length, 1);
  assert.equal(second.body.next_cursor, null);
  // The 3 fires, newest first, no repeats.
  const ids = [...first.body.items, ...second.body.items].map((f: Json) => Number(f.id));
  assert.deepEqual(ids, [...ids].sort((x, y) => y - x));
  assert.equal(new Set(ids).size, 3);
  expectProblem(await h.request('GET', `/api/v1/scans/${scan.id}/fires?cursor=abc`, { token: t.token }), 'cursor');
});
