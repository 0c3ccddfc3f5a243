// Idempotency-Key (the IETF httpapi draft "The Idempotency-Key HTTP Header Field"): a POST
// retried with the same key and the same request answers what the first one answered and
// creates nothing new; the same key with another request is 422; a retry while the first
// is still being carried out is 409. Keys are per tenant and kept 24 hours.
//
// Crash safety, at any instant a process can die:
//   1. the key is reserved (its own statement, status processing, owned by this request);
//   2. every transaction the handler opens carries a marker (db/transaction.ts,
//      carryingWrites) that sets the key committed in that same transaction, so the work
//      and "the work is done" commit together or not at all;
//   3. the answer is stored (completed) and replayed to retries.
// Died before 2 committed: nothing was done; the reservation is taken over by a retry once
// it is older than the lease, and the retry runs. Died between 2 and 3: the key is
// committed without an answer; a retry is never carried out again, it is told to look the
// result up (409). A takeover changes the owner: the marker of a request that lost its
// key fails (SQLSTATE SFI01) and rolls its transaction back, so two requests never both
// commit work under one key. The transaction holding the marker also holds the key's row
// lock, so a takeover waits for it and then finds the key committed.
//
// A concurrent duplicate is answered 409 with Retry-After rather than made to wait: nothing
// holds a connection or a timer for another request, and the retry a moment later gets the
// stored answer. (Waiting would need a poll loop or a LISTEN per key for a case that only
// arises when a client retries before its first attempt was answered.)
//
// A handler behind this middleware must do all its writes in one withTransaction (or
// inTransaction): a write outside a transaction would not carry the marker.
import { createHash, randomUUID, type Hash } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { AppEnv } from './auth.ts';
import { ApiError } from './errors.ts';
import { carryingWrites, type CarriedWrites } from '../db/transaction.ts';
import type { Queryable } from '../db/pool.ts';
import { one } from '../store/query.ts';
import { idempotencySql } from '../store/queries.ts';
import type { IdempotencyKeyRow } from '../store/rows.ts';

/** How long a key is kept: after that it behaves as new, and the purge deletes it. */
export const IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 60 * 60;
/**
 * A reservation never committed and older than this belongs to a request that died (or is
 * far slower than any handler): a retry takes it over and runs. Taking over a live request
 * is safe (its marker then fails and its work rolls back), only wasteful.
 */
export const IDEMPOTENCY_LEASE_SECONDS = 30;
/** Keys deleted per purge at most (the maintenance sweep purges every few seconds). */
export const IDEMPOTENCY_PURGE_BATCH = 10_000;
/** SQLSTATE raised by idempotency_key_commit when the request no longer holds its key. */
export const RESERVATION_LOST = 'SFI01';

const HEADER = 'Idempotency-Key';
const KEY = /^[\x20-\x7e]{1,255}$/;
const NULL_BODY_STATUSES = new Set([101, 204, 205, 304]);

export const reservationLost = () =>
  new ApiError(409, 'idempotency_key_in_progress', `Another request with this ${HEADER} took it over; retry to get its answer`);

type Options<E extends AppEnv> = {
  /** The tenant the key belongs to; by default the authenticated tenant's, or the agent's. */
  tenantOf?: (c: Context<E>) => string;
  /** Request headers that select what the request does, hashed with it (lower case). */
  hashHeaders?: readonly string[];
};

function authenticatedTenant(c: Context<AppEnv>): string {
  const id = c.get('tenant')?.id ?? c.get('agent')?.tenant_id;
  if (!id) throw new Error('idempotent() must be mounted after the route authenticates its caller');
  return id;
}

/**
 * Middleware for a POST that creates or starts something: honours Idempotency-Key when the
 * request carries one, and changes nothing when it does not. Mount it after the route's
 * authentication: `r.post('/ingest', idempotent(deps), handler)`. Not for responses that
 * carry a secret: the answer is stored as is.
 */
export function idempotent<E extends AppEnv = AppEnv>(
  deps: { pool: pg.Pool; logger: Logger },
  opts: Options<E> = {},
): MiddlewareHandler<E> {
  return async (c, next) => {
    const key = c.req.header(HEADER);
    if (key === undefined) return next();
    if (!KEY.test(key)) {
      throw new ApiError(400, 'invalid_request', `The ${HEADER} header is invalid`, [
        { path: HEADER, message: 'must be 1 to 255 printable ASCII characters' },
      ]);
    }
    const tenantId = opts.tenantOf ? opts.tenantOf(c) : authenticatedTenant(c as unknown as Context<AppEnv>);
    const url = new URL(c.req.url);
    const hash = requestHash(
      c.req.method, url.pathname + url.search, await c.req.text(),
      (opts.hashHeaders ?? []).map((name) => [name, c.req.header(name) ?? '']),
    );
    const owner = randomUUID();
    const held = await claim(deps.pool, tenantId, key, hash, owner);
    if (held) {
      if (held.retryAfter) c.header('Retry-After', String(held.retryAfter));
      if (held.error) throw held.error;
      return held.replay;
    }

    const writes: CarriedWrites = { statements: [{ q: idempotencySql.MarkIdempotencyKeyCommitted, values: [tenantId, key, owner] }] };
    try {
      await carryingWrites(writes, () => next());
    } catch (err) {
      await release(deps, tenantId, key, owner);
      throw err;
    } finally {
      writes.statements = []; // work started by the handler that outlives it carries nothing
    }

    // Lost to a takeover: its work rolled back; the request that took the key over answers.
    if ((c.error as { code?: string } | undefined)?.code === RESERVATION_LOST) return;
    const res = c.res;
    if (res.status >= 500) {
      // Rolled back (or never written): a retry may run. A key committed before a 5xx stays
      // committed, and is not carried out again.
      await release(deps, tenantId, key, owner);
      return;
    }
    try {
      const body = Buffer.from(await res.clone().arrayBuffer());
      await one(deps.pool, idempotencySql.CompleteIdempotencyKey, [
        tenantId, key, owner, res.status, res.headers.get('content-type'), body,
      ]);
    } catch (err) {
      // The client still gets its answer; a retry will be told the request was carried out.
      deps.logger.warn({ err, key }, 'could not store the answer of an idempotent request');
    }
  };
}

