// Real receivers on 127.0.0.1 for delivery tests: an HTTP endpoint that records what it gets
// and answers what the test scripts (a status, a redirect, or no answer at all), and an SMTP
// server (smtp-server) that keeps the mail it accepts.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export type Received = { at: number; path: string; headers: Record<string, string>; body: string; json: any };

/** How to answer one request: a status (and headers), or hang (never answer). */
export type Answer = { status: number; headers?: Record<string, string>; body?: string } | 'hang';

export class HttpReceiver {
  readonly received: Received[] = [];
  /** Answers for the next requests, in order; after them, `otherwise`. */
  readonly script: Answer[] = [];
  otherwise: Answer = { status: 200, body: 'ok' };
  private readonly server: Server;
  private readonly waiters: { n: number; resolve: () => void }[] = [];
  private readonly hanging = new Set<ServerResponse>();
  url = '';

  private constructor() {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 1000;
  }

  static async start(): Promise<HttpReceiver> {
    const r = new HttpReceiver();
    await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve));
    r.url = `http://127.0.0.1:${(r.server.address() as AddressInfo).port}`;
    return r;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: unknown = null;
      try {
        json = JSON.parse(body);
      } catch {
        // not JSON
      }
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v ?? '']));
      this.received.push({ at: Date.now(), path: req.url ?? '/', headers, body, json });
      for (const w of [...this.waiters]) {
        if (this.received.length >= w.n) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve();
        }
      }
      const answer = this.script.shift() ?? this.otherwise;
      if (answer === 'hang') {
        this.hanging.add(res);
        res.on('close', () => this.hanging.delete(res));
        return;
      }
      res.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers });
      res.end(answer.body ?? '');
    });
  }

  /** Resolves once `n` requests in all have arrived. */
  waitFor(n: number, ms = 10_000): Promise<void> {
    if (this.received.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`receiver got ${this.received.length} of ${n} requests within ${ms} ms`)), ms);
      this.waiters.push({ n, resolve: () => { clearTimeout(timer); resolve(); } });
    });
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export type Mail = { from: string; to: string[]; raw: string };

/** An SMTP server on 127.0.0.1 that accepts every message (no TLS, no auth) and keeps it. */
export class SmtpReceiver {
  readonly mails: Mail[] = [];
  private readonly server: SMTPServer;
  url = '';
  private constructor() {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          this.mails.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            raw: Buffer.concat(chunks).toString('utf8'),
          });
          callback();
        });
      },
    });
  }

  static async start(): Promise<SmtpReceiver> {
    const r = new SmtpReceiver();
    await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', () => resolve()));
    const address = (r.server as unknown as { server: Server }).server.address() as AddressInfo;
    r.url = `smtp://127.0.0.1:${address.port}`;
    return r;
  }

  async waitFor(n: number, ms = 10_000): Promise<void> {
    const until = Date.now() + ms;
    while (this.mails.length < n) {
      if (Date.now() > until) throw new Error(`SMTP receiver got ${this.mails.length} of ${n} mails within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
