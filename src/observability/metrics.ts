// Prometheus metrics (API.md Part 2 "Observability"): the seed system's names and labels,
// plus ingest, delivery and HTTP metrics.
//
// Two kinds, by where the truth is:
//   - Counters and histograms are per process: each process counts the transitions it
//     committed itself (src/observability/transitions.ts, run after COMMIT), so a rolled
//     back or retried transaction counts nothing and no transition is counted by two
//     processes. Prometheus scrapes every process; sum over instances for the cluster
//     (`sum without (instance) (rate(step_runs_total[5m]))`). A restart resets a process's
//     counters, which rate() and increase() handle.
//   - Gauges are states, read from the database at scrape time (sql/metrics.sql, one
//     indexed query), so every process answers the same truth whoever made the change.
//
// Totals counted in the database instead (a counter row per label set, bumped by triggers)
// would be cluster-wide without summing, but every transition would update one of a few
// hot rows and hold its lock until commit: the run and step transitions of a tenant would
// queue behind each other. Counting from history at scrape time (count(*) over runs, steps,
// commands) grows with the tables. In-process counting costs a Map update per transition.
import client from 'prom-client';

/** The process's metrics: the counters below and Node's own (heap, event loop, GC). */
export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });
// Gauges named like counters, which `promtool check metrics` refuses; their per-type
// versions (nodejs_active_handles{type}, …) stay.
for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
  registry.removeSingleMetric(name);
}

// Durations range from a no-op step (milliseconds) to a long scan (hours).
const DURATION_BUCKETS = [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14_400, 43_200, 86_400];

const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
  new client.Counter<L>({ name, help, labelNames, registers: [registry] });
const histogram = (name: string, help: string, buckets: number[]) =>
  new client.Histogram({ name, help, buckets, registers: [registry] });

// ---- the seed system's (seed 003 "Prometheus Metrics") --------------------------------------

export const pipelineRunsTotal = counter('pipeline_runs_total',
  'Pipeline runs that entered a status (pending when created or retried, running, then completed, failed, cancelled or timeout), counted by the process that made the transition',
  ['tenant_id', 'status']);
export const pipelineRunDuration = histogram('pipeline_run_duration_seconds',
  'From start to end of pipeline runs that ended (any final status)', DURATION_BUCKETS);
export const stepRunsTotal = counter('step_runs_total',
  'Step runs that entered a status (queued, running, completed, failed, timeout, skipped, cancelled); a retry enters queued again',
  ['tenant_id', 'step_key', 'status']);
export const stepRunDuration = histogram('step_run_duration_seconds',
  'From start to end of step runs that ran and ended completed, failed or timeout', DURATION_BUCKETS);
export const stepRetryTotal = counter('step_retry_total', 'Failed step attempts scheduled for a retry', []);
export const commandsTotal = counter('commands_total',
  'Commands that entered a status (pending when created, acknowledged, running, completed, failed, cancelled, expired)',
  ['tenant_id', 'type', 'status']);
export const commandDuration = histogram('command_duration_seconds',
  'From acknowledgement to completion or failure of commands their agent reported on', DURATION_BUCKETS);
export const commandsExpiredTotal = counter('commands_expired_total',
  'Commands that passed their deadline (queue_timeout while pending, step_timeout once acknowledged)', ['tenant_id']);
export const agentCommandsExecutedTotal = counter('agent_commands_executed_total',
  'Commands an agent reported as completed or failed', ['tenant_id', 'agent_id', 'status']);
export const scansScheduledTotal = counter('scans_scheduled_total', 'Scan fires by the scheduler (manual and webhook triggers not included)', ['tenant_id']);

// ---- ours -----------------------------------------------------------------------------------

export const findingsIngestedTotal = counter('findings_ingested_total',
  'Findings stored by ingests (new or seen again), by their severity', ['tenant_id', 'severity']);

/** Where a channel delivery attempt went (API.md "Events out"). */
export type DeliveryOutcome = 'delivered' | 'retrying' | 'failed' | 'disabled';
export type ChannelType = 'webhook' | 'slack' | 'email';

export const eventDeliveriesTotal = counter('event_deliveries_total',
  'Delivery attempts of events to notification channels, by channel type and outcome: delivered; retrying (failed, a retry is scheduled); failed (no retry left); disabled (the channel was disabled: a 410, or failing for 24 h)',
  ['type', 'outcome']);

/** Counts one delivery attempt of an event to a channel (the delivery task calls it once per attempt). */
export function countDelivery(channelType: ChannelType, outcome: DeliveryOutcome): void {
  eventDeliveriesTotal.inc({ type: channelType, outcome });
}

export const httpRequestDuration = new client.Histogram<'method' | 'route' | 'status'>({
  name: 'http_request_duration_seconds',
  help: 'HTTP requests by method, route pattern (never the raw path) and status; long polls last up to their wait',
  labelNames: ['method', 'route', 'status'],
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [registry],
});

// ---- gauges, from the database at scrape time --------------------------------------------

export type TenantGauges = {
  tenant_id: string;
  runs_in_progress: number;
  pending_commands: number;
  agents_online: number;
};

/** The metrics text of this process, with the gauges as the database tells them now. */
export async function metricsText(gauges: TenantGauges[]): Promise<string> {
  const scrape = new client.Registry();
  const gauge = (name: string, help: string, value: (g: TenantGauges) => number) => {
    const g = new client.Gauge<'tenant_id'>({ name, help, labelNames: ['tenant_id'], registers: [scrape] });
    for (const row of gauges) g.set({ tenant_id: row.tenant_id }, value(row));
  };
  gauge('pipeline_runs_in_progress', 'Pipeline runs running now', (g) => g.runs_in_progress);
  gauge('command_queue_size', 'Commands pending now (waiting for an agent, or claimed and not yet acknowledged)', (g) => g.pending_commands);
  gauge('agents_online', 'Agents whose health is online now', (g) => g.agents_online);
  return client.Registry.merge([registry, scrape]).metrics();
}

export const METRICS_CONTENT_TYPE = registry.contentType;
