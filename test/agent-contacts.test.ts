// Agent contact recorded in batches (src/api/contacts.ts, sql/agents.sql RecordContacts): many
// agents' heartbeats written by one statement, answered only once written; an offline agent
// made online exactly once when heartbeats reach two processes at once; the health check
// pushed forward only when it would run within half the grace; an older heartbeat of another
// process never overwrites a newer one. Time is moved in the database; nobody sleeps.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pg from 'pg';
import pino from 'pino';
import type { Hono } from 'hono';
import { startHarness, ADMIN_TOKEN, type Harness } from './support/harness.ts';
import { TestAgent, createTenant, silenceAgent, type Tenant } from './support/fixtures.ts';
import { createApp } from '../src/api/app.ts';
import type { AppEnv } from '../src/api/auth.ts';
import { forgetAgentCredential, hashToken } from '../src/api/auth.ts';
import { NotificationListener } from '../src/db/listener.ts';
import { CommandSignals } from '../src/api/signals.ts';
import { createPool } from '../src/db/pool.ts';
import { agentsSql } from '../src/store/queries.ts';

/** Log lines as objects, from a pino logger writing into an array. */
function capturingLogger() {
  const lines: Record<string, any>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

let h: Harness;
const log1 = capturingLogger();
// A second API process on the same database: its own app, pool, LISTEN connection and batches.
let app2: Hono<AppEnv>;
let pool2: pg.Pool;
let signals2: CommandSignals;
let listener2: NotificationListener;
const log2 = capturingLogger();
/** The statements app2's pool ran, by text. */
const ran2: string[] = [];

before(async () => {
  h = await startHarness({ logger: log1.logger });
  pool2 = createPool(h.db.url, 10);
  const query = pool2.query.bind(pool2) as (...a: unknown[]) => unknown;
  (pool2 as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
    const config = a[0] as { text?: string } | string;
    ran2.push(typeof config === 'string' ? config : config.text ?? '');
    return query(...a);
  };
  listener2 = new NotificationListener(h.db.url, log2.logger);
  signals2 = new CommandSignals(listener2);
  await listener2.start();
  app2 = createApp({ pool: pool2, orchestration: h.orchestration, signals: signals2, adminTokenHash: () => hashToken(ADMIN_TOKEN), logger: log2.logger });
});
after(async () => {
  signals2?.stop();
  await listener2?.stop();
  await pool2?.end();
  await h?.close();
});

const heartbeatVia = async (app: Hono<AppEnv> | null, agent: TestAgent, body: Record<string, unknown> = {}) => {
  if (!app) return agent.heartbeat(body);
  const res = await app.request('/api/v1/agent/heartbeat', {
    method: 'POST', headers: { 'x-api-key': agent.apiKey, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
};

type AgentState = {
  health: string; last_heartbeat_at: Date | null; last_seen_at: Date | null; health_check_at: Date | null;
  hostname: string | null; last_report: Record<string, unknown> | null; job_run_at: Date | null; jobs: number;
  /** Compared in the database (microseconds): the check runs a grace after the agent was last seen; its job runs then. */
  check_a_grace_after_seen: boolean; job_when_checked: boolean;
  /** The check runs between half a grace and a grace after the agent was last seen. */
  check_within_grace: boolean;
};
async function stateOf(agentId: string): Promise<AgentState> {
  const { rows } = await h.pool.query<AgentState>(
    `SELECT a.health, a.last_heartbeat_at, a.last_seen_at, a.health_check_at, a.hostname, a.last_report,
            (SELECT min(j.run_at) FROM graphile_worker.jobs j WHERE j.key = 'agent_health:' || a.id) AS job_run_at,
            a.health_check_at = a.last_seen_at + make_interval(secs => $2) AS check_a_grace_after_seen,
            a.health_check_at BETWEEN a.last_seen_at + make_interval(secs => $2 / 2.0) AND a.last_seen_at + make_interval(secs => $2)
              AS check_within_grace,
            (SELECT min(j.run_at) FROM graphile_worker.jobs j WHERE j.key = 'agent_health:' || a.id) = a.health_check_at AS job_when_checked,
            (SELECT count(*)::int FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks k ON k.id = j.task_id
             WHERE k.identifier = 'agent_health' AND j.payload->>'agent_id' = a.id::text) AS jobs
     FROM agents a WHERE a.id = $1`, [agentId, h.orchestration.agentOfflineAfterSeconds]);
  return rows[0];
}

const offlineEvents = async (agentId: string) =>
  (await h.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM events WHERE type = 'agent.offline' AND data->>'agent_id' = $1`, [agentId])).rows[0].n;

const onlineLines = (agentId: string) =>
  [...log1.lines, ...log2.lines].filter((l) => l.msg === 'agent online' && l.agent_id === agentId);

describe('agent contact in batches', () => {
  let t: Tenant;
  before(async () => {
    t = await createTenant(h);
  });

  it('heartbeats of many agents at once are written by a few statements, each answered once written', async () => {
    const agents = await Promise.all(Array.from({ length: 40 }, () => TestAgent.create(h, t, { tools: ['semgrep'] })));
    ran2.length = 0;
    const answers = await Promise.all(agents.map((a, i) => heartbeatVia(app2, a, { hostname: `host-${i}`, cpu_percent: i })));
    for (const r of answers) assert.equal(r.status, 200, JSON.stringify(r.body));
    // Answered means written: every agent's report is there, read by another connection.
    for (const [i, a] of agents.entries()) {
      const s = await stateOf(a.id);
      assert.equal(s.health, 'online');
      assert.equal(s.hostname, `host-${i}`);
      assert.equal(s.last_report?.cpu_percent, i);
      assert.equal(s.jobs, 1, 'one health check per agent');
      assert.equal(s.job_when_checked, true, 'the job runs when the agent row says');
    }
    const writes = ran2.filter((q) => q === agentsSql.RecordContacts.text).length;
    assert.ok(writes >= 1 && writes <= 5, `40 heartbeats at once were written by ${writes} statements (one per window)`);
  });

  it('an offline agent heartbeating to two processes at once goes online exactly once; silent again, it goes offline again', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['semgrep'] });
    assert.equal((await agent.heartbeat({})).status, 200);
    await silenceAgent(h, agent.id);
    await h.settle();
    assert.equal((await stateOf(agent.id)).health, 'offline');
    assert.equal(await offlineEvents(agent.id), 1);
    assert.equal(onlineLines(agent.id).length, 1, 'its first heartbeat made it online once');

    // Heartbeats and polls through both processes at the same time.
    const answers = await Promise.all(Array.from({ length: 16 }, (_, i) =>
      i % 4 === 3
        ? agent.poll().then(() => ({ status: 200, body: null }))
        : heartbeatVia(i % 2 ? app2 : null, agent, { hostname: `box-${i}` })));
    for (const r of answers) assert.equal(r.status, 200, JSON.stringify(r.body));
    const s = await stateOf(agent.id);
    assert.equal(s.health, 'online');
    const lines = onlineLines(agent.id);
    assert.equal(lines.length, 2, `exactly one more 'agent online' line: ${JSON.stringify(lines)}`);
    assert.equal(lines[1].previous_health, 'offline');
    assert.equal(s.jobs, 1, 'its health check armed once');
    // Armed by the batch that found it offline; later contact within half a grace leaves it.
    assert.equal(s.check_within_grace, true, 'the check runs within a grace after it was last seen');
    assert.equal(s.job_when_checked, true);

    // The batches changed nothing about going offline: silent, the check takes it offline, with its event.
    await silenceAgent(h, agent.id);
    await h.settle();
    assert.equal((await stateOf(agent.id)).health, 'offline');
    assert.equal((await stateOf(agent.id)).health_check_at, null, 'no check is armed for an offline agent');
    assert.equal(await offlineEvents(agent.id), 2);
  });

  it('a heartbeat pushes the health check forward only when it would run within half the grace', async () => {
    const agent = await TestAgent.create(h, t, { tools: ['semgrep'] });
    assert.equal((await agent.heartbeat({})).status, 200);
    const first = await stateOf(agent.id);
    assert.equal(first.job_when_checked, true);
    assert.equal(first.check_a_grace_after_seen, true);

    // Right away: the check is a whole grace ahead, so it stays; the heartbeat is recorded.
    assert.equal((await heartbeatVia(app2, agent, { hostname: 'second' })).status, 200);
    const second = await stateOf(agent.id);
    assert.equal(second.hostname, 'second');
    assert.ok(second.last_heartbeat_at! > first.last_heartbeat_at!);
    assert.equal(second.health_check_at?.getTime(), first.health_check_at?.getTime(), 'not re-armed');
    assert.equal(second.job_run_at?.getTime(), first.job_run_at?.getTime());

    // Time passes: the check would now run within half the grace, so the next heartbeat pushes it.
    const half = h.orchestration.agentOfflineAfterSeconds / 2;
    await h.pool.query(`UPDATE agents SET health_check_at = now() + make_interval(secs => $2::float8 - 1) WHERE id = $1`, [agent.id, half]);
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() + make_interval(secs => $2::float8 - 1) WHERE key = $1`, [`agent_health:${agent.id}`, half]);
    assert.equal((await agent.heartbeat({})).status, 200);
    const third = await stateOf(agent.id);
    assert.equal(third.check_a_grace_after_seen, true, 're-armed a grace after the heartbeat');
    assert.equal(third.job_when_checked, true);
    assert.equal(third.jobs, 1);

    // The check running early (a lost re-arm) only re-arms it: the agent stays online.
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE key = $1`, [`agent_health:${agent.id}`]);
    await h.settle();
    const fourth = await stateOf(agent.id);
    assert.equal(fourth.health, 'online');
    assert.equal(fourth.job_when_checked, true);
    assert.equal(fourth.check_within_grace, true);
    assert.equal(fourth.jobs, 1, 'the check that ran armed the next one');
  });

  it("an online agent's poll records its contact beside the claim; an offline agent's poll makes it online before it is answered", async () => {
    const agent = await TestAgent.create(h, t, { tools: ['semgrep'] });
    assert.equal((await agent.heartbeat({})).status, 200);
    // Last seen a minute ago, as this process's credential cache also believes.
    forgetAgentCredential(agent.id);
    await h.pool.query(`UPDATE agents SET last_seen_at = now() - interval '1 minute' WHERE id = $1`, [agent.id]);
    const before = (await stateOf(agent.id)).last_seen_at!;
    assert.deepEqual(await agent.poll(), []);
    // Written by the next batch, within a window or so.
    const until = Date.now() + 5_000;
    while ((await stateOf(agent.id)).last_seen_at! <= before) {
      assert.ok(Date.now() < until, 'the poll was recorded as contact');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await stateOf(agent.id)).health, 'online');

    await silenceAgent(h, agent.id);
    await h.settle();
    assert.equal((await stateOf(agent.id)).health, 'offline');
    forgetAgentCredential(agent.id);
    const lines = onlineLines(agent.id).length;
    assert.deepEqual(await agent.poll(), []);
    assert.equal((await stateOf(agent.id)).health, 'online', 'online when its poll is answered');
    assert.equal(onlineLines(agent.id).length, lines + 1);
    assert.equal((await stateOf(agent.id)).job_when_checked, true);
  });

  it("a batch that commits after a newer one (another process's) never moves the agent's heartbeat or report back", async () => {
    const agent = await TestAgent.create(h, t, { tools: ['semgrep'] });
    assert.equal((await agent.heartbeat({ hostname: 'newer', cpu_percent: 2 })).status, 200);
    const newer = await stateOf(agent.id);
    const beat = (hostname: string, ms: number) => JSON.stringify([{
      id: agent.id, seen_ms: ms, beat_ms: ms, version: null, hostname, data: {}, scanners: [], collectors: [], report: { cpu_percent: 1 },
    }]);
    // A heartbeat received 10 s ago, written only now (committed asynchronously, on a
    // connection that keeps committing synchronously afterwards).
    const client = await h.pool.connect();
    try {
      await client.query({ text: agentsSql.RecordContacts.text, values: [beat('older', 10_000), h.orchestration.agentOfflineAfterSeconds, [agent.id], true] });
      assert.equal((await client.query('SHOW synchronous_commit')).rows[0].synchronous_commit, 'on', 'only the batch commits asynchronously');
    } finally {
      client.release();
    }
    const after = await stateOf(agent.id);
    assert.equal(after.hostname, 'newer');
    assert.equal(after.last_report?.cpu_percent, 2);
    assert.equal(after.last_heartbeat_at?.getTime(), newer.last_heartbeat_at?.getTime());
    assert.equal(after.last_seen_at?.getTime(), newer.last_seen_at?.getTime());
    // A newer one is written.
    await h.pool.query({ text: agentsSql.RecordContacts.text, values: [beat('newest', 0), h.orchestration.agentOfflineAfterSeconds, [agent.id], false] });
    const newest = await stateOf(agent.id);
    assert.equal(newest.hostname, 'newest');
    assert.ok(newest.last_heartbeat_at! > newer.last_heartbeat_at!);
  });
});
