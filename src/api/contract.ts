// The HTTP API's contract for requests that change something: every POST, PUT, PATCH and
// DELETE route, with who may call it and the valibot schema of its JSON body (null: it
// reads none). One table, used three ways so it cannot drift from the routes:
//   - handlers read their body only through it (readBody / readBodyJson in input.ts, which
//     refuse an endpoint other than the one being served);
//   - test/fuzz.test.ts checks that the app routes exactly these, and generates bodies from
//     these schemas;
//   - GET /openapi.json is to be built from it: `path` is Hono's (`:id` is OpenAPI's
//     `{id}`), the key of an entry is its operationId, and opaque checks (cron, time zone,
//     CEL, durations) carry `v.examples`.
// Schemas of the domain's documents live in src/domain; the API's own bodies are here.
import * as v from 'valibot';
import { CreateAsset, UpdateAsset } from '../domain/assets.ts';
import { FreeFormValue, JsonObject, freeFormProblem, isPlainObject } from '../domain/json.ts';
import { PipelineDocument, PipelineStep } from '../domain/pipeline.ts';
import { ScanInput, ScanUpdate } from '../domain/scans.ts';
import { ChunkEnvelope } from '../domain/findings/chunk.ts';
import { CredentialsBody } from '../domain/findings/credentials.ts';
import { MAX_CHECKED_FINGERPRINTS } from '../domain/findings/model.ts';
import { AssetTypeName, Report } from '../domain/findings/report.ts';
import { SarifLog } from '../domain/findings/sarif.ts';
import { ChannelInput, ChannelUpdate, RotateSecret } from '../domain/channels.ts';
import { UUID } from './input.ts';

// ---- tenants (admin) --------------------------------------------------------------------

const Module = v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_]{0,49}$/, 'must be a lowercase module name like "scans"'));
const CreateTenant = v.object({
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  modules: v.optional(v.array(Module), ['scans']),
});
const CreateToken = v.object({ name: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(255)))) });

// ---- agents (tenant) --------------------------------------------------------------------

const Word = v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(100));
export const CreateAgent = v.object({
  name: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
  tools: v.optional(v.pipe(v.array(Word), v.maxLength(200)), []),
  capabilities: v.optional(v.pipe(v.array(Word), v.maxLength(200)), []),
  max_concurrent_jobs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000)), 5),
  labels: v.optional(JsonObject, {}),
});

// ---- pipelines, templates, scans (tenant) -----------------------------------------------

const CopyName = v.object({ name: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255))) });
const ReorderSteps = v.object({ order: v.pipe(v.array(v.string()), v.minLength(1, 'must list the step keys')) });
const RunPipeline = v.object({
  asset_id: v.optional(v.nullable(v.pipe(v.string(), v.regex(UUID, 'must be a UUID')))),
  context: v.optional(JsonObject, {}),
  triggered_by: v.optional(v.pipe(v.string(), v.maxLength(255))),
});
const TriggerScan = v.object({ context: v.optional(JsonObject, {}) });

// ---- findings (tenant) ------------------------------------------------------------------

// Triage: any status; the reason is recorded in the finding.status_changed event (and is the
// resolution of a finding resolved, marked a false positive, an accepted risk or suppressed).
const TriageFinding = v.object({
  status: v.picklist(['open', 'in_progress', 'resolved', 'false_positive', 'accepted_risk', 'suppressed'],
    'must be one of open, in_progress, resolved, false_positive, accepted_risk, suppressed'),
  reason: v.optional(v.nullable(v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(1000)))),
});

// ---- the dashboard's session (routes/session.ts) ------------------------------------------

const SignIn = v.object({ token: v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(4096)) });
const ChooseTenant = v.object({ tenant_id: v.pipe(v.string(), v.regex(UUID, 'must be a tenant id (UUID)')) });

// ---- webhooks (a pipeline's webhook token, or a tenant token) ----------------------------

// The body may be a whole provider payload (a GitHub push, say): only these fields are read,
// and `event` and `context` only when they have our shape (a GitHub status event carries a
// string `context`). asset_id is ours alone and must be an asset id.
const Webhook = v.looseObject({
  asset_id: v.optional(v.pipe(v.string(), v.regex(UUID, 'must be an asset id (UUID)'))),
  // Becomes the run's context when it is an object: then within the free-form bounds.
  context: v.optional(v.pipe(v.unknown(), v.rawCheck(({ dataset, addIssue }) => {
    const problem = isPlainObject(dataset.value) ? freeFormProblem(dataset.value) : null;
    if (problem) addIssue({ message: problem });
  }))),
});

