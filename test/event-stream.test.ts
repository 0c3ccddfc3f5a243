// The tenant's event feed and its Server-Sent Events stream (API.md Part 2 "Events out"):
// resuming never loses or repeats an event, an event whose transaction took its id early and
// committed late is not skipped, two API processes (each with its own LISTEN) serve the same
// stream, many subscribers share one read, heartbeats keep idle streams open.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import pino from 'pino';
import { serve, type ServerType } from '@hono/node-server';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import { createTenant, type Tenant } from './support/fixtures.ts';
import { createApp } from '../src/api/app.ts';
import { NotificationListener } from '../src/db/listener.ts';
import { EventStream } from '../src/api/event-stream.ts';
import { hashToken } from '../src/api/auth.ts';
import { createPool } from '../src/db/pool.ts';

let h: Harness;
let base: string;
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  h = await startHarness({ worker: false });
  base = (await h.listen()).url;
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await h.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Events of a tenant written straight into the outbox (what transitions do), in one transaction. */
async function emit(t: Tenant, n: number, type = 'agent.offline', db: pg.Pool | pg.ClientBase = h.pool): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO events (tenant_id, type, data) SELECT $1, $2, jsonb_build_object('n', g) FROM generate_series(1, $3::int) g RETURNING id`,
    [t.id, type, n]);
  return rows.map((r) => Number(r.id));
}

/**
 * Waits until the feed may show these events: no transaction that began before theirs is
 * still in progress (sql/views.sql events_horizon). The harness's own work (a maintenance
 * sweep, a batch of agent contact) may be in progress in the same database at any moment.
 */
async function settled(ids: number[]): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const { rows: [r] } = await h.pool.query<{ settled: boolean }>(
      `SELECT events_horizon() > max(xid) AS settled FROM events WHERE id = ANY ($1::bigint[])`, [ids]);
    if (r.settled) return;
    if (Date.now() > deadline) assert.fail(`events ${ids.join(', ')} not settled within 5 s`);
    await sleep(10);
  }
}

type Frame = { id: string | null; data: any };

/** An EventSource-like client over fetch: frames, comments, the last event id. */
class SseClient {
  readonly frames: Frame[] = [];
  readonly comments: string[] = [];
  lastEventId: string | null = null;
  status = 0;
  private readonly abort = new AbortController();
  private done: Promise<void> = Promise.resolve();

  /** The server ended the stream (its body is over). */
  ended = false;

  /** `token`: a Bearer token, or null with the credential in `headers` (a session cookie). */
  static async open(url: string, token: string | null, lastEventId?: string | null, headers: Record<string, string> = {}): Promise<SseClient> {
    const c = new SseClient();
    const res = await fetch(url, {
      headers: {
        ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...(lastEventId != null ? { 'last-event-id': lastEventId } : {}), ...headers,
      },
      signal: c.abort.signal,
    });
    c.status = res.status;
    if (res.status !== 200) return c;
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    c.done = c.read(res.body!).then(() => {
      c.ended = true;
    }, () => {});
    return c;
  }

  get events(): any[] {
    return this.frames.filter((f) => f.data !== null).map((f) => f.data);
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id: string | null = null;
        let data: string | null = null;
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
          else if (line.startsWith('id: ')) id = line.slice(4);
          else if (line.startsWith('data: ')) data = (data === null ? '' : `${data}\n`) + line.slice(6);
        }
        if (id !== null) this.lastEventId = id; // as EventSource does, with or without data
        if (id !== null || data !== null) this.frames.push({ id, data: data === null ? null : JSON.parse(data) });
      }
    }
  }

  async until(n: number, ms = 5000): Promise<any[]> {
    const deadline = Date.now() + ms;
    while (this.events.length < n) {
      if (Date.now() > deadline) assert.fail(`the stream delivered ${this.events.length} of ${n} events within ${ms} ms`);
      await sleep(10);
    }
    return this.events;
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}

const streamUrl = (b = base, query = '') => `${b}/api/v1/events/stream${query}`;

/**
 * A second API process: its own pool, its own LISTEN connection, the same database, a
 * heartbeat every 100 ms (15 s by default).
 */
async function secondProcess(): Promise<{ stream: EventStream; base: string }> {
  const pool = createPool(h.db.url, 5);
  const listener = new NotificationListener(h.db.url, pino({ level: 'silent' }));
  const stream = new EventStream(listener, pool, pino({ level: 'silent' }), { heartbeatMs: 100 });
  await listener.start();
  stream.start();
  const app = createApp({
    pool, orchestration: h.orchestration, signals: {} as never, eventStream: stream, adminTokenHash: () => hashToken(ADMIN_TOKEN), logger: pino({ level: 'silent' }),
  });
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  cleanups.push(async () => {
    await stream.stop();
    await listener.stop();
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
    await new Promise<void>((r) => server.close(() => r()));
    await pool.end();
  });
  return { stream, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('GET /api/v1/events', () => {
  it('the tenant\'s events in order, after an event id, of some types, a page at a time; another tenant\'s stay out', async () => {
    const t = await createTenant(h, 'feed');
    const other = await createTenant(h, 'feed-other');
    await emit(other, 3);
    const ids = [...await emit(t, 3, 'agent.offline'), ...await emit(t, 2, 'scan.fired')];
    await settled(ids);
    const all = await h.request('GET', '/api/v1/events', { token: t.token });
    assert.equal(all.status, 200, JSON.stringify(all.body));
    assert.deepEqual(all.body.items.map((e: any) => e.id), ids);
    assert.deepEqual(all.body.items[0], {
      id: ids[0], event: 'agent.offline', timestamp: all.body.items[0].timestamp, tenant_id: t.id, data: { n: 1 },
    });
    assert.equal(all.body.next_cursor, null);
    const page = await h.request('GET', '/api/v1/events?limit=2', { token: t.token });
    assert.deepEqual([page.body.items.map((e: any) => e.id), page.body.next_cursor], [ids.slice(0, 2), String(ids[1])]);
    const rest = await h.request('GET', `/api/v1/events?after=${ids[1]}`, { token: t.token });
    assert.deepEqual(rest.body.items.map((e: any) => e.id), ids.slice(2));
    const scans = await h.request('GET', '/api/v1/events?type=scan.*', { token: t.token });
    assert.deepEqual(scans.body.items.map((e: any) => e.id), ids.slice(3));
    const exact = await h.request('GET', '/api/v1/events?type=agent.offline,channel.test', { token: t.token });
    assert.deepEqual(exact.body.items.map((e: any) => e.id), ids.slice(0, 3));
  });

  it('refuses what names no event: another tenant\'s id, a pattern that selects nothing', async () => {
    const t = await createTenant(h, 'feed-refusals');
    const other = await createTenant(h, 'feed-refusals-other');
    const [theirs] = await emit(other, 1);
    const res = await h.request('GET', `/api/v1/events?after=${theirs}`, { token: t.token });
    assert.equal(res.status, 400);
    assert.deepEqual(res.body.error.details, [{ path: 'after', message: 'is not an event of this tenant' }]);
    assert.equal((await h.request('GET', '/api/v1/events?after=abc', { token: t.token })).status, 400);
    const bad = await h.request('GET', '/api/v1/events?type=pipline.*', { token: t.token });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.details[0].message, /selects no event/);
    assert.equal((await h.request('GET', '/api/v1/events')).status, 401);
  });
});

describe('GET /api/v1/events/stream', () => {
  it('a client that disconnects and resumes with Last-Event-ID gets every event once', async () => {
    const t = await createTenant(h, 'stream-resume');
    await emit(t, 2); // before it connects: not sent
    const c1 = await SseClient.open(streamUrl(), t.token);
    assert.equal(c1.status, 200);
    const first = await emit(t, 3);
    assert.deepEqual((await c1.until(3)).map((e) => e.id), first);
    assert.deepEqual(c1.frames.filter((f) => f.data).map((f) => Number(f.id)), first, 'id: per event');
    await c1.close();
    const missed = [...await emit(t, 4), ...await emit(t, 1, 'scan.fired')];
    const c2 = await SseClient.open(streamUrl(), t.token, c1.lastEventId);
    const more = [...await emit(t, 2)];
    await c2.until(7);
    await sleep(100);
    assert.deepEqual(c2.events.map((e) => e.id), [...missed, ...more], 'nothing lost, nothing repeated');
    await c2.close();
  });

  it('a client that reconnects before its first event resumes from where the stream started', async () => {
    const t = await createTenant(h, 'stream-marker');
    await emit(t, 1);
    const c1 = await SseClient.open(streamUrl(), t.token);
    const deadline = Date.now() + 2000;
    while (c1.lastEventId === null && Date.now() < deadline) await sleep(10);
    assert.notEqual(c1.lastEventId, null, 'the stream says where it starts');
    await c1.close();
    const ids = await emit(t, 2);
    const c2 = await SseClient.open(streamUrl(), t.token, c1.lastEventId);
    assert.deepEqual((await c2.until(2)).map((e) => e.id), ids);
    await c2.close();
  });

  it('an event whose transaction took its id first and committed last is neither skipped nor sent out of turn', async () => {
    const t = await createTenant(h, 'stream-order');
    const c = await SseClient.open(streamUrl(), t.token);
    await sleep(50);
    const slow = new pg.Client({ connectionString: h.db.url });
    await slow.connect();
    try {
      await slow.query('BEGIN');
      const [early] = await emit(t, 1, 'agent.offline', slow);
      const [late] = await emit(t, 1, 'scan.fired'); // a larger id, committed first
      assert.ok(late > early);
      await sleep(300);
      assert.deepEqual(c.events, [], 'the committed event waits while an earlier transaction is in progress');
      const feed = await h.request('GET', '/api/v1/events', { token: t.token });
      assert.deepEqual(feed.body.items, [], 'the feed too');
      await slow.query('COMMIT');
      assert.deepEqual((await c.until(2)).map((e) => e.id), [early, late]);
      const after = await h.request('GET', `/api/v1/events?after=${early}`, { token: t.token });
      assert.deepEqual(after.body.items.map((e: any) => e.id), [late]);
    } finally {
      await slow.end();
      await c.close();
    }
  });

  it('filters by type: ?type=scan.* gets only those', async () => {
    const t = await createTenant(h, 'stream-types');
    const c = await SseClient.open(streamUrl(base, '?type=scan.*'), t.token);
    await sleep(50);
    await emit(t, 2, 'agent.offline');
    const scans = await emit(t, 2, 'scan.fired');
    assert.deepEqual((await c.until(2)).map((e) => e.id), scans);
    await sleep(100);
    assert.equal(c.events.length, 2);
    await c.close();
  });

  it('two API processes, each with its own LISTEN, serve the same stream; 40 subscribers share one read per batch', async () => {
    const t = await createTenant(h, 'stream-two');
    const { stream, base: second } = await secondProcess();

    const onFirst = await SseClient.open(streamUrl(), t.token);
    const onSecond = await Promise.all(Array.from({ length: 40 }, () => SseClient.open(streamUrl(second), t.token)));
    await sleep(100);
    const readsBefore = stream.stats.reads;
    const ids = await emit(t, 25);
    assert.deepEqual((await onFirst.until(25)).map((e) => e.id), ids);
    for (const c of onSecond) assert.deepEqual((await c.until(25)).map((e) => e.id), ids);
    const reads = stream.stats.reads - readsBefore;
    assert.ok(reads <= 3, `one transaction's events for 40 subscribers took ${reads} reads`);
    // Heartbeat comments keep idle streams open (every 100 ms here, 15 s by default).
    await sleep(250);
    assert.ok(onSecond[0].comments.filter((x) => x === 'heartbeat').length >= 2);
    assert.equal(stream.stats.subscribers, 40);
    for (const c of [onFirst, ...onSecond]) await c.close();
    const deadline = Date.now() + 2000;
    while (stream.stats.subscribers > 0 && Date.now() < deadline) await sleep(10);
    assert.equal(stream.stats.subscribers, 0, 'closed clients are let go');
  });

  it('a stream ends at its next heartbeat once its credential no longer names the tenant: a revoked token, a signed-out session', async () => {
    const t = await createTenant(h, 'stream-revoked');
    const { base: second } = await secondProcess();
    const minted = await h.request('POST', `/api/v1/tenants/${t.id}/tokens`, { token: ADMIN_TOKEN, body: { name: 'to revoke' } });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const revoked = await SseClient.open(streamUrl(second), minted.body.token);
    const kept = await SseClient.open(streamUrl(second), t.token);
    // Signed in to the dashboard: the stream is opened with the session cookie.
    const signIn = await fetch(`${second}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: t.token }) });
    assert.equal(signIn.status, 204);
    const cookie = signIn.headers.getSetCookie().map((x) => x.split(';')[0]).join('; ');
    const bySession = await SseClient.open(streamUrl(second), null, null, { cookie });
    assert.deepEqual([revoked.status, kept.status, bySession.status], [200, 200, 200]);
    // A stream's checks do not count as using its session: an unattended dashboard still idles out.
    await h.pool.query(`UPDATE dashboard_sessions SET last_used_at = now() - interval '10 minutes' WHERE tenant_id = $1`, [t.id]);
    await sleep(300);
    assert.deepEqual([revoked.ended, kept.ended, bySession.ended], [false, false, false], 'valid credentials keep their streams');
    const { rows: [idle] } = await h.pool.query(`SELECT now() - last_used_at > interval '9 minutes' AS idle FROM dashboard_sessions WHERE tenant_id = $1`, [t.id]);
    assert.equal(idle.idle, true);

    await h.pool.query(`UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1`, [hashToken(minted.body.token)]);
    const { csrf_token } = await (await fetch(`${second}/api/v1/session`, { headers: { cookie } })).json() as { csrf_token: string };
    const signOut = await fetch(`${second}/api/v1/session`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': csrf_token } });
    assert.equal(signOut.status, 204);
    const deadline = Date.now() + 3000;
    while (!(revoked.ended && bySession.ended) && Date.now() < deadline) await sleep(20);
    assert.deepEqual([revoked.ended, bySession.ended, kept.ended], [true, true, false]);
    // Their clients' reconnects are refused.
    assert.equal((await SseClient.open(streamUrl(second), minted.body.token)).status, 401);
    assert.equal((await SseClient.open(streamUrl(second), null, null, { cookie })).status, 401);
    for (const c of [revoked, kept, bySession]) await c.close();
  });

  it('refuses a request without a tenant credential and a Last-Event-ID that is not an id', async () => {
    const t = await createTenant(h, 'stream-refusals');
    assert.equal((await SseClient.open(streamUrl(), 'nope')).status, 401);
    assert.equal((await SseClient.open(streamUrl(), t.token, 'abc')).status, 400);
  });
});

describe('NOTIFY only while someone streams the tenant', () => {
  it('a tenant nobody streams costs its transactions no NOTIFY; while streamed they notify; once its registration is dropped (the refresh does it), they stop', async () => {
    const t = await createTenant(h, 'stream-notify');
    const listener = new pg.Client({ connectionString: h.db.url });
    await listener.connect();
    const heard: string[] = [];
    listener.on('notification', (m) => {
      if (m.payload === t.id) heard.push(m.payload);
    });
    await listener.query('LISTEN scanflow_events');
    try {
      await emit(t, 3);
      await sleep(200);
      assert.equal(heard.length, 0, 'nobody streams it: no NOTIFY');
      const c = await SseClient.open(streamUrl(), t.token);
      const ids = await emit(t, 2);
      assert.deepEqual((await c.until(2)).map((e) => e.id), ids);
      // The stream may show the events before this other connection has read the NOTIFY.
      const deadline = Date.now() + 3000;
      while (heard.length === 0 && Date.now() < deadline) await sleep(20);
      await sleep(100);
      assert.equal(heard.length, 1, 'one NOTIFY for the transaction (PostgreSQL folds the rest)');
      await c.close();
      // The process's next refresh (every 30 s) drops the row of a tenant it no longer streams.
      assert.equal((await h.pool.query(`DELETE FROM event_listeners WHERE tenant_id = $1`, [t.id])).rowCount, 1);
      await emit(t, 1);
      await sleep(200);
      assert.equal(heard.length, 1);
    } finally {
      await listener.end();
    }
  });
});
