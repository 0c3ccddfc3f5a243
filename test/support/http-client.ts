// A light HTTP client for the bench and the chaos check: node:http with a keep-alive agent
// (real HTTP over loopback, cheaper than fetch), the body parsed as JSON when it is JSON.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

/** Wall-clock milliseconds with sub-millisecond resolution (comparable with PostgreSQL now()). */
export const now = () => performance.timeOrigin + performance.now();

export type Res<T = any> = { status: number; body: T; ms: number; headers: http.IncomingHttpHeaders };
export type CallOptions = {
  token?: string;
  apiKey?: string;
  body?: unknown;
  /** A body sent as these bytes (its Content-Type, Content-Encoding in `headers`), instead of `body` as JSON. */
  raw?: Buffer;
  headers?: Record<string, string>;
  signal?: AbortSignal;
};

// An idle socket is closed after 4 s, before Node's server closes it (keepAliveTimeout, 5 s):
// a request sent on a socket the server is closing at that moment fails with ECONNRESET (seen
// under load, when a burst of requests leaves sockets idle). Only free sockets are destroyed
// on the timeout; a long poll in progress is not affected.
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 256, timeout: 4000 });

/** One request; rejects on a network error (connection refused or reset), never on a status. */
export async function call<T = any>(base: string, method: string, p: string, o: CallOptions = {}): Promise<Res<T>> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.apiKey) headers['x-api-key'] = o.apiKey;
  let body: string | Buffer | undefined;
  if (o.raw !== undefined) {
    body = o.raw;
    headers['content-length'] = String(o.raw.byteLength);
  } else if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  const t = now();
  const { status, text, resHeaders } = await new Promise<{ status: number; text: string; resHeaders: http.IncomingHttpHeaders }>((resolve, reject) => {
    const req = http.request(base + p, { method, headers, agent: keepAlive, signal: o.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), resHeaders: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status, body: parsed as T, ms: now() - t, headers: resHeaders };
}
