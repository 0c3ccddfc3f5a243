// The one LISTEN connection of an API process, shared by what follows notifications: new
// claimable commands (api/signals.ts) and events (api/event-stream.ts). Each registers its
// channel before start(). A lost connection is reconnected with backoff (100 ms doubling to
// 5 s); notifications sent meanwhile are gone, so each follower is told when the connection
// is lost and when it is back, and catches up by itself.
import pg from 'pg';
import type { Logger } from 'pino';

export type ListenFollower = {
  channel: string;
  onNotification(payload: string): void;
  /** The connection was lost: notifications may be missed until onConnected. */
  onLost?(): void;
  /** Listening (again): what was notified while not listening must be looked up. */
  onConnected?(): void;
};

export class NotificationListener {
  private client: pg.Client | null = null;
  private readonly followers: ListenFollower[] = [];
  private stopped = false;
  private reconnectDelay = 100;

  private readonly connectionString: string;
  private readonly log: Logger;

  constructor(connectionString: string, log: Logger) {
    this.connectionString = connectionString;
    this.log = log;
  }

  /** Follows a channel; before start(). */
  follow(follower: ListenFollower): void {
    if (this.client) throw new Error('follow() before start()');
    this.followers.push(follower);
  }

  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString });
    client.on('notification', (msg) => {
      if (!msg.payload) return;
      for (const f of this.followers) if (f.channel === msg.channel) f.onNotification(msg.payload);
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, null));
    await client.connect();
    const channels = [...new Set(this.followers.map((f) => f.channel))];
    await client.query(channels.map((c) => `LISTEN ${pg.escapeIdentifier(c)};`).join(' '));
    this.client = client;
    this.reconnectDelay = 100;
    for (const f of this.followers) f.onConnected?.();
  }

  private lost(client: pg.Client, err: Error | null): void {
    if (this.client !== client) return;
    this.client = null;
    if (this.stopped) return;
    this.log.warn({ err }, 'notification connection lost; reconnecting');
    for (const f of this.followers) f.onLost?.();
    const retry = () => {
      if (this.stopped) return;
      this.start().catch((e) => {
        this.log.warn({ err: e }, 'notification reconnect failed');
        this.reconnectDelay = Math.min(this.reconnectDelay * 2, 5_000);
        setTimeout(retry, this.reconnectDelay).unref();
      });
    };
    setTimeout(retry, this.reconnectDelay).unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => {});
  }
}
