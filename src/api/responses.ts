// The JSON the API answers, as valibot schemas: what present.ts and the routes build, written
// down for GET /openapi.json (src/api/openapi.ts converts them). Nothing validates responses
// at run time; test/openapi.test.ts validates the answers of the main calls against the
// document, and strict objects there make a field added to a presenter but not here fail.
import * as v from 'valibot';

const Id = v.pipe(v.string(), v.uuid());
const Time = v.pipe(v.string(), v.isoTimestamp());
const MaybeTime = v.nullable(Time);
const Text = v.nullable(v.string());
const Int = v.pipe(v.number(), v.integer());
const Strings = v.array(v.string());
const Json = v.record(v.string(), v.unknown());
const Described = <S extends v.GenericSchema>(schema: S, description: string) => v.pipe(schema, v.description(description));

/** The one error shape (src/api/errors.ts). A 416 adds `length`, the output's current length. */
export const ErrorBody = v.strictObject({
  error: v.looseObject({
    code: Described(v.string(), 'A stable, machine-readable code: invalid_request, unauthorized, not_found, conflict, …'),
    message: v.string(),
    details: v.optional(Described(v.array(v.strictObject({ path: v.string(), message: v.string() })),
      'One entry per problem, naming the field (`steps[2].depends_on`, `(body)`, a query parameter or header)')),
  }),
});

/** A page of a list: the next page is `?cursor=<next_cursor>`; null when this is the last. */
export const Page = <S extends v.GenericSchema>(item: S) => v.object({ items: v.array(item), next_cursor: v.nullable(v.string()) });

export const Tenant = v.strictObject({ id: Id, name: v.string(), modules: Strings, created_at: MaybeTime, updated_at: MaybeTime });
export const TenantCreated = v.strictObject({ tenant: Tenant, token: Described(v.string(), 'The tenant token, shown once') });
export const TenantToken = v.strictObject({
  id: Id, name: Text, tenant_id: Id, token: Described(v.string(), 'Shown once'), created_at: Time,
});

export const Asset = v.strictObject({
  id: Id, tenant_id: Id, type: v.string(), name: v.string(), value: Text, tags: Strings,
  criticality: v.picklist(['critical', 'high', 'medium', 'low', 'info']), metadata: Json, created_at: MaybeTime, updated_at: MaybeTime,
});

export const Agent = v.strictObject({
  id: Id, tenant_id: Id, name: v.string(), tools: Strings, capabilities: Strings, max_concurrent_jobs: Int, labels: Json,
  status: v.picklist(['active', 'disabled', 'revoked']), health: v.picklist(['unknown', 'online', 'offline']),
  active_commands: Int, version: Text, hostname: Text, scanners: Strings, collectors: Strings,
  last_report: Described(v.nullable(v.looseObject({ at: MaybeTime, extra: Json })), 'The agent\'s last heartbeat as it reported it'),
  api_key_prefix: v.string(), last_heartbeat_at: MaybeTime, last_seen_at: MaybeTime, created_at: MaybeTime, updated_at: MaybeTime,
});
export const AgentWithKey = v.strictObject({ agent: Agent, api_key: Described(v.string(), 'The agent API key, shown once') });

const PipelineStep = Described(v.looseObject({ id: v.string(), name: v.string() }), 'A step in document form, as it is written (see the request body of POST /api/v1/pipelines)');

export const Pipeline = v.strictObject({
  id: Id, tenant_id: Id, name: v.string(), description: Text, version: Int, current_version: Int, triggers: v.array(v.unknown()),
  settings: Json, tags: Strings, is_active: v.boolean(), managed_by: Text, steps: v.array(PipelineStep),
  created_at: MaybeTime, updated_at: MaybeTime,
});
export const PipelineStepSaved = v.looseObject({ id: v.string(), name: v.string(), pipeline_version: Int });
export const PipelineSteps = v.strictObject({ items: v.array(PipelineStep), next_cursor: v.null(), pipeline_version: Int });
export const WebhookToken = v.strictObject({ pipeline_id: Id, token: Described(v.string(), 'Shown once'), url: v.string() });

const RunStatus = v.picklist(['pending', 'running', 'completed', 'failed', 'cancelled', 'timeout']);
const StepStatus = v.picklist(['pending', 'queued', 'running', 'completed', 'failed', 'skipped', 'cancelled', 'timeout']);

export const StepRun = v.strictObject({
  id: Id, step_key: v.string(), name: v.string(), order: Int, depends_on: Strings, status: StepStatus, attempt: Int,
  max_attempts: Int, agent_id: v.nullable(Id), command_id: v.nullable(Id), condition_evaluated: v.boolean(),
  condition_result: v.nullable(v.boolean()), skip_reason: Text, findings_count: Int, output: Json, error_code: Text,
  error_message: Text, retry_at: MaybeTime, queued_at: MaybeTime, started_at: MaybeTime, completed_at: MaybeTime,
});

