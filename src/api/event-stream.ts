// The live event stream of an API process (GET /api/v1/events/stream), on the process's one
// LISTEN connection (db/listener.ts). A tenant's event-writing transactions NOTIFY only while some process streams
// that tenant (it is in event_listeners: the NOTIFY costs every commit a global lock, see
// migrations/0009_channels.sql), so a process registers a tenant before its first subscriber
// reads anything, keeps the row fresh, and drops it when nobody of its own watches.
//
// Per tenant with subscribers, one shared read follows the feed (sql/events.sql ReadEvents:
// (xid, id) order, settled events only) and fans each event out to every subscriber of that
// tenant, serialized once. A subscriber first catches up from its own position (its
// Last-Event-ID) with reads of its own, then joins the shared read through a ring of the
// tenant's recent events, so it neither misses nor repeats an event. Besides notifications,
// each shared read runs again every SAFETY_READ_MS: a transaction that checked
// event_listeners just before the tenant was registered, and committed after the
// subscriber's own read, sent no NOTIFY. A subscriber that does not keep up (its buffer past
// STREAM_BUFFER_BYTES) is closed; its client reconnects with its Last-Event-ID and resumes.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import type { Logger } from 'pino';
import type { NotificationListener } from '../db/listener.ts';
import { patternsMatch } from '../domain/channels.ts';
import type { EventView } from '../domain/messages.ts';
import { exec } from '../store/query.ts';
import { eventsSql } from '../store/queries.ts';
import { comparePositions, readEvents, type FeedPosition } from '../store/events.ts';

const CHANNEL = 'scanflow_events';
/** Events per read; a read that fills it reads again. */
const PAGE = 500;
/** Recent events kept per tenant for subscribers joining the shared read. */
const RING = 1000;
/** Comment lines keep proxies and clients from timing out an idle stream. */
export const HEARTBEAT_MS = 15_000;
/**
 * How soon to read again when newer events wait behind a transaction still in progress
 * (they are not settled: an earlier event may still commit before them).
 */
const HELD_RETRY_MS = 20;
/** Every shared read runs at least this often (see the top of this file). */
const SAFETY_READ_MS = 5_000;
/** event_listeners rows are refreshed this often and live three times as long. */
const LISTENER_REFRESH_MS = 30_000;
/** What a subscriber may have queued before it is closed (its client resumes). */
const STREAM_BUFFER_BYTES = 4 * 1024 * 1024;

const encoder = new TextEncoder();

type Positioned = { position: FeedPosition; view: EventView; frame: Uint8Array };

type Subscriber = {
  tenantId: string;
  patterns: string[] | null;
  /** The last event this subscriber has been given (or passed over: its filter did not want it). */
  position: FeedPosition;
  controller: ReadableStreamDefaultController<Uint8Array>;
  closed: boolean;
  /** Whether its credential still allows it: checked at each heartbeat (false ends it). */
  allowed: (() => Promise<boolean>) | null;
  checking: boolean;
};

type TenantFeed = {
  tenantId: string;
  /** The shared read has everything up to here. */
  position: FeedPosition;
  /** The last RING events; `ringFrom` is the position just before the first of them. */
  ring: Positioned[];
  ringFrom: FeedPosition;
  subscribers: Set<Subscriber>;
  reading: boolean;
  again: boolean;
  heldTimer: NodeJS.Timeout | null;
};

function frameOf(view: EventView): Uint8Array {
  return encoder.encode(`id: ${view.id}\ndata: ${JSON.stringify(view)}\n\n`);
}

export class EventStream {
  private readonly feeds = new Map<string, TenantFeed>();
  /** Subscribers per tenant, joined or catching up: the tenants this process streams. */
  private readonly interest = new Map<string, number>();
  /** Tenants registered in event_listeners (the registration, once it is under way). */
  private readonly registered = new Map<string, Promise<void>>();
  private readonly listenerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private sharedReads = 0;
  private readonly pool: pg.Pool;
  private readonly log: Logger;
  private readonly heartbeatMs: number;

