// The bench's events section (`npm run bench -- events`): webhooks from the running
// orchestrator to a receiver on 127.0.0.1 that answers 200 at once. The receiver runs in a
// worker thread of this process (its own event loop: the server's does not time it) and
// notes when each webhook arrived.
//   1. delay, one at a time: a one-step run; its agent acknowledges the command, which moves
//      the step to running and writes pipeline.step.started in that transaction; a channel
//      subscribed to it gets a webhook. Delay = arrival − the event's created_at (the
//      transition's transaction start; same machine, same clock). Target p50 ≤ 50 ms idle.
//   2. throughput: BENCH_EVENT_BURST agent.offline events written by one transaction (the
//      routing trigger makes as many deliveries and jobs): deliveries per second from its
//      commit to the last arrival, at DELIVERY_CONCURRENCY; each delivered once, signed,
//      with its own webhook-id.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { Webhook } from 'standardwebhooks';
import { call } from './support/http-client.ts';
import { Misbehaviour, cpuLine, cpuMark, cpuReport, cpuSince, f1, mapSummary, ok, sleep, summarize, type CpuOut } from './support/measure.ts';

// ---------------------------------------------------------------------------------------
// Receiver thread

type Arrival = { at: number; webhookId: string; id: number; event: string; runId: string | null; body?: string; headers?: Record<string, string> };

function receive(): void {
  let kept = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.timeOrigin + performance.now();
      res.writeHead(200).end('ok');
      const body = Buffer.concat(chunks).toString('utf8');
      const json = JSON.parse(body) as { id: number; event: string; data: { pipeline_run_id?: string } };
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
      // The first few whole, for the main thread to verify their signatures.
      const whole = kept++ < 3 ? { body, headers } : {};
      parentPort!.postMessage({
        at, webhookId: String(req.headers['webhook-id']), id: json.id, event: json.event, runId: json.data.pipeline_run_id ?? null, ...whole,
      } satisfies Arrival);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.listen(0, '127.0.0.1', () => parentPort!.postMessage({ port: (server.address() as AddressInfo).port }));
}

if (!isMainThread && (workerData as { section?: string } | null)?.section === 'events') receive();

// ---------------------------------------------------------------------------------------
// Main thread

export type EventsReport = {
  delay_ms: ReturnType<typeof mapSummary>;
  burst: { events: number; delivered: number; wall_s: number; deliveries_per_s: number; concurrency: number; cpu: CpuOut };
};

export type EventsOptions = {
  base: string;
  adminToken: string;
  db: pg.Pool;
  samples: number;
  warmup: number;
  burst: number;
  concurrency: number;
  progress: (line: string) => void;
};

export const EVENTS_TARGET_P50_MS = 50;