const runFields = {
  id: Id, pipeline_id: Id, pipeline_version: Int, tenant_id: Id, asset_id: v.nullable(Id), scan_id: v.nullable(Id),
  trigger_type: v.picklist(['manual', 'api', 'schedule', 'webhook', 'on_asset_discovery']), triggered_by: Text,
  status: RunStatus, context: Json, total_steps: Int, completed_steps: Int, failed_steps: Int, skipped_steps: Int,
  total_findings: Int, new_findings: Int, started_at: MaybeTime, completed_at: MaybeTime, error_message: Text,
  admitted_at: Described(MaybeTime, 'null while the run waits for a slot under its scan\'s or tenant\'s limit'),
  deadline_at: MaybeTime, created_at: MaybeTime, updated_at: MaybeTime,
};
export const Run = v.strictObject(runFields);
export const RunWithSteps = v.strictObject({ ...runFields, step_runs: v.array(StepRun) });

export const Command = v.strictObject({
  id: Id, type: v.string(), priority: v.picklist(['low', 'normal', 'high', 'critical']),
  status: v.picklist(['pending', 'acknowledged', 'running', 'completed', 'failed', 'cancelled', 'expired']),
  agent_id: v.nullable(Id), pipeline_run_id: v.nullable(Id), step_run_id: v.nullable(Id), attempt: Int, tool: Text,
  capabilities: Strings, timeout_seconds: Int,
  payload: Described(Json, 'What the agent runs: the step, its tool and config, the target, the run context and earlier steps\' outputs'),
  result: v.nullable(Json), error_code: Text, error_message: Text, exit_code: v.nullable(Int), duration_ms: v.nullable(Int),
  reported_status: Text, reported_completed_at: MaybeTime, created_at: MaybeTime, claimed_at: MaybeTime,
  claim_expires_at: MaybeTime, acknowledged_at: MaybeTime, started_at: MaybeTime, completed_at: MaybeTime,
  expires_at: MaybeTime, updated_at: MaybeTime,
});

export const Heartbeat = v.strictObject({
  status: v.literal('ok'), agent_id: Id, tenant_id: Id, heartbeat_interval_seconds: v.number(), poll_interval_seconds: v.number(),
  cancel_command_ids: Described(v.array(Id), 'Commands to stop: cancelled, expired or no longer this agent\'s'),
  max_concurrent_jobs: Int, tools: Strings, capabilities: Strings,
});

export const Scan = v.strictObject({
  id: Id, tenant_id: Id, name: v.string(), description: Text, pipeline_id: Id, targets: Json,
  schedule_type: v.picklist(['manual', 'daily', 'weekly', 'monthly', 'cron']), cron_expression: Text, timezone: v.string(),
  status: v.picklist(['active', 'paused', 'disabled']), context: Json, max_active_runs: Int, next_run_at: MaybeTime,
  last_run_at: MaybeTime, managed_by: Text, created_at: MaybeTime, updated_at: MaybeTime,
});
const Skipped = v.array(v.strictObject({ asset_id: v.nullable(Id), reason: v.string() }));
export const ScanFire = v.strictObject({
  id: Int, scan_id: Id, trigger_type: v.string(), triggered_by: Text, due_at: MaybeTime, fired_at: MaybeTime,
  run_ids: v.array(Id), waiting_runs: Int, skipped: Skipped,
});
export const ScanTriggered = v.strictObject({ fire_id: Int, runs: v.array(Run), skipped: Skipped });
export const WebhookRuns = v.strictObject({ runs: v.array(Run), ignored: v.optional(v.string()) });

const Severity = v.picklist(['critical', 'high', 'medium', 'low', 'info']);
const FindingStatus = v.picklist(['open', 'in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed']);
const findingFields = {
  id: Id, asset_id: v.nullable(Id), type: v.string(), tool: v.string(), rule_id: Text, title: v.string(), description: Text,
  severity: Severity, status: FindingStatus, resolution: Text, fingerprint: v.string(), location: v.nullable(Json),
  vulnerability: v.nullable(Json), references: v.nullable(v.array(v.unknown())), first_seen_at: MaybeTime,
  last_seen_at: MaybeTime, resolved_at: MaybeTime, occurrences: Int, first_run_id: v.nullable(Id), last_run_id: v.nullable(Id),
  last_step_key: Text,
};
export const Finding = v.strictObject(findingFields);
export const RunFinding = v.object({ ...findingFields, new: Described(v.boolean(), 'First seen by this run') });
export const FindingWithHistory = v.object({
  ...findingFields,
  sightings: Described(v.looseObject({ items: v.array(Json) }), 'The latest sightings (GET …/sightings pages through all)'),
  status_changes: Described(v.looseObject({ items: v.array(Json) }), 'The latest status changes (GET …/status-changes pages through all)'),
});
export const FindingsSummary = v.object({
  total: Int, by_severity: v.record(v.string(), Int), by_status: v.record(v.string(), Int),
  by_severity_and_status: v.record(v.string(), v.record(v.string(), Int)),
  group_by: v.optional(v.picklist(['asset', 'tool', 'rule'])), groups: v.optional(v.array(Json)),
});

