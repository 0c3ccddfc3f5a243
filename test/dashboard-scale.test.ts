// The dashboard at size, in Chromium: a tenant with 1,000 runs (50 a page) and a run of a
// 50-step pipeline (its DAG, timeline and live updates). Measured, printed and bounded: how
// long the pages take to load, the longest task the browser ran, how soon a step's change
// shows on the 50-step page. Skipped without Chromium, naming the package.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, chromiumSkip as skip } from './support/chromium.ts';
import { startHarness, type Harness } from './support/harness.ts';
import { createPipeline, createTenant, step, type Tenant } from './support/fixtures.ts';

declare const document: any;
declare const window: any;
declare const performance: any;
declare const PerformanceObserver: any;


const RUNS = 1000;
const LAYERS = 5;
const PER_LAYER = 10;

describe('the dashboard with 1,000 runs and a 50-step pipeline', () => {
  let h: Harness;
  let url: string;
  let browser: Browser;
  let page: Page;
  let t: Tenant;
  let wideRun: string;
  const consoleErrors: string[] = [];
  const measured: Record<string, number> = {};

  before(async () => {
    if (skip) return;
    const { chromium } = await import('playwright-core');
    // No worker: runs stay as the test sets them, so every page shows the same thing.
    h = await startHarness({ worker: false });
    url = (await h.listen()).url;
    t = await createTenant(h, 'Scale');
    const small = await createPipeline(h, t, { name: 'small', steps: [step('a'), step('b', { depends_on: ['a'] }), step('c', { depends_on: ['a'] })] });
    // 50 steps in 5 layers of 10, each step after two of the layer before.
    const wideSteps = [];
    for (let l = 0; l < LAYERS; l++) {
      for (let i = 0; i < PER_LAYER; i++) {
        const deps = l === 0 ? [] : [`s${l - 1}_${i}`, `s${l - 1}_${(i + 3) % PER_LAYER}`];
        wideSteps.push(step(`s${l}_${i}`, { name: `Layer ${l} step ${i}`, depends_on: deps }));
      }
    }
    const wide = await createPipeline(h, t, { name: 'wide (50 steps)', steps: wideSteps });

    const t0 = performance.now();
    for (let i = 0; i < RUNS; i += 25) {
      await Promise.all(Array.from({ length: Math.min(25, RUNS - i) }, () =>
        h.request('POST', `/api/v1/pipelines/${small.id}/run`, { token: t.token, body: {} }).then((r) => assert.equal(r.status, 201))));
    }
    measured.create_1000_runs_ms = Math.round(performance.now() - t0);
    // Ended runs over the last few days, a few still running.
    await h.pool.query(`
      UPDATE pipeline_runs r SET
        status = CASE WHEN n % 50 = 0 THEN 'running' WHEN n % 7 = 0 THEN 'failed' WHEN n % 11 = 0 THEN 'cancelled' ELSE 'completed' END,
        started_at = now() - make_interval(mins => (n * 5)::int),
        completed_at = CASE WHEN n % 50 = 0 THEN NULL ELSE now() - make_interval(mins => (n * 5 - 3)::int) END,
        completed_steps = 3, total_steps = 3, total_findings = n % 4
      FROM (SELECT id, row_number() OVER (ORDER BY created_at) AS n FROM pipeline_runs WHERE tenant_id = $1) x
      WHERE r.id = x.id`, [t.id]);

    const run = await h.request('POST', `/api/v1/pipelines/${wide.id}/run`, { token: t.token, body: {} });
    assert.equal(run.status, 201);
    wideRun = run.body.id;
    // Layers 0-1 completed, layer 2 mixed, layers 3-4 waiting.
    await h.pool.query(`UPDATE pipeline_runs SET status = 'running', started_at = now() - interval '20 minutes' WHERE id = $1`, [wideRun]);
    await h.pool.query(`
      UPDATE step_runs SET
        status = CASE WHEN step_key ~ '^s[01]_' THEN 'completed'
                      WHEN step_key IN ('s2_0', 's2_1') THEN 'failed'
                      WHEN step_key IN ('s2_2', 's2_3', 's2_4') THEN 'skipped'
                      WHEN step_key ~ '^s2_' THEN 'running' ELSE 'pending' END,
        attempt = CASE WHEN step_key ~ '^s[012]_' AND step_key NOT IN ('s2_2', 's2_3', 's2_4') THEN 1 ELSE 0 END,
        skip_reason = CASE WHEN step_key IN ('s2_2', 's2_3', 's2_4') THEN 'Condition not met: asset.type != ''server''' END,
        error_message = CASE WHEN step_key IN ('s2_0', 's2_1') THEN 'exit status 2' END,
        queued_at = CASE WHEN step_key ~ '^s[012]_' THEN now() - interval '19 minutes' END,
        started_at = CASE WHEN step_key ~ '^s[012]_' AND step_key NOT IN ('s2_2', 's2_3', 's2_4') THEN now() - interval '18 minutes' END,
        completed_at = CASE WHEN step_key ~ '^s[01]_' OR step_key IN ('s2_0', 's2_1') THEN now() - interval '10 minutes' END
      WHERE pipeline_run_id = $1`, [wideRun]);

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    // Every task over 50 ms the browser runs, from the first script on.
    await context.addInitScript(() => {
      window.__longTasks = [];
      new PerformanceObserver((list: any) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
        .observe({ type: 'longtask', buffered: true });
    });
    page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    await page.goto(`${url}/`);
    await page.getByLabel('Tenant token, or the admin token').fill(t.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector('body[data-page="runs"]');
  });

  after(async () => {
    if (skip) return;
    await browser?.close();
    await h?.close();
    console.log(`# dashboard at size (ms): ${JSON.stringify(measured)}`);
  });

  /** How long the last navigation took to load, by the browser's own clock, and its longest task. */
  async function loadTimes(name: string): Promise<void> {
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      return { response: Math.round(n.responseEnd - n.requestStart), loaded: Math.round(n.loadEventEnd - n.startTime) };
    });
    const longest = await page.evaluate(() => Math.round(Math.max(0, ...window.__longTasks)));
    measured[`${name}_response_ms`] = nav.response;
    measured[`${name}_loaded_ms`] = nav.loaded;
    measured[`${name}_longest_task_ms`] = longest;
    // Bounds far above what was measured (2-core machine, others' tests running), below "frozen":
    // the figures themselves are printed (above) and measured in npm run bench. The 50-step run
    // page once took 3.4 s to load with two suites running at once (server response 2.7 s).
    assert.ok(nav.loaded < 10_000, `${name} loaded in ${nav.loaded} ms`);
    assert.ok(longest < 500, `${name}: a task of ${longest} ms froze the page`);
  }

  it('lists 1,000 runs 50 a page, pages through them, and filters them', { skip }, async () => {
    await page.goto(`${url}/`, { waitUntil: 'load' });
    await loadTimes('runs_page');
    assert.equal(await page.locator('tr[data-run-id]').count(), 50);
    const seen = new Set(await page.locator('tr[data-run-id]').evaluateAll((rows: any[]) => rows.map((r) => r.dataset.runId)));
    await page.getByRole('link', { name: 'Older »' }).click();
    await page.waitForURL(/cursor=/);
    const next = await page.locator('tr[data-run-id]').evaluateAll((rows: any[]) => rows.map((r) => r.dataset.runId));
    assert.equal(next.length, 50);
    assert.ok(next.every((id: string) => !seen.has(id)), 'the next page holds other runs');
    await page.goto(`${url}/?status=failed`);
    const failed = await page.locator('tr[data-run-id]').evaluateAll((rows: any[]) => rows.map((r) => r.dataset.status));
    assert.ok(failed.length > 0 && failed.every((s: string) => s === 'failed'));
  });

  it('draws a 50-step run and shows a step\'s change within a second', { skip }, async () => {
    await page.goto(`${url}/runs/${wideRun}`, { waitUntil: 'load' });
    await loadTimes('run_page_50_steps');
    assert.equal(await page.locator('#run-dag .node').count(), 50);
    assert.equal(await page.locator('#run-waterfall tr[data-step]').count(), 50);
    assert.equal(await page.locator('#run-dag .node.s-skipped').count(), 3);
    await page.waitForSelector('body[data-live="open"][data-refreshed]');
    // Layers are ranks, left to right.
    const x = async (key: string) => (await page.locator(`#node-${key} rect`).boundingBox())!.x;
    assert.ok((await x('s0_0')) < (await x('s1_0')) && (await x('s3_0')) < (await x('s4_0')));

    // Three steps complete, one after the other: each must show; their median within a second
    // (none over 2.5 s: the CI machine runs three test files and Chromium on 2 cores).
    const delays: number[] = [];
    for (const key of ['s2_5', 's2_6', 's2_7']) {
      const t0 = performance.now();
      await h.pool.query(`UPDATE step_runs SET status = 'completed', completed_at = now() WHERE pipeline_run_id = $1 AND step_key = $2`, [wideRun, key]);
      await page.waitForSelector(`#node-${key}[data-state="completed"]`, { timeout: 10_000 });
      delays.push(Math.round(performance.now() - t0));
    }
    measured.step_change_shown_50_steps_ms = [...delays].sort((x, y) => x - y)[1];
    assert.ok(measured.step_change_shown_50_steps_ms < 1000, `shown after ${delays.join(', ')} ms`);
    assert.ok(Math.max(...delays) < 2500, `shown after ${delays.join(', ')} ms`);
    const longest = await page.evaluate(() => Math.round(Math.max(0, ...window.__longTasks)));
    measured.run_page_50_steps_longest_task_after_update_ms = longest;
    assert.ok(longest < 500);
    const shots = process.env.DASHBOARD_SCREENSHOTS ?? await mkdtemp(path.join(tmpdir(), 'scanflow-dashboard-'));
    await page.screenshot({ path: path.join(shots, 'run-50-steps.png') });
    console.log(`# dashboard screenshot: ${path.join(shots, 'run-50-steps.png')}`);
    assert.deepEqual(consoleErrors, []);
  });
});
