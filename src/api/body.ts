// The request body layer: every request body is read through here. A body sent with
// `Content-Encoding: gzip` or `zstd` (the seed SDK compresses bodies over 1 KB, zstd by
// default) is decoded while it streams in; every body is bounded on its decoded size (413
// as soon as it passes the route's limit, so a compression bomb never fills memory); an
// encoding we cannot decode is a 415. Whatever a route leaves unread is read away after the
// answer so the keep-alive connection can carry the next request.
//
// Routes read bodies as usual (readBody / readBodyJson in input.ts, or c.req.text(),
// c.req.arrayBuffer(), c.req.raw.body): they see the decoded bytes. A route that takes more
// than the default limit says so with bodyLimitOf(bytes) among its handlers.
import zlib from 'node:zlib';
import { Readable, pipeline, type Duplex } from 'node:stream';
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { ApiError } from './errors.ts';

const LIMIT = Symbol('bodyLimit');

/**
 * A route's limit on its request body, decoded: `r.post('/ingest', bodyLimitOf(n),
 * requireAgent(...), handler)` (or `r.use(path, bodyLimitOf(n))`). It does nothing when it
 * runs; the body layer finds it among the request's matched handlers before any of them
 * runs, so the app's default limit does not refuse the body first. The last one matched
 * wins.
 */
export function bodyLimitOf(maxBytes: number): MiddlewareHandler {
  const mark: MiddlewareHandler = (_c, next) => next();
  return Object.assign(mark, { [LIMIT]: maxBytes });
}

/** The limit on the body of the request being served: its route's bodyLimitOf, else `fallback`. */
export function bodyLimitFor(c: Context, fallback: number): number {
  let limit = fallback;
  for (const route of matchedRoutes(c)) {
    const n = (route.handler as { [LIMIT]?: number })[LIMIT];
    if (typeof n === 'number' && Number.isFinite(n) && n >= 0) limit = n;
  }
  return limit;
}

export const SUPPORTED_ENCODINGS = ['gzip', 'zstd'] as const;
type Coding = (typeof SUPPORTED_ENCODINGS)[number];

const tooLarge = (limit: number) => new ApiError(413, 'payload_too_large', `The request body is larger than ${limit} bytes`);

/**
 * The coding of a body from its Content-Encoding: null for none or `identity`. One coding
 * only (nobody stacks them on a request); anything else is a 415 naming what we decode
 * (RFC 7694: with Accept-Encoding listing them).
 */
function codingOf(c: Context, header: string | null): Coding | null {
  const codings = (header ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '' && s !== 'identity');
  if (codings.length === 0) return null;
  if (codings.length === 1 && (codings[0] === 'gzip' || codings[0] === 'x-gzip')) return 'gzip';
  if (codings.length === 1 && codings[0] === 'zstd') return 'zstd';
  c.header('Accept-Encoding', SUPPORTED_ENCODINGS.join(', '));
  throw new ApiError(415, 'unsupported_encoding',
    `Content-Encoding '${header}' is not supported: send the body as it is, or with ${SUPPORTED_ENCODINGS.join(' or ')}`);
}

/**
 * The request's body as it arrives on the connection, counted: the decoder reads it chunk by
 * chunk, and whatever is left after the answer is read away (never decoded) by drain().
 */
class RawBody {
  readonly request: Request;
  readonly limit: number;
  /** Stopped when the rest of the body is drained: its output is no longer wanted. */
  decoder: Duplex | null = null;
  private reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  private bytes = 0;
  private done = false;

  constructor(request: Request, limit: number) {
    this.request = request;
    this.limit = limit;
  }

  /** The next chunk, null at the end; a 413 past the limit, a 400 if the client breaks off. */
  async next(): Promise<Uint8Array | null> {
    if (this.done) return null;
    this.reader ??= this.request.body!.getReader();
    let chunk: Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>>;
    try {
      chunk = await this.reader.read();
    } catch {
      throw new ApiError(400, 'incomplete_body', 'The request body ended before it was complete');
    }
    if (chunk.done) {
      this.done = true;
      return null;
    }
    this.bytes += chunk.value.byteLength;
    if (this.bytes > this.limit) throw tooLarge(this.limit);
    return chunk.value;
  }

