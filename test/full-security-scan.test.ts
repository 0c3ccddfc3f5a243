// Seed 001's "Full Security Scan", as written, on a repository, a server and a web
// application: the right steps run, in DAG order, and the rest are skipped with reasons.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import {
  FULL_SECURITY_SCAN, TestAgent, createAsset, createPipeline, createTenant, getRun, runEvents, startRun, stepsByKey,
  type Tenant,
} from './support/fixtures.ts';

let h: Harness;
let tenant: Tenant;
let agent: TestAgent;
let pipelineId: string;

before(async () => {
  h = await startHarness();
  tenant = await createTenant(h);
  agent = await TestAgent.create(h, tenant, {
    tools: ['semgrep', 'trivy', 'gitleaks', 'nuclei', 'nmap'], capabilities: ['sast', 'sca', 'secrets', 'dast', 'infra'],
    max_concurrent_jobs: 10,
  });
  pipelineId = (await createPipeline(h, tenant, FULL_SECURITY_SCAN)).id;
});
after(() => h.close());

/**
 * Creates the asset — the pipeline's `on_asset_discovery` trigger (as seed 001 writes it)
 * starts a run on it — and completes every command the agent gets; returns the order of
 * dispatch and the run.
 */
async function runToEnd(assetBody: Record<string, unknown>) {
  const asset = await createAsset(h, tenant, assetBody);
  await h.settle();
  const found = await h.request('GET', `/api/v1/pipeline-runs?asset_id=${asset.id}`, { token: tenant.token });
  assert.equal(found.body.items.length, 1, 'asset discovery started exactly one run');
  const run = found.body.items[0];
  assert.equal(run.trigger_type, 'on_asset_discovery');
  assert.equal(run.pipeline_id, pipelineId);
  const waves = await completeInWaves(run.id, (c) => {
    assert.equal(c.payload.target.id, asset.id);
    return { findings_count: 2, output: { tool: c.payload.tool } };
  });
  return { waves, run: await getRun(h, tenant, run.id) };
}

/**
 * Polls until nothing more is dispatched, completing every command of the run with the
 * result `check` returns (after its own assertions); returns the step keys of each wave.
 */
async function completeInWaves(runId: string, check: (c: Record<string, any>) => Record<string, unknown>): Promise<string[][]> {
  const waves: string[][] = [];
  for (let i = 0; i < 10; i++) {
    await h.settle();
    const commands = await agent.poll({ limit: 10 });
    if (commands.length === 0) break;
    waves.push(commands.map((c) => c.payload.step_key).sort());
    for (const c of commands) {
      assert.equal(c.payload.pipeline_run_id, runId);
      await agent.finish(c.id, check(c));
    }
  }
  await h.settle();
  return waves;
}

describe('Full Security Scan (seed 001)', () => {
  it('on a repository: static steps in parallel, then dast and infra skipped by their conditions', async () => {
    const { waves, run } = await runToEnd({ type: 'repository', name: 'webapp', value: 'https://github.com/example/webapp' });
    // max_parallel_steps 3: sast, sca, secrets together; nothing else ever runs.
    assert.deepEqual(waves, [['sast', 'sca', 'secrets']]);
    const steps = stepsByKey(run);
    assert.equal(run.status, 'completed');
    assert.equal(steps.dast.status, 'skipped');
    assert.equal(steps.dast.condition_result, false);
    assert.equal(steps.dast.skip_reason, "Condition not met: asset.type == 'web_application' && asset.has_url");
    assert.equal(steps.infra.status, 'skipped');
    assert.equal(steps.infra.skip_reason, "Condition not met: asset.type in ['server', 'network']");
    assert.deepEqual([run.completed_steps, run.skipped_steps, run.failed_steps, run.total_findings], [3, 2, 0, 6]);
  });

  it('on a server: infra runs after sast; dast is skipped', async () => {
    const { waves, run } = await runToEnd({ type: 'server', name: 'db-1', value: '10.0.0.5' });
    assert.deepEqual(waves, [['sast', 'sca', 'secrets'], ['infra']]);
    const steps = stepsByKey(run);
    assert.equal(run.status, 'completed');
    assert.equal(steps.infra.status, 'completed');
    assert.equal(steps.infra.condition_result, true);
    assert.equal(steps.dast.status, 'skipped');
    assert.match(steps.dast.skip_reason, /^Condition not met: asset\.type == 'web_application'/);
    // infra was dispatched only after sast completed.
    assert.ok(new Date(steps.infra.queued_at) >= new Date(steps.sast.completed_at));
  });

  it('on a web application with a URL: dast runs after all three static steps; infra is skipped', async () => {
    const { waves, run } = await runToEnd({ type: 'web_application', name: 'shop', value: 'https://shop.example.com', tags: ['production'] });
    assert.deepEqual(waves, [['sast', 'sca', 'secrets'], ['dast']]);
    const steps = stepsByKey(run);
    assert.equal(run.status, 'completed');
    assert.equal(steps.dast.status, 'completed');
    assert.equal(steps.infra.status, 'skipped');
    for (const k of ['sast', 'sca', 'secrets']) assert.ok(new Date(steps.dast.queued_at) >= new Date(steps[k].completed_at));
    const events = (await runEvents(h, tenant, run.id)).map((e) => `${e.event}${e.data.step_key ? ':' + e.data.step_key : ''}`);
    assert.equal(events[0], 'pipeline.run.started');
    assert.equal(events.at(-1), 'pipeline.run.completed');
    assert.ok(events.includes('pipeline.step.skipped:infra'));
    assert.ok(events.indexOf('pipeline.step.queued:dast') > events.indexOf('pipeline.step.completed:sast'));
  });

  it('a manual run of the pipeline on an existing asset runs the same way', async () => {
    const before = await runToEnd({ type: 'server', name: 'db-2', value: '10.0.0.6' });
    const run = await startRun(h, tenant, pipelineId, { asset_id: before.run.asset_id, context: { branch: 'main' } });
    assert.equal(run.trigger_type, 'manual');
    const waves = await completeInWaves(run.id, (c) => {
      assert.equal(c.payload.context.branch, 'main');
      return { findings_count: 1 };
    });
    assert.deepEqual(waves, [['sast', 'sca', 'secrets'], ['infra']]);
    assert.equal((await getRun(h, tenant, run.id)).status, 'completed');
  });

  it('a web application without a URL skips dast (has_url is false)', async () => {
    const { run } = await runToEnd({ type: 'web_application', name: 'intranet', value: 'intranet' });
    assert.equal(stepsByKey(run).dast.status, 'skipped');
    assert.equal(run.status, 'completed');
  });
});
