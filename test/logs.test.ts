// Logs fit for operators, captured from the real app and worker through a pino destination:
// x-request-id in (validated) and out, the request's id on what its request did and bridging
// to the jobs it caused (a run's lines carry its id); at info one line per fact (run
// created, started, finished; agent online, offline; scan fired), none per job; on a
// terminal the lines are pretty-printed.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, getRun, silenceAgent, step, type Tenant } from './support/fixtures.ts';
import { createScan, makeDue, tick } from './scan-support.ts';
import { processLogger } from '../src/observability/logger.ts';

type Line = { level: number; msg: string; [k: string]: any };
const INFO = 30;
const lines: Line[] = [];

let h: Harness;
let tenant: Tenant;

before(async () => {
  // Everything at debug is captured; the tests look at what an operator at info would see.
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  h = await startHarness({ logger });
  tenant = await createTenant(h);
});
after(() => h.close());
beforeEach(() => {
  lines.length = 0;
});

const infoLines = () => lines.filter((l) => l.level >= INFO);

describe('request ids and operator facts', () => {
  it('keeps a plain x-request-id and answers it; a missing or unfit one is replaced by a new UUID', async () => {
    const kept = await h.request('GET', '/healthz', { headers: { 'x-request-id': 'req-01HZX.trace:42' } });
    assert.equal(kept.headers.get('x-request-id'), 'req-01HZX.trace:42');

    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    const generated = new Set<string>();
    for (const given of [undefined, 'x'.repeat(129), 'two words', 'forged"}\u0001', '']) {
      const res = await h.request('GET', '/healthz', { headers: given === undefined ? {} : { 'x-request-id': given } });
      const id = res.headers.get('x-request-id') ?? '';
      assert.match(id, uuid, `for ${JSON.stringify(given)}`);
      generated.add(id);
    }
    assert.equal(generated.size, 5, 'a new id per request');
    // On errors and 404s too, and in the request's own (debug) line with its route pattern.
    const missing = await h.request('GET', '/api/v1/pipeline-runs/00000000-0000-4000-8000-000000000000', {
      token: tenant.token, headers: { 'x-request-id': 'lost-run' },
    });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('x-request-id'), 'lost-run');
    const line = lines.find((l) => l.msg === 'request' && l.request_id === 'lost-run');
    assert.ok(line, JSON.stringify(lines));
    assert.equal(line.route, '/api/v1/pipeline-runs/:id');
    assert.equal(line.status, 404);
  });

  it('a run created by a request: the request id is on "run created" with the run id, which the worker\'s lines carry', async () => {
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const pipeline = await createPipeline(h, tenant, { name: 'logged', steps: [step('a')] });
    const res = await h.request('POST', `/api/v1/pipelines/${pipeline.id}/run`, {
      token: tenant.token, body: {}, headers: { 'x-request-id': 'start-it-1' },
    });
    assert.equal(res.status, 201);
    const runId = res.body.id as string;
    await h.settle();
    const [c] = await agent.poll();
    await agent.finish(c.id);
    await h.settle();
    assert.equal((await getRun(h, tenant, runId)).status, 'completed');

    const created = lines.find((l) => l.msg === 'run created');
    assert.ok(created);
    assert.equal(created.level, INFO);
    assert.equal(created.request_id, 'start-it-1');
    assert.deepEqual(created.run_ids, [runId]);
    assert.equal(created.tenant_id, tenant.id);
    for (const msg of ['run started', 'run completed']) {
      const l = lines.find((x) => x.msg === msg && x.run_id === runId);
      assert.ok(l, `${msg}: ${JSON.stringify(lines.map((x) => x.msg))}`);
      assert.equal(l.level, INFO);
      assert.equal(l.task, 'run_advance', 'logged by the job that made the transition');
      assert.ok(l.job_id);
    }
    const finished = lines.find((x) => x.msg === 'run completed')!;
    assert.equal(finished.status, 'completed');
    assert.equal(typeof finished.duration_seconds, 'number');
    assert.deepEqual(finished.steps, { total: 1, completed: 1, failed: 0, skipped: 0 });
    // The agent's first contact is a fact; its commands' transitions are not (debug).
    assert.ok(infoLines().some((l) => l.msg === 'agent online' && l.agent_id === agent.id));

    // At info: the facts, once each; graphile-worker's per-job lines are at debug.
    assert.deepEqual(infoLines().map((l) => l.msg).sort(), ['agent online', 'run completed', 'run created', 'run started']);
    assert.ok(lines.some((l) => l.level < INFO && /^Completed task \d+ \(run_advance/.test(l.msg)), 'the job lines went to debug');
    assert.ok(lines.some((l) => l.level < INFO && l.msg === 'step completed' && l.run_id === runId));
  });

  it('an agent going offline and coming back, and a scan the scheduler fired, are one info line each', async () => {
    const agent = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    assert.equal((await agent.heartbeat()).status, 200);
    assert.equal((await agent.heartbeat()).status, 200);
    assert.deepEqual(infoLines().filter((l) => l.agent_id === agent.id).map((l) => l.msg), ['agent online'], 'once, not per heartbeat');

    await silenceAgent(h, agent.id);
    await h.settle();
    const offline = infoLines().find((l) => l.msg === 'agent offline' && l.agent_id === agent.id);
    assert.ok(offline, JSON.stringify(infoLines()));
    assert.equal(offline.task, 'agent_health');
    assert.equal((await agent.heartbeat()).status, 200);
    const back = infoLines().filter((l) => l.msg === 'agent online' && l.agent_id === agent.id);
    assert.equal(back.at(-1)!.previous_health, 'offline');

    const pipeline = await createPipeline(h, tenant, { name: 'scheduled-logged', steps: [step('a')] });
    const scan = await createScan(h, tenant, { name: 'nightly', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 3 * * *' });
    lines.length = 0;
    await makeDue(h, scan.id);
    await tick(h);
    const fired = infoLines().filter((l) => l.msg === 'scan fired');
    assert.equal(fired.length, 1, JSON.stringify(infoLines()));
    assert.equal(fired[0].scan_id, scan.id);
    assert.equal(fired[0].trigger, 'schedule');
    assert.equal(fired[0].run_ids.length, 1);
    assert.equal(fired[0].task, 'scheduler_tick');
  });
});

describe('process logger', () => {
  it('writes JSON lines to a pipe, readable lines to a terminal', async () => {
    const written: string[] = [];
    const out = (isTTY: boolean) => ({ isTTY, write: (s: string) => void written.push(s) });
    (await processLogger('info', out(false))).info({ run_id: 'r1' }, 'run started');
    assert.equal(JSON.parse(written[0]).msg, 'run started');

    (await processLogger('info', out(true))).info({ run_id: 'r1' }, 'run started');
    // Without its colours:
    const pretty = written[1].replace(/\u001b\[[0-9;]*m/g, '');
    assert.match(pretty, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: run started\n\s+run_id: "r1"\n$/);
    assert.throws(() => JSON.parse(written[1]));
  });
});
