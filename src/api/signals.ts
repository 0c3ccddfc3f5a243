// One LISTEN connection per process. A command that becomes claimable NOTIFYs its tenant
// (trigger commands_notify_claimable); long-polling agents of that tenant wake and try to
// claim. No re-querying in a loop: a poll queries once, then sleeps until a notification
// for its tenant, its wait ending, or shutdown.
import pg from 'pg';
import type { Logger } from 'pino';

const CHANNEL = 'scanflow_commands';

type Waiter = { wake: () => void };

export class CommandSignals {
  private client: pg.Client | null = null;
  private readonly waiters = new Map<string, Set<Waiter>>();
  private stopped = false;
  private reconnectDelay = 100;
  private readonly connectionString: string;
  private readonly log: Logger;

  constructor(connectionString: string, log: Logger) {
    this.connectionString = connectionString;
    this.log = log;
  }

  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString });
    client.on('notification', (msg) => {
      if (msg.channel === CHANNEL && msg.payload) this.wakeTenant(msg.payload);
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, null));
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    this.client = client;
    this.reconnectDelay = 100;
  }

  private lost(client: pg.Client, err: Error | null): void {
    if (this.client !== client) return;
    this.client = null;
    if (this.stopped) return;
    this.log.warn({ err }, 'command notification connection lost; reconnecting');
    // Notifications may have been missed: every waiter re-checks.
    this.wakeAll();
    const retry = () => {
      if (this.stopped) return;
      this.start().catch((e) => {
        this.log.warn({ err: e }, 'command notification reconnect failed');
        this.reconnectDelay = Math.min(this.reconnectDelay * 2, 5_000);
        setTimeout(retry, this.reconnectDelay).unref();
      });
    };
    setTimeout(retry, this.reconnectDelay).unref();
  }

  /**
   * Registers interest in a tenant's claimable commands *before* the caller queries, so a
   * notification between the query and the wait is not missed. Returns a function that
   * waits up to `ms` for a wake-up (resolves true when woken).
   */
  subscribe(tenantId: string): { wait: (ms: number, signal?: AbortSignal) => Promise<boolean>; close: () => void } {
    let woken = false;
    let resolveWait: ((v: boolean) => void) | null = null;
    const waiter: Waiter = {
      wake: () => {
        woken = true;
        resolveWait?.(true);
      },
    };
    let set = this.waiters.get(tenantId);
    if (!set) this.waiters.set(tenantId, (set = new Set()));
    set.add(waiter);
    const close = () => {
      const s = this.waiters.get(tenantId);
      s?.delete(waiter);
      if (s && s.size === 0) this.waiters.delete(tenantId);
    };
    const wait = (ms: number, signal?: AbortSignal) =>
      new Promise<boolean>((resolve) => {
        if (woken || this.stopped || signal?.aborted) {
          woken = false;
          resolve(true);
          return;
        }
        const timer = setTimeout(() => finish(false), ms);
        const onAbort = () => finish(true);
        const finish = (v: boolean) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolveWait = null;
          woken = false;
          resolve(v);
        };
        resolveWait = finish;
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    return { wait, close };
  }

  get stopping(): boolean {
    return this.stopped;
  }

  private wakeTenant(tenantId: string): void {
    for (const w of this.waiters.get(tenantId) ?? []) w.wake();
  }

  private wakeAll(): void {
    for (const set of this.waiters.values()) for (const w of set) w.wake();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeAll();
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => {});
  }
}
