// Connections are never dropped under a client (issue 7, part 5), tried on a real listening
// server over raw sockets: a request whose body the app never reads, followed on the same
// keep-alive connection by requests the client has already sent, gets every answer, also
// after @hono/node-server's 500 ms drain deadline has passed, compressed bodies and bodies
// refused half-way as corrupt included; a body over the limit (a compression bomb too) is
// answered 413 with `Connection: close` and the connection ends cleanly after the answer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_BODY_BYTES } from '../src/api/app.ts';
import { ADMIN_TOKEN, startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, startRun, step, type Tenant } from './support/fixtures.ts';

// ---- a raw HTTP/1.1 client: what is sent is exactly what the test writes ----

type RawResponse = { status: number; headers: Record<string, string>; body: string };

class RawConnection {
  readonly socket: net.Socket;
  readonly responses: RawResponse[] = [];
  /** The server ended its side (FIN). */
  ended = false;
  error: NodeJS.ErrnoException | null = null;
  /** How many responses had fully arrived when the connection ended or failed. */
  answersBeforeEnd: number | null = null;
  private buffer = Buffer.alloc(0);
  private readonly changed = new Set<() => void>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.answersBeforeEnd ??= this.responses.length;
      this.notify();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error ??= err;
      this.answersBeforeEnd ??= this.responses.length;
      this.notify();
    });
    socket.on('close', () => this.notify());
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  send(data: Buffer | string): void {
    this.socket.write(data);
  }

  /** Waits until `n` responses have arrived, or the connection ended or failed, or the timeout. */
  async until(n: number, timeoutMs = 10_000): Promise<RawResponse[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.responses.length < n && !this.socket.destroyed && !this.ended && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.changed.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return [...this.responses];
  }

  /** Waits until the socket is fully closed (or the timeout). */
  async closed(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.socket.destroyed && Date.now() < deadline) await sleep(10);
    return this.socket.destroyed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private notify(): void {
    const waiters = [...this.changed];
    this.changed.clear();
    for (const w of waiters) w();
  }

  private parse(): void {
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1]);
      assert.ok(status, `a status line, got ${JSON.stringify(statusLine)}`);
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      let rest = this.buffer.subarray(end + 4);
      let body: Buffer;
      if (headers['transfer-encoding'] === 'chunked') {
        const parts: Buffer[] = [];
        for (;;) {
          const lineEnd = rest.indexOf('\r\n');
          if (lineEnd < 0) return;
          const size = parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16);
          if (rest.length < lineEnd + 2 + size + 2) return;
          parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
          rest = rest.subarray(lineEnd + 2 + size + 2);
          if (size === 0) break;
        }
        body = Buffer.concat(parts);
      } else {
        const length = Number(headers['content-length'] ?? 0);
        if (rest.length < length) return;
        body = rest.subarray(0, length);
        rest = rest.subarray(length);
      }
      this.responses.push({ status, headers, body: body.toString('utf8') });
      this.buffer = rest;
    }
  }
}

