// Notification channels (API.md Part 2 "Events out"): what a channel is, which events it
// wants, and when a failed delivery is tried again. Pure: no I/O.
import * as v from 'valibot';
import { SEVERITIES } from './findings/model.ts';
import { literalAddress, refusedKind } from './destinations.ts';

/** Every event type the events table holds (migrations/0009_channels.sql CHECK). */
export const EVENT_TYPES = [
  'pipeline.run.started', 'pipeline.run.completed', 'pipeline.run.failed', 'pipeline.run.cancelled', 'pipeline.run.timeout',
  'pipeline.step.queued', 'pipeline.step.started', 'pipeline.step.completed', 'pipeline.step.failed', 'pipeline.step.skipped',
  'pipeline.step.retrying', 'pipeline.step.cancelled', 'pipeline.step.timeout',
  'finding.created', 'finding.reopened', 'finding.resolved', 'finding.status_changed',
  'scan.fired', 'agent.offline', 'channel.test',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const CHANNEL_TYPES = ['webhook', 'slack', 'email'] as const;
export type ChannelType = (typeof CHANNEL_TYPES)[number];

/**
 * Whether an event filter selects a type: '*', the exact name, or 'prefix.*' ('pipeline.*'
 * selects 'pipeline.run.failed'). The same rule as event_pattern_matches() in SQL.
 */
export function patternsMatch(patterns: readonly string[], type: string): boolean {
  return patterns.some((p) => p === '*' || p === type || (p.endsWith('.*') && type.startsWith(p.slice(0, -1))));
}

/** Why a filter pattern can never select anything, or null when it can. */
export function patternProblem(pattern: string): string | null {
  if (pattern === '*') return null;
  if (!/^[a-z_]+(\.[a-z_]+)*(\.\*)?$/.test(pattern)) return `'${pattern}' is not an event name or a 'prefix.*' pattern`;
  if (!EVENT_TYPES.some((t) => patternsMatch([pattern], t))) {
    return `'${pattern}' selects no event; event types are ${EVENT_TYPES.join(', ')}`;
  }
  return null;
}

const EventPattern = v.pipe(
  v.string(),
  v.maxLength(100),
  v.rawCheck(({ dataset, addIssue }) => {
    const problem = dataset.typed ? patternProblem(dataset.value) : null;
    if (problem) addIssue({ message: problem });
  }),
  v.examples(['pipeline.run.failed', 'pipeline.run.*', 'finding.created', '*']),
);
export const EventPatterns = v.pipe(v.array(EventPattern), v.maxLength(50, 'at most 50 patterns'));

/**
 * Only http and https: a channel URL never reaches file:, data: or anything else; nor an
 * address deliveries never go to (domain/destinations.ts).
 */
export function urlProblem(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'must be an absolute http:// or https:// URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `must be http:// or https://, not ${parsed.protocol}//`;
  if (!parsed.hostname) return 'must name a host';
  // A link-local, multicast or unspecified address written in the URL is refused here; names
  // are checked where the request is made, against what they resolve to (delivery/transport.ts).
  const literal = literalAddress(parsed.hostname);
  const kind = literal ? refusedKind(literal, 'allow') : null;
  return kind ? `must not point at ${literal} (${kind})` : null;
}

const ChannelUrl = v.pipe(
  v.string(),
  v.trim(),
  v.maxLength(2048),
  v.rawCheck(({ dataset, addIssue }) => {
    const problem = dataset.typed ? urlProblem(dataset.value) : null;
    if (problem) addIssue({ message: problem });
  }),
  v.examples(['https://hooks.example.com/scanflow', 'https://hooks.slack.com/services/T000/B000/XXXX']),
);

// Deliberately plain: one @, something on each side, no spaces; the SMTP server is the judge.
const EmailAddress = v.pipe(v.string(), v.trim(), v.maxLength(320), v.regex(/^[^\s@<>,;"]+@[^\s@<>,;"]+$/, 'must be an email address like ops@example.com'));
const Recipients = v.pipe(
  v.union([v.pipe(EmailAddress, v.transform((a) => [a])), v.array(EmailAddress)], 'must be an email address or a list of them'),
  v.check((a) => a.length >= 1, 'must name at least one recipient'),
  v.check((a) => a.length <= 50, 'at most 50 recipients'),
);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const ChannelFields = {
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  type: v.picklist(CHANNEL_TYPES, 'must be webhook, slack or email'),
  url: v.optional(v.nullable(ChannelUrl)),
  to: v.optional(v.nullable(Recipients)),
  /** Exact names or 'prefix.*' patterns; none: only what pipelines' settings.notification route here. */
  events: v.optional(EventPatterns, []),
  min_severity: v.optional(v.nullable(v.picklist(SEVERITIES, `must be one of ${SEVERITIES.join(', ')}`))),
  pipeline_ids: v.optional(v.nullable(v.pipe(
    v.array(v.pipe(v.string(), v.regex(UUID, 'must be a pipeline id (UUID)'), v.toLowerCase())),
    v.maxLength(100, 'at most 100 pipelines'),
  ))),
  enabled: v.optional(v.boolean(), true),
};

/** What each type needs: a URL for webhooks and Slack, recipients for email. */
export const ChannelInput = v.pipe(
  v.object(ChannelFields),
  v.forward(v.check((c) => c.type !== 'email' || !!c.to?.length, 'is required for an email channel'), ['to']),
  v.forward(v.check((c) => c.type !== 'email' || !c.url, 'an email channel has no URL; give `to`'), ['url']),
  v.forward(v.check((c) => c.type === 'email' || !!c.url, 'is required for a webhook or Slack channel'), ['url']),
  v.forward(v.check((c) => c.type === 'email' || !c.to?.length, 'a webhook or Slack channel has no recipients; give `url`'), ['to']),
);
export type ChannelInputValue = v.InferOutput<typeof ChannelInput>;

/** PUT: any of the fields; what is absent keeps its value (the type cannot change). */
export const ChannelUpdate = v.partial(v.object(ChannelFields));

export const RotateSecret = v.object({
  // How long the old secret keeps signing next to the new one (Standard Webhooks lets a
  // receiver accept either); 0 or absent: the old one stops at once.
  grace_seconds: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(7 * 86_400, 'at most 7 days (604800)')), 0),
});

/**
 * Seconds from a failed attempt to the next one: after the first attempt 5 s, then 5 min,
 * 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (API.md); ten attempts over about three days.
 */
export const RETRY_DELAYS_SECONDS = [5, 300, 1_800, 7_200, 18_000, 36_000, 50_400, 72_000, 86_400] as const;

/** The delay before the next attempt after `attempts` failed ones, or null when that was the last. */
export function retryDelaySeconds(attempts: number): number | null {
  return RETRY_DELAYS_SECONDS[attempts - 1] ?? null;
}

/** A channel failing this long (every attempt since its last success failed) is disabled. */
export const FAILING_DISABLES_AFTER_SECONDS = 24 * 3600;

export type AttemptOutcome = 'delivered' | 'failed' | 'gone';

/**
 * What an HTTP answer means for a delivery: 2xx delivered; 410 Gone disables the channel
 * (the receiver says it is gone for good); anything else, redirects included (they are
 * not followed), is a failure to retry.
 */
export function outcomeOfStatus(status: number): AttemptOutcome {
  if (status >= 200 && status < 300) return 'delivered';
  if (status === 410) return 'gone';
  return 'failed';
}
