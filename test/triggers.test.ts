// Pipeline triggers of seed 001 and run timeouts, through the real app and real
// graphile-worker: schedule triggers kept as managed scans, authenticated webhooks with
// event matching, on_asset_discovery with and without a filter, and settings.timeout
// cancelling a run's in-flight commands and unfinished steps.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createAsset, createPipeline, createTenant, getRun, runEvents, startRun, step, stepsByKey, type Tenant,
} from './support/fixtures.ts';
import { ADMIN_TOKEN } from './support/harness.ts';
import { nextFire } from '../src/domain/scans.ts';
import {
  assertNoFailedJobs, createScan, expectProblem, finishRuns, getScan, makeDue, oneStep, scanFires, scanRuns, tick, type Json,
} from './scan-support.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

async function managedScans(t: Tenant, pipelineId: string): Promise<Json[]> {
  const res = await h.request('GET', `/api/v1/scans?pipeline_id=${pipelineId}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return (res.body.items as Json[]).filter((s) => s.managed_by === 'pipeline-trigger').sort((a, b) => a.name.localeCompare(b.name));
}

async function putPipeline(t: Tenant, id: string, doc: Json): Promise<Json> {
  const res = await h.request('PUT', `/api/v1/pipelines/${id}`, { token: t.token, body: doc });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/** Runs of a pipeline from the database, oldest first. */
async function pipelineRuns(pipelineId: string): Promise<{ id: string; asset_id: string | null; trigger_type: string; triggered_by: string; scan_id: string | null; status: string }[]> {
  const { rows } = await h.pool.query(
    `SELECT id, asset_id, trigger_type, triggered_by, scan_id, status FROM pipeline_runs WHERE pipeline_id = $1 ORDER BY created_at, id`, [pipelineId]);
  return rows;
}

describe('schedule triggers are kept as scans of their pipeline', () => {
  it('creates one managed scan per schedule trigger, which the API may trigger but not change or delete', async () => {
    const t = await createTenant(h);
    const prod = await createAsset(h, t, { type: 'web_application', name: 'shop', tags: ['production'] });
    const prod2 = await createAsset(h, t, { type: 'repository', name: 'repo', tags: ['production', 'backend'] });
    await createAsset(h, t, { type: 'web_application', name: 'staging shop', tags: ['staging'] });
    const doc = {
      name: 'Nightly',
      triggers: [
        'manual',
        { type: 'schedule', cron: '0 2 * * *', timezone: 'Europe/Berlin', targets: [{ asset_filter: "tags.contains('production')" }] },
        { schedule: '*/30 * * * *' },
      ],
      steps: [step('a')],
    };
    const pipeline = await createPipeline(h, t, doc);
    const scans = await managedScans(t, pipeline.id);
    assert.equal(scans.length, 2, JSON.stringify(scans));
    const [nightly, halfHourly] = scans;
    assert.equal(nightly.schedule_type, 'cron');
    assert.equal(nightly.cron_expression, '0 2 * * *');
    assert.equal(nightly.timezone, 'Europe/Berlin');
    assert.equal(nightly.status, 'active');
    assert.deepEqual(nightly.targets, { asset_filter: { expression: "tags.contains('production')" } });
    assert.equal(nightly.next_run_at, nextFire('0 2 * * *', 'Europe/Berlin', new Date())!.toISOString());
    assert.equal(halfHourly.cron_expression, '*/30 * * * *');
    assert.equal(halfHourly.timezone, 'UTC');
    assert.deepEqual(halfHourly.targets, {});

    for (const [method, body] of [['PUT', { name: 'mine now' }], ['PUT', { status: 'paused' }], ['DELETE', undefined]] as const) {
      const res = await h.request(method, `/api/v1/scans/${nightly.id}`, { token: t.token, body });
      assert.equal(res.status, 409, `${method}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'managed_by_pipeline');
      assert.match(res.body.error.message, /trigger/);
    }
    assert.deepEqual(await getScan(h, t, nightly.id), nightly, 'unchanged');

    // The scheduler fires it on the matching assets.
    await makeDue(h, nightly.id);
    await tick(h);
    const runs = await scanRuns(h, t, nightly.id);
    assert.deepEqual(new Set(runs.map((r) => r.asset_id)), new Set([prod.id, prod2.id]));
    for (const r of runs) {
      assert.equal(r.trigger_type, 'schedule');
      assert.equal(r.pipeline_id, pipeline.id);
    }
    assert.equal((await scanFires(h, t, nightly.id)).length, 1);
    assert.ok(new Date((await getScan(h, t, nightly.id)).next_run_at).getTime() > Date.now());

    // A manual trigger of a managed scan is allowed.
    const manual = await h.request('POST', `/api/v1/scans/${halfHourly.id}/trigger`, { token: t.token, body: {} });
    assert.equal(manual.status, 201, JSON.stringify(manual.body));
    assert.equal(manual.body.runs.length, 1);
    await assertNoFailedJobs(h);
  });

  it('follows each new pipeline version: a changed cron is recomputed, an unchanged one keeps its next fire, a removed trigger vanishes', async () => {
    const t = await createTenant(h);
    const doc = (triggers: unknown[], steps = [step('a')]) => ({ name: 'Versions', triggers, steps });
    const pipeline = await createPipeline(h, t, doc([{ schedule: '0 2 * * *' }, { type: 'schedule', cron: '0 4 * * 1' }]));
    const [first, second] = await managedScans(t, pipeline.id);
    assert.deepEqual([first.cron_expression, second.cron_expression], ['0 2 * * *', '0 4 * * 1']);

    // A new version with the same schedules (another step): the pending fires stay.
    const { rows } = await h.pool.query<{ at: Date }>(
      `UPDATE scans SET next_run_at = date_trunc('second', now()) + interval '3 days' WHERE id = $1 RETURNING next_run_at AS at`, [first.id]);
    await putPipeline(t, pipeline.id, doc([{ schedule: '0 2 * * *' }, { type: 'schedule', cron: '0 4 * * 1' }], [step('a'), step('b')]));
    const kept = await getScan(h, t, first.id);
    assert.equal(kept.next_run_at, rows[0].at.toISOString(), 'an unchanged schedule keeps its next fire');

    // The first trigger's cron changes; the second trigger is removed.
    await putPipeline(t, pipeline.id, doc([{ type: 'schedule', cron: '15 3 * * *', timezone: 'Asia/Tokyo' }]));
    const now = await managedScans(t, pipeline.id);
    assert.equal(now.length, 1);
    assert.equal(now[0].id, first.id, 'the same scan, updated');
    assert.equal(now[0].cron_expression, '15 3 * * *');
    assert.equal(now[0].timezone, 'Asia/Tokyo');
    assert.equal(now[0].next_run_at, nextFire('15 3 * * *', 'Asia/Tokyo', new Date())!.toISOString());
    assert.equal((await h.request('GET', `/api/v1/scans/${second.id}`, { token: t.token })).status, 404);

    // No schedule trigger left: no managed scan left.
    await putPipeline(t, pipeline.id, doc(['manual']));
    assert.deepEqual(await managedScans(t, pipeline.id), []);
  });

  it('deleting the pipeline removes its trigger scans and disables the other scans of it', async () => {
    const t = await createTenant(h);
    const pipeline = await createPipeline(h, t, { name: 'Doomed', triggers: [{ schedule: '0 1 * * *' }], steps: [step('a')] });
    const [managed] = await managedScans(t, pipeline.id);
    const own = await createScan(h, t, { name: 'own', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 5 * * *' });
    assert.equal((await h.request('DELETE', `/api/v1/pipelines/${pipeline.id}`, { token: t.token })).status, 204);
    assert.equal((await h.request('GET', `/api/v1/scans/${managed.id}`, { token: t.token })).status, 404);
    const disabled = await getScan(h, t, own.id);
    assert.equal(disabled.status, 'disabled');
    assert.equal(disabled.next_run_at, null);
    const trig = await h.request('POST', `/api/v1/scans/${own.id}/trigger`, { token: t.token, body: {} });
    assert.equal(trig.status, 409);
  });
});