  /** Follows CHANNEL on the process's LISTEN connection, which its owner starts and stops. */
  constructor(listener: NotificationListener, pool: pg.Pool, log: Logger, opts: { heartbeatMs?: number } = {}) {
    listener.follow({
      channel: CHANNEL,
      onNotification: (tenantId) => {
        const feed = this.feeds.get(tenantId);
        if (feed) this.read(feed);
      },
      // Notifications may have been missed while there was no connection.
      onConnected: () => {
        for (const feed of this.feeds.values()) this.read(feed);
      },
    });
    this.pool = pool;
    this.log = log;
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
  }

  start(): void {
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.heartbeatMs, () => this.beat());
    every(SAFETY_READ_MS, () => {
      for (const feed of this.feeds.values()) this.read(feed);
    });
    every(LISTENER_REFRESH_MS, () => {
      void exec(this.pool, eventsSql.RefreshListener, [this.listenerId, [...this.interest.keys()], (3 * LISTENER_REFRESH_MS) / 1000])
        .catch((err) => this.log.warn({ err }, 'could not refresh the event listener registrations'));
    });
  }

  /** Subscribers in this process (all tenants), and how many shared reads served them so far. */
  get stats(): { subscribers: number; reads: number } {
    let n = 0;
    for (const f of this.feeds.values()) n += f.subscribers.size;
    return { subscribers: n, reads: this.sharedReads };
  }

  /**
   * A stream of the tenant's events after `from`, as Server-Sent Events (`id:` per event).
   * `marker`: an event id to announce first as the stream's position (the client then
   * resumes from it even if it reconnects before any event came).
   */
  open(
    tenantId: string, from: FeedPosition, patterns: string[] | null, marker: number | null,
    allowed: (() => Promise<boolean>) | null = null,
  ): ReadableStream<Uint8Array> {
    let sub: Subscriber | null = null;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        sub = {
          tenantId, patterns: patterns && !patterns.includes('*') ? patterns : null, position: from, controller, closed: false,
          allowed, checking: false,
        };
        controller.enqueue(encoder.encode(`retry: 1000\n${marker !== null ? `id: ${marker}\n` : ''}\n`));
        if (this.stopped) return this.close(sub);
        this.interest.set(tenantId, (this.interest.get(tenantId) ?? 0) + 1);
        this.join(sub).catch((err) => {
          this.log.warn({ err, tenantId }, 'event stream subscriber could not catch up; closed');
          this.close(sub!);
        });
      },
      cancel: () => {
        if (sub) this.close(sub);
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: 64 * 1024 }));
  }

  /**
   * The tenant's transactions NOTIFY from now on (registered once per tenant while it is
   * watched). The route awaits it before it answers, so a client that writes as soon as its
   * stream is open has its write notified, not only found by the next safety read.
   */
  register(tenantId: string): Promise<void> {
    let done = this.registered.get(tenantId);
    if (!done) {
      done = exec(this.pool, eventsSql.ListenForTenant, [tenantId, this.listenerId, (3 * LISTENER_REFRESH_MS) / 1000]).then(() => {});
      this.registered.set(tenantId, done);
      done.catch(() => this.registered.delete(tenantId));
    }
    return done;
  }

  private send(sub: Subscriber, frame: Uint8Array): void {
    if (sub.closed) return;
    if ((sub.controller.desiredSize ?? 0) < -STREAM_BUFFER_BYTES) {
      this.log.info({ tenantId: sub.tenantId }, 'event stream subscriber is not keeping up; closed (it resumes from its last event)');
      this.close(sub);
      return;
    }
    sub.controller.enqueue(frame);
  }

  private deliver(sub: Subscriber, e: Positioned): void {
    if (comparePositions(e.position, sub.position) <= 0) return;
    sub.position = e.position;
    if (!sub.patterns || patternsMatch(sub.patterns, e.view.event)) this.send(sub, e.frame);
  }

  /**
   * Registers the tenant, catches the subscriber up with reads of its own, then adds it to
   * its tenant's shared read. Its reads take every type (its filter applies here) so that its
   * position moves past what it does not want, up to where the shared read can take over.
   */
  private async join(sub: Subscriber): Promise<void> {
    await this.register(sub.tenantId);
    for (;;) {
      for (;;) {
        const page = await readEvents(this.pool, sub.tenantId, sub.position, null, PAGE);
        if (sub.closed) return;
        for (const e of page.events) this.deliver(sub, { ...e, frame: frameOf(e.view) });
        if (page.events.length < PAGE) break;
      }
      let feed = this.feeds.get(sub.tenantId);
      if (!feed) {
        feed = {
          tenantId: sub.tenantId, position: sub.position, ring: [], ringFrom: sub.position, subscribers: new Set(),
          reading: false, again: false, heldTimer: null,
        };
        this.feeds.set(sub.tenantId, feed);
      }
      // At or past the shared read, or behind it within its ring: the ring's events, then
      // the shared read brings everything. Further behind (the shared read moved on more
      // than a ring meanwhile): another round of its own reads.
      if (comparePositions(sub.position, feed.ringFrom) >= 0) {
        for (const e of feed.ring) this.deliver(sub, e);
        feed.subscribers.add(sub);
        this.read(feed);
        return;
      }
    }
  }

  /** The tenant's shared read: everything after its position, to each of its subscribers. */
  private read(feed: TenantFeed): void {
    if (feed.reading) {
      feed.again = true;
      return;
    }
    feed.reading = true;
    feed.again = false;
    void (async () => {
      let held = false;
      try {
        for (;;) {
          this.sharedReads++;
          const page = await readEvents(this.pool, feed.tenantId, feed.position, null, PAGE);
          held = page.held;
          for (const e of page.events) {
            const p: Positioned = { ...e, frame: frameOf(e.view) };
            feed.position = e.position;
            feed.ring.push(p);
            for (const sub of feed.subscribers) this.deliver(sub, p);
          }
          if (feed.ring.length > RING) {
            const dropped = feed.ring.splice(0, feed.ring.length - RING);
            feed.ringFrom = dropped[dropped.length - 1].position;
          }
          if (page.events.length < PAGE) break;
        }
      } catch (err) {
        this.log.warn({ err, tenantId: feed.tenantId }, 'event stream read failed; retrying');
        held = true;
      } finally {
        feed.reading = false;
      }
      if (this.feeds.get(feed.tenantId) !== feed) return; // its last subscriber left
      if (feed.again) this.read(feed);
      else if (held && !feed.heldTimer && !this.stopped) {
        feed.heldTimer = setTimeout(() => {
          feed.heldTimer = null;
          this.read(feed);
        }, HELD_RETRY_MS);
        feed.heldTimer.unref();
      }
    })();
  }

  private close(sub: Subscriber): void {
    if (sub.closed) return;
    sub.closed = true;
    try {
      sub.controller.close();
    } catch {
      // already closed or cancelled by the client
    }
    const left = (this.interest.get(sub.tenantId) ?? 1) - 1;
    if (left > 0) this.interest.set(sub.tenantId, left);
    else {
      // Its event_listeners row goes with the next refresh (until then it costs a NOTIFY).
      this.interest.delete(sub.tenantId);
      this.registered.delete(sub.tenantId);
    }
    const feed = this.feeds.get(sub.tenantId);
    if (feed?.subscribers.delete(sub) && feed.subscribers.size === 0) {
      if (feed.heldTimer) clearTimeout(feed.heldTimer);
      this.feeds.delete(sub.tenantId);
    }
  }

  private beat(): void {
    const frame = encoder.encode(': heartbeat\n\n');
    for (const feed of this.feeds.values()) {
      for (const sub of feed.subscribers) {
        this.send(sub, frame);
        this.recheck(sub);
      }
    }
  }

  /**
   * Ends a stream whose credential no longer allows it (signed out, token deleted, tenant
   * gone): its client's reconnect is then refused. A check that fails (the database is
   * unreachable) keeps the stream; the next heartbeat checks again.
   */
  private recheck(sub: Subscriber): void {
    if (!sub.allowed || sub.checking || sub.closed) return;
    sub.checking = true;
    sub.allowed().then((ok) => {
      if (!ok) {
        this.log.info({ tenantId: sub.tenantId }, 'event stream closed: its credential no longer allows it');
        this.close(sub);
      }
    }, (err) => this.log.warn({ err, tenantId: sub.tenantId }, 'could not check an event stream\'s credential'))
      .finally(() => {
        sub.checking = false;
      });
  }

  /** Ends every stream (their clients reconnect elsewhere), the registrations and the LISTEN connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const feed of [...this.feeds.values()]) for (const sub of [...feed.subscribers]) this.close(sub);
    await exec(this.pool, eventsSql.StopListening, [this.listenerId]).catch(() => {});
  }
}
