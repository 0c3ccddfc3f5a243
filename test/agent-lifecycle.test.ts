// The agent process's protocol under trouble, against the real server on a socket: it refuses
// to start with a bad setting, a wrong key or no server; a cancel stops the tool (and what it
// started) at once; a step's timeout kills the tool and fails the step as a timeout; kill -9
// of the agent mid-step → the server takes the step back and a second agent runs it; SIGTERM
// lets the running tool finish, stops the one that outlasts the grace (agent_shutdown) and
// claims nothing more; the server going away mid-step → the tool goes on and its result is
// reported when the server is back. Tools here are tools-file entries run by this Node: one
// that holds (writing its pid and its child's), one that reports after a moment.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createAsset, createPipeline, createTenant, startRun, stepsByKey, step, type Tenant } from './support/fixtures.ts';
import { eventually, processExists, readWhenWritten, startAgentProcess, waitForRun, type AgentProcess } from './support/agent-process.ts';
import { freePort } from './support/ports.ts';

let h: Harness;
let url: string;
let root: string;
const agents: AgentProcess[] = [];
const orphans: number[] = [];

before(async () => {
  // Heartbeats every second; an agent silent for 4 s is lost (kill -9 below).
  h = await startHarness({ orchestration: { heartbeatIntervalSeconds: 1, agentOfflineAfterSeconds: 4 } });
  url = (await h.listen()).url;
  root = mkdtempSync(path.join(tmpdir(), 'scanflow-agent-life-'));
});

after(async () => {
  for (const a of agents) await a.kill();
  for (const pid of orphans) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  await h?.close();
  rmSync(root, { recursive: true, force: true });
});

type Pids = { tool: number; child: number };

/** A tool that prints a line, starts a child (sleep) and holds until stopped; it writes both pids to `pidFile`. */
function holdTool(name: string, pidFile: string): string {
  const script = [
    "const { spawn } = require('node:child_process');",
    "const child = spawn('sleep', ['300'], { stdio: 'ignore' });",
    "require('node:fs').writeFileSync(process.argv[1], JSON.stringify({ tool: process.pid, child: child.pid }));",
    "console.log('holding the line');",
    'setInterval(() => {}, 1000);',
  ].join(' ');
  return `- name: ${name}\n  command: [${JSON.stringify(process.execPath)}, -e, ${JSON.stringify(script)}, ${JSON.stringify(pidFile)}]\n  output: text\n`;
}

/** A tool that writes its pid, then after `ms` prints a report with one finding on {host}. */
function reportTool(name: string, ms: number, pidFile: string): string {
  const script = [
    "require('node:fs').writeFileSync(process.argv[1], JSON.stringify({ tool: process.pid, child: process.pid }));",
    `setTimeout(() => console.log(JSON.stringify({ version: '1.0', metadata: { coverage_type: 'full' }, tool: { name: '${name}' },`,
    "findings: [{ type: 'misconfiguration', title: 'probe of ' + process.argv[2], severity: 'low', fingerprint: 'probe:' + process.argv[2] }] })),",
    `${ms});`,
  ].join(' ');
  return `- name: ${name}\n  command: [${JSON.stringify(process.execPath)}, -e, ${JSON.stringify(script)}, ${JSON.stringify(pidFile)}, "{host}"]\n  output: report\n`;
}

function toolsFile(name: string, entries: string[]): string {
  const file = path.join(root, `${name}.yaml`);
  writeFileSync(file, entries.join(''));
  return file;
}

async function agentWith(t: Tenant, tools: string[], file: string, env: Record<string, string> = {}, max = 2): Promise<{ agent: TestAgent; proc: AgentProcess }> {
  const agent = await TestAgent.create(h, t, { tools, max_concurrent_jobs: max });
  const proc = startAgentProcess({ SCANFLOW_URL: url, SCANFLOW_AGENT_KEY: agent.apiKey, SCANFLOW_TOOLS_FILE: file, SCANFLOW_WORK_DIR: path.join(root, 'work'), ...env });
  agents.push(proc);
  await proc.waitFor(/polling for commands/);
  return { agent, proc };
}

