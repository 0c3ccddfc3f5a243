// Makes the README's screenshot of the dashboard (docs/dashboard-run.png): a run of a
// security pipeline mid-way, through the real server, agent API and Chromium. Not part of
// `npm test`; run it with `node test/run.ts test/dashboard-screenshot.ts` (DASHBOARD_SCREENSHOTS
// names another directory).
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, step } from './support/fixtures.ts';
import { CHROMIUM, CHROMIUM_ARGS } from './support/chromium.ts';

const out = process.env.DASHBOARD_SCREENSHOTS ?? fileURLToPath(new URL('../docs/', import.meta.url));
let h: Harness;
let browser: Browser;

before(async () => {
  const { chromium } = await import('playwright-core');
  h = await startHarness();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});
after(async () => {
  await browser?.close();
  await h?.close();
});

it('a run of a security pipeline, mid-way', async () => {
  const t = await createTenant(h, 'acme');
  const agent = await TestAgent.create(h, t, { name: 'scanner-eu-1', tools: ['git', 'semgrep', 'trivy', 'gitleaks', 'nuclei', 'nmap'] });
  await agent.heartbeat({ version: '0.1.0', hostname: 'scanner-eu-1' });
  const asset = await createAsset(h, t, { type: 'repository', name: 'acme/webshop', value: 'https://git.example/acme/webshop' });
  const pipeline = await createPipeline(h, t, {
    name: 'Full Security Scan',
    steps: [
      step('checkout', { name: 'Checkout', tool: 'git' }),
      step('sast', { name: 'Static analysis', tool: 'semgrep', depends_on: ['checkout'] }),
      step('sca', { name: 'Dependency scan', tool: 'trivy', depends_on: ['checkout'] }),
      step('secrets', { name: 'Secret detection', tool: 'gitleaks', depends_on: ['checkout'], max_retries: 1, retry_delay_seconds: 0 }),
      step('dast', { name: 'Dynamic scan', tool: 'nuclei', depends_on: ['sast', 'sca', 'secrets'], condition: { type: 'expression', value: "asset.type == 'web_application'" } }),
      step('infra', { name: 'Infrastructure scan', tool: 'nmap', depends_on: ['sast'], condition: { type: 'expression', value: "asset.type in ['server', 'network']" } }),
    ],
  });
  const run = await h.request('POST', `/api/v1/pipelines/${pipeline.id}/run`, { token: t.token, body: { asset_id: asset.id, triggered_by: 'alice@acme.example' } });
  const claim = async (key: string) => {
    for (let i = 0; i < 50; i++) {
      const commands = await agent.poll({ limit: 5, wait: 1 });
      const c = commands.find((x) => x.payload.step_key === key);
      if (c) return c;
      assert.equal(commands.length, 0, `only ${key} was expected: ${commands.map((x) => x.payload.step_key)}`);
    }
    throw new Error(`no command for ${key}`);
  };
  const log = (id: string, text: string) => h.request('POST', `/api/v1/agent/commands/${id}/logs?offset=0`, {
    apiKey: agent.apiKey, raw: new TextEncoder().encode(text), headers: { 'content-type': 'text/plain' },
  });
  const checkout = await claim('checkout');
  await agent.finish(checkout.id);
  const commands = await agent.poll({ limit: 5, wait: 2 });
  const byKey = Object.fromEntries(commands.map((c) => [c.payload.step_key, c]));
  await agent.ack(byKey.sast.id);
  await h.request('POST', '/api/v1/agent/ingest', {
    apiKey: agent.apiKey,
    body: {
      version: '1.0', metadata: { command_id: byKey.sast.id }, tool: { name: 'semgrep' },
      findings: [
        { type: 'vulnerability', title: 'SQL query built from user input', severity: 'high', rule_id: 'sqli', location: { path: 'src/orders.ts', start_line: 88 } },
        { type: 'vulnerability', title: 'Cookie without the Secure flag', severity: 'low', rule_id: 'cookie-secure', location: { path: 'src/session.ts', start_line: 12 } },
      ],
    },
  });
  await agent.start(byKey.sast.id);
  await agent.complete(byKey.sast.id);
  await agent.ack(byKey.secrets.id);
  await agent.start(byKey.secrets.id);
  await agent.fail(byKey.secrets.id, { error_message: 'gitleaks: exit status 137 (killed)', error_code: 'tool_error' });
  await agent.ack(byKey.sca.id);
  await agent.start(byKey.sca.id);
  await log(byKey.sca.id, '2026-12-01T08:00:01Z INFO  Scanning package-lock.json\n2026-12-01T08:00:03Z INFO  Detected 412 packages\n2026-12-01T08:00:09Z WARN  lodash 4.17.15: CVE-2021-23337 (high)\n');
  const retry = await claim('secrets');
  await agent.ack(retry.id);
  await agent.start(retry.id);

  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  const base = (await h.listen()).url;
  await page.goto(`${base}/`);
  await page.getByLabel('Tenant token, or the admin token').fill(t.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('body[data-page="runs"]');
  await page.goto(`${base}/runs/${run.body.id}?step=sca`);
  await page.waitForFunction(() => (globalThis as any).document.getElementById('step-output')?.textContent.includes('CVE-2021-23337'));
  await page.screenshot({ path: path.join(out, 'dashboard-run.png') });
  console.log(`# ${path.join(out, 'dashboard-run.png')}`);
});