describe('webhook triggers', () => {
  async function webhookPipeline(t: Tenant, triggers: unknown[], name = `hook-${Math.random().toString(36).slice(2, 8)}`) {
    const pipeline = await createPipeline(h, t, { name, triggers, steps: [step('a')] });
    const tok = await h.request('POST', `/api/v1/pipelines/${pipeline.id}/webhook-token`, { token: t.token });
    assert.equal(tok.status, 201, JSON.stringify(tok.body));
    assert.equal(tok.body.url, `/api/v1/webhooks/${pipeline.id}`);
    assert.match(tok.body.token, /^sfw_/);
    return { pipeline, token: tok.body.token as string, url: tok.body.url as string };
  }

  it('the pipeline\'s webhook token authenticates in Bearer, X-API-Key, X-Webhook-Token and X-Gitlab-Token; runs start and are answered', async () => {
    const t = await createTenant(h);
    const { pipeline, token, url } = await webhookPipeline(t, [{ type: 'webhook', event: 'push' }]);
    const ways: Record<string, string>[] = [
      { authorization: `Bearer ${token}` },
      { 'x-api-key': token },
      { 'x-webhook-token': token },
      { 'x-gitlab-token': token },
    ];
    const started: string[] = [];
    for (const headers of ways) {
      const res = await h.request('POST', url, { headers, body: { event: 'push', context: { sha: 'abc123' } } });
      assert.equal(res.status, 201, `${Object.keys(headers)[0]}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.runs.length, 1);
      const run = res.body.runs[0];
      assert.equal(run.trigger_type, 'webhook');
      assert.equal(run.pipeline_id, pipeline.id);
      assert.equal(run.asset_id, null);
      assert.equal(run.context.sha, 'abc123');
      assert.equal(run.context.webhook.event, 'push');
      started.push(run.id);
    }
    await h.settle();
    for (const id of started) assert.equal((await getRun(h, t, id)).status, 'running');
    assert.equal((await pipelineRuns(pipeline.id)).length, 4);
  });

  it('refuses bad credentials with 401 and starts nothing; a rotated token stops working', async () => {
    const t = await createTenant(h);
    const { pipeline, token, url } = await webhookPipeline(t, ['webhook']);
    const other = await webhookPipeline(t, ['webhook']);
    const agent = await TestAgent.create(h, t, { tools: ['tool-a'] });
    const refused: [string, Record<string, string>][] = [
      ['no credential', {}],
      ['a wrong token', { authorization: 'Bearer sfw_not-the-token' }],
      ['a malformed Authorization header', { authorization: `Token ${token}` }],
      ["another pipeline's webhook token", { 'x-webhook-token': other.token }],
      ["an agent's API key", { 'x-api-key': agent.apiKey }],
      ['the admin token', { authorization: `Bearer ${ADMIN_TOKEN}` }],
    ];
    for (const [what, headers] of refused) {
      const res = await h.request('POST', url, { headers, body: {} });
      assert.equal(res.status, 401, `${what}: ${JSON.stringify(res.body)}`);
    }
    const inQuery = await h.request('POST', `${url}?token=${token}`, { body: {} });
    assert.equal(inQuery.status, 401, 'credentials in the query string are refused');
    assert.deepEqual(await pipelineRuns(pipeline.id), []);

    const rotated = await h.request('POST', `/api/v1/pipelines/${pipeline.id}/webhook-token`, { token: t.token });
    assert.equal(rotated.status, 201);
    assert.notEqual(rotated.body.token, token);
    assert.equal((await h.request('POST', url, { token, body: {} })).status, 401, 'the old token stops working');
    assert.equal((await h.request('POST', url, { token: rotated.body.token, body: {} })).status, 201);
    assert.equal((await pipelineRuns(pipeline.id)).length, 1);

    // Deleting the pipeline ends its webhook.
    assert.equal((await h.request('DELETE', `/api/v1/pipelines/${pipeline.id}`, { token: t.token })).status, 204);
    assert.equal((await h.request('POST', url, { token: rotated.body.token, body: {} })).status, 401);
    assert.equal((await h.request('POST', url, { token: t.token, body: {} })).status, 404);
  });

  it("a token of the pipeline's tenant works too; another tenant's token does not reach the pipeline", async () => {
    const t = await createTenant(h);
    const stranger = await createTenant(h);
    const { pipeline, url } = await webhookPipeline(t, ['webhook']);
    const own = await h.request('POST', url, { token: t.token, body: {} });
    assert.equal(own.status, 201, JSON.stringify(own.body));
    assert.equal(own.body.runs[0].triggered_by, 'webhook (tenant token)');
    const foreign = await h.request('POST', url, { token: stranger.token, body: {} });
    assert.ok(foreign.status === 404 || foreign.status === 401, JSON.stringify(foreign.body));
    assert.equal((await pipelineRuns(pipeline.id)).length, 1);
    // A webhook token cannot be made for another tenant's pipeline.
    assert.equal((await h.request('POST', `/api/v1/pipelines/${pipeline.id}/webhook-token`, { token: stranger.token })).status, 404);
  });

  it('matches the event from the body or the X-GitHub-Event / X-Gitlab-Event / X-Event header; others are ignored with 202', async () => {
    const t = await createTenant(h);
    const { pipeline, token, url } = await webhookPipeline(t, [{ webhook: 'push' }]);
    const accepted: [string, Json, Record<string, string>][] = [
      ['body', { event: 'push' }, {}],
      ['X-GitHub-Event', { ref: 'refs/heads/main', repository: { full_name: 'acme/shop' } }, { 'x-github-event': 'push' }],
      ['X-Gitlab-Event', {}, { 'x-gitlab-event': 'push' }],
      ['X-Event', {}, { 'x-event': 'push' }],
    ];
    for (const [how, body, headers] of accepted) {
      const res = await h.request('POST', url, { token, body, headers });
      assert.equal(res.status, 201, `${how}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.runs.length, 1, how);
    }
    const ignored: [string, Json, Record<string, string>][] = [
      ['another event in the body', { event: 'pull_request' }, {}],
      ['another event in a header', {}, { 'x-github-event': 'issues' }],
      ['no event', {}, {}],
    ];
    for (const [how, body, headers] of ignored) {
      const res = await h.request('POST', url, { token, body, headers });
      assert.equal(res.status, 202, `${how}: ${JSON.stringify(res.body)}`);
      assert.deepEqual(res.body.runs, []);
      assert.match(res.body.ignored, /push/);
    }
    assert.equal((await pipelineRuns(pipeline.id)).length, accepted.length);

    // A webhook trigger without an event accepts any.
    const any = await webhookPipeline(t, ['webhook']);
    const res = await h.request('POST', any.url, { token: any.token, body: {}, headers: { 'x-github-event': 'release' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
  });

  it('a provider payload is read only for event, asset_id and context: a GitHub status event (with a string "context") starts a run', async () => {
    const t = await createTenant(h);
    const { token, url } = await webhookPipeline(t, [{ webhook: 'status' }]);
    const githubStatus = { sha: 'abc', state: 'success', context: 'continuous-integration/jenkins', repository: { full_name: 'acme/shop' } };
    const res = await h.request('POST', url, { token, body: githubStatus, headers: { 'x-github-event': 'status' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
  });

  it('runs on the asset the request names, or on the trigger\'s targets; an unknown asset is 400; no webhook trigger is 409', async () => {
    const t = await createTenant(h);
    const other = await createTenant(h);
    const api = await createAsset(h, t, { type: 'api', name: 'payments api', tags: ['production'] });
    const api2 = await createAsset(h, t, { type: 'api', name: 'orders api', tags: ['production'] });
    await createAsset(h, t, { type: 'api', name: 'test api', tags: ['staging'] });
    const foreign = await createAsset(h, other, { type: 'api', name: 'foreign api', tags: ['production'] });
    const { token, url } = await webhookPipeline(t, [{ type: 'webhook', event: 'deploy', targets: [{ type: 'api', tags: ['production'] }] }]);

    const one = await h.request('POST', url, { token, body: { event: 'deploy', asset_id: api.id } });
    assert.equal(one.status, 201, JSON.stringify(one.body));
    assert.deepEqual(one.body.runs.map((r: Json) => r.asset_id), [api.id]);

    const fan = await h.request('POST', url, { token, body: { event: 'deploy' } });
    assert.equal(fan.status, 201, JSON.stringify(fan.body));
    assert.deepEqual(new Set(fan.body.runs.map((r: Json) => r.asset_id)), new Set([api.id, api2.id]));

    expectProblem(await h.request('POST', url, { token, body: { event: 'deploy', asset_id: '00000000-0000-4000-8000-000000000000' } }), 'asset_id', /unknown asset/);
    expectProblem(await h.request('POST', url, { token, body: { event: 'deploy', asset_id: foreign.id } }), 'asset_id', /unknown asset/);
    expectProblem(await h.request('POST', url, { token, body: { event: 'deploy', asset_id: 'nope' } }), 'asset_id');
    assert.equal((await h.request('POST', url, { token, raw: '{not json' })).status, 400);

    const plain = await createPipeline(h, t, oneStep('no hook'));
    const tok = await h.request('POST', `/api/v1/pipelines/${plain.id}/webhook-token`, { token: t.token });
    const res = await h.request('POST', `/api/v1/webhooks/${plain.id}`, { token: tok.body.token, body: {} });
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.equal(res.body.error.code, 'no_webhook_trigger');
    assert.deepEqual(await pipelineRuns(plain.id), []);
    assert.equal((await h.request('POST', `/api/v1/webhooks/not-a-uuid`, { token, body: {} })).status === 404
      || (await h.request('POST', `/api/v1/webhooks/not-a-uuid`, { token, body: {} })).status === 401, true);
  });
});

describe('on_asset_discovery triggers', () => {
  it('a new asset starts one run of each active pipeline whose discovery trigger matches it', async () => {
    const t = await createTenant(h);
    const stranger = await createTenant(h);
    const any = await createPipeline(h, t, { name: 'any asset', triggers: ['on_asset_discovery'], steps: [step('a')] });
    const webProd = await createPipeline(h, t, {
      name: 'prod web', triggers: [{ type: 'on_asset_discovery', asset_filter: { type: 'web_application', tags: ['production'] } }], steps: [step('a')],
    });
    const cel = await createPipeline(h, t, {
      name: 'cel', triggers: [{ type: 'on_asset_discovery', asset_filter: "tags.contains('production')" }], steps: [step('a')],
    });
    const manual = await createPipeline(h, t, { name: 'manual', triggers: ['manual'], steps: [step('a')] });
    const gone = await createPipeline(h, t, { name: 'deleted', triggers: ['on_asset_discovery'], steps: [step('a')] });
    assert.equal((await h.request('DELETE', `/api/v1/pipelines/${gone.id}`, { token: t.token })).status, 204);

    const shop = await createAsset(h, t, { type: 'web_application', name: 'shop', tags: ['production'] });
    const blog = await createAsset(h, t, { type: 'domain', name: 'blog.example.com', tags: ['staging'] });
    const repo = await createAsset(h, t, { type: 'repository', name: 'repo', tags: ['production'] });
    await createAsset(h, stranger, { type: 'web_application', name: 'foreign shop', tags: ['production'] });
    await h.settle();

    const assetsOf = async (p: Json) => (await pipelineRuns(p.id)).map((r) => r.asset_id);
    assert.deepEqual(new Set(await assetsOf(any)), new Set([shop.id, blog.id, repo.id]));
    assert.deepEqual(await assetsOf(webProd), [shop.id]);
    assert.deepEqual(new Set(await assetsOf(cel)), new Set([shop.id, repo.id]));
    assert.deepEqual(await assetsOf(manual), []);
    assert.deepEqual(await assetsOf(gone), []);
    for (const r of await pipelineRuns(any.id)) {
      assert.equal(r.trigger_type, 'on_asset_discovery');
      assert.equal(r.scan_id, null);
      assert.match(r.triggered_by, /^asset:/);
      assert.equal(r.status, 'running');
    }
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM pipeline_runs WHERE tenant_id = $1`, [stranger.id]);
    assert.equal(rows[0].n, 0, "another tenant's asset starts nothing here, and nothing there either");

    // The job running again (a retry) does not start a second run; an update starts nothing.
    await h.pool.query(`SELECT graphile_worker.add_job('asset_discovered', json_build_object('asset_id', $1::uuid))`, [shop.id]);
    const upd = await h.request('PUT', `/api/v1/assets/${blog.id}`, { token: t.token, body: { tags: ['production'] } });
    assert.equal(upd.status, 200);
    await h.settle();
    assert.equal((await pipelineRuns(any.id)).length, 3);
    assert.equal((await pipelineRuns(webProd.id)).length, 1);
    assert.equal((await pipelineRuns(cel.id)).length, 2);
    await assertNoFailedJobs(h);
  });

  it('a tenant without discovery triggers enqueues no discovery job when an asset is created', async () => {
    const t = await createTenant(h);
    await createPipeline(h, t, oneStep('plain'));
    const asset = await createAsset(h, t, { type: 'domain', name: 'quiet.example.com' });
    const { rows } = await h.pool.query(`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = $1`, [`asset_discovered:${asset.id}`]);
    assert.equal(rows[0].n, 0);
  });
});

// ---- run timeout ----------------------------------------------------------------------

/** The run's commands with their step keys, from the database. */
async function commandsOf(runId: string): Promise<{ id: string; status: string; step_key: string; agent_id: string | null }[]> {
  const { rows } = await h.pool.query(
    `SELECT c.id, c.status, s.step_key, c.agent_id FROM commands c JOIN step_runs s ON s.id = c.step_run_id
     WHERE c.pipeline_run_id = $1 ORDER BY c.seq`, [runId]);
  return rows;
}

async function passRunDeadline(runId: string): Promise<void> {
  await h.pool.query(`UPDATE pipeline_runs SET deadline_at = now() WHERE id = $1`, [runId]);
  await h.pool.query(
    `SELECT graphile_worker.add_job('command_expire', json_build_object('run_id', $1::uuid), job_key => 'command_expire:' || $1)`, [runId]);
  await h.settle();
}

describe('run timeout (settings.timeout)', () => {
  it('when the run deadline passes: in-flight commands and unfinished steps are cancelled, the run ends as timeout', async () => {
    const t = await createTenant(h);
    const pipeline = await createPipeline(h, t, {
      name: 'ten minutes', settings: { timeout: '10m' },
      steps: [step('a'), step('b', { depends_on: ['a'] }), step('c', { tool: 'tool-c' })],
    });
    const agent = await TestAgent.create(h, t, { tools: ['tool-a', 'tool-b'] });
    const run = await startRun(h, t, pipeline.id);
    await h.settle();
    const started = await getRun(h, t, run.id);
    assert.equal(started.status, 'running');
    assert.ok(started.deadline_at && started.started_at);
    assert.equal(new Date(started.deadline_at).getTime() - new Date(started.started_at).getTime(), 600_000, 'deadline = started_at + 10m');
    // The run's timer is set no later than its deadline.
    const { rows: timers } = await h.pool.query<{ run_at: Date }>(
      `SELECT run_at FROM graphile_worker.jobs WHERE key = $1`, [`command_expire:${run.id}`]);
    assert.equal(timers.length, 1);
    assert.ok(timers[0].run_at.getTime() <= new Date(started.deadline_at).getTime());

    // a is running on the agent; c waits unclaimed (no agent has tool-c); b waits for a.
    const [a] = await agent.poll();
    assert.equal(a.payload.step_key, 'a');
    assert.equal((await agent.ack(a.id)).status, 200);
    assert.equal((await agent.start(a.id)).status, 200);

    await passRunDeadline(run.id);
    const ended = await getRun(h, t, run.id);
    assert.equal(ended.status, 'timeout');
    assert.match(ended.error_message, /timeout|10m/);
    assert.ok(ended.completed_at);
    const steps = stepsByKey(ended);
    assert.deepEqual([steps.a.status, steps.b.status, steps.c.status], ['cancelled', 'cancelled', 'cancelled']);
    assert.deepEqual((await commandsOf(run.id)).map((c) => [c.step_key, c.status]).sort(), [['a', 'cancelled'], ['c', 'cancelled']]);

    const hb = await agent.heartbeat({ running_command_ids: [a.id] });
    assert.equal(hb.status, 200);
    assert.ok(hb.body.cancel_command_ids.includes(a.id), JSON.stringify(hb.body));
    const late = await agent.complete(a.id, { findings_count: 3 });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.equal(late.body.error.code, 'command_cancelled');
    assert.equal((await getRun(h, t, run.id)).status, 'timeout', 'a late completion changes nothing');
    const other = await TestAgent.create(h, t, { tools: ['tool-c'] });
    assert.deepEqual(await other.poll(), [], 'the cancelled command is not handed out');

    const events = await runEvents(h, t, run.id);
    assert.equal(events.filter((e) => e.event === 'pipeline.run.timeout').length, 1);
    assert.ok(!events.some((e) => ['pipeline.run.completed', 'pipeline.run.failed', 'pipeline.run.cancelled'].includes(e.event)));
    const { rows: left } = await h.pool.query(`SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE key = $1`, [`command_expire:${run.id}`]);
    assert.equal(left[0].n, 0, 'the timer of a finished run is gone');
    await assertNoFailedJobs(h);
  });

  it('the timer firing before the deadline does nothing; a run that finishes in time completes', async () => {
    const t = await createTenant(h);
    const pipeline = await createPipeline(h, t, { name: 'in time', settings: { timeout: '1h' }, steps: [step('a')] });
    const agent = await TestAgent.create(h, t, { tools: ['tool-a'] });
    const run = await startRun(h, t, pipeline.id);
    await h.settle();
    await h.pool.query(
      `SELECT graphile_worker.add_job('command_expire', json_build_object('run_id', $1::uuid), job_key => 'command_expire:' || $1)`, [run.id]);
    await h.settle();
    assert.equal((await getRun(h, t, run.id)).status, 'running');
    await finishRuns(h, agent, [run.id]);
    const done = await getRun(h, t, run.id);
    assert.equal(done.status, 'completed');
  });

  it('a run waiting for a slot has no deadline yet; the slot a timed-out run frees starts it, with its own deadline', async () => {
    const t = await createTenant(h);
    await h.pool.query(`UPDATE tenants SET max_active_runs = 1 WHERE id = $1`, [t.id]);
    const pipeline = await createPipeline(h, t, { name: 'queued timeout', settings: { timeout: '5m' }, steps: [step('a')] });
    const first = await startRun(h, t, pipeline.id);
    const second = await startRun(h, t, pipeline.id);
    await h.settle();
    const waiting = await getRun(h, t, second.id);
    assert.equal(waiting.status, 'pending');
    assert.equal(waiting.admitted_at, null);
    assert.equal(waiting.deadline_at, null, 'the timeout counts from the start, not from creation');

    await passRunDeadline(first.id);
    assert.equal((await getRun(h, t, first.id)).status, 'timeout');
    const now = await getRun(h, t, second.id);
    assert.equal(now.status, 'running');
    assert.ok(now.admitted_at);
    assert.equal(new Date(now.deadline_at).getTime() - new Date(now.started_at).getTime(), 300_000);

    // A manual retry of the timed-out run waits for the slot like any other.
    const retry = await h.request('POST', `/api/v1/pipeline-runs/${first.id}/retry`, { token: t.token });
    assert.equal(retry.status, 200, JSON.stringify(retry.body));
    assert.equal(retry.body.status, 'pending');
    assert.equal(retry.body.admitted_at, null);
    await assertNoFailedJobs(h);
  });
});
