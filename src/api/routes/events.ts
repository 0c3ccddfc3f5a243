// The tenant's event feed (API.md Part 2 "Events out"): GET /api/v1/events pages through it,
// GET /api/v1/events/stream follows it as Server-Sent Events. Both are in the feed's order
// (the order transactions settle, sql/events.sql) and resume after an event id: `after=` for
// the feed, Last-Event-ID for the stream (what EventSource sends when it reconnects).
import { Hono, type Context } from 'hono';
import type { AppDeps } from '../app.ts';
import { requireTenant, tenantCredentialCheck, type AppEnv } from '../auth.ts';
import { ApiError, invalid } from '../errors.ts';
import { limitOf } from '../input.ts';
import { patternProblem } from '../../domain/channels.ts';
import { eventPosition, eventsRemovedTo, feedHead, readEvents, typeFilterOf, type FeedPosition } from '../../store/events.ts';
import type { Queryable } from '../../db/pool.ts';

const EVENT_ID = /^\d{1,18}$/;

/** `type=`: comma-separated event names or 'prefix.*' patterns; null when absent. */
function typesOf(c: Context<AppEnv>): string[] | null {
  const raw = c.req.query('type');
  if (raw === undefined || raw.trim() === '') return null;
  const patterns = raw.split(',').map((p) => p.trim()).filter(Boolean);
  if (patterns.length > 50) throw invalid([{ path: 'type', message: 'at most 50 patterns' }]);
  const problems = patterns.flatMap((p) => {
    const problem = patternProblem(p);
    return problem ? [{ path: 'type', message: problem }] : [];
  });
  if (problems.length) throw invalid(problems);
  return patterns;
}

/**
 * Where the feed resumes after event `id`; a cursor that retention removed is a 410 (its
 * position is gone with it, so where to go on from cannot be known: the client decides
 * between the oldest events kept, after=0, and the present, the stream without an id).
 */
async function resumePosition(db: Queryable, tenantId: string, id: number, path: string): Promise<FeedPosition | null> {
  const from = await eventPosition(db, tenantId, id);
  if (from) return from;
  const removedTo = await eventsRemovedTo(db);
  if (id <= removedTo) {
    throw new ApiError(410, 'events_expired',
      `Event ${id} is no longer kept: events older than the retention period (EVENT_RETENTION) are removed, ` +
      `and every event up to ${removedTo} was. Read from after=0 for the oldest events kept, or open the stream ` +
      'without an id to follow from now.',
      [{ path, message: `event ${id} was removed by retention` }], { removed_to: removedTo });
  }
  return null;
}

export function eventRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.get('/', async (c) => {
    const tenantId = c.get('tenant').id;
    const limit = limitOf(c);
    const types = typesOf(c);
    const after = c.req.query('after') ?? c.req.query('cursor') ?? '0';
    if (!EVENT_ID.test(after)) throw invalid([{ path: 'after', message: 'must be an event id (0: from the start)' }]);
    const from = await resumePosition(deps.pool, tenantId, Number(after), 'after');
    if (!from) throw invalid([{ path: 'after', message: 'is not an event of this tenant' }]);
    const page = await readEvents(deps.pool, tenantId, from, typeFilterOf(types), limit);
    const items = page.events.map((e) => e.view);
    return c.json({
      items,
      // The feed has no end: poll again with after=<the last id you have>.
      next_cursor: items.length === limit ? String(items[items.length - 1].id) : null,
    });
  });

  r.get('/stream', async (c) => {
    const stream = deps.eventStream;
    if (!stream) throw new ApiError(503, 'unavailable', 'This process does not serve the event stream');
    const tenantId = c.get('tenant').id;
    const types = typesOf(c);
    const resume = c.req.header('last-event-id')?.trim() || c.req.query('after');
    let from: FeedPosition | null = null;
    if (resume !== undefined && EVENT_ID.test(resume)) {
      from = await resumePosition(deps.pool, tenantId, Number(resume), c.req.header('last-event-id') ? 'Last-Event-ID' : 'after');
    } else if (resume !== undefined) throw invalid([{ path: 'Last-Event-ID', message: 'must be an event id' }]);
    // No position (or one that names no event of the tenant): from now on. The stream then
    // says where that is, so a reconnect before the first event loses nothing.
    let marker: number | null = null;
    if (!from) {
      const head = await feedHead(deps.pool, tenantId);
      from = head;
      marker = head.id;
    }
    // Before the answer: a client that writes as soon as its stream is open is notified of it.
    await stream.register(tenantId);
    // The stream ends, at its next heartbeat, once the credential no longer names the tenant.
    return new Response(stream.open(tenantId, from, types, marker, tenantCredentialCheck(deps, c)), {
      status: 200,
      headers: {
        'Content-Type': 'text/event-stream; charset=utf-8',
        'Cache-Control': 'no-store',
        'X-Accel-Buffering': 'no',
      },
    });
  });

  return r;
}
