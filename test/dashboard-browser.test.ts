// The dashboard in a real browser: headless Chromium (Debian package `chromium`) driven by
// playwright-core, against the real server on a socket. A run started through the API is
// watched on its page while a simulated agent moves its steps (colours and states asserted
// in the DOM, each within a second of the transition), cancelled and retried from the page;
// a finding triaged; the admin's tenant picker; scans paused; agents at work; nothing of
// another tenant visible; markup in names shown as text; no console errors. Screenshots go
// to a temporary directory (printed). Without Chromium every test is skipped, naming the
// package to install.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, chromiumSkip as skip } from './support/chromium.ts';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import {
  TestAgent, createAsset, createPipeline, createTenant, passRetryDelays, startRun, step, type Tenant,
} from './support/fixtures.ts';

// What the functions passed to page.evaluate see in the browser (the project's types have no DOM).
declare const document: any;
declare const window: any;
declare function getComputedStyle(element: unknown): { fill: string };


/**
 * Live updates land within a second of the transition (issue 12): the median of the
 * transitions measured must be under LIVE_MS, and none may take over SLOWEST_MS (the 2-core
 * CI machine runs three test files and Chromium at once; alone, each takes 100-300 ms).
 */
const LIVE_MS = 1000;
const SLOWEST_MS = 2500;

const COLOUR: Record<string, string> = {
  pending: 'rgb(241, 245, 249)', queued: 'rgb(219, 234, 254)', running: 'rgb(37, 99, 235)', completed: 'rgb(21, 128, 61)',
  failed: 'rgb(185, 28, 28)', cancelled: 'rgb(75, 85, 99)', skipped: 'rgb(255, 255, 255)', retrying: 'rgb(254, 243, 199)',
};