/** Runs the events section against the running orchestrator; a Misbehaviour when the system misbehaves. */
export async function benchEvents(o: EventsOptions): Promise<EventsReport> {
  const { base, db, progress } = o;
  const receiver = new Worker(new URL(import.meta.url), { workerData: { section: 'events' } });
  const arrivals: Arrival[] = [];
  let onArrival: ((a: Arrival) => void) | null = null;
  const port = await new Promise<number>((resolve, reject) => {
    receiver.once('error', reject);
    receiver.on('message', (m: { port?: number } & Partial<Arrival>) => {
      if (m.port) return resolve(m.port);
      arrivals.push(m as Arrival);
      onArrival?.(m as Arrival);
    });
  });
  try {
    // --- setup over HTTP: a tenant, an agent, a one-step pipeline, a channel for its step starts
    const created = ok(await call<{ tenant: { id: string }; token: string }>(base, 'POST', '/api/v1/tenants', {
      token: o.adminToken, body: { name: 'bench-events' },
    }), 'create tenant');
    const T = created.token;
    const agent = ok(await call<{ api_key: string }>(base, 'POST', '/api/v1/agents', {
      token: T, body: { name: 'bench-events-agent', tools: ['bench-e'], max_concurrent_jobs: 5 },
    }), 'create agent').api_key;
    const pipeline = ok(await call<{ id: string }>(base, 'POST', '/api/v1/pipelines', {
      token: T, body: { name: 'bench-events', steps: [{ id: 'e', tool: 'bench-e', timeout: '10m' }] },
    }), 'create pipeline');
    const channel = ok(await call<{ channel: { id: string }; secret: string }>(base, 'POST', '/api/v1/channels', {
      token: T, body: { name: 'bench-receiver', type: 'webhook', url: `http://127.0.0.1:${port}/hook`, events: ['pipeline.step.started', 'agent.offline'] },
    }), 'create channel');

    // --- 1. delay, one transition at a time
    progress(`events: transition → delivery delay, ${o.warmup} warm-up + ${o.samples} samples`);
    const delays: number[] = [];
    const sampled: { id: number; at: number }[] = [];
    for (let i = 0; i < o.warmup + o.samples; i++) {
      const run = ok(await call<{ id: string }>(base, 'POST', `/api/v1/pipelines/${pipeline.id}/run`, { token: T, body: {} }), 'trigger run');
      const [cmd] = ok(await call<{ id: string; payload: { pipeline_run_id: string } }[]>(base, 'GET', '/api/v1/agent/commands?limit=1&wait=10', { apiKey: agent }), 'poll');
      if (!cmd || cmd.payload.pipeline_run_id !== run.id) throw new Misbehaviour(`events: the agent was not given run ${run.id}'s command`);
      const arrived = new Promise<Arrival>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Misbehaviour(`events: no webhook for run ${run.id} within 10 s`)), 10_000);
        onArrival = (a) => {
          if (a.runId === run.id && a.event === 'pipeline.step.started') {
            clearTimeout(timer);
            onArrival = null;
            resolve(a);
          }
        };
      });
      ok(await call(base, 'POST', `/api/v1/agent/commands/${cmd.id}/ack`, { apiKey: agent }), 'ack');
      const a = await arrived;
      if (i >= o.warmup) sampled.push({ id: a.id, at: a.at });
      ok(await call(base, 'POST', `/api/v1/agent/commands/${cmd.id}/complete`, { apiKey: agent, body: {} }), 'complete');
    }
    const { rows: createdAt } = await db.query<{ id: number; ms: number }>(
      `SELECT id, extract(epoch FROM created_at) * 1000 AS ms FROM events WHERE id = ANY ($1::bigint[])`, [sampled.map((s) => s.id)]);
    const at = new Map(createdAt.map((r) => [Number(r.id), Number(r.ms)]));
    for (const s of sampled) delays.push(s.at - at.get(s.id)!);
    const first = arrivals.find((a) => a.body);
    if (!first) throw new Misbehaviour('events: no webhook arrived whole');
    try {
      new Webhook(channel.secret).verify(first.body!, first.headers!);
    } catch (err) {
      throw new Misbehaviour(`events: a webhook's signature does not verify: ${(err as Error).message}`);
    }

    // --- 2. throughput: a burst of events from one transaction
    progress(`events: ${o.burst} events in one transaction, delivered at concurrency ${o.concurrency}`);
    const before = arrivals.length;
    const cpu = cpuMark();
    const committed = Date.now();
    await db.query(
      `INSERT INTO events (tenant_id, type, data)
       SELECT $1, 'agent.offline', jsonb_build_object('agent_id', gen_random_uuid(), 'agent_name', 'bench-' || g) FROM generate_series(1, $2::int) g`,
      [created.tenant.id, o.burst]);
    const deadline = Date.now() + 600_000;
    while (arrivals.length < before + o.burst) {
      if (Date.now() > deadline) throw new Misbehaviour(`events: ${arrivals.length - before} of ${o.burst} webhooks within 10 min`);
      await sleep(20);
    }
    const last = Math.max(...arrivals.slice(before).map((a) => a.at));
    const cpuSpan = cpuSince(cpu);
    await sleep(500); // anything sent twice would arrive by now
    const burstArrivals = arrivals.slice(before);
    const ids = new Set(burstArrivals.map((a) => a.webhookId));
    if (burstArrivals.length !== o.burst || ids.size !== o.burst) {
      throw new Misbehaviour(`events: ${burstArrivals.length} webhooks with ${ids.size} webhook-ids for ${o.burst} events`);
    }
    const { rows: [d] } = await db.query<{ delivered: number }>(
      `SELECT count(*)::int AS delivered FROM deliveries WHERE channel_id = $1 AND event_type = 'agent.offline' AND status = 'delivered'`,
      [channel.channel.id]);
    if (d.delivered !== o.burst) throw new Misbehaviour(`events: ${d.delivered} of ${o.burst} deliveries recorded delivered`);
    const wall = (last - committed) / 1000;
    return {
      delay_ms: mapSummary(summarize(delays)),
      burst: { events: o.burst, delivered: d.delivered, wall_s: Math.round(wall * 100) / 100, deliveries_per_s: Math.round(o.burst / wall), concurrency: o.concurrency, cpu: cpuReport(cpuSpan, o.burst) },
    };
  } finally {
    await receiver.terminate();
  }
}

export function eventsTargets(e: EventsReport) {
  return { events_delay_p50: { value_ms: e.delay_ms.p50, target_ms: EVENTS_TARGET_P50_MS, pass: e.delay_ms.p50 <= EVENTS_TARGET_P50_MS } };
}

export function printEvents(e: EventsReport, out: (line?: string) => void): void {
  const d = e.delay_ms;
  out(`6. Events out: webhooks (Standard Webhooks, signed) to a receiver on 127.0.0.1`);
  out(`   transition → delivery (a step's acknowledgement writes pipeline.step.started → the receiver has it), ${d.n} one at a time:`);
  out(`   p50 ${f1(d.p50)} ms   p95 ${f1(d.p95)} ms   p99 ${f1(d.p99)} ms   max ${f1(d.max)} ms`);
  const b = e.burst;
  out(`   ${b.events} events written by one transaction: all delivered ${b.wall_s} s after its commit, ${b.deliveries_per_s} deliveries/s ` +
    `(DELIVERY_CONCURRENCY ${b.concurrency}), each once`);
  out(`      CPU per delivery: ${cpuLine(b.cpu)}`);
}
