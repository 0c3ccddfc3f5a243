// The dashboard reads only the public API, like any client: each page calls the API routes
// of this same app in-process (app.fetch, no socket), with the browser's own cookie, so the
// session, the tenant and every check are the API's. No SQL here.
import type { Context } from 'hono';
import { currentRequestId } from '../observability/context.ts';

export type AppFetch = (request: Request) => Response | Promise<Response>;

/** A non-2xx answer of the API: its status and error code and message. */
export class ApiAnswer extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

type Query = Record<string, string | number | undefined | null>;

export class ApiClient {
  private readonly fetch: AppFetch;
  private readonly base: string;
  private readonly headers: Record<string, string>;

  constructor(fetch: AppFetch, c: Context) {
    this.fetch = fetch;
    this.base = new URL(c.req.url).origin;
    this.headers = { accept: 'application/json' };
    const cookie = c.req.header('cookie');
    if (cookie) this.headers.cookie = cookie;
    // The page's request id on each of its calls: their log lines tie to the page's.
    const requestId = currentRequestId();
    if (requestId) this.headers['x-request-id'] = requestId;
  }

  /** GET path?query as JSON; a non-2xx answer throws ApiAnswer. */
  async get<T>(path: string, query: Query = {}): Promise<T> {
    const url = new URL(path, this.base);
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    const res = await this.fetch(new Request(url, { headers: this.headers }));
    const body = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string; details?: { path: string; message: string }[] } } | null;
    if (!res.ok) {
      const e = body?.error;
      const details = e?.details?.map((d) => `${d.path} ${d.message}`).join('; ');
      throw new ApiAnswer(res.status, e?.code ?? 'error', `${e?.message ?? `HTTP ${res.status}`}${details ? `: ${details}` : ''}`);
    }
    return body as T;
  }

  /** As get, but null for a 404 (a deleted pipeline or asset a run still names). */
  async find<T>(path: string): Promise<T | null> {
    try {
      return await this.get<T>(path);
    } catch (err) {
      if (err instanceof ApiAnswer && err.status === 404) return null;
      throw err;
    }
  }

  /** Names of the things ids refer to (`path` + id, its `name`), each fetched once per request. */
  async names(path: string, ids: Iterable<string | null>, known: Map<string, string> = new Map()): Promise<Map<string, string>> {
    const wanted = [...new Set([...ids].filter((id): id is string => id !== null && !known.has(id)))];
    const found = await Promise.all(wanted.map((id) => this.find<{ name: string }>(`${path}/${id}`)));
    wanted.forEach((id, i) => { if (found[i]) known.set(id, found[i]!.name); });
    return known;
  }
}
