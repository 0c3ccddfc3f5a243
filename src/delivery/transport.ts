// Sending one attempt: an HTTP POST (webhooks, Slack) or an email through SMTP_URL. Each has
// a deadline covering everything from connecting to the answer; redirects are not followed
// (a 3xx is the answer, a failure); only http and https URLs are ever requested. Nothing here
// touches the database: attempts run outside any transaction.
import nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import { urlProblem } from '../domain/channels.ts';

export type SendResult = {
  /** HTTP status or SMTP reply code; null when no answer came. */
  statusCode: number | null;
  /** Why it failed (no answer, a refusal, the deadline); null when it went through. */
  error: string | null;
  latencyMs: number;
};

const USER_AGENT = 'scanflow-webhooks/1 (+https://www.standardwebhooks.com)';
/** What of an answer's body is read (the rest is dropped with the connection). */
const ANSWER_BYTES = 4096;

function errorText(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return (cause ? `${e.message ?? 'request failed'} (${cause})` : e.message ?? String(err)).slice(0, 500);
}

/** Reads at most ANSWER_BYTES of a body, then lets the rest go. */
async function readSome(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < ANSWER_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).toString('utf8').slice(0, ANSWER_BYTES);
}

/** POSTs JSON text; the answer's status decides (domain/channels.ts outcomeOfStatus). */
export async function postJson(url: string, body: string, headers: Record<string, string>, timeoutMs: number): Promise<SendResult> {
  const started = performance.now();
  const latency = () => Math.round(performance.now() - started);
  const problem = urlProblem(url);
  if (problem) return { statusCode: null, error: `url ${problem}`, latencyMs: 0 };
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetch(url, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'user-agent': USER_AGENT, ...headers },
      redirect: 'manual',
      signal,
    });
    const answer = await readSome(res);
    if (res.status >= 200 && res.status < 300) return { statusCode: res.status, error: null, latencyMs: latency() };
    if (res.status >= 300 && res.status < 400) {
      return { statusCode: res.status, error: `redirect to ${res.headers.get('location') ?? '(no location)'} not followed`, latencyMs: latency() };
    }
    const excerpt = answer.replace(/\s+/g, ' ').trim().slice(0, 200);
    return { statusCode: res.status, error: `HTTP ${res.status}${excerpt ? `: ${excerpt}` : ''}`, latencyMs: latency() };
  } catch (err) {
    if (signal.aborted) return { statusCode: null, error: `no answer within ${timeoutMs / 1000} s`, latencyMs: latency() };
    return { statusCode: null, error: errorText(err), latencyMs: latency() };
  }
}

const transports = new Map<string, Transporter>();

function transportFor(smtpUrl: string, timeoutMs: number): Transporter {
  const key = `${timeoutMs} ${smtpUrl}`;
  let t = transports.get(key);
  if (!t) {
    // nodemailer reads the URL's credentials and options (?ignoreTLS=true,
    // ?tls.rejectUnauthorized=false); STARTTLS is used whenever the server offers it.
    t = nodemailer.createTransport({
      url: smtpUrl,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
    } as Parameters<typeof nodemailer.createTransport>[0]);
    transports.set(key, t);
  }
  return t;
}

export type Mail = { from: string; to: string[]; subject: string; text: string; html: string; headers: Record<string, string> };

/** Sends one email through SMTP_URL; the SMTP reply code is the status code. */
export async function sendMail(smtpUrl: string | null, mail: Mail, timeoutMs: number): Promise<SendResult> {
  const started = performance.now();
  const latency = () => Math.round(performance.now() - started);
  if (!smtpUrl) return { statusCode: null, error: 'SMTP_URL is not set on the worker: email cannot be sent', latencyMs: 0 };
  let timer: NodeJS.Timeout | undefined;
  try {
    const sent = transportFor(smtpUrl, timeoutMs).sendMail(mail);
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
    });
    const info = (await Promise.race([sent, deadline])) as { response?: string; rejected?: unknown[] };
    const code = Number(/^(\d{3})/.exec(info.response ?? '')?.[1] ?? NaN);
    const rejected = (info.rejected ?? []).map(String);
    if (rejected.length) return { statusCode: Number.isFinite(code) ? code : null, error: `refused recipients: ${rejected.join(', ')}`, latencyMs: latency() };
    return { statusCode: Number.isFinite(code) ? code : null, error: null, latencyMs: latency() };
  } catch (err) {
    const e = err as { responseCode?: number };
    return { statusCode: e.responseCode ?? null, error: errorText(err), latencyMs: latency() };
  } finally {
    clearTimeout(timer);
  }
}
