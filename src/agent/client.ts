// The agent's side of the HTTP API (API.md "Agent API", Part 2 "Findings ingestion" and
// "Step output"): one request function with the agent key, JSON or bytes, bodies over 1 KB
// compressed with zstd as the seed SDK does, and retries with exponential backoff and jitter
// on network errors, 5xx and 429 (Retry-After honoured), within a deadline the caller sets.
// Any other 4xx is an answer, not a failure to retry: it is thrown as a ServerError.
import { zstdCompressSync, constants as zlib } from 'node:zlib';
import type { Logger } from 'pino';
import * as v from 'valibot';

/** Bodies bigger than this are sent zstd-compressed (the seed SDK's threshold), when that is smaller. */
const COMPRESS_OVER_BYTES = 1024;
/** One request (a long poll: its wait plus this) gives up after this long without an answer. */
const REQUEST_TIMEOUT_MS = 30_000;

export type Backoff = { baseMs: number; maxMs: number };
export const DEFAULT_BACKOFF: Backoff = { baseMs: 500, maxMs: 30_000 };

/**
 * The delay before retry number `failures` (1, 2, …): exponential, capped, with "equal
 * jitter" (half of it fixed, half random), so many agents that lost the server together do
 * not come back in step, and each still waits longer after every failure. Pure.
 */
