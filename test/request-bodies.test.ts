// Request bodies (issue 9, item 2), over a real socket: bodies sent with Content-Encoding
// gzip or zstd (the seed SDK compresses every body over 1 KB, zstd by default) are decoded
// on every route; bounded on their decoded size, so a 100 MB gzip or zstd bomb is a 413 and
// the process's memory does not follow it; a corrupt or truncated body is a 400 that
// changes nothing; an encoding we do not decode is a 415; a route can take more than the
// default limit with bodyLimitOf.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import { MAX_BODY_BYTES } from '../src/api/app.ts';
import { bodyLimitOf, requestBodies, settleRequestBody } from '../src/api/body.ts';
import { ApiError } from '../src/api/errors.ts';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createTenant, startRun, step, type Tenant } from './support/fixtures.ts';

const MB = 1024 * 1024;

type Sent = { status: number; body: any; headers: Headers };

async function send(url: string, method: string, headers: Record<string, string>, body?: Uint8Array | string): Promise<Sent> {
  const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

const gzip = (s: string) => zlib.gzipSync(Buffer.from(s));
const zstd = (s: string) => zlib.zstdCompressSync(Buffer.from(s));
const ENCODERS = { gzip, zstd } as const;

/** `total` bytes of zeros, compressed as they stream (the bomb never exists uncompressed here). */
async function bomb(coding: 'gzip' | 'zstd', total: number): Promise<Buffer> {
  const encoder = coding === 'gzip' ? zlib.createGzip({ level: 9 }) : zlib.createZstdCompress();
  const parts: Buffer[] = [];
  encoder.on('data', (b: Buffer) => parts.push(b));
  const done = new Promise((resolve, reject) => encoder.on('end', resolve).on('error', reject));
  const zeros = Buffer.alloc(MB);
  for (let sent = 0; sent < total; sent += MB) {
    if (!encoder.write(zeros)) await new Promise((resolve) => encoder.once('drain', resolve));
  }
  encoder.end();
  await done;
  return Buffer.concat(parts);
}

let h: Harness;
let base: string;
let t: Tenant;
let agent: TestAgent;
let tenantJson: Record<string, string>;
let agentJson: Record<string, string>;

before(async () => {
  h = await startHarness();
  base = (await h.listen()).url;
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['body-tool'], max_concurrent_jobs: 20 });
  tenantJson = { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' };
  agentJson = { authorization: `Bearer ${agent.apiKey}`, 'content-type': 'application/json' };
});
after(() => h.close());

async function assetCount(): Promise<number> {
  const { rows } = await h.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM assets WHERE tenant_id = $1', [t.id]);
  return rows[0].n;
}

describe('compressed bodies are decoded on every route', () => {
  for (const coding of ['gzip', 'zstd'] as const) {
    it(`${coding}: an asset, a pipeline, a heartbeat and a completion`, async () => {
      const encode = ENCODERS[coding];
      const headers = (auth: Record<string, string>) => ({ ...auth, 'content-encoding': coding });

      // A tenant route.
      const asset = await send(`${base}/api/v1/assets`, 'POST', headers(tenantJson),
        encode(JSON.stringify({ type: 'repository', name: `${coding}-repo`, value: `https://example.com/${coding}`, metadata: { pad: 'p'.repeat(4000) } })));
      assert.equal(asset.status, 201, JSON.stringify(asset.body));
      assert.equal(asset.body.name, `${coding}-repo`);
      assert.equal(asset.body.metadata.pad.length, 4000);

      // A larger document.
      const pipeline = await send(`${base}/api/v1/pipelines`, 'POST', headers(tenantJson),
        encode(JSON.stringify({ name: `${coding}-pipeline`, description: 'd'.repeat(20_000), steps: [step('a', { tool: 'body-tool' })] })));
      assert.equal(pipeline.status, 201, JSON.stringify(pipeline.body));
      assert.equal(pipeline.body.description.length, 20_000);

      // Agent routes: a heartbeat, then a command completed with a compressed result.
      const hb = await send(`${base}/api/v1/agent/heartbeat`, 'POST', headers(agentJson), encode(JSON.stringify({ version: `${coding}-1.0`, hostname: 'h' })));
      assert.equal(hb.status, 200, JSON.stringify(hb.body));
      const shown = await h.request('GET', `/api/v1/agents/${agent.id}`, { token: t.token });
      assert.equal(shown.body.version, `${coding}-1.0`);

      await startRun(h, t, pipeline.body.id);
      await h.settle();
      const [command] = await agent.poll({ limit: 1 });
      assert.ok(command, 'a command to complete');
      assert.equal((await agent.ack(command.id)).status, 200);
      const done = await send(`${base}/api/v1/agent/commands/${command.id}/complete`, 'POST', headers(agentJson),
        encode(JSON.stringify({ findings_count: 3, output: { report: 'r'.repeat(3000) } })));
      assert.equal(done.status, 200, JSON.stringify(done.body));
      assert.equal(done.body.status, 'completed');
      assert.equal(done.body.result.output.report.length, 3000);
    });
  }

  it('x-gzip, upper case and identity are understood; identity is the body as it is', async () => {
    const body = (name: string) => JSON.stringify({ type: 'domain', name, value: `${name}.example.com` });
    for (const [encoding, bytes] of [['x-gzip', gzip(body('xgzip'))], ['GZIP', gzip(body('upper'))], ['identity', Buffer.from(body('ident'))], ['identity, zstd', zstd(body('idzstd'))]] as const) {
      const res = await send(`${base}/api/v1/assets`, 'POST', { ...tenantJson, 'content-encoding': encoding }, bytes);
      assert.equal(res.status, 201, `${encoding}: ${JSON.stringify(res.body)}`);
    }
  });

  it('a chunked compressed body (no Content-Length) is decoded too', async () => {
    const bytes = zstd(JSON.stringify({ type: 'domain', name: 'chunked', value: 'chunked.example.com' }));
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 7) controller.enqueue(bytes.subarray(at, at + 7));
        controller.close();
      },
    });
    const res = await fetch(`${base}/api/v1/assets`, { method: 'POST', headers: { ...tenantJson, 'content-encoding': 'zstd' }, body: stream, duplex: 'half' } as RequestInit);
    assert.equal(res.status, 201, await res.text());
  });
});