describe('the dashboard in Chromium', () => {
  let h: Harness;
  let url: string;
  let browser: Browser;
  let shots: string;
  let a: Tenant;
  let b: Tenant;
  let agent: TestAgent;
  let pipelineId: string;
  let assetId: string;
  let bRunId: string;
  const contexts: BrowserContext[] = [];
  const consoleErrors: string[] = [];
  const timings: Record<string, number> = {};
  /** From each transition's event to the page showing it. */
  const delays: number[] = [];

  before(async () => {
    if (skip) return;
    const { chromium } = await import('playwright-core');
    h = await startHarness();
    url = (await h.listen()).url;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    shots = process.env.DASHBOARD_SCREENSHOTS ?? await mkdtemp(path.join(tmpdir(), 'scanflow-dashboard-'));
    a = await createTenant(h, 'Tenant A');
    b = await createTenant(h, 'Tenant B');
    agent = await TestAgent.create(h, a, { name: 'agent-one', tools: ['tool-a', 'tool-b', 'tool-c', 'tool-d'] });
    assert.equal((await agent.heartbeat({ version: '1.2.3', hostname: 'scanner-1' })).status, 200);
    assetId = (await createAsset(h, a, { type: 'repository', name: 'web <img src=x onerror="window.__xss=2">' })).id;
    pipelineId = (await createPipeline(h, a, {
      name: 'Deploy check <script>window.__xss=1</script>',
      steps: [
        step('a', { name: 'Checkout <script>window.__xss=3</script>' }),
        step('b', { name: 'Scan', depends_on: ['a'], max_retries: 1, retry_delay_seconds: 60 }),
        step('c', { name: 'Only on servers', depends_on: ['a'], condition: { type: 'never' } }),
        step('d', { name: 'Report', depends_on: ['b', 'c'] }),
      ],
    })).id;
    // Tenant B's things, which A must never see.
    const bPipeline = await createPipeline(h, b, { name: 'B-secret-pipeline', steps: [step('x')] });
    bRunId = (await startRun(h, b, bPipeline.id)).id;
    await h.pool.query(`INSERT INTO findings (tenant_id, fingerprint, type, tool, title, severity, status, location)
      VALUES ($1, 'b-secret', 'credential_leak', 'gitleaks', 'B-secret-finding', 'critical', 'open', '{}')`, [b.id]);
  });

  after(async () => {
    if (skip) return;
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    await h?.close();
    if (shots) console.log(`# dashboard screenshots: ${shots}`);
    console.log(`# dashboard timings (ms): ${JSON.stringify(timings)}`);
  });

  async function newPage(viewport = { width: 1280, height: 800 }): Promise<Page> {
    const context = await browser.newContext({ viewport });
    contexts.push(context);
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`${page.url()}: ${m.text()}`); });
    page.on('pageerror', (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
    return page;
  }

  async function signIn(page: Page, token: string, landing = 'runs'): Promise<void> {
    await page.goto(`${url}/`);
    await page.getByLabel('Tenant token, or the admin token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector(`body[data-page="${landing}"]`);
  }

  /** Waits until the live stream is open and the first catch-up has been applied. */
  async function live(page: Page): Promise<void> {
    await page.waitForSelector('body[data-live="open"][data-refreshed]');
  }

  /**
   * Runs `act` (which makes a transition: its event `event` of run `runOf()`), then waits for
   * `selector`. The transition must show within LIVE_MS of its event's commit-side timestamp
   * (the database's clock, on this machine); the whole act is recorded too (it includes the
   * worker's pickup where the worker makes the transition).
   */
  async function within(page: Page, name: string, act: () => Promise<unknown>, selector: string | (() => string),
    event: { type: string; run: () => string }): Promise<void> {
    const t0 = performance.now();
    await act();
    await page.waitForSelector(typeof selector === 'string' ? selector : selector(), { timeout: 10_000 });
    const shownAt = Date.now();
    timings[`${name} (from the act)`] = Math.round(performance.now() - t0);
    const { rows } = await h.pool.query<{ at: number }>(
      `SELECT extract(epoch FROM created_at)::float8 * 1000 AS at FROM events WHERE pipeline_run_id = $1 AND type = $2 ORDER BY id DESC LIMIT 1`,
      [event.run(), event.type]);
    assert.ok(rows[0], `${name}: no ${event.type} event`);
    const ms = Math.round(shownAt - rows[0].at);
    timings[name] = ms;
    delays.push(ms);
    assert.ok(ms < SLOWEST_MS, `${name}: the page showed it ${ms} ms after the transition`);
  }

  const stepEvent = (what: string) => ({ type: `pipeline.step.${what}`, run: () => runId });

  const fillOf = (page: Page, key: string) =>
    page.$eval(`#node-${key} rect`, (r) => getComputedStyle(r).fill);

  async function claim(stepKey: string): Promise<Record<string, any>> {
    for (let i = 0; i < 50; i++) {
      const [command] = await agent.poll({ limit: 1, wait: 1 });
      if (command) {
        assert.equal(command.payload.step_key, stepKey);
        return command;
      }
    }
    throw new Error(`no command for step ${stepKey}`);
  }

  let runId: string;
  let runPage: Page;

  it('signs in with a tenant token (no credential in any URL) and shows a new run without a reload', { skip }, async () => {
    const page = await newPage();
    const urls: string[] = [];
    page.on('request', (r) => urls.push(r.url()));
    await signIn(page, a.token);
    assert.equal(await page.locator('.who .tenant').textContent(), 'Tenant A');
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === 'scanflow_session')!;
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
    assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is not readable by scripts');
    await live(page);
    await within(page, 'new run on the runs page', async () => {
      runId = (await startRun(h, a, pipelineId, { asset_id: assetId })).id;
    }, () => `tr[data-run-id="${runId}"]`, { type: 'pipeline.run.started', run: () => runId });
    // Markup in names is text.
    assert.match(await page.locator(`tr[data-run-id="${runId}"]`).innerText(), /Deploy check <script>window.__xss=1<\/script>/);
    assert.match(await page.locator(`tr[data-run-id="${runId}"]`).innerText(), /web <img src=x/);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.equal(await page.getByText('B-secret-pipeline').count(), 0, 'nothing of tenant B');
    for (const u of urls) assert.doesNotMatch(u, new RegExp(a.token), 'the token is in no URL');
    runPage = page;
  });

  it('draws the run\'s DAG left to right, every step coloured by its state, and follows the agent within a second', { skip }, async () => {
    const page = runPage;
    await page.goto(`${url}/runs/${runId}`);
    await live(page);
    await page.waitForSelector('#node-a[data-state="queued"]');
    // Left to right: a before b and c, which come before d.
    const x = async (key: string) => (await page.locator(`#node-${key} rect`).boundingBox())!.x;
    assert.ok((await x('a')) < (await x('b')) && (await x('b')) < (await x('d')));
    for (const key of ['b', 'c', 'd']) {
      assert.equal(await page.getAttribute(`#node-${key}`, 'data-state'), 'pending');
      assert.equal(await fillOf(page, key), COLOUR.pending);
    }
    assert.equal(await fillOf(page, 'a'), COLOUR.queued);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.match(await page.locator('#node-a').textContent() ?? '', /Checkout <script>/);

    const a1 = await claim('a');
    assert.equal((await agent.ack(a1.id)).status, 200);
    await within(page, 'step started', () => agent.start(a1.id), '#node-a[data-state="running"]', stepEvent('started'));
    assert.equal(await fillOf(page, 'a'), COLOUR.running);
    // The running step is selected; its output tails.
    await page.waitForSelector('#step-detail[data-step="a"]');
    const upload = await h.request('POST', `/api/v1/agent/commands/${a1.id}/logs?offset=0`, {
      apiKey: agent.apiKey, raw: new TextEncoder().encode('cloning <repo>\nchecked out 42 files\n'), headers: { 'content-type': 'text/plain' },
    });
    assert.equal(upload.status, 200, JSON.stringify(upload.body));
    await page.waitForFunction(() => document.getElementById('step-output')?.textContent?.includes('checked out 42 files'), null, { timeout: 3000 });
    assert.match(await page.locator('#step-output').textContent() ?? '', /cloning <repo>/);

    await within(page, 'step completed', () => agent.complete(a1.id, { findings_count: 0 }), '#node-a[data-state="completed"]', stepEvent('completed'));
    assert.equal(await fillOf(page, 'a'), COLOUR.completed);
    await page.waitForSelector('#node-c[data-state="skipped"]');
    assert.equal(await fillOf(page, 'c'), COLOUR.skipped);
    assert.match(await page.locator('#node-c').textContent() ?? '', /skipped: Condition not met/);
    await page.waitForSelector('#node-b[data-state="queued"]');

    // b fails once and is retried: its attempt number shows.
    const b1 = await claim('b');
    await agent.ack(b1.id);
    await agent.start(b1.id);
    await page.waitForSelector('#node-b[data-state="running"]');
    await within(page, 'step failed, retry waiting', () => agent.fail(b1.id, { error_message: 'scanner crashed', error_code: 'tool_error' }),
      '#node-b[data-state="retrying"]', stepEvent('retrying'));
    assert.equal(await fillOf(page, 'b'), COLOUR.retrying);
    assert.match(await page.locator('#node-b').textContent() ?? '', /attempt 1\/2/);
    await passRetryDelays(h, runId);
    const b2 = await claim('b');
    assert.equal(b2.payload.attempt, 2);
    await agent.ack(b2.id);
    await within(page, 'retry started', () => agent.start(b2.id), '#node-b[data-state="running"][data-attempt="2"]', stepEvent('started'));
    assert.match(await page.locator('#node-b').textContent() ?? '', /running · attempt 2\/2/);
    // The timeline has both attempts of b.
    await page.click('#node-b');
    await page.waitForSelector('#step-detail[data-step="b"]');
    assert.equal(await page.locator('#run-waterfall tr[data-step="b"] rect.run').count(), 2);
    await page.screenshot({ path: path.join(shots, 'run-running.png'), fullPage: true });
  });

  it('cancels from the page: the run ends cancelled; then retries it from the page', { skip }, async () => {
    const page = runPage;
    assert.equal(await page.locator('#retry-run').count(), 0, 'no retry while it runs');
    await within(page, 'cancelled from the page', () => page.getByRole('button', { name: 'Cancel run' }).click(), '#run-status[data-status="cancelled"]',
      { type: 'pipeline.run.cancelled', run: () => runId });
    await page.waitForSelector('#node-b[data-state="cancelled"]');
    assert.equal(await fillOf(page, 'b'), COLOUR.cancelled);
    assert.equal(await page.locator('#cancel-run').count(), 0, 'no cancel once it ended');
    const api = await h.request('GET', `/api/v1/pipeline-runs/${runId}`, { token: a.token });
    assert.equal(api.body.status, 'cancelled');

    await within(page, 'retried from the page', () => page.getByRole('button', { name: 'Retry failed steps' }).click(),
      '#run-status:not([data-status="cancelled"])', { type: 'pipeline.run.started', run: () => runId });
    await page.waitForSelector('#node-b[data-state="queued"]');
    const b3 = await claim('b');
    await agent.finish(b3.id, { findings_count: 1 });
    await page.waitForSelector('#node-b[data-state="completed"]');
    const d1 = await claim('d');
    await agent.ack(d1.id);
    // A finding reported by d, shown on the run's page.
    const ingest = await h.request('POST', '/api/v1/agent/ingest', {
      apiKey: agent.apiKey,
      body: {
        version: '1.0', metadata: { command_id: d1.id }, tool: { name: 'tool-d' },
        findings: [{ type: 'vulnerability', title: 'SQL injection <b>in login</b>', severity: 'high', rule_id: 'sqli', location: { path: 'src/login.ts', start_line: 3 } }],
      },
    });
    assert.equal(ingest.status, 201, JSON.stringify(ingest.body));
    await agent.start(d1.id);
    await agent.complete(d1.id);
    await page.waitForSelector('#run-status[data-status="completed"]');
    await page.waitForSelector('#run-findings tr[data-finding-id]');
    assert.match(await page.locator('#run-findings').innerText(), /SQL injection <b>in login<\/b>/);
    assert.equal(await page.locator('#retry-run').count(), 0);
    await page.click('#node-d');
    await page.waitForSelector('#step-detail[data-step="d"]');
    await page.screenshot({ path: path.join(shots, 'run.png'), fullPage: true });
  });

  it('triages a finding with a reason', { skip }, async () => {
    const page = runPage;
    await page.goto(`${url}/findings`);
    await live(page);
    assert.equal(await page.getByText('B-secret-finding').count(), 0, 'nothing of tenant B');
    const row = page.locator('tr[data-finding-id]', { hasText: 'SQL injection' });
    assert.match(await page.locator('.counts').innerText(), /1 high/);
    await row.getByLabel(/New status of/).selectOption('false_positive');
    await row.getByLabel('Reason').fill('parameterized <query> already');
    await row.getByRole('button', { name: 'Set' }).click();
    await page.waitForSelector('tr[data-finding-id][data-status="false_positive"]');
    const id = await page.locator('tr[data-finding-id]', { hasText: 'SQL injection' }).getAttribute('data-finding-id');
    const history = await h.request('GET', `/api/v1/findings/${id}/status-changes`, { token: a.token });
    assert.equal(history.body.items[0].data.reason, 'parameterized <query> already');
    assert.equal(history.body.items[0].data.to, 'false_positive');
  });

  it('shows the agents at work, and scans with their next fire in their own time zone; pauses one', { skip }, async () => {
    const page = runPage;
    const run2 = await startRun(h, a, pipelineId, { asset_id: assetId });
    const c = await claim('a');
    await agent.ack(c.id);
    await agent.start(c.id);
    await page.goto(`${url}/agents`);
    const row = page.locator('tr[data-agent-id]', { hasText: 'agent-one' });
    assert.match(await row.innerText(), /online/);
    assert.match(await row.innerText(), /1\.2\.3/);
    assert.match(await row.innerText(), /tool-b/);
    assert.match(await row.innerText(), /Checkout <script>/, 'what it runs now');
    await live(page);
    await within(page, 'agent idle again', () => agent.complete(c.id), 'tr[data-agent-id] >> text=idle', { type: 'pipeline.step.completed', run: () => run2.id });
    await h.request('POST', `/api/v1/pipeline-runs/${run2.id}/cancel`, { token: a.token });

    const scan = await h.request('POST', '/api/v1/scans', {
      token: a.token,
      body: { name: 'Nightly <i>web</i>', pipeline_id: pipelineId, targets: { asset_id: assetId }, schedule_type: 'cron', cron_expression: '0 2 * * *', timezone: 'Europe/Berlin' },
    });
    assert.equal(scan.status, 201, JSON.stringify(scan.body));
    await page.goto(`${url}/scans`);
    await live(page);
    const scanRow = page.locator(`tr[data-scan-id="${scan.body.id}"]`);
    assert.match(await scanRow.innerText(), /Nightly <i>web<\/i>/);
    assert.match(await scanRow.locator('time.in-zone').innerText(), /02:00 (CET|CEST)/);
    await scanRow.getByRole('button', { name: /Pause/ }).click();
    await page.waitForSelector(`tr[data-scan-id="${scan.body.id}"][data-status="paused"]`);
    assert.equal((await h.request('GET', `/api/v1/scans/${scan.body.id}`, { token: a.token })).body.status, 'paused');
    await page.locator(`tr[data-scan-id="${scan.body.id}"]`).getByRole('button', { name: /Resume/ }).click();
    await page.waitForSelector(`tr[data-scan-id="${scan.body.id}"][data-status="active"]`);
  });

  /** A page that answers 404 on purpose: Chromium logs its own load as a console error; only that one is expected. */
  async function expectNotFound(page: Page, where: string): Promise<void> {
    const before = consoleErrors.length;
    const res = await page.goto(`${url}${where}`);
    assert.equal(res?.status(), 404);
    assert.match(await page.locator('main').innerText(), /not found/i);
    const logged = consoleErrors.splice(before);
    assert.deepEqual(logged.filter((e) => !/Failed to load resource: the server responded with a status of 404/.test(e)), []);
    assert.ok(logged.length <= 1, JSON.stringify(logged));
  }

  it('shows nothing of another tenant, even by id', { skip }, async () => {
    const page = runPage;
    await expectNotFound(page, `/runs/${bRunId}`);
    await page.goto(`${url}/`);
    assert.equal(await page.getByText('B-secret').count(), 0);
    // Tenant B's own session sees only B.
    const other = await newPage();
    await signIn(other, b.token);
    assert.equal(await other.locator(`tr[data-run-id="${runId}"]`).count(), 0);
    assert.equal(await other.locator(`tr[data-run-id="${bRunId}"]`).count(), 1);
    await expectNotFound(other, `/runs/${runId}`);
  });

  it('the admin token signs in to a tenant picker and acts in the tenant chosen', { skip }, async () => {
    const page = await newPage();
    await signIn(page, ADMIN_TOKEN, 'tenants');
    await page.getByLabel('Tenant').selectOption({ label: 'Tenant A' });
    await page.getByRole('button', { name: 'Open' }).click();
    await page.waitForSelector('body[data-page="runs"]');
    assert.equal(await page.locator('.who .tenant').textContent(), 'Tenant A');
    assert.equal(await page.locator('.who .badge').textContent(), 'admin');
    assert.equal(await page.locator(`tr[data-run-id="${runId}"]`).count(), 1);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForSelector('body[data-page="sign-in"]');
  });

  it('is usable with the keyboard and at a phone\'s width', { skip }, async () => {
    const page = runPage;
    await page.goto(`${url}/runs/${runId}?step=a`);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
    await page.focus('#node-c');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#step-detail[data-step="c"]');
    assert.match(await page.locator('#step-detail').innerText(), /Skipped: Condition not met/);
    const phone = await newPage({ width: 390, height: 844 });
    await signIn(phone, a.token);
    await phone.screenshot({ path: path.join(shots, 'runs-phone.png') });
    for (const where of ['/', `/runs/${runId}`, '/findings', '/scans', '/agents']) {
      await phone.goto(`${url}${where}`);
      const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      // What sticks out (for the message): the outermost elements past the right edge.
      const culprits = overflow <= 0 ? [] : await phone.evaluate(() => [...document.querySelectorAll('body *')]
        .filter((e: any) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.parentElement.closest('.table-wrap, .dag-wrap'))
        .slice(0, 5).map((e: any) => `${e.tagName.toLowerCase()}.${e.className} (${Math.round(e.getBoundingClientRect().right)}px)`));
      assert.ok(overflow <= 0, `${where} is ${overflow}px wider than the phone: ${culprits.join(', ')}`);
    }
    await phone.goto(`${url}/runs/${runId}`);
    await phone.screenshot({ path: path.join(shots, 'run-phone.png'), fullPage: true });
  });

  it('showed transitions within a second (the median of those measured)', { skip }, () => {
    assert.ok(delays.length >= 8, `measured ${delays.length}`);
    const sorted = [...delays].sort((x, y) => x - y);
    const median = sorted[Math.floor(sorted.length / 2)];
    timings.median = median;
    assert.ok(median < LIVE_MS, `median ${median} ms: ${JSON.stringify(timings)}`);
  });

  it('the runs list, screenshotted; no console errors on any page', { skip }, async () => {
    const page = runPage;
    await page.goto(`${url}/`);
    await page.screenshot({ path: path.join(shots, 'runs.png'), fullPage: true });
    assert.deepEqual(consoleErrors, []);
  });
});
