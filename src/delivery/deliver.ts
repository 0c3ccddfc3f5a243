// One delivery attempt (the event_deliver task): claim the delivery with a lease, make the
// message, send it outside any transaction, record the attempt. At least once: a process
// killed after sending and before recording leaves the job to be released by the
// maintenance sweep, and the next attempt sends the same message again under the same
// webhook-id. Never twice at once: the lease keeps a second process off the delivery while
// an attempt is in flight (until its timeout and a margin). Retries are jobs at the next
// attempt's time (sql/deliveries.sql RecordAttempt), never sleeps.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { DeliveryConfig } from '../config.ts';
import { outcomeOfStatus, retryDelaySeconds, type AttemptOutcome } from '../domain/channels.ts';
import {
  FINDINGS_LISTED, emailMessage, slackMessage, webhookHeaders, webhookPayload,
  type FailedStep, type FindingView, type Notice, type RunView,
} from '../domain/messages.ts';
import { many, one } from '../store/query.ts';
import { deliveriesSql } from '../store/queries.ts';
import { eventView, type DeliveryRow, type EventRowWithRun } from '../store/events.ts';
import { boxOf, SecretUnreadable } from './secrets.ts';
import { postJson, sendMail, type SendResult } from './transport.ts';

/** A lease outlasts the attempt's own timeout by this much (DNS, a slow database round trip). */
const LEASE_MARGIN_SECONDS = 30;

/** graphile-worker's helpers.withPgClient: a pooled client for one short piece of work. */
export type WithClient = <T>(fn: (client: pg.PoolClient) => Promise<T>) => Promise<T>;

type ClaimedDelivery = DeliveryRow & {
  channel_name: string;
  channel_type: 'webhook' | 'slack' | 'email';
  url: string | null;
  email_to: string[];
  channel_enabled: boolean;
  secret: Buffer | null;
  previous_secret: Buffer | null;
  generated_key: string | null;
};

type DeliveryEventRow = EventRowWithRun & {
  finding_title: string | null;
  finding_severity: string | null;
  finding_tool: string | null;
  finding_rule_id: string | null;
  finding_status: string | null;
  asset: string | null;
};

export type AttemptReport =
  | { kind: 'skipped'; why: 'not_pending' | 'not_due' | 'leased' }
  | { kind: 'cancelled'; why: string }
  | { kind: 'attempted'; channelType: ClaimedDelivery['channel_type']; eventType: string; outcome: AttemptOutcome; status: string; result: SendResult; disabledReason: string | null };

/** The message id receivers see (webhook-id): one per (event, channel), the same on every attempt. */
export const messageId = (deliveryId: string) => `msg_${deliveryId.replace(/-/g, '')}`;

const GROUPED = new Set(['finding.created', 'finding.reopened', 'finding.resolved']);

/** The message of a delivery: its events, the run they are about, a link. Null when its events are gone. */
async function noticeOf(db: pg.ClientBase, d: ClaimedDelivery, publicUrl: string): Promise<Notice | null> {
  // int8[] arrays come back as strings (only scalar int8 has a parser: src/db/pool.ts).
  const listed = d.event_ids.map(Number);
  const ids = [d.event_id, ...listed.filter((id) => id !== d.event_id)];
  const rows = await many<DeliveryEventRow>(db, deliveriesSql.DeliveryEvents, [d.tenant_id, ids]);
  const head = rows.find((r) => r.id === d.event_id);
  if (!head) return null;
  const event = eventView(head);
  const runId = typeof head.data.pipeline_run_id === 'string' ? head.data.pipeline_run_id : null;
  let run: RunView | null = null;
  if (runId) {
    const r = await one<Omit<RunView, 'failed'> & { failed: FailedStep[] }>(db, deliveriesSql.DeliveryRun, [d.tenant_id, runId]);
    run = r ? { ...r, duration_seconds: r.duration_seconds ?? null } : null;
  }
  const grouped = GROUPED.has(d.event_type) && typeof head.data.ingest_id === 'string';
  const group = grouped
    ? {
        count: d.event_count,
        severities: d.severities ?? {},
        findings: listed
          .map((id) => rows.find((r) => r.id === id))
          .filter((r): r is DeliveryEventRow => r !== undefined)
          .slice(0, FINDINGS_LISTED)
          .map((r): FindingView => ({
            finding_id: String(r.data.finding_id ?? ''),
            title: (r.data.title as string | null) ?? r.finding_title,
            severity: (r.data.severity as string | null) ?? r.finding_severity,
            tool: (r.data.tool as string | null) ?? r.finding_tool,
            rule_id: (r.data.rule_id as string | null) ?? r.finding_rule_id,
            asset: r.asset,
            status: r.finding_status,
          })),
      }
    : null;
  return { event, group, run, link: runId ? `${publicUrl}/runs/${runId}` : null };
}

