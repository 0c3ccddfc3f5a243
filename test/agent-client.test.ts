// The agent's HTTP side on a stub server (127.0.0.1): backoff with jitter, what is retried
// (network errors, 5xx, 429 with Retry-After) and what is an answer (other 4xx), zstd bodies
// over 1 KB, and the output upload: every second or 64 KB, Content-Range at the server's
// length, a 416 resumed at the length it gives, a closed output not retried.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { zstdDecompressSync } from 'node:zlib';
import pino from 'pino';
import { AgentClient, ServerError, Unreachable, backoffDelay } from '../src/agent/client.ts';
import { OutputUpload } from '../src/agent/output-upload.ts';
import { freePort } from './support/ports.ts';

type Seen = { method: string; url: string; headers: IncomingMessage['headers']; body: Buffer };
const logger = pino({ level: 'silent' });
const servers: ReturnType<typeof createServer>[] = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => {
  s.close(r);
  s.closeAllConnections();
}))));

async function stub(answer: (seen: Seen, n: number, res: ServerResponse) => void): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const s = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) };
    seen.push(s);
    answer(s, seen.length, res);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen };
}

const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};
const fast = { baseMs: 10, maxMs: 40 };
const client = (url: string) => new AgentClient({ baseUrl: url, apiKey: 'sfa_key', userAgent: 'scanflow-agent/test', logger, backoff: fast });
const within = (ms: number) => {
  const until = Date.now() + ms;
  return { until: () => until };
};

describe('backoff', () => {
  it('doubles up to its cap, half of each delay random', () => {
    const b = { baseMs: 500, maxMs: 30_000 };
    for (const [n, ceiling] of [[1, 500], [2, 1_000], [3, 2_000], [7, 30_000], [40, 30_000]] as const) {
      assert.equal(backoffDelay(n, b, () => 0), ceiling / 2, `failure ${n}, least`);
      assert.equal(backoffDelay(n, b, () => 1), ceiling, `failure ${n}, most`);
    }
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(5, b)));
    assert.ok(spread.size > 10, 'jitter spreads the agents that failed together');
  });
});

describe('requests', () => {
  it('retries 503 and 429 (after its Retry-After), then answers; sends the key and the user agent', async () => {
    const { url, seen } = await stub((_s, n, res) => {
      if (n === 1) return json(res, 503, { error: { code: 'unavailable', message: 'restarting' } });
      if (n === 2) return json(res, 429, { error: { code: 'rate_limited', message: 'slow down' } }, { 'retry-after': '0' });
      json(res, 200, { ok: true });
    });
    const answer = await client(url).request('POST', '/api/v1/agent/heartbeat', { json: {}, retry: within(5_000) });
    assert.deepEqual(answer.body, { ok: true });
    assert.equal(seen.length, 3);
    assert.equal(seen[0].headers.authorization, 'Bearer sfa_key');
    assert.equal(seen[0].headers['user-agent'], 'scanflow-agent/test');
  });

  it('another 4xx is an answer, never retried; a server that stays away is Unreachable at the deadline', async () => {
    const { url, seen } = await stub((_s, _n, res) => json(res, 409, { error: { code: 'command_cancelled', message: 'The command is cancelled' } }));
    await assert.rejects(client(url).request('POST', '/x', { retry: within(5_000) }), (e: ServerError) => e.status === 409 && e.code === 'command_cancelled');
    assert.equal(seen.length, 1);
    const down = await stub((_s, _n, res) => json(res, 502, { error: { code: 'bad_gateway', message: 'no' } }));
    const started = Date.now();
    await assert.rejects(client(down.url).request('GET', '/y', { retry: within(300) }), (e: Unreachable) => e instanceof Unreachable && e.attempts > 2 && /502 bad_gateway/.test(e.message));
    assert.ok(Date.now() - started < 2_000);
    // Tried until the deadline, not given up when the next backoff would pass it: with
    // backoff from 400 ms, a 700 ms deadline sees attempts at about 0, 400 and 700 ms.
    const slow = new AgentClient({ baseUrl: down.url, apiKey: 'sfa_key', userAgent: 'scanflow-agent/test', logger, backoff: { baseMs: 400, maxMs: 400 } });
    const before = down.seen.length;
    const t0 = Date.now();
    await assert.rejects(slow.request('GET', '/w', { retry: within(700) }), (e: Unreachable) => e instanceof Unreachable);
    assert.ok(Date.now() - t0 >= 690, `gave up after ${Date.now() - t0} ms`);
    assert.ok(down.seen.length - before >= 2);
    await assert.rejects(client(`http://127.0.0.1:${await freePort()}`).request('GET', '/z', { retry: within(100) }), (e: Unreachable) => /ECONNREFUSED/.test(e.message));
  });

  it('a body over 1 KB goes zstd-compressed, a small one as is', async () => {
    const { url, seen } = await stub((_s, _n, res) => json(res, 201, {}));
    const big = { findings: Array.from({ length: 100 }, (_, i) => ({ title: `finding ${i}` })) };
    await client(url).request('POST', '/api/v1/agent/ingest', { json: big });
    await client(url).request('POST', '/api/v1/agent/ingest', { json: { small: true } });
    assert.equal(seen[0].headers['content-encoding'], 'zstd');
    assert.deepEqual(JSON.parse(zstdDecompressSync(seen[0].body).toString()), big);
    assert.equal(seen[1].headers['content-encoding'], undefined);
    assert.deepEqual(JSON.parse(seen[1].body.toString()), { small: true });
  });
});