// ---- the agent API (agent key) ----------------------------------------------------------

const Text = (max: number) => v.pipe(v.string(), v.maxLength(max));
const Names = v.pipe(v.array(v.pipe(v.string(), v.minLength(1, 'must not be empty'), v.maxLength(100))), v.maxLength(200));
const Counter = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER));
const CommandIds = v.pipe(v.array(v.pipe(v.string(), v.regex(UUID, 'must be a command id'))), v.maxLength(1000));

// The seed SDK's HeartbeatRequest (SendHeartbeat; Go's omitempty leaves out every zero
// value, so every field is optional). Scanners and collectors are shown on the agent; name,
// status, message and the system figures are its last report. Any other field is kept as
// the agent's heartbeat data: each within the free-form bounds.
const Heartbeat = v.objectWithRest({
  name: v.optional(v.nullable(Text(255))),
  status: v.optional(v.nullable(Text(50))),
  version: v.optional(v.nullable(Text(100))),
  hostname: v.optional(v.nullable(Text(255))),
  message: v.optional(v.nullable(Text(10_000))),
  scanners: v.optional(v.nullable(Names)),
  collectors: v.optional(v.nullable(Names)),
  uptime_seconds: v.optional(v.nullable(Counter)),
  total_scans: v.optional(v.nullable(Counter)),
  errors: v.optional(v.nullable(Counter)),
  // Summed over cores by some agents: up to 100% on each of 1,024.
  cpu_percent: v.optional(v.nullable(v.pipe(v.number(), v.minValue(0), v.maxValue(102_400)))),
  memory_percent: v.optional(v.nullable(v.pipe(v.number(), v.minValue(0), v.maxValue(100)))),
  active_jobs: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2_147_483_647)))),
  region: v.optional(v.nullable(Text(100))),
  command_ids: v.optional(CommandIds),
  running_command_ids: v.optional(CommandIds),
}, FreeFormValue);

const Count = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2_147_483_647));
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/i;
const Timestamp = v.pipe(
  v.string(),
  v.regex(RFC3339, 'must be an RFC 3339 timestamp like "2026-01-31T12:00:00Z"'),
  v.check((s) => Number.isFinite(Date.parse(s)), 'must be a real date and time'),
  v.examples(['2026-01-31T12:00:00Z', '2026-01-31T12:00:00.123456789+07:00']),
);
// A completion as the seed SDK sends it (CompleteCommand: {result: CommandResult}): status,
// completed_at, duration_ms and exit_code are recorded on the command, `metadata` is the
// step's output when `output` is absent, status "failed" makes it a failure with `error`
// as the message. Other fields, at either level (duration_ms and exit_code too), make the
// step's output when neither `output` nor `metadata` is given (see completion in
// routes/agent-api.ts): each within the free-form bounds, and so is the output they make
// together.
const ExitCode = v.pipe(v.number(), v.integer(), v.minValue(-2_147_483_648), v.maxValue(2_147_483_647));
const AgentResult = v.objectWithRest({
  findings_count: v.optional(v.nullable(Count)),
  output: v.optional(v.nullable(JsonObject)),
  status: v.optional(v.nullable(Text(50))),
  completed_at: v.optional(v.nullable(Timestamp)),
  duration_ms: v.optional(v.nullable(Counter)),
  exit_code: v.optional(v.nullable(ExitCode)),
  error: v.optional(v.nullable(Text(10_000))),
  metadata: v.optional(v.nullable(JsonObject)),
}, FreeFormValue);
const CompleteCommand = v.objectWithRest({
  findings_count: v.optional(v.nullable(Count)),
  output: v.optional(v.nullable(JsonObject)),
  result: v.optional(v.nullable(AgentResult)),
}, FreeFormValue);
const FailCommand = v.pipe(
  v.looseObject({
    error_message: v.optional(v.pipe(v.string(), v.maxLength(10_000))),
    error: v.optional(v.pipe(v.string(), v.maxLength(10_000))),
    error_code: v.optional(v.nullable(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'must be a short code like "tool_error"')))),
    // Recorded on the command as for a completion: what the tool exited with, how long it ran.
    exit_code: v.optional(v.nullable(ExitCode)),
    duration_ms: v.optional(v.nullable(Counter)),
  }),
  v.forward(
    v.check((b) => typeof (b.error_message ?? b.error) === 'string' && (b.error_message ?? b.error)!.trim() !== '', 'is required: say why the command failed'),
    ['error_message'],
  ),
);

