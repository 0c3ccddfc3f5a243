// What a delivery says, in each channel's format (API.md Part 2 "Events out"): the webhook
// payload and its Standard Webhooks 1.0 signature, a Slack incoming-webhook {text, blocks},
// an email's subject, plain text and HTML. Pure: the delivery task gathers a Notice from the
// database and sends what these return.
import { createHmac } from 'node:crypto';

/** An event as the feed, the stream and webhooks show it: seed 001's payload with an id and the tenant. */
export type EventView = {
  id: number;
  event: string;
  timestamp: string;
  tenant_id: string;
  data: Record<string, unknown>;
};

export type FailedStep = { step_key: string; name: string; status: string; error_code: string | null; error_message: string | null };

/** The run a run or step event is about, as it is when the message is made. */
export type RunView = {
  id: string;
  pipeline_id: string;
  pipeline_name: string;
  status: string;
  total_steps: number;
  completed_steps: number;
  failed_steps: number;
  skipped_steps: number;
  total_findings: number;
  duration_seconds: number | null;
  error_message: string | null;
  failed: FailedStep[];
};

/** One finding of a grouped finding message. */
export type FindingView = {
  finding_id: string;
  title: string | null;
  severity: string | null;
  tool: string | null;
  rule_id: string | null;
  asset: string | null;
  status: string | null;
};

/**
 * One message: an event, or the finding events of one ingest of one type (a group: the
 * first event, how many there are, the first FINDINGS_LISTED of them highest severity first).
 */
export type Notice = {
  event: EventView;
  group: { count: number; findings: FindingView[]; severities: Record<string, number> } | null;
  run: RunView | null;
  /** Where a person looks at it (the run), or null. */
  link: string | null;
};

/** The most findings a grouped message lists (the count says how many there were). */
export const FINDINGS_LISTED = 100;
const SLACK_FINDINGS = 10;
const EMAIL_FINDINGS = 50;

// ---- webhooks ----------------------------------------------------------------------------

/** The JSON body of a webhook: {id, event, timestamp, tenant_id, data}; a group's data lists its findings. */
export function webhookPayload(n: Notice): Record<string, unknown> {
  if (!n.group) return { ...n.event };
  const d = n.event.data;
  return {
    ...n.event,
    data: {
      count: n.group.count,
      listed: n.group.findings.length,
      severities: n.group.severities,
      ingest_id: d.ingest_id ?? null,
      pipeline_run_id: d.pipeline_run_id ?? null,
      pipeline_name: n.run?.pipeline_name ?? null,
      step_run_id: d.step_run_id ?? null,
      findings: n.group.findings,
    },
  };
}

/** Standard Webhooks 1.0: `v1,` and the base64 HMAC-SHA256 of "id.timestamp.body" under the secret's bytes. */
export function webhookSignature(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

/** The webhook-* headers: one signature per secret (two during a rotation's grace period), space-separated. */
export function webhookHeaders(id: string, timestamp: number, body: string, secrets: string[]): Record<string, string> {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': secrets.map((s) => webhookSignature(s, id, timestamp, body)).join(' '),
  };
}

// ---- words -------------------------------------------------------------------------------

const SEVERITY_ORDER = ['critical', 'high', 'medium', 'low', 'info', 'unknown'];