/** The head of an HTTP/1.1 request (with its Content-Length when `bodyLength` is given). */
function head(method: string, path: string, headers: Record<string, string> = {}, bodyLength?: number): string {
  const all: Record<string, string> = { Host: '127.0.0.1', ...headers };
  if (bodyLength !== undefined) all['Content-Length'] = String(bodyLength);
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

/** A JSON body of about `bytes` bytes. */
function jsonBody(bytes: number): Buffer {
  const pad = Math.max(0, bytes - '{"unread":""}'.length);
  return Buffer.from(`{"unread":"${'x'.repeat(pad)}"}`);
}

// ---- the server and what the requests act on ----

let h: Harness;
let port: number;
let t: Tenant;
let agent: TestAgent;
let spareAgentId: string;
let ackCommandId: string;
let startCommandId: string;
let idlePipelineId: string;
let cancelRunId: string;

/** A run whose steps no agent can take (its tool is nobody's), so it stays running. */
async function idleRun(): Promise<string> {
  const run = await startRun(h, t, idlePipelineId);
  return run.id;
}

/** A run that was cancelled (so a retry re-queues it). */
async function cancelledRun(): Promise<string> {
  const id = await idleRun();
  await h.settle();
  const res = await h.request('POST', `/api/v1/pipeline-runs/${id}/cancel`, { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return id;
}

before(async () => {
  h = await startHarness();
  ({ port } = await h.listen());
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['conn-tool'], max_concurrent_jobs: 10 });
  spareAgentId = (await TestAgent.create(h, t, { tools: ['conn-spare'] })).id;
  const busy = await createPipeline(h, t, { name: 'conn-busy', steps: [step('a', { tool: 'conn-tool' }), step('b', { tool: 'conn-tool' })] });
  await startRun(h, t, busy.id);
  idlePipelineId = (await createPipeline(h, t, { name: 'conn-idle', steps: [step('a', { tool: 'conn-nobody' })] })).id;
  cancelRunId = await idleRun();
  await h.settle();
  const commands = await agent.poll();
  assert.equal(commands.length, 2, 'both steps of the busy run are claimed');
  [ackCommandId, startCommandId] = commands.map((c) => c.id);
});
after(() => h.close());

// ---- the cases: each answers without reading the request body ----

/** Past @hono/node-server's DRAIN_TIMEOUT_MS (500 ms), when it would destroy the connection. */
const PAST_DRAIN_DEADLINE_MS = 1_000;
/** A body that arrives after the answer would have been sent and the deadline passed. */
const LATE_BODY_MS = 900;

type Target = { method: string; path: string; headers: Record<string, string>; status: number };
type Case = { name: string; target: () => Promise<Target> };

const tenantAuth = () => ({ Authorization: `Bearer ${t.token}` });

const CASES: Case[] = [
  {
    name: 'agent ack',
    target: async () => ({ method: 'POST', path: `/api/v1/agent/commands/${ackCommandId}/ack`, headers: { 'X-API-Key': agent.apiKey }, status: 200 }),
  },
  {
    name: 'agent start',
    target: async () => ({ method: 'POST', path: `/api/v1/agent/commands/${startCommandId}/start`, headers: { 'X-API-Key': agent.apiKey }, status: 200 }),
  },
  {
    name: 'run cancel',
    target: async () => ({ method: 'POST', path: `/api/v1/pipeline-runs/${cancelRunId}/cancel`, headers: tenantAuth(), status: 200 }),
  },
  {
    name: 'run retry',
    target: async () => ({ method: 'POST', path: `/api/v1/pipeline-runs/${await cancelledRun()}/retry`, headers: tenantAuth(), status: 200 }),
  },
  {
    name: 'agent activate',
    target: async () => ({ method: 'POST', path: `/api/v1/agents/${spareAgentId}/activate`, headers: tenantAuth(), status: 200 }),
  },
  {
    name: 'pipeline webhook-token',
    target: async () => ({ method: 'POST', path: `/api/v1/pipelines/${idlePipelineId}/webhook-token`, headers: tenantAuth(), status: 201 }),
  },
  {
    name: '401 (no credential)',
    target: async () => ({ method: 'POST', path: '/api/v1/assets', headers: { 'Content-Type': 'application/json' }, status: 401 }),
  },
  {
    name: '401 (admin route, wrong credential)',
    target: async () => ({ method: 'POST', path: '/api/v1/tenants', headers: { Authorization: 'Bearer not-a-token' }, status: 401 }),
  },
  {
    name: '404 (no such route)',
    target: async () => ({ method: 'POST', path: '/api/v1/no-such-thing', headers: tenantAuth(), status: 404 }),
  },
  {
    name: '404 (unknown id)',
    target: async () => ({ method: 'POST', path: `/api/v1/pipeline-runs/${randomUUID()}/cancel`, headers: tenantAuth(), status: 404 }),
  },
  {
    name: 'DELETE of an unknown asset (404)',
    target: async () => ({ method: 'DELETE', path: `/api/v1/assets/${randomUUID()}`, headers: tenantAuth(), status: 404 }),
  },
];

type Variant = { name: string; body: Buffer; late: boolean; headers?: Record<string, string> };

const VARIANTS: Variant[] = [
  { name: 'a small body', body: jsonBody(20), late: false },
  // Larger than what a paused Readable.toWeb() reader buffers (64 KiB queue + 64 KiB stream).
  { name: 'a body of half the limit', body: jsonBody(MAX_BODY_BYTES / 2), late: false },
  { name: `a small body sent ${LATE_BODY_MS} ms after its headers`, body: jsonBody(20), late: true },
  // Left unread by the route, read away without being decoded.
  { name: 'a zstd body (as the seed SDK sends)', body: zlib.zstdCompressSync(jsonBody(MAX_BODY_BYTES / 2)), late: false, headers: { 'Content-Encoding': 'zstd' } },
];

/**
 * On one connection: the request with a body the app does not read, then two requests sent
 * right behind it (pipelined), then, past the drain deadline, one more. Every answer must
 * arrive, in order, and the connection must still be open.
 */
async function pipelineBehindUnreadBody(target: Target, variant: Variant): Promise<void> {
  const conn = await RawConnection.open(port);
  try {
    const first = head(target.method, target.path, { ...target.headers, ...variant.headers }, variant.body.length);
    const behind = head('GET', '/healthz') + head('GET', '/api/v1/pipelines?limit=1', tenantAuth());
    if (variant.late) {
      conn.send(first);
      await sleep(LATE_BODY_MS);
      conn.send(Buffer.concat([variant.body, Buffer.from(behind)]));
    } else {
      conn.send(Buffer.concat([Buffer.from(first), variant.body, Buffer.from(behind)]));
    }
    const pipelined = await conn.until(3);
    assert.deepEqual(pipelined.map((r) => r.status), [target.status, 200, 200],
      `the pipelined answers (${pipelined.length} arrived; ended=${conn.ended}, error=${conn.error?.code}): ${pipelined[0]?.body.slice(0, 200)}`);

    await sleep(PAST_DRAIN_DEADLINE_MS);
    conn.send(head('GET', '/healthz'));
    const all = await conn.until(4);
    assert.deepEqual(all.map((r) => r.status), [target.status, 200, 200, 200],
      `the request sent after the drain deadline is answered (ended=${conn.ended}, error=${conn.error?.code})`);
    assert.equal(conn.ended, false, 'the server did not end the connection');
    assert.equal(conn.error, null, 'the connection did not fail');
    for (const r of all) assert.notEqual(r.headers.connection, 'close', 'no answer announced a close');
  } finally {
    conn.destroy();
  }
}

describe('a request whose body is never read keeps its connection usable', { concurrency: true }, () => {
  // Every case with every variant, side by side, each on its own connection.
  for (const c of CASES) {
    for (const variant of VARIANTS) {
      it(`${c.name}, ${variant.name}`, async () => pipelineBehindUnreadBody(await c.target(), variant));
    }
  }
});

describe('a compressed body refused half-way as corrupt keeps its connection', () => {
  it('400 invalid_body_encoding, then the requests behind it are answered', async () => {
    // Incompressible, so most of the gzip data is still on the wire when decoding fails.
    const gz = zlib.gzipSync(Buffer.from(JSON.stringify({ type: 'domain', name: 'corrupt', metadata: { pad: randomBytes(200 * 1024).toString('base64') } })));
    for (let at = Math.floor(gz.length * 0.3); at < Math.floor(gz.length * 0.3) + 64; at++) gz[at] ^= 0xff;
    const conn = await RawConnection.open(port);
    try {
      conn.send(Buffer.concat([
        Buffer.from(head('POST', '/api/v1/assets', { ...tenantAuth(), 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' }, gz.length)),
        gz,
        Buffer.from(head('GET', '/healthz') + head('GET', '/api/v1/pipelines?limit=1', tenantAuth())),
      ]));
      const answers = await conn.until(3);
      assert.deepEqual(answers.map((r) => r.status), [400, 200, 200], answers[0]?.body.slice(0, 300));
      assert.equal(JSON.parse(answers[0].body).error.code, 'invalid_body_encoding');
      for (const r of answers) assert.notEqual(r.headers.connection, 'close');
      assert.equal(conn.ended, false, 'the server did not end the connection');
    } finally {
      conn.destroy();
    }
  });
});

// ---- bodies over the limit: 413, then a clean close ----

/** Sends a too-large request (and a request behind it) and checks the answer and the close. */
async function tooLarge(send: (conn: RawConnection) => void): Promise<void> {
  const conn = await RawConnection.open(port);
  try {
    send(conn);
    const answers = await conn.until(2);
    assert.ok(await conn.closed(), 'the server closed the connection');
    assert.equal(answers.length, 1, 'one answer: the request behind it is not taken (the client was told to reconnect)');
    const [answer] = answers;
    assert.equal(answer.status, 413);
    assert.equal(answer.headers.connection, 'close', 'the 413 says Connection: close');
    assert.equal(JSON.parse(answer.body).error.code, 'payload_too_large');
    assert.equal(conn.answersBeforeEnd, 1, 'the answer arrived before the connection ended');
    assert.equal(conn.ended, true, 'the connection ended with a FIN');
    assert.equal(conn.error, null, 'the connection was not reset');
  } finally {
    conn.destroy();
  }
}

describe('a body over the limit', { concurrency: true }, () => {
  it('with Content-Length: 413 with Connection: close, then the connection ends cleanly', async () => {
    const body = jsonBody(MAX_BODY_BYTES * 2);
    await tooLarge((conn) => conn.send(Buffer.concat([
      Buffer.from(head('POST', '/api/v1/assets', { ...tenantAuth(), 'Content-Type': 'application/json' }, body.length)),
      body,
      Buffer.from(head('GET', '/healthz')),
    ])));
  });

  it('chunked: 413 with Connection: close, then the connection ends cleanly', async () => {
    const body = jsonBody(MAX_BODY_BYTES * 2);
    const chunks: Buffer[] = [];
    for (let at = 0; at < body.length; at += 64 * 1024) {
      const part = body.subarray(at, at + 64 * 1024);
      chunks.push(Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n'));
    }
    await tooLarge((conn) => conn.send(Buffer.concat([
      Buffer.from(head('POST', '/api/v1/tenants', { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' })),
      ...chunks,
      Buffer.from('0\r\n\r\n'),
      Buffer.from(head('GET', '/healthz')),
    ])));
  });

  it('a zstd bomb (100 MB decoded, 3 KB sent): 413 with Connection: close, then the connection ends cleanly', async () => {
    const bomb = zlib.zstdCompressSync(Buffer.alloc(100 * 1024 * 1024));
    await tooLarge((conn) => conn.send(Buffer.concat([
      Buffer.from(head('POST', '/api/v1/agent/heartbeat', { 'X-API-Key': agent.apiKey, 'Content-Type': 'application/json', 'Content-Encoding': 'zstd' }, bomb.length)),
      bomb,
      Buffer.from(head('GET', '/healthz')),
    ])));
  });

  it('declared over the limit on a route that reads nothing: 413 with Connection: close', async () => {
    await tooLarge((conn) => {
      // Only the head: the answer must not wait for a body the server will not take.
      conn.send(head('POST', `/api/v1/agent/commands/${ackCommandId}/ack`, { 'X-API-Key': agent.apiKey }, MAX_BODY_BYTES + 1));
    });
  });
});