async function hostRun(t: Tenant, steps: Record<string, unknown>[], settings: Record<string, unknown> = {}, on = h): Promise<{ run: any; asset: any }> {
  const h = on;
  const name = `h-${Math.random().toString(36).slice(2, 8)}`;
  const asset = await createAsset(h, t, { type: 'server', name, value: `${name}.test` }); // never resolved: the tools here do not connect
  const pipeline = await createPipeline(h, t, { name: `p-${Math.random().toString(36).slice(2, 8)}`, steps, settings: { max_parallel_steps: 5, fail_fast: false, ...settings } });
  return { run: await startRun(h, t, pipeline.id, { asset_id: asset.id }), asset };
}

async function commandOf(t: Tenant, id: string): Promise<any> {
  const res = await h.request('GET', `/api/v1/commands/${id}`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

const gone = (pids: Pids) => eventually(`tool ${pids.tool} and its child ${pids.child} gone`, () => !processExists(pids.tool) && !processExists(pids.child), 15_000);

describe('refusing to start', () => {
  it('a bad setting: exit 2, naming the variable', async () => {
    const p = startAgentProcess({ SCANFLOW_URL: 'ftp://nowhere', SCANFLOW_AGENT_KEY: 'sfa_0123456789abcdef', SCANFLOW_AGENT_CONCURRENCY: 'lots' });
    agents.push(p);
    assert.deepEqual(await p.exited, { code: 2, signal: null });
    assert.match(p.output(), /SCANFLOW_URL \(--url\): must be the API's base address as an http\(s\) URL/);
    assert.match(p.output(), /SCANFLOW_AGENT_CONCURRENCY \(--concurrency\): must be a whole number/);
  });

  it('a wrong key: exit 1, saying the server refused SCANFLOW_AGENT_KEY', async () => {
    const p = startAgentProcess({ SCANFLOW_URL: url, SCANFLOW_AGENT_KEY: 'sfa_not-a-key-of-this-server' });
    agents.push(p);
    assert.deepEqual(await p.exited, { code: 1, signal: null });
    assert.match(p.output(), /cannot start: the server at http:\/\/127\.0\.0\.1:\d+ refused SCANFLOW_AGENT_KEY \(401 unauthorized/);
  });

  it('no server: exit 1 after retrying for SCANFLOW_START_TIMEOUT', async () => {
    const port = await freePort();
    const started = Date.now();
    const p = startAgentProcess({ SCANFLOW_URL: `http://127.0.0.1:${port}`, SCANFLOW_AGENT_KEY: 'sfa_0123456789abcdef', SCANFLOW_START_TIMEOUT: '3s' });
    agents.push(p);
    assert.deepEqual(await p.exited, { code: 1, signal: null });
    assert.match(p.output(), new RegExp(`cannot reach the scanflow API at http://127\\.0\\.0\\.1:${port}: ECONNREFUSED .*\\(\\d+ attempts in 3s\\)`));
    assert.ok((p.output().match(/request failed; retrying/g) ?? []).length >= 1, 'it retried');
    assert.ok(Date.now() - started >= 2_900, `it kept trying for SCANFLOW_START_TIMEOUT (exited after ${Date.now() - started} ms)`);
  });
});

describe('cancel and timeout', () => {
  let t: Tenant;
  let holdPids: string;
  before(async () => {
    t = await createTenant(h);
    holdPids = path.join(root, 'hold.pids');
    await agentWith(t, ['hold'], toolsFile('hold', [holdTool('hold', holdPids)]));
  });

  it('a cancelled run: the heartbeat says so and the tool and its child leave the process table; the output streamed while it ran', async () => {
    const { run } = await hostRun(t, [step('long', { tool: 'hold', max_retries: 0 })]);
    const pids = await readWhenWritten<Pids>(holdPids);
    // Streamed while the tool runs (at least every second).
    await eventually('the tool\'s first line in the step log', async () => {
      const log = await h.request('GET', `/api/v1/pipeline-runs/${run.id}/steps/long/logs`, { token: t.token, headers: { accept: 'text/plain' } });
      return log.status === 200 && String(log.body).includes('holding the line');
    });
    assert.ok(processExists(pids.tool) && processExists(pids.child));
    const cancelled = await h.request('POST', `/api/v1/pipeline-runs/${run.id}/cancel`, { token: t.token });
    assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
    const t0 = Date.now();
    await gone(pids);
    assert.ok(Date.now() - t0 < 8_000, `stopped within a few heartbeats (${Date.now() - t0} ms)`);
    const done = await waitForRun(h, t, run.id);
    assert.equal(done.status, 'cancelled');
    assert.equal(stepsByKey(done).long.status, 'cancelled');
    rmSync(holdPids);
  });

  it('a step timeout: the agent kills the tool at timeout_seconds and the step times out', async () => {
    const { run } = await hostRun(t, [step('slow', { tool: 'hold', timeout: 3, max_retries: 0 })]);
    const pids = await readWhenWritten<Pids>(holdPids);
    const done = await waitForRun(h, t, run.id, 30_000);
    await gone(pids);
    const s = stepsByKey(done).slow;
    assert.equal(done.status, 'failed', JSON.stringify(done)); // a run's own status timeout is for its settings.timeout
    assert.equal(s.status, 'timeout');
    // The agent's own kill ("timeout") or, when the server's deadline won the race by a few
    // milliseconds, the server's expiry (then the heartbeat stopped the tool).
    assert.ok(['timeout', 'step_timeout'].includes(s.error_code), s.error_code);
    if (s.error_code === 'timeout') assert.match(s.error_message, /did not finish within 3 s and was killed/);
    rmSync(holdPids);
  });
});

describe('an agent killed mid-step', () => {
  it('kill -9: the server takes the step back when the agent goes silent, and a second agent runs it', async () => {
    const t = await createTenant(h);
    const pidsFile = path.join(root, 'probe-a.pids');
    const a = await agentWith(t, ['probe'], toolsFile('probe-a', [holdTool('probe', pidsFile)]));
    const { run } = await hostRun(t, [step('probe', { tool: 'probe', max_retries: 1, retry_delay_seconds: 0 })]);
    const pids = await readWhenWritten<Pids>(pidsFile);
    orphans.push(pids.tool); // its tool outlives a SIGKILLed agent: cleaned up at the end
    a.proc.proc.kill('SIGKILL');
    await a.proc.exited;

    // A second agent with its own "probe", one that answers at once.
    const b = await agentWith(t, ['probe'], toolsFile('probe-b', [reportTool('probe', 0, path.join(root, 'probe-b.pids'))]));
    const done = await waitForRun(h, t, run.id, 60_000);
    assert.equal(done.status, 'completed', `${JSON.stringify(done)}\n${b.proc.output().slice(-2000)}`);
    const s = stepsByKey(done).probe;
    assert.deepEqual([s.attempt, s.agent_id, s.findings_count], [2, b.agent.id, 1]);
    const commands = (await h.request('GET', '/api/v1/commands?limit=50', { token: t.token })).body.items;
    const first = commands.find((c: any) => c.step_run_id === s.id && c.attempt === 1);
    assert.deepEqual([first.status, first.error_code, first.agent_id], ['failed', 'agent_lost', a.agent.id]);
  });
});

describe('SIGTERM', () => {
  it('no new commands; the running tool finishes and is reported; the one outlasting the grace fails agent_shutdown; exit 0', async () => {
    const t = await createTenant(h);
    const briefPids = path.join(root, 'brief.pids');
    const holdPidsFile = path.join(root, 'stay.pids');
    const { proc } = await agentWith(t, ['brief', 'stay'], toolsFile('term', [reportTool('brief', 2_500, briefPids), holdTool('stay', holdPidsFile)]),
      { SCANFLOW_SHUTDOWN_GRACE: '5s' }, 2);
    const { run } = await hostRun(t, [
      step('brief', { tool: 'brief', max_retries: 0, order: 1 }),
      step('stay', { tool: 'stay', max_retries: 1, retry_delay_seconds: 0, order: 2 }),
      step('later', { tool: 'brief', depends_on: ['brief'], max_retries: 0, order: 3 }),
    ]);
    await readWhenWritten<Pids>(briefPids);
    const stay = await readWhenWritten<Pids>(holdPidsFile);
    rmSync(briefPids);
    const signalled = Date.now();
    proc.proc.kill('SIGTERM');
    await proc.waitFor(/no new commands; the running tools may finish within the grace period/);
    const exit = await proc.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, proc.output().slice(-3000));
    assert.ok(Date.now() - signalled >= 4_000, 'it waited for the grace period');
    assert.ok(!processExists(stay.tool) && !processExists(stay.child), 'the tool outlasting the grace was stopped');

    const steps = await eventually('brief completed, stay back in the queue', async () => {
      const r = (await h.request('GET', `/api/v1/pipeline-runs/${run.id}`, { token: t.token })).body;
      const s = stepsByKey(r);
      return s.brief.status === 'completed' && s.stay.attempt === 2 && s.later.status === 'queued' ? s : undefined;
    });
    assert.equal(steps.brief.findings_count, 1, 'the tool that finished within the grace was ingested and completed');
    const stayCommands = (await h.request('GET', `/api/v1/commands?limit=50`, { token: t.token })).body.items.filter((c: any) => c.step_run_id === steps.stay.id);
    const first = stayCommands.find((c: any) => c.attempt === 1);
    assert.equal(first.status, 'failed');
    assert.equal(first.error_code, 'agent_shutdown');
    // Nothing claimed after SIGTERM: the step that became ready meanwhile, and the retry, wait for an agent.
    const later = await commandOf(t, steps.later.command_id);
    assert.deepEqual([later.status, later.agent_id], ['pending', null]);
    assert.equal(stayCommands.find((c: any) => c.attempt === 2)?.agent_id ?? null, null);
  });
});

describe('the server going away mid-step', () => {
  // A harness of its own, with the default 45 s before a silent agent is lost: the agent is
  // cut off for several seconds here, longer than the 4 s of the tests above.
  let h: Harness;
  let url: string;
  before(async () => {
    h = await startHarness({ orchestration: { heartbeatIntervalSeconds: 1 } });
    url = (await h.listen()).url;
  });
  after(() => h?.close());

  it('the tool runs on; its findings and completion are reported once the server is back', async () => {
    const t = await createTenant(h);
    // The agent reaches the server through a proxy this test closes and opens again.
    const port = await freePort();
    const serverPort = Number(new URL(url).port);
    const live = new Set<Socket>();
    let proxy: Server | null = null;
    const open = () => new Promise<void>((resolve) => {
      proxy = createServer((client) => {
        const upstream = connect(serverPort, '127.0.0.1');
        live.add(client).add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          live.delete(client);
          live.delete(upstream);
        };
        client.on('error', drop).on('close', drop).pipe(upstream);
        upstream.on('error', drop).on('close', drop).pipe(client);
      });
      proxy.listen(port, '127.0.0.1', () => resolve());
    });
    const close = () => new Promise<void>((resolve) => {
      proxy!.close(() => resolve());
      for (const s of live) s.destroy();
    });
    await open();
    try {
      const pidsFile = path.join(root, 'late.pids');
      const agent = await TestAgent.create(h, t, { tools: ['late'], max_concurrent_jobs: 1 });
      const proc = startAgentProcess({
        SCANFLOW_URL: `http://127.0.0.1:${port}`, SCANFLOW_AGENT_KEY: agent.apiKey,
        SCANFLOW_TOOLS_FILE: toolsFile('late', [reportTool('late', 2_500, pidsFile)]), SCANFLOW_WORK_DIR: path.join(root, 'work'),
      });
      agents.push(proc);
      await proc.waitFor(/polling for commands/);
      const { run } = await hostRun(t, [step('late', { tool: 'late', max_retries: 0 })], {}, h);
      await readWhenWritten<Pids>(pidsFile);
      await close(); // the tool is running; the server is gone for the agent
      await proc.waitFor(/request failed; retrying|heartbeat failed|poll failed/, 15_000);
      await new Promise((r) => setTimeout(r, 3_000)); // the tool finishes meanwhile
      await open();
      const done = await waitForRun(h, t, run.id, 60_000);
      assert.equal(done.status, 'completed', `${JSON.stringify(done)}\n${proc.output().slice(-3000)}`);
      assert.equal(stepsByKey(done).late.findings_count, 1);
      assert.equal(proc.proc.exitCode, null, 'the agent is still running');
      // Its reports (the output's last upload, then the ingest and the completion after it) kept trying.
      assert.match(proc.output(), /"path":"\/api\/v1\/agent\/(ingest|commands\/[0-9a-f-]+\/(logs|complete))"[^\n]*"msg":"request failed; retrying"/);
    } finally {
      if (proxy) await close().catch(() => {});
    }
  });
});