export function formatDuration(seconds: number | null | undefined): string | null {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return null;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function severitySummary(severities: Record<string, number>): string {
  return Object.entries(severities)
    .sort((a, b) => SEVERITY_ORDER.indexOf(a[0]) - SEVERITY_ORDER.indexOf(b[0]))
    .map(([s, n]) => `${n} ${s}`)
    .join(', ');
}

const str = (x: unknown): string | null => (typeof x === 'string' && x !== '' ? x : null);

/** A run's words: "completed: 4 of 4 steps, 12 findings, 15m 0s". */
function runFacts(run: RunView): string[] {
  const facts = [`${run.completed_steps} of ${run.total_steps} steps completed`];
  if (run.failed_steps) facts.push(`${run.failed_steps} failed`);
  if (run.skipped_steps) facts.push(`${run.skipped_steps} skipped`);
  facts.push(plural(run.total_findings, 'finding'));
  const d = formatDuration(run.duration_seconds);
  if (d) facts.push(d);
  return facts;
}

const RUN_MARK: Record<string, string> = {
  'pipeline.run.started': '▶️', 'pipeline.run.completed': '✅', 'pipeline.run.failed': '❌',
  'pipeline.run.timeout': '⏱️', 'pipeline.run.cancelled': '⏹️',
};

/** One line saying what happened, without markup: the Slack text, the email subject's core. */
export function headline(n: Notice): string {
  const { event: e, run, group } = n;
  const d = e.data;
  const pipeline = run?.pipeline_name ?? str(d.pipeline_name) ?? 'a pipeline';
  if (e.event.startsWith('pipeline.run.')) {
    return `${pipeline}: run ${e.event.slice('pipeline.run.'.length)}`;
  }
  if (e.event.startsWith('pipeline.step.')) {
    const step = str(d.step_name) ?? str(d.step_key) ?? 'a step';
    return `${pipeline}: step ${step} ${e.event.slice('pipeline.step.'.length)}`;
  }
  if (group) {
    const what = e.event === 'finding.created' ? 'new' : e.event === 'finding.reopened' ? 'reopened' : 'resolved';
    const where = run ? ` in ${pipeline}` : '';
    return `${plural(group.count, `${what} finding`)}${where} (${severitySummary(group.severities)})`;
  }
  switch (e.event) {
    case 'finding.created': case 'finding.reopened': case 'finding.resolved':
      return `Finding ${e.event.slice('finding.'.length)}: ${str(d.title) ?? str(d.rule_id) ?? d.finding_id}`;
    case 'finding.status_changed':
      return `Finding ${str(d.title) ?? d.finding_id} marked ${d.to}${d.reason ? ` (${d.reason})` : ''}`;
    case 'scan.fired':
      return `Scan ${str(d.scan_name) ?? d.scan_id} fired (${d.trigger_type}): ${plural(Array.isArray(d.run_ids) ? d.run_ids.length : 0, 'run')}` +
        (typeof d.skipped === 'number' && d.skipped > 0 ? `, ${d.skipped} skipped` : '');
    case 'agent.offline':
      return `Agent ${str(d.agent_name) ?? d.agent_id} went offline`;
    case 'channel.test':
      return `Test notification for channel ${str(d.channel_name) ?? d.channel_id}`;
    default:
      return e.event;
  }
}

/** The details of a message as label/value pairs (Slack fields, the email's table). */
function details(n: Notice): [string, string][] {
  const { event: e, run } = n;
  const d = e.data;
  const out: [string, string][] = [];
  if (run && (e.event.startsWith('pipeline.') || n.group)) {
    out.push(['Pipeline', run.pipeline_name], ['Run status', run.status], ['Steps', runFacts(run).join(', ')]);
  }
  if (e.event.startsWith('pipeline.step.')) {
    out.push(['Step', `${str(d.step_name) ?? ''} (${str(d.step_key) ?? ''})`]);
    if (typeof d.attempt === 'number') out.push(['Attempt', typeof d.max_attempts === 'number' ? `${d.attempt} of ${d.max_attempts}` : String(d.attempt)]);
    if (typeof d.findings_count === 'number') out.push(['Findings', String(d.findings_count)]);
    if (str(d.error_message)) out.push(['Error', `${d.error_code ?? 'error'}: ${d.error_message}`]);
    if (str(d.skip_reason)) out.push(['Skipped because', String(d.skip_reason)]);
  }
  if (e.event.startsWith('pipeline.run.') && run?.error_message) out.push(['Error', run.error_message]);
  if (e.event.startsWith('finding.') && !n.group) {
    for (const k of ['severity', 'tool', 'rule_id', 'status', 'from', 'to', 'reason'] as const) {
      if (str(d[k])) out.push([k.replace('_', ' '), String(d[k])]);
    }
  }
  if (e.event === 'agent.offline') {
    if (str(d.hostname)) out.push(['Host', String(d.hostname)]);
    if (str(d.last_seen_at)) out.push(['Last seen', String(d.last_seen_at)]);
  }
  if (e.event === 'channel.test') out.push(['Sent', e.timestamp]);
  return out;
}

function findingLine(f: FindingView): string {
  const where = f.asset ? ` on ${f.asset}` : '';
  return `[${f.severity ?? 'unknown'}] ${f.title ?? f.rule_id ?? f.finding_id}${f.tool ? ` (${f.tool})` : ''}${where}`;
}

function failedStepLine(s: FailedStep): string {
  return `${s.name} (${s.step_key}): ${s.status}${s.error_message ? ` — ${s.error_code ?? 'error'}: ${s.error_message}` : ''}`;
}

// ---- Slack -------------------------------------------------------------------------------

/** Slack's mrkdwn treats &, < and > as markup: escaped, everything reads as written. */
export function slackEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const cut = (s: string, max: number) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

/** An incoming-webhook body: `text` (notifications, fallbacks) and `blocks`: the run, its status, failed steps, a link. */
export function slackMessage(n: Notice): { text: string; blocks: Record<string, unknown>[] } {
  const mark = RUN_MARK[n.event.event] ?? (n.event.event.startsWith('finding.') ? '🔎' : n.event.event === 'agent.offline' ? '⚠️' : '🔔');
  const title = `${mark} ${headline(n)}`;
  const text = n.link ? `${title} ${n.link}` : title;
  const blocks: Record<string, unknown>[] = [
    { type: 'section', text: { type: 'mrkdwn', text: cut(`*${slackEscape(title)}*`, 3000) } },
  ];
  const fields = details(n).slice(0, 10).map(([k, v]) => ({ type: 'mrkdwn', text: cut(`*${slackEscape(k)}*\n${slackEscape(v)}`, 2000) }));
  if (fields.length) blocks.push({ type: 'section', fields });
  const failed = n.run && n.event.event.startsWith('pipeline.run.') ? n.run.failed : [];
  if (failed.length) {
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: cut(`*Failed steps*\n${failed.map((s) => `• ${slackEscape(failedStepLine(s))}`).join('\n')}`, 3000) } });
  }
  if (n.group && n.group.findings.length) {
    const shown = n.group.findings.slice(0, SLACK_FINDINGS);
    const more = n.group.count - shown.length;
    const lines = shown.map((f) => `• ${slackEscape(findingLine(f))}`).join('\n') + (more > 0 ? `\n…and ${more} more` : '');
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: cut(lines, 3000) } });
  }
  if (n.link) blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `<${n.link}|View in scanflow>` }] });
  return { text, blocks };
}