// Findings ingestion (API.md Part 2): the documents are the domain's (src/domain/findings/);
// a report is read finding by finding (one that cannot be stored is skipped with its path),
// so these are the shapes of a body that is stored whole.
const IngestReportBody = v.union([v.object({ report: Report }), Report]);
const CheckFingerprints = v.object({
  fingerprints: v.pipe(
    v.array(v.pipe(v.string(), v.maxLength(1024))),
    v.maxLength(MAX_CHECKED_FINGERPRINTS, `at most ${MAX_CHECKED_FINGERPRINTS.toLocaleString('en')} fingerprints per request`),
  ),
});
const AgentScanAsset = v.object({
  type: AssetTypeName,
  value: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(4096)),
  name: v.optional(v.nullable(v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(1024)))),
});
const CreateAgentScan = v.pipe(
  v.object({
    tool: v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255)),
    asset_id: v.optional(v.nullable(v.pipe(v.string(), v.regex(UUID, 'must be an asset id (UUID)')))),
    asset: v.optional(v.nullable(AgentScanAsset)),
    branch: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(1000)))),
    commit_sha: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(200)))),
    name: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(255)))),
  }),
  v.forward(v.check((b) => !(b.asset_id && b.asset), 'give asset_id or asset, not both'), ['asset']),
);
const FinishAgentScan = v.object({
  status: v.picklist(['completed', 'failed'], 'must be completed or failed'),
  findings_count: v.optional(v.nullable(Count)),
  error_message: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(10_000)))),
});

// ---- the table --------------------------------------------------------------------------

/**
 * Who may call: the instance admin token, a tenant token, an agent key, a pipeline's webhook
 * token (or a tenant token), or anyone ('none': the dashboard's sign-in, whose token is its
 * body, and sign-out, which ends the session its cookie names if any).
 */
export type Auth = 'admin' | 'tenant' | 'agent' | 'webhook' | 'none';
export type Method = 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export type Endpoint<B extends v.GenericSchema | null = v.GenericSchema | null> = {
  readonly method: Method;
  /** The full path as routed, in Hono's syntax. */
  readonly path: string;
  readonly auth: Auth;
  /** The body's schema; null when the endpoint reads no body (one sent is ignored). */
  readonly body: B;
  /** Other names a field is accepted under (alias → field), for clients of the seeds. */
  readonly aliases?: Readonly<Record<string, string>>;
  /**
   * A body that is not JSON: the media types it is taken as, read as bytes with no schema
   * (`body` is null; readBodyBytes in input.ts). Other types are a 415, JSON included.
   */
  readonly media?: readonly string[];
};

const endpoint = <const B extends v.GenericSchema | null>(
  method: Method, path: string, auth: Auth, body: B, extra: { aliases?: Record<string, string>; media?: readonly string[] } = {},
): Endpoint<B> => ({ method, path, auth, body, ...extra });

// Seed 003's clients send pipeline_template_id; it names the same pipeline.
const SCAN_ALIASES = { pipeline_template_id: 'pipeline_id' };