export function backoffDelay(failures: number, b: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(b.maxMs, b.baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** An answer of the server that is not a success: its status and error body (API.md "Errors"). */
export class ServerError extends Error {
  readonly status: number;
  readonly code: string;
  readonly body: unknown;
  readonly headers: Headers;
  constructor(status: number, code: string, message: string, body: unknown, headers: Headers) {
    super(message);
    this.name = 'ServerError';
    this.status = status;
    this.code = code;
    this.body = body;
    this.headers = headers;
  }
}

/** The server could not be reached (or answered 5xx/429) until the deadline; `cause` is the last failure. */
export class Unreachable extends Error {
  readonly attempts: number;
  constructor(message: string, attempts: number, cause: unknown) {
    super(message, { cause });
    this.name = 'Unreachable';
    this.attempts = attempts;
  }
}

export type Retry = {
  /** Epoch ms after which no new attempt is made; a function, so a shutdown can shorten it. */
  until: () => number;
  /** Aborting stops waiting and retrying (and the request in flight). */
  signal?: AbortSignal;
};
export const ONCE: Retry = { until: () => 0 };

export type RequestOptions = {
  json?: unknown;
  bytes?: Buffer;
  contentType?: string;
  headers?: Record<string, string>;
  query?: Record<string, string | number>;
  retry?: Retry;
  /** A long poll's wait: the request may take this much longer. */
  extraTimeoutMs?: number;
  signal?: AbortSignal;
};

export type Answer<T = unknown> = { status: number; body: T; headers: Headers };

const ErrorBody = v.object({ error: v.looseObject({ code: v.string(), message: v.string() }) });

export class AgentClient {
  readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly userAgent: string;
  private readonly logger: Logger;
  readonly backoff: Backoff;

  constructor(opts: { baseUrl: string; apiKey: string; userAgent: string; logger: Logger; backoff?: Backoff }) {
    this.baseUrl = opts.baseUrl;
    this.apiKey = opts.apiKey;
    this.userAgent = opts.userAgent;
    this.logger = opts.logger;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
  }

  /**
   * One call, retried on network errors, 5xx and 429 until `retry.until()`; a 2xx answers,
   * another status throws ServerError, giving up throws Unreachable.
   */
  async request<T = unknown>(method: string, path: string, o: RequestOptions = {}): Promise<Answer<T>> {
    const retry = o.retry ?? ONCE;
    const { body, headers } = this.encode(o);
    let url = `${this.baseUrl}${path}`;
    if (o.query) url += `?${new URLSearchParams(Object.entries(o.query).map(([k, val]): [string, string] => [k, String(val)]))}`;
    let failures = 0;
    for (;;) {
      const signals = [AbortSignal.timeout(REQUEST_TIMEOUT_MS + (o.extraTimeoutMs ?? 0))];
      if (o.signal) signals.push(o.signal);
      if (retry.signal) signals.push(retry.signal);
      let failure: unknown;
      let retryAfterMs: number | null = null;
      try {
        const res = await fetch(url, { method, headers, body, signal: AbortSignal.any(signals) });
        const text = await res.text();
        const parsed = parseJson(text);
        if (res.ok) return { status: res.status, body: parsed as T, headers: res.headers };
        const err = serverError(res.status, parsed, text, res.headers);
        if (!retryable(res.status, err.code)) throw err;
        failure = err;
        retryAfterMs = retryAfter(res.headers);
      } catch (err) {
        if (err instanceof ServerError && failure !== err) throw err;
        if (o.signal?.aborted || retry.signal?.aborted) throw err;
        failure ??= err;
      }
      failures++;
      // Tried until the deadline: the last wait is what is left of it, so the last attempt
      // comes at the deadline (giving up as soon as the next backoff would pass it stopped
      // a 3 s start timeout after 1.4 s).
      const left = retry.until() - Date.now();
      if (left <= 0) {
        throw new Unreachable(`${method} ${path}: ${describe(failure)} (${failures} attempt${failures === 1 ? '' : 's'})`, failures, failure);
      }
      const delay = Math.min(Math.max(retryAfterMs ?? 0, backoffDelay(failures, this.backoff)), left);
      if (failures === 1 || failures % 5 === 0) {
        this.logger.warn({ method, path, failures, retry_in_ms: delay, error: describe(failure) }, 'request failed; retrying');
      }
      await sleep(delay, retry.signal ?? o.signal);
    }
  }

  private encode(o: RequestOptions): { body: Buffer | undefined; headers: Record<string, string> } {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.apiKey}`,
      'user-agent': this.userAgent,
      accept: 'application/json',
      ...o.headers,
    };
    let body: Buffer | undefined;
    if (o.json !== undefined) {
      body = Buffer.from(JSON.stringify(o.json));
      headers['content-type'] = o.contentType ?? 'application/json';
    } else if (o.bytes !== undefined) {
      body = o.bytes;
      headers['content-type'] = o.contentType ?? 'application/octet-stream';
    }
    if (body && body.byteLength > COMPRESS_OVER_BYTES) {
      // Deterministic for the same input, so a retried ingest sends the same bytes (its
      // Idempotency-Key's request hash is the same).
      const compressed = zstdCompressSync(body, { params: { [zlib.ZSTD_c_compressionLevel]: 3 } });
      if (compressed.byteLength < body.byteLength) {
        body = compressed;
        headers['content-encoding'] = 'zstd';
      }
    }
    return { body, headers };
  }
}

function retryable(status: number, code: string): boolean {
  // 409 idempotency_key_in_progress: the first attempt of this ingest is still being carried out.
  return status >= 500 || status === 429 || status === 408 || (status === 409 && code === 'idempotency_key_in_progress');
}

function retryAfter(headers: Headers): number | null {
  const value = headers.get('retry-after');
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.min(Math.max(seconds, 0) * 1000, 60_000);
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.min(Math.max(at - Date.now(), 0), 60_000) : null;
}

function parseJson(text: string): unknown {
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function serverError(status: number, body: unknown, text: string, headers: Headers): ServerError {
  const parsed = v.safeParse(ErrorBody, body);
  if (parsed.success) return new ServerError(status, parsed.output.error.code, parsed.output.error.message, body, headers);
  return new ServerError(status, `http_${status}`, `HTTP ${status}: ${text.slice(0, 200) || '(no body)'}`, body, headers);
}

/** A failure in a few words: the server's message, or the network error's code. */
export function describe(err: unknown): string {
  if (err instanceof ServerError) return `${err.status} ${err.code}: ${err.message}`;
  if (err instanceof Unreachable) return err.message;
  if (err instanceof Error) {
    const cause = err.cause as { code?: string; message?: string } | undefined;
    if (err.name === 'TimeoutError') return 'no answer in time';
    if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ''}`;
    return err.message;
  }
  return String(err);
}

/** Resolves after `ms`, or early (without throwing) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