type Held = { replay?: Response; error?: ApiError; retryAfter?: number };

/**
 * Reserves the key for owner, or says what to answer instead: the stored answer, 422 for
 * another request under the key, or 409 while it is being (or was) carried out. Null when
 * reserved.
 */
async function claim(db: Queryable, tenantId: string, key: string, hash: Buffer, owner: string): Promise<Held | null> {
  // A key released or purged between two statements is reserved again; this loops only as
  // long as other requests keep changing the same key.
  for (let attempt = 0; attempt < 5; attempt++) {
    if (await one(db, idempotencySql.ReserveIdempotencyKey, [tenantId, key, hash, owner])) return null;
    const row = await one<IdempotencyKeyRow>(db, idempotencySql.GetIdempotencyKey, [
      tenantId, key, IDEMPOTENCY_KEY_TTL_SECONDS, IDEMPOTENCY_LEASE_SECONDS,
    ]);
    if (!row) continue;
    if (!row.expired && !row.request_hash.equals(hash)) {
      return { error: new ApiError(422, 'idempotency_key_reused', `This ${HEADER} was already used for a different request (method, path or body); use a new key`) };
    }
    if (!row.expired && row.status === 'completed') return { replay: replay(row) };
    if (row.expired || (row.status === 'processing' && row.stale)) {
      const took = await one(db, idempotencySql.TakeOverIdempotencyKey, [
        tenantId, key, hash, row.owner, owner, IDEMPOTENCY_KEY_TTL_SECONDS, IDEMPOTENCY_LEASE_SECONDS,
      ]);
      if (took) return null;
      continue; // another request changed it first: look again
    }
    if (row.status === 'committed' && row.stale) {
      return {
        error: new ApiError(409, 'idempotency_key_response_lost',
          `The request with this ${HEADER} was carried out, but its answer was lost (the server stopped before sending it); ` +
          'it will not be carried out again: look the result up instead of retrying'),
      };
    }
    break;
  }
  return {
    retryAfter: 1,
    error: new ApiError(409, 'idempotency_key_in_progress', `A request with this ${HEADER} is still being processed; retry shortly to get its answer`),
  };
}

function replay(row: IdempotencyKeyRow): Response {
  const status = row.response_status!;
  const headers = new Headers({ 'Idempotent-Replayed': 'true' });
  if (row.response_content_type) headers.set('Content-Type', row.response_content_type);
  return new Response(NULL_BODY_STATUSES.has(status) ? null : new Uint8Array(row.response_body!), { status, headers });
}

async function release(deps: { pool: pg.Pool; logger: Logger }, tenantId: string, key: string, owner: string): Promise<void> {
  try {
    await one(deps.pool, idempotencySql.ReleaseIdempotencyKey, [tenantId, key, owner]);
  } catch (err) {
    // The reservation then lapses after the lease, and a retry takes it over.
    deps.logger.warn({ err, key }, 'could not release an idempotency key');
  }
}

/**
 * SHA-256 of what a request asks for: method, path with query, the given headers, and the
 * body in a canonical form (a JSON body with its keys sorted and no whitespace, so a client
 * that serializes a map in another order is still sending the same request; any other
 * body as is).
 */
export function requestHash(method: string, pathAndQuery: string, body: string, headers: [string, string][] = []): Buffer {
  const h = createHash('sha256');
  h.update(`${method.toUpperCase()} ${pathAndQuery}\n`);
  for (const [name, value] of headers) h.update(`${name.toLowerCase()}: ${value}\n`);
  h.update('\n');
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    h.update('raw\n');
    h.update(body);
    return h.digest();
  }
  h.update('json\n');
  canonicalJsonInto(parsed, h);
  return h.digest();
}

/**
 * Writes value as canonical JSON into the hash, with an explicit stack: a body nested
 * thousands of levels deep costs memory in proportion to its size, never the call stack.
 */
function canonicalJsonInto(value: unknown, h: Hash): void {
  const stack: (string | { v: unknown })[] = [{ v: value }];
  while (stack.length > 0) {
    const item = stack.pop()!;
    if (typeof item === 'string') {
      h.update(item);
      continue;
    }
    const v = item.v;
    if (Array.isArray(v)) {
      stack.push(']');
      for (let i = v.length - 1; i >= 0; i--) {
        stack.push({ v: v[i] });
        if (i > 0) stack.push(',');
      }
      stack.push('[');
    } else if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o).sort();
      stack.push('}');
      for (let i = keys.length - 1; i >= 0; i--) {
        stack.push({ v: o[keys[i]] });
        stack.push(`${JSON.stringify(keys[i])}:`);
        if (i > 0) stack.push(',');
      }
      stack.push('{');
    } else {
      h.update(JSON.stringify(v));
    }
  }
}

/**
 * Deletes up to `limit` keys older than 24 hours (they already behave as new); returns how
 * many. The maintenance sweep calls it; any process may, at any time.
 */
export async function purgeIdempotencyKeys(db: Queryable, limit = IDEMPOTENCY_PURGE_BATCH): Promise<number> {
  const row = await one<{ purged: number }>(db, idempotencySql.PurgeIdempotencyKeys, [IDEMPOTENCY_KEY_TTL_SECONDS, limit]);
  return row?.purged ?? 0;
}