describe('bad compressed bodies', () => {
  it('corrupt or truncated gzip and zstd: 400 invalid_body_encoding, nothing stored', async () => {
    const before = await assetCount();
    const full = JSON.stringify({ type: 'domain', name: 'never', value: 'never.example.com', metadata: { pad: randomBytes(2500).toString('hex') } });
    const cases: [string, string, Uint8Array][] = [
      ['gzip', 'truncated', gzip(full).subarray(0, gzip(full).length >> 1)],
      ['zstd', 'truncated', zstd(full).subarray(0, zstd(full).length >> 1)],
      ['gzip', 'not gzip at all', Buffer.from(full)],
      ['zstd', 'not zstd at all', Buffer.from(full)],
      ['gzip', 'zstd data', zstd(full)],
    ];
    for (const [coding, what, bytes] of cases) {
      const res = await send(`${base}/api/v1/assets`, 'POST', { ...tenantJson, 'content-encoding': coding }, bytes);
      assert.equal(res.status, 400, `${coding} ${what}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'invalid_body_encoding', `${coding} ${what}`);
      assert.match(res.body.error.message, new RegExp(`not valid ${coding}`));
    }
    assert.equal(await assetCount(), before);
  });

  it('an encoding we do not decode: 415 unsupported_encoding, with Accept-Encoding naming ours', async () => {
    const before = await assetCount();
    const body = JSON.stringify({ type: 'domain', name: 'br', value: 'br.example.com' });
    for (const encoding of ['br', 'deflate', 'compress', 'gzip, zstd', 'zstd, gzip']) {
      for (const path of ['/api/v1/assets', '/api/v1/agent/heartbeat']) {
        const res = await send(`${base}${path}`, 'POST', { ...(path.includes('agent') ? agentJson : tenantJson), 'content-encoding': encoding }, body);
        assert.equal(res.status, 415, `${encoding} on ${path}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.error.code, 'unsupported_encoding');
        assert.equal(res.headers.get('accept-encoding'), 'gzip, zstd');
      }
    }
    assert.equal(await assetCount(), before);
  });
});

describe('bounded on the decoded size', () => {
  it('just within the limit decoded is taken; one byte over is a 413', async () => {
    const sized = (bytes: number) => {
      const shell = JSON.stringify({ type: 'domain', name: 'limit', value: `limit-${bytes}.example.com`, metadata: { pad: '' } });
      return JSON.stringify({ type: 'domain', name: 'limit', value: `limit-${bytes}.example.com`, metadata: { pad: 'x'.repeat(bytes - shell.length) } });
    };
    // Within 1 MiB decoded, but the asset's metadata is over the free-form bound: a 400 from
    // validation proves the body was read whole.
    const within = await send(`${base}/api/v1/assets`, 'POST', { ...tenantJson, 'content-encoding': 'gzip' }, gzip(sized(MAX_BODY_BYTES)));
    assert.equal(within.status, 400, JSON.stringify(within.body).slice(0, 300));
    const over = await send(`${base}/api/v1/assets`, 'POST', { ...tenantJson, 'content-encoding': 'zstd' }, zstd(sized(MAX_BODY_BYTES + 1)));
    assert.equal(over.status, 413, JSON.stringify(over.body).slice(0, 300));
    assert.equal(over.body.error.code, 'payload_too_large');
  });

  for (const coding of ['gzip', 'zstd'] as const) {
    it(`a ${coding} bomb of 100 MB decoded: 413, and the process's memory does not follow it`, async () => {
      const compressed = await bomb(coding, 100 * MB);
      assert.ok(compressed.length < 200 * 1024, `the bomb is small on the wire (${compressed.length} bytes)`);
      let peak = process.memoryUsage().rss;
      const baseline = peak;
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage().rss);
      }, 2);
      try {
        for (const [path, auth] of [['/api/v1/agent/heartbeat', agentJson], ['/api/v1/assets', tenantJson]] as const) {
          const res = await send(`${base}${path}`, 'POST', { ...auth, 'content-encoding': coding }, compressed);
          assert.equal(res.status, 413, `${path}: ${JSON.stringify(res.body)}`);
          assert.equal(res.body.error.code, 'payload_too_large');
          assert.equal(res.headers.get('connection'), 'close');
        }
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, process.memoryUsage().rss);
      // Decoding it whole would take 100 MB for the bytes alone (and more for a string).
      assert.ok(peak - baseline < 40 * MB, `RSS grew by ${((peak - baseline) / MB).toFixed(1)} MB`);
    });
  }
});