export const IngestResult = v.strictObject({
  scan_id: v.nullable(Id), findings_created: Int, findings_updated: Int, findings_reopened: Int, findings_resolved: Int,
  findings_skipped: Int, assets_created: Int, assets_updated: Int,
  errors: Described(Strings, '"path: message" for each finding skipped (the seed SDK reads strings)'),
  details: v.array(v.strictObject({ path: v.string(), message: v.string() })),
});
export const ChunkResult = v.looseObject({
  chunk_id: v.string(), report_id: v.string(), chunk_index: Int, status: v.string(), assets_created: Int, assets_updated: Int,
  findings_created: Int, findings_updated: Int, findings_skipped: Int,
});
export const FingerprintsChecked = v.strictObject({ existing: Strings, missing: Strings });

export const AgentScan = v.strictObject({
  id: Id, tenant_id: Id, agent_id: Id, tool: v.string(), name: Text, asset_id: v.nullable(Id), branch: Text, commit_sha: Text,
  status: v.picklist(['running', 'completed', 'failed']), findings_count: v.nullable(Int), error_message: Text,
  started_at: MaybeTime, completed_at: MaybeTime, created_at: MaybeTime, updated_at: MaybeTime,
});

export const OutputAppended = v.looseObject({ command_id: Id, length: Int });
export const StepLogs = v.looseObject({
  step_key: v.string(), attempt: Int,
  output: v.looseObject({ text: v.string(), offset: Int, next_offset: Int, truncated: v.boolean() }),
  events: v.array(Json),
});
export const RunEvent = v.strictObject({ id: Int, event: v.string(), timestamp: Time, data: Json });

// ---- events out (src/api/routes/channels.ts, events.ts) ----------------------------------

export const Channel = v.strictObject({
  id: Id, tenant_id: Id, name: v.string(), type: v.picklist(['webhook', 'slack', 'email']), url: Text, to: v.nullable(Strings),
  events: Strings, min_severity: Text, pipeline_ids: v.nullable(Strings), enabled: v.boolean(),
  disabled_reason: Described(Text, 'Why it was disabled: by request, a 410 Gone, or failing for 24 hours'), disabled_at: MaybeTime,
  secret_prefix: Described(Text, 'The first characters of the signing secret (webhooks)'),
  previous_secret_until: Described(MaybeTime, 'Until when the secret replaced by a rotation signs too'),
  failing_since: MaybeTime, last_error: Text, last_attempt_at: MaybeTime, last_success_at: MaybeTime,
  created_at: MaybeTime, updated_at: MaybeTime,
});
const WebhookSecret = Described(v.string(), 'The Standard Webhooks signing secret (whsec_…), shown once');
export const ChannelCreated = v.strictObject({ channel: Channel, secret: v.optional(WebhookSecret) });
export const ChannelSecret = v.strictObject({ channel: Channel, secret: WebhookSecret });
export const ChannelTestSent = v.strictObject({
  event: v.strictObject({ id: Int, event: v.literal('channel.test'), timestamp: Time }),
  delivery: v.strictObject({ id: Id, message_id: Described(v.string(), 'The webhook-id receivers see'), status: v.string() }),
});
export const DeliveryAttempt = v.strictObject({
  id: v.string(), delivery_id: Id, message_id: v.string(), event_id: Int, event_type: v.string(),
  event_count: Described(Int, 'Events in the message (the findings of one ingest are one message)'),
  reason: v.picklist(['subscribed', 'pipeline_notification', 'test']), attempt: Int,
  outcome: v.picklist(['delivered', 'failed', 'gone']),
  status_code: Described(v.nullable(Int), 'HTTP status (webhook, Slack) or SMTP reply code (email); null when none came'),
  latency_ms: Int, error: Text, attempted_at: Time, next_retry_at: Described(MaybeTime, 'When the next attempt runs; null when none will'),
  delivery_status: v.picklist(['pending', 'delivered', 'failed', 'cancelled']),
});
/** An event of the feed and the stream (and the body of a webhook): seed 001's payload with its id and tenant. */
export const FeedEvent = v.strictObject({ id: Int, event: v.string(), timestamp: Time, tenant_id: Id, data: Json });

export const Health = v.looseObject({ status: v.string(), reason: v.optional(v.string()) });

/** GET /api/v1/session: the dashboard session the cookie names. */
export const DashboardSession = v.strictObject({
  tenant: Described(v.nullable(Tenant), 'The tenant it acts in; null for an admin session that has not chosen one'),
  admin: Described(v.boolean(), 'Signed in with the admin token'),
  created_at: Time,
  expires_at: Described(Time, 'When it ends, used or not'),
  idle_expires_at: Described(Time, 'When it ends if no request uses it before'),
  csrf_token: Described(v.string(), 'Send it as X-CSRF-Token with every change made through the session'),
});