  async *chunks(): AsyncGenerator<Uint8Array> {
    for (let chunk = await this.next(); chunk !== null; chunk = await this.next()) yield chunk;
  }

  /** Reads what is left, keeping nothing: true when the body ended within the limit. */
  async drain(): Promise<boolean> {
    this.decoder?.destroy();
    try {
      while ((await this.next()) !== null);
      return true;
    } catch {
      return false;
    }
  }
}

const rawBodies = new WeakMap<Context, RawBody>();

/**
 * The decoded body as a stream the route reads, erroring with the ApiError to answer: 413
 * past the limit (counted on decoded bytes), 400 for a body that is not what its encoding
 * says (corrupt, truncated). Pulled one chunk at a time: zlib honours backpressure within a
 * chunk (measured on Node 24: a 100 MB gzip or zstd bomb written whole buffers 64 KiB until
 * read), so at most the limit plus a chunk is ever held.
 */
function decodedStream(raw: RawBody, coding: Coding | null): ReadableStream<Uint8Array> {
  if (coding === null) {
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const chunk = await raw.next();
          if (chunk) controller.enqueue(chunk);
          else controller.close();
        } catch (err) {
          controller.error(err);
        }
      },
    }, { highWaterMark: 0 });
  }
  // Started by the route's first read: a route that reads nothing (a 401, a 404) decodes
  // nothing, and what is left of the body is read away undecoded (RawBody.drain).
  const start = (): AsyncIterator<Buffer> => {
    const decoder = coding === 'gzip' ? zlib.createGunzip() : zlib.createZstdDecompress();
    raw.decoder = decoder;
    // Its errors reach the reader through the iterator (which sees stream.errored). Without
    // a listener of its own, an error at the end (truncated data: "unexpected end of file")
    // could come after pipeline() has let go of it, and be uncaught.
    decoder.on('error', () => {});
    // Errors of either side (the source's 413 or 400 included) end up on the decoder.
    pipeline(Readable.from(raw.chunks(), { objectMode: false }), decoder, () => {});
    return decoder[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  };
  let output: AsyncIterator<Buffer> | null = null;
  let bytes = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        output ??= start();
        const { done, value } = await output.next();
        if (done) return controller.close();
        bytes += value.byteLength;
        if (bytes > raw.limit) {
          raw.decoder?.destroy();
          throw tooLarge(raw.limit);
        }
        controller.enqueue(value);
      } catch (err) {
        controller.error(err instanceof ApiError ? err
          : new ApiError(400, 'invalid_body_encoding', `The request body is not valid ${coding}: ${(err as Error).message}`, [
            { path: '(body)', message: `must be ${coding} data, as Content-Encoding says` },
          ]));
      }
    },
    cancel() {
      raw.decoder?.destroy();
    },
  }, { highWaterMark: 0 });
}

/** Whether the request carries a body at all (HTTP/1.1: a length above 0, or chunked). */
function carriesBody(req: Request): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return false;
  if (req.headers.has('transfer-encoding')) return true;
  const declared = req.headers.get('content-length');
  if (declared !== null) return Number(declared) > 0;
  // Requests built in-process (app.request in tests) carry no length header.
  return req.body !== null;
}

/**
 * Mounted once, before the routes: checks the request's body against its route's limit
 * (bodyLimitOf, else `defaultMaxBytes`) and its Content-Encoding, and gives the routes the
 * decoded, bounded body. Refused at once, before the route runs: an unknown encoding (415)
 * and a declared length over the limit (413). A plain body of a declared length within the
 * limit is left as it is (Node's parser holds it to that length, and @hono/node-server reads
 * it on its fast path); compressed and chunked ones are counted as they are read.
 */