async function send(d: ClaimedDelivery, notice: Notice, config: DeliveryConfig, secrets: string[]): Promise<SendResult> {
  const timeoutMs = config.timeoutSeconds * 1000;
  switch (d.channel_type) {
    case 'webhook': {
      const body = JSON.stringify(webhookPayload(notice));
      const headers = webhookHeaders(messageId(d.id), Math.floor(Date.now() / 1000), body, secrets);
      return postJson(d.url!, body, headers, timeoutMs, config.privateNetworks);
    }
    case 'slack':
      return postJson(d.url!, JSON.stringify(slackMessage(notice)), {}, timeoutMs, config.privateNetworks);
    case 'email': {
      const mail = emailMessage(notice);
      return sendMail(config.smtpUrl, {
        from: config.smtpFrom, to: d.email_to, ...mail,
        headers: { 'X-Scanflow-Event': notice.event.event, 'X-Scanflow-Message-Id': messageId(d.id) },
      }, timeoutMs);
    }
  }
}

/** One attempt of delivery `deliveryId` (see the top of this file). */
export async function attemptDelivery(withClient: WithClient, config: DeliveryConfig, deliveryId: string): Promise<AttemptReport> {
  const leaseId = randomUUID();
  const claimed = await withClient((c) =>
    one<ClaimedDelivery>(c, deliveriesSql.ClaimDelivery, [deliveryId, leaseId, config.timeoutSeconds + LEASE_MARGIN_SECONDS]));
  if (!claimed) {
    const state = await withClient((c) =>
      one<{ status: string; lease_until: Date | null; leased: boolean | null }>(c, deliveriesSql.DeliveryState, [deliveryId]));
    if (state?.status !== 'pending') return { kind: 'skipped', why: 'not_pending' };
    if (!state.leased) return { kind: 'skipped', why: 'not_due' }; // the job of its next attempt is waiting
    // Another attempt holds it. If that process died, this job goes on once the lease ends.
    await withClient((c) => one(c, deliveriesSql.RearmDelivery, [deliveryId, state.lease_until]));
    return { kind: 'skipped', why: 'leased' };
  }
  const cancel = async (why: string): Promise<AttemptReport> => {
    await withClient((c) => one(c, deliveriesSql.CancelDelivery, [deliveryId, leaseId, why]));
    return { kind: 'cancelled', why };
  };
  if (!claimed.channel_enabled && claimed.reason !== 'test') return cancel('the channel is disabled');

  let result: SendResult;
  const notice = await withClient((c) => noticeOf(c, claimed, config.publicUrl));
  if (!notice) return cancel('its events no longer exist');
  let secrets: string[] = [];
  try {
    if (claimed.channel_type === 'webhook') {
      const box = boxOf(config.secretsKey, claimed.generated_key);
      secrets = [claimed.secret, claimed.previous_secret].filter((s): s is Buffer => s !== null).map((s) => box.decrypt(s, claimed.channel_id));
    }
    result = await send(claimed, notice, config, secrets);
  } catch (err) {
    if (!(err instanceof SecretUnreadable)) throw err;
    result = { statusCode: null, error: `the channel's secret ${err.message}`, latencyMs: 0 };
  }

  const outcome: AttemptOutcome = result.error === null ? 'delivered'
    : result.statusCode !== null && claimed.channel_type !== 'email' ? outcomeOfStatus(result.statusCode) : 'failed';
  const retryIn = outcome === 'failed' ? retryDelaySeconds(claimed.attempts + 1) : null;
  const recorded = await withClient((c) => one<{ status: string; disabled_reason: string | null }>(c, deliveriesSql.RecordAttempt, [
    deliveryId, leaseId, outcome, result.statusCode, result.latencyMs, result.error, retryIn,
  ]));
  return {
    kind: 'attempted', channelType: claimed.channel_type, eventType: claimed.event_type, outcome,
    status: recorded?.status ?? 'lease_lost', result, disabledReason: recorded?.disabled_reason ?? null,
  };
}