export const endpoints = {
  signIn: endpoint('POST', '/api/v1/session', 'none', SignIn),
  chooseTenant: endpoint('POST', '/api/v1/session/tenant', 'admin', ChooseTenant),
  signOut: endpoint('DELETE', '/api/v1/session', 'none', null),

  createTenant: endpoint('POST', '/api/v1/tenants', 'admin', CreateTenant),
  createTenantToken: endpoint('POST', '/api/v1/tenants/:id/tokens', 'admin', CreateToken),

  createAsset: endpoint('POST', '/api/v1/assets', 'tenant', CreateAsset),
  updateAsset: endpoint('PUT', '/api/v1/assets/:id', 'tenant', UpdateAsset),
  deleteAsset: endpoint('DELETE', '/api/v1/assets/:id', 'tenant', null),

  createAgent: endpoint('POST', '/api/v1/agents', 'tenant', CreateAgent),
  updateAgent: endpoint('PUT', '/api/v1/agents/:id', 'tenant', v.partial(CreateAgent)),
  activateAgent: endpoint('POST', '/api/v1/agents/:id/activate', 'tenant', null),
  deactivateAgent: endpoint('POST', '/api/v1/agents/:id/deactivate', 'tenant', null),
  regenerateAgentKey: endpoint('POST', '/api/v1/agents/:id/regenerate-key', 'tenant', null),
  revokeAgent: endpoint('DELETE', '/api/v1/agents/:id', 'tenant', null),

  createPipeline: endpoint('POST', '/api/v1/pipelines', 'tenant', PipelineDocument),
  updatePipeline: endpoint('PUT', '/api/v1/pipelines/:id', 'tenant', PipelineDocument),
  deletePipeline: endpoint('DELETE', '/api/v1/pipelines/:id', 'tenant', null),
  createWebhookToken: endpoint('POST', '/api/v1/pipelines/:id/webhook-token', 'tenant', null),
  clonePipeline: endpoint('POST', '/api/v1/pipelines/:id/clone', 'tenant', CopyName),
  addStep: endpoint('POST', '/api/v1/pipelines/:id/steps', 'tenant', PipelineStep),
  updateStep: endpoint('PUT', '/api/v1/pipelines/:id/steps/:stepKey', 'tenant', PipelineStep),
  deleteStep: endpoint('DELETE', '/api/v1/pipelines/:id/steps/:stepKey', 'tenant', null),
  reorderSteps: endpoint('POST', '/api/v1/pipelines/:id/steps/reorder', 'tenant', ReorderSteps),
  runPipeline: endpoint('POST', '/api/v1/pipelines/:id/run', 'tenant', RunPipeline),
  useTemplate: endpoint('POST', '/api/v1/pipeline-templates/:id/use', 'tenant', CopyName),

  cancelRun: endpoint('POST', '/api/v1/pipeline-runs/:id/cancel', 'tenant', null),
  retryRun: endpoint('POST', '/api/v1/pipeline-runs/:id/retry', 'tenant', null),

  createScan: endpoint('POST', '/api/v1/scans', 'tenant', ScanInput, { aliases: SCAN_ALIASES }),
  updateScan: endpoint('PUT', '/api/v1/scans/:id', 'tenant', ScanUpdate, { aliases: SCAN_ALIASES }),
  deleteScan: endpoint('DELETE', '/api/v1/scans/:id', 'tenant', null),
  triggerScan: endpoint('POST', '/api/v1/scans/:id/trigger', 'tenant', TriggerScan),

  triageFinding: endpoint('PATCH', '/api/v1/findings/:id', 'tenant', TriageFinding),

  // Notification channels (src/domain/channels.ts): the secret is in the answer, never in a body.
  createChannel: endpoint('POST', '/api/v1/channels', 'tenant', ChannelInput),
  updateChannel: endpoint('PUT', '/api/v1/channels/:id', 'tenant', ChannelUpdate),
  deleteChannel: endpoint('DELETE', '/api/v1/channels/:id', 'tenant', null),
  rotateChannelSecret: endpoint('POST', '/api/v1/channels/:id/rotate-secret', 'tenant', RotateSecret),
  testChannel: endpoint('POST', '/api/v1/channels/:id/test', 'tenant', null),

  triggerWebhook: endpoint('POST', '/api/v1/webhooks/:pipelineId', 'webhook', Webhook),

  heartbeat: endpoint('POST', '/api/v1/agent/heartbeat', 'agent', Heartbeat),
  ackCommand: endpoint('POST', '/api/v1/agent/commands/:id/ack', 'agent', null),
  acknowledgeCommand: endpoint('POST', '/api/v1/agent/commands/:id/acknowledge', 'agent', null),
  startCommand: endpoint('POST', '/api/v1/agent/commands/:id/start', 'agent', null),
  completeCommand: endpoint('POST', '/api/v1/agent/commands/:id/complete', 'agent', CompleteCommand),
  failCommand: endpoint('POST', '/api/v1/agent/commands/:id/fail', 'agent', FailCommand),
  // A tool's output, as bytes (routes/command-output.ts): text of any kind, or octet-stream.
  uploadCommandOutput: endpoint('POST', '/api/v1/agent/commands/:id/logs', 'agent', null, { media: ['text/*', 'application/octet-stream'] }),

  ingestReport: endpoint('POST', '/api/v1/agent/ingest', 'agent', IngestReportBody),
  // A SARIF log is JSON: application/sarif+json or application/json (routes/ingest.ts checks which).
  ingestSarif: endpoint('POST', '/api/v1/agent/ingest/sarif', 'agent', SarifLog),
  checkFingerprints: endpoint('POST', '/api/v1/agent/ingest/check', 'agent', CheckFingerprints),
  ingestChunk: endpoint('POST', '/api/v1/agent/ingest/chunk', 'agent', ChunkEnvelope),
  ingestCredentials: endpoint('POST', '/api/v1/agent/credentials/ingest', 'agent', CredentialsBody),
  createAgentScan: endpoint('POST', '/api/v1/agent/scans', 'agent', CreateAgentScan),
  finishAgentScan: endpoint('PATCH', '/api/v1/agent/scans/:id', 'agent', FinishAgentScan),
} as const satisfies Record<string, Endpoint>;

export type EndpointName = keyof typeof endpoints;