export function requestBodies(defaultMaxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    const req = c.req.raw;
    if (!carriesBody(req)) return next();
    const limit = bodyLimitFor(c, defaultMaxBytes);
    const raw = new RawBody(req, limit);
    rawBodies.set(c, raw);

    const coding = codingOf(c, req.headers.get('content-encoding'));
    const declared = req.headers.get('content-length');
    if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
    if (coding === null && declared !== null && !req.headers.has('transfer-encoding')) return next();

    const headers = new Headers(req.headers);
    for (const name of ['content-encoding', 'content-length', 'transfer-encoding']) headers.delete(name);
    c.req.raw = new Request(req.url, { method: req.method, headers, body: decodedStream(raw, coding), duplex: 'half', signal: req.signal });
    return next();
  };
}

/**
 * Reads to its end whatever request body the app left unread (a route that takes no body,
 * a 401, a 404, a body refused half-way as corrupt), up to the route's limit, before the
 * answer goes out; a body that cannot be read within that is answered with
 * `Connection: close`. Mounted outermost, after the handler and the error handler have made
 * the response. What is left of a compressed body is read as it arrives, never decoded.
 *
 * Why: @hono/node-server (2.1.8, dist/index.mjs) discards an unread body only until
 * DRAIN_TIMEOUT_MS (500 ms) after the answer (`drainIncoming`, line 863 `incoming.resume()`),
 * then `socket.destroySoon()`s the connection (line 850), and with it every request the
 * client had pipelined behind. And that drain stalls: a body read through `c.req.raw.body`
 * pulls a Readable.toWeb() reader on the request (line 292); that reader pauses the request
 * again each time its queue (the request's 64 KiB highWaterMark) is full, undoing the
 * drain's `resume()`, and Node's own discard (`req._dump()`) is skipped because the request
 * was read from. Measured in test/connections.test.ts: an unread body of 512 KiB, or a small
 * one that arrives more than 500 ms after the answer, lost the connection and the requests
 * behind it.
 *
 * The wait is bounded like a handler that reads its body: by the limit here, and by the
 * server's requestTimeout for a client that never sends what it declared.
 */
export function settleRequestBody(defaultMaxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    await next();
    if (!(await bodySettled(c, defaultMaxBytes))) c.res.headers.set('Connection', 'close');
  };
}

/** True when nothing of the request body is left on the connection (or it is read away now). */
async function bodySettled(c: Context, defaultMaxBytes: number): Promise<boolean> {
  // Refused for its size: what is left of it is more than the limit allows reading.
  if (c.res.status === 413) return false;
  const raw = rawBodies.get(c);
  // The request as it arrived (the body layer may have put a decoded one in its place).
  const req = raw?.request ?? c.req.raw;
  const maxBytes = raw?.limit ?? bodyLimitFor(c, defaultMaxBytes);
  const declared = req.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) return false;
  // Node discards a GET or HEAD body itself after the answer, unbounded: only a declared
  // length is known to be within the limit.
  if (req.method === 'GET' || req.method === 'HEAD') return !req.headers.has('transfer-encoding');
  // Decoded or counted by the body layer: what its reader left (all of it, if unread).
  if (raw && c.req.raw !== req) return raw.drain();
  // Read by the route (on @hono/node-server's fast path).
  if (req.bodyUsed) return true;
  const body = req.body;
  if (!body) return true;
  if (body.locked) return false;
  return discard(body, maxBytes);
}

/** Reads the stream to its end, keeping nothing; false if it is longer than maxBytes or breaks off. */
async function discard(body: ReadableStream<Uint8Array>, maxBytes: number): Promise<boolean> {
  const reader = body.getReader();
  let bytes = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return true;
      bytes += value.byteLength;
      if (bytes > maxBytes) return false;
    }
  } catch {
    // The client went away mid-body: the connection is gone either way.
    return false;
  } finally {
    reader.releaseLock();
  }
}