describe('bodyLimitOf: a route that takes more than the default', () => {
  let server: ServerType;
  let url: string;
  before(async () => {
    // The layer as createApp mounts it, with one route allowed 4 MiB.
    const app = new Hono();
    app.use('*', settleRequestBody(MAX_BODY_BYTES));
    app.use('*', requestBodies(MAX_BODY_BYTES));
    const sub = new Hono();
    sub.post('/big', bodyLimitOf(4 * MB), async (c) => c.json({ bytes: (await c.req.arrayBuffer()).byteLength }));
    sub.post('/small', async (c) => c.json({ bytes: (await c.req.arrayBuffer()).byteLength }));
    sub.post('/ignores', (c) => c.json({ ok: true }));
    // Reads after an await, as a route behind authentication does.
    sub.post('/late', async (c) => {
      await new Promise((resolve) => setTimeout(resolve, 10));
      return c.json({ bytes: (await c.req.arrayBuffer()).byteLength });
    });
    app.route('/r', sub);
    app.onError((err, c) => (err instanceof ApiError ? c.json(err.toBody(), err.status) : c.json({ bug: String(err) }, 500)));
    server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
    });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/r`;
  });
  after(() => new Promise<void>((resolve) => {
    server.close(() => resolve());
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
  }));

  it('its larger limit holds for plain, chunked and compressed bodies; other routes keep the default', async () => {
    const three = Buffer.alloc(3 * MB, 'a');
    assert.deepEqual((await send(`${url}/big`, 'POST', {}, three)).body, { bytes: 3 * MB });
    assert.deepEqual((await send(`${url}/big`, 'POST', { 'content-encoding': 'gzip' }, zlib.gzipSync(three))).body, { bytes: 3 * MB });
    assert.deepEqual((await send(`${url}/big`, 'POST', { 'content-encoding': 'zstd' }, zlib.zstdCompressSync(three))).body, { bytes: 3 * MB });
    const chunked = await fetch(`${url}/big`, { method: 'POST', body: new Blob([three]).stream(), duplex: 'half' } as RequestInit);
    assert.deepEqual(await chunked.json(), { bytes: 3 * MB });

    const five = Buffer.alloc(5 * MB, 'a');
    for (const [what, res] of [
      ['plain', await send(`${url}/big`, 'POST', {}, five)],
      ['zstd', await send(`${url}/big`, 'POST', { 'content-encoding': 'zstd' }, zlib.zstdCompressSync(five))],
      ['default route, plain', await send(`${url}/small`, 'POST', {}, three)],
      ['default route, gzip', await send(`${url}/small`, 'POST', { 'content-encoding': 'gzip' }, zlib.gzipSync(three))],
      ['default route that reads nothing, declared 3 MiB', await send(`${url}/ignores`, 'POST', {}, three)],
    ] as const) {
      assert.equal(res.status, 413, `${what}: ${JSON.stringify(res.body)}`);
    }
    assert.equal((await send(`${url}/ignores`, 'POST', { 'content-encoding': 'gzip' }, zlib.gzipSync(three))).status, 200,
      'a route that reads nothing does not decode what it is sent');
  });

  it('truncated data read late is a 400, never an uncaught error (zlib reports the end after pipeline() let go)', async () => {
    const data = Buffer.from(JSON.stringify({ pad: randomBytes(3000).toString('hex') }));
    const half = (b: Buffer) => b.subarray(0, b.length >> 1);
    for (let i = 0; i < 20; i++) {
      const gz = await send(`${url}/late`, 'POST', { 'content-encoding': 'gzip' }, half(zlib.gzipSync(data)));
      const zs = await send(`${url}/late`, 'POST', { 'content-encoding': 'zstd' }, half(zlib.zstdCompressSync(data)));
      assert.deepEqual([gz.status, zs.status], [400, 400]);
      assert.equal(gz.body.error.code, 'invalid_body_encoding');
    }
    // An uncaught exception fails this file (node:test reports it); give one a moment to surface.
    await new Promise((resolve) => setTimeout(resolve, 50));
  });
});