describe('output upload', () => {
  it('sends within a second, at 64 KB at once, each chunk at the length the server has', async () => {
    let length = 0;
    const { url, seen } = await stub((s, _n, res) => {
      const body = s.headers['content-encoding'] === 'zstd' ? zstdDecompressSync(s.body) : s.body;
      length += body.byteLength;
      json(res, 200, { length });
    });
    const up = new OutputUpload(client(url), 'c1', logger);
    up.write(Buffer.from('line one\n'));
    assert.equal(seen.length, 0, 'not at once for a few bytes');
    await new Promise((r) => setTimeout(r, 1_300));
    assert.equal(seen.length, 1, 'within about a second');
    assert.equal(seen[0].headers['content-range'], 'bytes 0-8');
    assert.equal(seen[0].url, '/api/v1/agent/commands/c1/logs');
    up.write(Buffer.alloc(64 * 1024, 'x'));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(seen.length, 2, '64 KB go at once');
    assert.equal(seen[1].headers['content-range'], `bytes 9-${9 + 64 * 1024 - 1}`);
    await up.close(() => Date.now() + 1_000);
    assert.equal(up.length, 9 + 64 * 1024);
  });

  it('a 416 resumes at the length the server gives, skipping what it has; a closed output stops', async () => {
    const { url, seen } = await stub((s, n, res) => {
      // The server already has 4 bytes (an earlier upload whose answer was lost).
      if (n === 1) return json(res, 416, { error: { code: 'offset_mismatch', message: 'send from byte 4', details: [{ path: 'length', message: '4' }] } }, { 'x-next-offset': '4' });
      if (n === 2) return json(res, 200, { length: 4 + s.body.byteLength });
      json(res, 409, { error: { code: 'output_closed', message: 'closed' } });
    });
    const up = new OutputUpload(client(url), 'c2', logger);
    up.write(Buffer.from('abcdefgh'));
    await up.close(() => Date.now() + 2_000);
    assert.equal(seen.length, 2);
    assert.equal(seen[1].headers['content-range'], 'bytes 4-7');
    assert.equal(seen[1].body.toString(), 'efgh');
    assert.equal(up.length, 8);

    up.write(Buffer.from('more'));
    await up.close(() => Date.now() + 2_000);
    up.write(Buffer.from('and more'));
    await up.close(() => Date.now() + 2_000);
    assert.equal(seen.length, 3, 'a 409 is not retried, and nothing is sent after it');
  });
});
