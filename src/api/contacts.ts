// Agent contact, recorded in batches (issue 13: 1,000 agents heartbeating every 15 s). Every
// heartbeat, and any other agent request at most every few seconds, says the agent is alive.
// Recording each one as its own UPDATE with its own add_job for the agent's health check cost
// PostgreSQL 17-22 % of a core for 1,000 agents (67 heartbeats/s and the polls' contact): per
// statement and per commit overhead, and graphile-worker's add_jobs on every contact.
//
// Here the contact of one process is gathered for a short window (WINDOW_MS) and written by
// one statement (sql/agents.sql RecordContacts: one UPDATE … FROM a JSON array for every agent
// in the batch, and one add_jobs for the health checks that need pushing forward), the next
// batch gathering while one is written: a group commit. A heartbeat is answered only after its
// batch committed, so an answered heartbeat is recorded (a process killed loses none it
// answered) and reads see it at once; so is any request of an agent that was not online.
// Health transitions (an offline agent back online, with its log line) are made in the batch's
// transaction, exactly once whichever processes' batches carry the agent. The other requests
// of an online agent (polls, acks, completions) do not wait: their contact only moves
// last_seen_at, and a crash loses at most the last window of it.
import type pg from 'pg';
import { many } from '../store/query.ts';
import { agentsSql } from '../store/queries.ts';
import type { AgentReport } from '../store/rows.ts';

/**
 * How long contact is gathered before it is written (the first heartbeat of a batch waits this
 * long). 1,000 agents heartbeating every 15 s make about 7 contacts a batch at 100 ms.
 */
export const WINDOW_MS = 100;

/** What a heartbeat reports, written over the agent's last report. */
export type Beat = {
  version: string | null;
  hostname: string | null;
  data: Record<string, unknown>;
  scanners: string[];
  collectors: string[];
  report: AgentReport;
};

type Waiter = { resolve: (previousHealth: string | null) => void; reject: (err: unknown) => void };

type Pending = {
  /** performance.now() of the agent's latest contact, and of its latest heartbeat. */
  seenAt: number;
  beatAt: number | null;
  beat: Beat | null;
  /** Some contact of the agent may turn it online: the batch commits synchronously. */
  transition: boolean;
  waiters: Waiter[];
};

export class AgentContacts {
  private readonly pool: pg.Pool;
  private readonly graceSeconds: number;
  private readonly windowMs: number;
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;
  private writing = false;
  private idleWaiters: (() => void)[] = [];
  /** Every recorder of this process, for settled(). */
  private static readonly live = new Set<WeakRef<AgentContacts>>();

  constructor(pool: pg.Pool, graceSeconds: number, windowMs = WINDOW_MS) {
    this.pool = pool;
    this.graceSeconds = graceSeconds;
    this.windowMs = windowMs;
    AgentContacts.live.add(new WeakRef(this));
  }

  /** Resolves once nothing of this recorder is waiting to be written or being written. */
  idle(): Promise<void> {
    if (!this.timer && !this.writing && this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Resolves once every recorder of this process has written what it was given: for tests
   * that compare the database before and after a request (contact is written up to a batch
   * window after the request that made it was answered).
   */
  static async settled(): Promise<void> {
    for (const ref of AgentContacts.live) {
      const contacts = ref.deref();
      if (contacts) await contacts.idle();
      else AgentContacts.live.delete(ref);
    }
  }

  /**
   * A heartbeat; resolves, once written, with the agent's health before it (null: no such
   * agent). `online`: the agent is online as far as this process knows; if not, its batch
   * commits synchronously (a transition is never lost to a crash of PostgreSQL).
   */
  heartbeat(agentId: string, beat: Beat, online: boolean): Promise<string | null> {
    return this.add(agentId, beat, online);
  }

  /** Any other request of the agent; resolves as heartbeat() does. */
  touch(agentId: string, online: boolean): Promise<string | null> {
    return this.add(agentId, null, online);
  }

  private add(agentId: string, beat: Beat | null, online: boolean): Promise<string | null> {
    return new Promise((resolve, reject) => {
      const at = performance.now();
      let p = this.pending.get(agentId);
      if (!p) this.pending.set(agentId, (p = { seenAt: at, beatAt: null, beat: null, transition: false, waiters: [] }));
      p.seenAt = at;
      if (!online) p.transition = true;
      if (beat) {
        p.beat = beat;
        p.beatAt = at;
      }
      p.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer || this.writing || this.pending.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.write();
    }, this.windowMs);
  }

  private async write(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    this.writing = true;
    const now = performance.now();
    const rows = [...batch].map(([id, p]) => ({
      id,
      seen_ms: now - p.seenAt,
      beat_ms: p.beatAt === null ? null : now - p.beatAt,
      version: p.beat?.version ?? null,
      hostname: p.beat?.hostname ?? null,
      data: p.beat?.data ?? null,
      scanners: p.beat?.scanners ?? null,
      collectors: p.beat?.collectors ?? null,
      report: p.beat?.report ?? null,
    }));
    // Contact of agents known online commits without waiting for the disk: under write-heavy
    // neighbours a WAL flush took seconds (bench, scale-agents), and every heartbeat of the batch waited for it.
    const asynchronous = ![...batch.values()].some((p) => p.transition);
    try {
      const written = await many<{ id: string; previous_health: string }>(this.pool, agentsSql.RecordContacts, [
        JSON.stringify(rows), this.graceSeconds, rows.map((r) => r.id), asynchronous,
      ]);
      const previous = new Map(written.map((r) => [r.id, r.previous_health]));
      for (const [id, p] of batch) {
        // The first waiter of an agent that was not online reports the transition; the others
        // of the same batch found it online through the first.
        const before = previous.get(id) ?? null;
        p.waiters.forEach((w, i) => w.resolve(i === 0 ? before : before === null ? null : 'online'));
      }
    } catch (err) {
      for (const p of batch.values()) for (const w of p.waiters) w.reject(err);
    } finally {
      this.writing = false;
      this.schedule();
      if (!this.timer && this.pending.size === 0) for (const done of this.idleWaiters.splice(0)) done();
    }
  }
}