// ---- email -------------------------------------------------------------------------------

export function htmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** One email: "[scanflow] <headline>", a plain-text part and an HTML part saying the same. */
export function emailMessage(n: Notice): { subject: string; text: string; html: string } {
  const subject = cut(`[scanflow] ${headline(n)}`.replace(/[\r\n]+/g, ' '), 200);
  const rows = details(n);
  const failed = n.run && n.event.event.startsWith('pipeline.run.') ? n.run.failed : [];
  const findings = n.group ? n.group.findings.slice(0, EMAIL_FINDINGS) : [];
  const more = n.group ? n.group.count - findings.length : 0;

  const text = [
    headline(n),
    '',
    ...rows.map(([k, v]) => `${k}: ${v}`),
    ...(failed.length ? ['', 'Failed steps:', ...failed.map((s) => `  - ${failedStepLine(s)}`)] : []),
    ...(findings.length ? ['', 'Findings:', ...findings.map((f) => `  - ${findingLine(f)}`)] : []),
    ...(more > 0 ? [`  …and ${more} more`] : []),
    ...(n.link ? ['', `View: ${n.link}`] : []),
    '',
    `Event ${n.event.event} #${n.event.id} at ${n.event.timestamp}`,
  ].join('\n');

  const list = (title: string, items: string[]) =>
    items.length ? `<h3>${htmlEscape(title)}</h3><ul>${items.map((i) => `<li>${htmlEscape(i)}</li>`).join('')}</ul>` : '';
  const html = [
    '<!doctype html><html><body style="font-family: sans-serif">',
    `<h2>${htmlEscape(headline(n))}</h2>`,
    rows.length ? `<table>${rows.map(([k, v]) => `<tr><th align="left">${htmlEscape(k)}</th><td>${htmlEscape(v)}</td></tr>`).join('')}</table>` : '',
    list('Failed steps', failed.map(failedStepLine)),
    list('Findings', [...findings.map(findingLine), ...(more > 0 ? [`…and ${more} more`] : [])]),
    n.link ? `<p><a href="${htmlEscape(n.link)}">View in scanflow</a></p>` : '',
    `<p style="color: #888">Event ${htmlEscape(n.event.event)} #${n.event.id} at ${htmlEscape(n.event.timestamp)}</p>`,
    '</body></html>',
  ].join('\n');
  return { subject, text, html };
}
