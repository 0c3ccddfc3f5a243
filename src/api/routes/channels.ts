// Notification channels of a tenant (API.md Part 2 "Events out"): webhooks signed per
// Standard Webhooks, Slack incoming webhooks and email. A webhook's secret (whsec_…) is shown
// once, at creation and rotation, and stored encrypted (src/delivery/secrets.ts).
import { Hono, type Context } from 'hono';
import type { AppDeps } from '../app.ts';
import { requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { conflict, invalid, notFound } from '../errors.ts';
import { endpoints } from '../contract.ts';
import { limitOf, pageOf, pageResult, parseInput, pathId, readBody } from '../input.ts';
import { withTransaction } from '../../db/transaction.ts';
import type { Queryable } from '../../db/pool.ts';
import { many, one } from '../../store/query.ts';
import { channelsSql } from '../../store/queries.ts';
import type { AttemptRow, ChannelRow, DeliveryRow } from '../../store/events.ts';
import { ChannelInput, type ChannelInputValue } from '../../domain/channels.ts';
import { newSigningSecret, secretBox, secretPrefix } from '../../delivery/secrets.ts';
import { messageId } from '../../delivery/deliver.ts';
import { randomUUID } from 'node:crypto';

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function presentChannel(c: ChannelRow) {
  return {
    id: c.id, tenant_id: c.tenant_id, name: c.name, type: c.type, url: c.url,
    to: c.type === 'email' ? c.email_to : null,
    events: c.events, min_severity: c.min_severity, pipeline_ids: c.pipeline_ids, enabled: c.enabled,
    disabled_reason: c.disabled_reason, disabled_at: iso(c.disabled_at),
    // Which secret signs, never the secret: its first characters, and until when the previous one signs too.
    secret_prefix: c.secret_prefix,
    previous_secret_until: c.previous_secret && c.previous_secret_until && c.previous_secret_until > new Date() ? iso(c.previous_secret_until) : null,
    failing_since: iso(c.failing_since), last_error: c.last_error,
    last_attempt_at: iso(c.last_attempt_at), last_success_at: iso(c.last_success_at),
    created_at: iso(c.created_at), updated_at: iso(c.updated_at),
  };
}

function presentAttempt(a: AttemptRow) {
  return {
    id: String(a.id), delivery_id: a.delivery_id, message_id: messageId(a.delivery_id),
    event_id: a.event_id, event_type: a.event_type, event_count: a.event_count, reason: a.reason,
    attempt: a.attempt, outcome: a.outcome, status_code: a.status_code, latency_ms: a.latency_ms, error: a.error,
    attempted_at: iso(a.attempted_at), next_retry_at: iso(a.next_retry_at), delivery_status: a.delivery_status,
  };
}

/** The pipelines a channel names must be the tenant's. */
async function checkPipelines(db: Queryable, tenantId: string, ids: string[] | null | undefined): Promise<void> {
  if (!ids?.length) return;
  const known = new Set((await many<{ id: string }>(db, channelsSql.KnownPipelines, [tenantId, ids])).map((r) => r.id));
  const problems = ids.flatMap((id, i) => (known.has(id) ? [] : [{ path: `pipeline_ids[${i}]`, message: 'unknown pipeline' }]));
  if (problems.length) throw invalid(problems);
}

function nameTaken(err: unknown, name: string): never {
  if ((err as { constraint?: string }).constraint === 'channels_name_key') throw conflict('name_taken', `A channel named '${name}' already exists`);
  throw err;
}

export function channelRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));
  const delivery = () => deps.orchestration.delivery;

  /** Email needs SMTP_URL: refused at creation rather than failing every delivery. */
  const checkEmail = (input: Pick<ChannelInputValue, 'type'>) => {
    if (input.type === 'email' && !delivery().smtpUrl) {
      throw invalid([{ path: 'type', message: 'email channels need SMTP_URL to be set on the server' }]);
    }
  };

  r.post('/', async (c) => {
    const tenantId = c.get('tenant').id;
    const input = await readBody(c, endpoints.createChannel);
    checkEmail(input);
    const id = randomUUID();
    const secret = input.type === 'webhook' ? newSigningSecret() : null;
    const row = await withTransaction(deps.pool, async (tx) => {
      await checkPipelines(tx, tenantId, input.pipeline_ids);
      const encrypted = secret ? (await secretBox(tx, delivery().secretsKey)).encrypt(secret, id) : null;
      return one<ChannelRow>(tx, channelsSql.InsertChannel, [
        id, tenantId, input.name, input.type, input.url ?? null, input.to ?? [], dedupe(input.events), input.min_severity ?? null,
        input.pipeline_ids?.length ? dedupe(input.pipeline_ids) : null, input.enabled, encrypted, secret ? secretPrefix(secret) : null,
      ]).catch((err) => nameTaken(err, input.name));
    });
    return c.json({ channel: presentChannel(row!), ...(secret ? { secret } : {}) }, 201);
  });

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const rows = await many<ChannelRow & { cursor_at: string }>(db, channelsSql.ListChannels, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentChannel));
  });

  const getChannel = async (c: Context<AppEnv>, db: Queryable = deps.pool, lock = false) => {
    const row = await one<ChannelRow>(db, lock ? channelsSql.LockChannel : channelsSql.GetChannel, [c.get('tenant').id, pathId(c, 'id', 'channel')]);
    if (!row) throw notFound('channel');
    return row;
  };

  r.get('/:id', async (c) => c.json(presentChannel(await getChannel(c, readsOf(deps, c)))));

  r.put('/:id', async (c) => {
    const tenantId = c.get('tenant').id;
    const patch = await readBody(c, endpoints.updateChannel);
    const row = await withTransaction(deps.pool, async (tx) => {
      const current = await getChannel(c, tx, true);
      if (patch.type !== undefined && patch.type !== current.type) {
        throw invalid([{ path: 'type', message: `cannot change (${current.type}); create another channel` }]);
      }
      const next = parseInput(ChannelInput, {
        name: current.name, type: current.type, url: current.url, to: current.type === 'email' ? current.email_to : null,
        events: current.events, min_severity: current.min_severity, pipeline_ids: current.pipeline_ids, enabled: current.enabled,
        ...Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined)),
      });
      checkEmail(next);
      await checkPipelines(tx, tenantId, patch.pipeline_ids);
      return one<ChannelRow>(tx, channelsSql.UpdateChannel, [
        tenantId, current.id, next.name, next.url ?? null, next.to ?? [], dedupe(next.events), next.min_severity ?? null,
        next.pipeline_ids?.length ? dedupe(next.pipeline_ids) : null, next.enabled,
      ]).catch((err) => nameTaken(err, next.name));
    });
    return c.json(presentChannel(row!));
  });

  r.delete('/:id', async (c) => {
    const row = await one(deps.pool, channelsSql.DeleteChannel, [c.get('tenant').id, pathId(c, 'id', 'channel')]);
    if (!row) throw notFound('channel');
    return c.body(null, 204);
  });

  r.post('/:id/rotate-secret', async (c) => {
    const { grace_seconds } = await readBody(c, endpoints.rotateChannelSecret);
    const secret = newSigningSecret();
    const row = await withTransaction(deps.pool, async (tx) => {
      const current = await getChannel(c, tx, true);
      if (current.type !== 'webhook') throw conflict('no_secret', `A ${current.type} channel has no signing secret`);
      const encrypted = (await secretBox(tx, delivery().secretsKey)).encrypt(secret, current.id);
      const until = grace_seconds > 0 ? new Date(Date.now() + grace_seconds * 1000) : null;
      return one<ChannelRow>(tx, channelsSql.SetChannelSecret, [current.tenant_id, current.id, encrypted, secretPrefix(secret), until]);
    });
    return c.json({ channel: presentChannel(row!), secret });
  });

  r.post('/:id/test', async (c) => {
    const channel = await getChannel(c);
    const row = await withTransaction(deps.pool, (tx) =>
      one<DeliveryRow & { event_at: Date }>(tx, channelsSql.SendTestEvent, [channel.tenant_id, channel.id, channel.name, channel.type]));
    const d = row!;
    return c.json({
      event: { id: d.event_id, event: 'channel.test', timestamp: iso(d.event_at) },
      delivery: { id: d.id, message_id: messageId(d.id), status: d.status },
    }, 202);
  });

  r.get('/:id/deliveries', async (c) => {
    const db = readsOf(deps, c);
    const channel = await getChannel(c, db);
    const limit = limitOf(c);
    const before = c.req.query('cursor');
    if (before !== undefined && !/^\d{1,18}$/.test(before)) throw invalid([{ path: 'cursor', message: 'is not a cursor returned by this API' }]);
    const rows = await many<AttemptRow>(db, channelsSql.ListChannelAttempts, [channel.tenant_id, channel.id, before ?? null, limit + 1]);
    const more = rows.length > limit;
    const items = rows.slice(0, limit);
    return c.json({ items: items.map(presentAttempt), next_cursor: more ? String(items[items.length - 1].id) : null });
  });

  return r;
}

function dedupe<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}
