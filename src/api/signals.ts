// On the process's LISTEN connection (db/listener.ts). A command that becomes claimable NOTIFYs (trigger
// commands_notify_claimable) with its tenant, tool and capabilities; the listener wakes ONE
// long-polling agent of that tenant that can run it, longest-waiting first. Waking every
// waiter for every command made all but one of them claim nothing (measured: 11 commits per
// step with 8 agents). A woken agent that cannot take the command (another poll was faster,
// or it is at capacity) hands the wake-up on, at most once per waiter per command.
import type { NotificationListener } from '../db/listener.ts';

const CHANNEL = 'scanflow_commands';

type Claimable = { tenant: string; tool: string | null; caps: string[]; hops: number };

type Waiter = {
  tools: ReadonlySet<string>;
  capabilities: ReadonlySet<string>;
  /** Set while the waiter is blocked in wait(). */
  resolve: ((reason: Claimable | null) => void) | null;
  /** A wake-up that arrived while it was querying: undefined none, null "re-check". */
  pending: Claimable | null | undefined;
};

export type Subscription = {
  /** Waits up to ms for a wake-up; resolves with the command kind it was woken for, if any. */
  wait: (ms: number, signal?: AbortSignal) => Promise<Claimable | null>;
  /** After a wake-up this waiter could not use: offer it to another waiter. */
  handOff: (reason: Claimable) => void;
  close: () => void;
};

function canRun(w: Waiter, c: Claimable): boolean {
  return c.tool !== null ? w.tools.has(c.tool) : c.caps.every((cap) => w.capabilities.has(cap));
}

export class CommandSignals {
  /** Per tenant, in the order they started waiting (a Set keeps insertion order). */
  private readonly waiters = new Map<string, Set<Waiter>>();
  private stopped = false;

  /** Follows CHANNEL on the process's LISTEN connection, which its owner starts and stops. */
  constructor(listener: NotificationListener) {
    listener.follow({
      channel: CHANNEL,
      onNotification: (payload) => this.onNotification(payload),
      // Notifications may be missed until it is back: every waiter re-checks.
      onLost: () => this.wakeAll(),
    });
  }

  private onNotification(payload: string): void {
    let parsed: { t?: unknown; tool?: unknown; caps?: unknown };
    try {
      parsed = JSON.parse(payload);
    } catch {
      return;
    }
    if (typeof parsed.t !== 'string') return;
    this.offer({
      tenant: parsed.t,
      tool: typeof parsed.tool === 'string' ? parsed.tool : null,
      caps: Array.isArray(parsed.caps) ? parsed.caps.filter((c): c is string => typeof c === 'string') : [],
      hops: 0,
    });
  }

  /**
   * Wakes the longest-waiting waiter of the tenant that can run the command. When every such
   * waiter is busy querying, one of them is told to query again; a waiter that already has
   * a wake-up pending will query anyway, so nothing is lost when all of them have one.
   */
  private offer(claimable: Claimable, except?: Waiter): void {
    const set = this.waiters.get(claimable.tenant);
    if (!set || claimable.hops > set.size) return;
    let busy: Waiter | null = null;
    for (const w of set) {
      if (w === except || !canRun(w, claimable)) continue;
      if (w.resolve) {
        const resolve = w.resolve;
        w.resolve = null;
        resolve(claimable);
        return;
      }
      if (!busy && w.pending === undefined) busy = w;
    }
    if (busy) busy.pending = claimable;
  }

  /**
   * Registers an agent's interest in its tenant's claimable commands *before* it queries,
   * so a notification between the query and the wait is not lost: a wake-up that arrives
   * while the agent is not waiting is kept for its next wait.
   */
  subscribe(tenantId: string, agent: { tools: readonly string[]; capabilities: readonly string[] }): Subscription {
    const waiter: Waiter = {
      tools: new Set(agent.tools),
      capabilities: new Set(agent.capabilities),
      resolve: null,
      pending: undefined,
    };
    let set = this.waiters.get(tenantId);
    if (!set) this.waiters.set(tenantId, (set = new Set()));
    set.add(waiter);

    const close = () => {
      const s = this.waiters.get(tenantId);
      s?.delete(waiter);
      if (s && s.size === 0) this.waiters.delete(tenantId);
      // A wake-up this waiter will not use goes to another one.
      if (waiter.pending) this.offer({ ...waiter.pending, hops: waiter.pending.hops + 1 }, waiter);
      waiter.pending = undefined;
    };
    const wait = (ms: number, signal?: AbortSignal) =>
      new Promise<Claimable | null>((resolve) => {
        if (waiter.pending !== undefined || this.stopped || signal?.aborted) {
          const reason = waiter.pending ?? null;
          waiter.pending = undefined;
          resolve(reason);
          return;
        }
        const timer = setTimeout(() => finish(null), ms);
        const onAbort = () => finish(null);
        const finish = (reason: Claimable | null) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          waiter.resolve = null;
          resolve(reason);
        };
        waiter.resolve = finish;
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    const handOff = (reason: Claimable) => this.offer({ ...reason, hops: reason.hops + 1 }, waiter);
    return { wait, handOff, close };
  }

  get stopping(): boolean {
    return this.stopped;
  }

  private wakeAll(): void {
    for (const set of this.waiters.values()) {
      for (const w of set) {
        if (w.resolve) w.resolve(null);
        else if (w.pending === undefined) w.pending = null;
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.wakeAll();
  }
}
