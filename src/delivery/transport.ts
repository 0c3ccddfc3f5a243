// Sending one attempt: an HTTP POST (webhooks, Slack) or an email through SMTP_URL. Each has
// a deadline covering everything from connecting to the answer; redirects are not followed
// (a 3xx is the answer, a failure); only http and https URLs are ever requested, and never
// an address domain/destinations.ts rules out. Nothing here touches the database: attempts
// run outside any transaction.
import dns, { type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import { urlProblem } from '../domain/channels.ts';
import { addressProblem, literalAddress, type PrivateNetworks } from '../domain/destinations.ts';

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

/**
 * A lookup that resolves as the system does, then refuses an address deliveries never go to
 * (domain/destinations.ts). The connection is made to the address checked here, so a name
 * that resolves elsewhere the next time (DNS rebinding) changes nothing.
 */
function checkedLookup(privateNetworks: PrivateNetworks): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const found = addresses as LookupAddress[];
      const refused = found.map((a) => addressProblem(a.address, privateNetworks)).find((p) => p !== null);
      if (refused || found.length === 0) {
        return callback(Object.assign(new Error(`${hostname}: ${refused ?? 'no address'}`), { code: 'EDESTINATION' }), '', 0);
      }
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, found);
      callback(null, found[0].address, found[0].family);
    });
  };
}

/**
 * POSTs JSON text; the answer's status decides (domain/channels.ts outcomeOfStatus). The
 * destination is checked against privateNetworks when the URL names an address and when its
 * name is resolved.
 */
export async function postJson(
  url: string, body: string, headers: Record<string, string>, timeoutMs: number, privateNetworks: PrivateNetworks = 'allow',
): Promise<SendResult> {
  const started = performance.now();
  const latency = () => Math.round(performance.now() - started);
  const problem = urlProblem(url);
  if (problem) return { statusCode: null, error: `url ${problem}`, latencyMs: 0 };
  const target = new URL(url);
  const literal = literalAddress(target.hostname);
  const refused = literal ? addressProblem(literal, privateNetworks) : null;
  if (refused) return { statusCode: null, error: refused, latencyMs: 0 };
  const signal = AbortSignal.timeout(timeoutMs);
  const payload = Buffer.from(body);
  try {
    const { status, location, answer } = await new Promise<{ status: number; location: string | undefined; answer: string }>((resolve, reject) => {
      const req = (target.protocol === 'https:' ? https : http).request(target, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': payload.length, 'user-agent': USER_AGENT, ...headers },
        lookup: checkedLookup(privateNetworks),
        signal,
      }, (res) => {
        // At most ANSWER_BYTES of the answer are read; the rest goes with the connection.
        const chunks: Buffer[] = [];
        let size = 0;
        const done = () => {
          res.destroy();
          resolve({ status: res.statusCode ?? 0, location: res.headers.location, answer: Buffer.concat(chunks).toString('utf8').slice(0, ANSWER_BYTES) });
        };
        res.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          size += chunk.length;
          if (size >= ANSWER_BYTES) done();
        });
        res.on('end', done);
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
    if (status >= 200 && status < 300) return { statusCode: status, error: null, latencyMs: latency() };
    if (status >= 300 && status < 400) {
      return { statusCode: status, error: `redirect to ${location ?? '(no location)'} not followed`, latencyMs: latency() };
    }
    const excerpt = answer.replace(/\s+/g, ' ').trim().slice(0, 200);
    return { statusCode: status, error: `HTTP ${status}${excerpt ? `: ${excerpt}` : ''}`, latencyMs: latency() };
  } catch (err) {
    if (signal.aborted) return { statusCode: null, error: `no answer within ${timeoutMs / 1000} s`, latencyMs: latency() };
    if ((err as { code?: string }).code === 'EDESTINATION') return { statusCode: null, error: (err as Error).message, latencyMs: latency() };
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
