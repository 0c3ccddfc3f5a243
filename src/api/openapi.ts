// GET /openapi.json: the OpenAPI 3.1 document of this API, generated from the valibot
// schemas that validate the requests (@valibot/to-json-schema, JSON Schema 2020-12, which is
// OpenAPI 3.1's dialect):
//   - every POST, PUT, PATCH and DELETE with its body from the contract (contract.ts);
//   - every GET from `reads` below, with the query schemas its route parses;
//   - responses from responses.ts (`responsesOf`), and the one error shape for 4xx and 5xx.
// test/openapi.test.ts checks that every route the app serves is here, that the document is
// valid OpenAPI 3.1, and that the answers of the main calls match their schemas.
import * as v from 'valibot';
import { toJsonSchema, type ConversionConfig, type JsonSchema } from '@valibot/to-json-schema';
import { endpoints, type Auth, type Endpoint } from './contract.ts';
import { PageQuery } from './input.ts';
import * as R from './responses.ts';
import { ListQuery as AgentListQuery } from './routes/agents.ts';
import { ListQuery as AssetListQuery } from './routes/assets.ts';
import { ListQuery as CommandListQuery } from './routes/commands.ts';
import { ListQuery as RunListQuery, OutputQuery, EventsQuery } from './routes/runs.ts';
import { ListQuery as ScanListQuery } from './routes/scans.ts';
import { ListQuery as FindingListQuery, SummaryQuery, HistoryQuery } from './routes/findings.ts';
import { VersionQuery } from './routes/pipelines.ts';
import { PollQuery } from './routes/agent-api.ts';
import { UploadQuery } from './routes/command-output.ts';
import { FindingsPageQuery, LivePageQuery, RunPageQuery, RunsPageQuery } from '../dashboard/routes.ts';

type Schema = v.GenericSchema;
type ObjectSchema = v.ObjectSchema<v.ObjectEntries, v.ErrorMessage<v.ObjectIssue> | undefined>;
/**
 * Who may call a read: as the contract's, or nobody in particular, or the METRICS_TOKEN, or
 * the dashboard's session cookie alone, or a dashboard page (which signs in without one).
 */
type ReadAuth = Auth | 'metrics' | 'session' | 'page';

type Answer = { status: number; schema?: Schema; description: string; media?: string };
type Read = { auth: ReadAuth; summary: string; query?: ObjectSchema[]; answers: Answer[]; operationId?: string };

const json = (status: number, schema: Schema, description = 'OK'): Answer => ({ status, schema, description });
const Limit = v.object({ limit: PageQuery.entries.limit });
const Paged = v.object({ ...PageQuery.entries });
const pageOf = (item: Schema, description = 'A page of the list, newest first') => json(200, R.Page(item), description);
/** A dashboard page: HTML (the sign-in form without a session), or an HTML page saying what was not found. */
const pageAnswers: Answer[] = [
  { status: 200, description: 'The page (the sign-in form without a session); with ?part=live, only its live parts', media: 'text/html' },
  { status: 303, description: 'An admin session without a tenant goes to /tenants', media: 'text/plain' },
  json(404, R.ErrorBody, 'Not found'),
  { status: 404, description: 'Not found (an id of another tenant too)', media: 'text/html' },
];

/** Every GET route, by its Hono path. */
const reads: Record<string, Read> = {
  '/healthz': { auth: 'none', summary: 'The process is up', answers: [json(200, R.Health)] },
  '/readyz': {
    auth: 'none', summary: 'The database answers and every migration is applied',
    answers: [json(200, R.Health), json(503, R.Health, 'Not ready: migrations pending or the database unreachable')],
  },
  '/metrics': {
    auth: 'metrics', summary: 'Prometheus metrics (text exposition format)',
    answers: [{ status: 200, description: 'Counters per process, gauges read from the database', media: 'text/plain; version=0.0.4' }],
  },
  '/openapi.json': { auth: 'none', summary: 'This document', answers: [json(200, v.record(v.string(), v.unknown()), 'OpenAPI 3.1')] },
  '/docs': { auth: 'none', summary: 'The API reference (Swagger UI, served from this process)', answers: [{ status: 200, description: 'HTML', media: 'text/html' }] },
  '/docs/:file': {
    auth: 'none', summary: 'The reference page\'s own files',
    answers: [{ status: 200, description: 'A stylesheet, script or image of Swagger UI', media: 'application/octet-stream' }],
  },

  // The dashboard (src/dashboard): HTML pages and their files.
  '/': { operationId: 'dashboardRuns', auth: 'page', summary: 'The dashboard: runs', query: [RunsPageQuery], answers: pageAnswers },
  '/runs/:id': { operationId: 'dashboardRun', auth: 'page', summary: 'The dashboard: a run, its DAG, timeline, steps and findings', query: [RunPageQuery], answers: pageAnswers },
  '/agents': { operationId: 'dashboardAgents', auth: 'page', summary: 'The dashboard: agents', query: [LivePageQuery], answers: pageAnswers },
  '/scans': { operationId: 'dashboardScans', auth: 'page', summary: 'The dashboard: scans', query: [LivePageQuery], answers: pageAnswers },
  '/findings': { operationId: 'dashboardFindings', auth: 'page', summary: 'The dashboard: findings and triage', query: [FindingsPageQuery], answers: pageAnswers },
  '/tenants': { operationId: 'dashboardTenants', auth: 'page', summary: 'The dashboard: the admin\'s tenant picker', answers: pageAnswers },
  '/ui/:file': {
    operationId: 'dashboardFile', auth: 'none', summary: 'The dashboard\'s script, stylesheet and icon',
    answers: [{ status: 200, description: 'An ES module, the stylesheet or the icon', media: 'application/octet-stream' }],
  },
  '/api/v1/session': {
    auth: 'session', summary: 'The dashboard session: its tenant (null for an admin who has not chosen one), when it ends, its CSRF token',
    answers: [json(200, R.DashboardSession)],
  },
  '/api/v1/tenants': { auth: 'admin', summary: 'List tenants', query: [Paged], answers: [pageOf(R.Tenant)] },
  '/api/v1/tenants/:id': { auth: 'admin', summary: 'Get a tenant', answers: [json(200, R.Tenant)] },
  '/api/v1/assets': { auth: 'tenant', summary: 'List assets', query: [Paged, AssetListQuery], answers: [pageOf(R.Asset)] },
  '/api/v1/assets/:id': { auth: 'tenant', summary: 'Get an asset', answers: [json(200, R.Asset)] },
  '/api/v1/agents': { auth: 'tenant', summary: 'List agents', query: [Paged, AgentListQuery], answers: [pageOf(R.Agent)] },
  '/api/v1/agents/:id': { auth: 'tenant', summary: 'Get an agent', answers: [json(200, R.Agent)] },
  '/api/v1/pipelines': { auth: 'tenant', summary: 'List pipelines', query: [Paged], answers: [pageOf(R.Pipeline)] },
  '/api/v1/pipelines/:id': {
    auth: 'tenant', summary: 'Get a pipeline (its current version, or ?version=N)', query: [VersionQuery], answers: [json(200, R.Pipeline)],
  },
  '/api/v1/pipelines/:id/steps': { auth: 'tenant', summary: 'The steps of a pipeline\'s current version', answers: [json(200, R.PipelineSteps)] },
  '/api/v1/pipeline-templates': {
    auth: 'tenant', summary: 'List the system templates',
    answers: [json(200, v.object({ items: v.array(v.record(v.string(), v.unknown())), next_cursor: v.null() }))],
  },
  '/api/v1/pipeline-templates/:id': { auth: 'tenant', summary: 'Get a system template', answers: [json(200, v.record(v.string(), v.unknown()))] },
  '/api/v1/pipeline-runs': { auth: 'tenant', summary: 'List runs', query: [Paged, RunListQuery], answers: [pageOf(R.Run)] },
  '/api/v1/pipeline-runs/:id': { auth: 'tenant', summary: 'Get a run with its step runs', answers: [json(200, R.RunWithSteps)] },
  '/api/v1/pipeline-runs/:id/steps': {
    auth: 'tenant', summary: 'The step runs of a run',
    answers: [json(200, v.object({ items: v.array(R.StepRun), next_cursor: v.null() }))],
  },
  '/api/v1/pipeline-runs/:id/steps/:stepKey': { auth: 'tenant', summary: 'One step run of a run', answers: [json(200, R.StepRun)] },
  '/api/v1/pipeline-runs/:id/steps/:stepKey/logs': {
    auth: 'tenant', summary: 'A step\'s output (text with Accept: text/plain, else JSON with its events)', query: [OutputQuery],
    answers: [json(200, R.StepLogs), { status: 200, description: 'The output\'s bytes from ?offset (X-Next-Offset tells where to go on)', media: 'text/plain' }],
  },
  '/api/v1/pipeline-runs/:id/findings': {
    auth: 'tenant', summary: 'What the run saw, each finding marked new when first seen by it', query: [Limit, v.object({ cursor: v.optional(v.string()) })],
    answers: [pageOf(R.RunFinding, 'A page, most severe first')],
  },
  '/api/v1/pipeline-runs/:id/events': {
    auth: 'tenant', summary: 'The events of a run, oldest first', query: [EventsQuery], answers: [pageOf(R.RunEvent, 'A page, oldest first')],
  },
  '/api/v1/commands': { auth: 'tenant', summary: 'List commands', query: [Paged, CommandListQuery], answers: [pageOf(R.Command)] },
  '/api/v1/commands/:id': { auth: 'tenant', summary: 'Get a command', answers: [json(200, R.Command)] },
  '/api/v1/scans': { auth: 'tenant', summary: 'List scans', query: [Paged, ScanListQuery], answers: [pageOf(R.Scan)] },
  '/api/v1/scans/:id': { auth: 'tenant', summary: 'Get a scan', answers: [json(200, R.Scan)] },
  '/api/v1/scans/:id/runs': { auth: 'tenant', summary: 'The runs of a scan', query: [Paged], answers: [pageOf(R.Run)] },
  '/api/v1/scans/:id/fires': {
    auth: 'tenant', summary: 'What fired, when, which runs it made and what it skipped', query: [Paged], answers: [pageOf(R.ScanFire)],
  },
  '/api/v1/findings': {
    auth: 'tenant', summary: 'List findings (every status unless status is given)', query: [Limit, FindingListQuery], answers: [pageOf(R.Finding)],
  },
  '/api/v1/findings/summary': {
    auth: 'tenant', summary: 'Counts by severity and status, optionally per asset, tool or rule', query: [SummaryQuery],
    answers: [json(200, R.FindingsSummary)],
  },
  '/api/v1/findings/:id': { auth: 'tenant', summary: 'A finding with its latest history', answers: [json(200, R.FindingWithHistory)] },
  '/api/v1/findings/:id/sightings': {
    auth: 'tenant', summary: 'Every sighting of a finding, newest first', query: [Limit, HistoryQuery], answers: [pageOf(v.record(v.string(), v.unknown()))],
  },
  '/api/v1/findings/:id/status-changes': {
    auth: 'tenant', summary: 'Every status change of a finding, newest first', query: [Limit, HistoryQuery],
    answers: [pageOf(v.record(v.string(), v.unknown()))],
  },
  '/api/v1/agent/commands': {
    auth: 'agent', summary: 'Poll: claim up to ?limit commands, waiting up to ?wait seconds for one (a bare array)', query: [PollQuery],
    answers: [json(200, v.array(R.Command), 'The commands claimed (X-Poll-Interval-Seconds says when to poll again)')],
  },
  '/api/v1/agent/scans/:id': { auth: 'agent', summary: 'An agent scan session', answers: [json(200, R.AgentScan)] },
  '/api/v1/channels': { auth: 'tenant', summary: 'List notification channels', query: [Paged], answers: [pageOf(R.Channel)] },
  '/api/v1/channels/:id': { auth: 'tenant', summary: 'Get a notification channel', answers: [json(200, R.Channel)] },
  '/api/v1/channels/:id/deliveries': {
    auth: 'tenant', summary: 'A channel\'s delivery log: every attempt, newest first', query: [Paged], answers: [pageOf(R.DeliveryAttempt)],
  },
  '/api/v1/events': {
    auth: 'tenant', summary: 'The tenant\'s event feed in commit order, after ?after=<event id>, of the ?type= names or prefix.* patterns',
    query: [Limit, v.object({ after: v.optional(v.string()), type: v.optional(v.string()) })],
    answers: [
      pageOf(R.FeedEvent, 'A page in feed order; poll again with after=<the last id>'),
      json(410, R.ErrorBody, 'The event `after` names was removed by retention (EVENT_RETENTION; `removed_to` in the error)'),
    ],
  },
  '/api/v1/events/stream': {
    auth: 'tenant', summary: 'The feed as Server-Sent Events (id: per event), resuming after Last-Event-ID; a comment every 15 s',
    query: [v.object({ after: v.optional(v.string()), type: v.optional(v.string()) })],
    answers: [
      { status: 200, description: 'One `data:` line per event (a FeedEvent as JSON)', media: 'text/event-stream' },
      json(410, R.ErrorBody, 'The Last-Event-ID was removed by retention (EVENT_RETENTION; `removed_to` in the error)'),
    ],
  },
};

type EndpointName = keyof typeof endpoints;
const created = (schema: Schema, description = 'Created') => [json(201, schema, description)];
const ok = (schema: Schema, description = 'OK') => [json(200, schema, description)];
const gone = [{ status: 204, description: 'Deleted' }];

/** The answers of the contract's endpoints; one missing gets a generic JSON answer (see answersOf). */
const responsesOf: Partial<Record<EndpointName, Answer[]>> = {
  createTenant: created(R.TenantCreated), createTenantToken: created(R.TenantToken),
  createAsset: created(R.Asset), updateAsset: ok(R.Asset), deleteAsset: gone,
  createAgent: created(R.AgentWithKey), updateAgent: ok(R.Agent), activateAgent: ok(R.Agent), deactivateAgent: ok(R.Agent),
  regenerateAgentKey: ok(R.AgentWithKey), revokeAgent: ok(R.Agent),
  createPipeline: created(R.Pipeline), updatePipeline: ok(R.Pipeline), deletePipeline: gone,
  createWebhookToken: created(R.WebhookToken), clonePipeline: created(R.Pipeline),
  addStep: created(R.PipelineStepSaved, 'The step as saved, with the new version'), updateStep: ok(R.PipelineStepSaved),
  deleteStep: ok(R.Pipeline), reorderSteps: ok(R.Pipeline), runPipeline: created(R.Run), useTemplate: created(R.Pipeline),
  cancelRun: ok(R.RunWithSteps), retryRun: ok(R.RunWithSteps),
  createScan: created(R.Scan), updateScan: ok(R.Scan), deleteScan: gone, triggerScan: created(R.ScanTriggered),
  triageFinding: ok(R.Finding),
  signIn: [
    { status: 204, description: 'Signed in: Set-Cookie scanflow_session (HttpOnly, SameSite=Lax)' },
    json(401, R.ErrorBody, 'Not a tenant token nor the admin token'),
    json(403, R.ErrorBody, 'Sent from another site (Origin, Sec-Fetch-Site)'),
  ],
  chooseTenant: [{ status: 204, description: 'The admin acts in the tenant: Set-Cookie with a new session id' }],
  signOut: [
    { status: 204, description: 'Signed out (the cookie cleared), or there was no session' },
    json(403, R.ErrorBody, 'A live session without its X-CSRF-Token, or from another site'),
  ],
  createChannel: created(R.ChannelCreated), updateChannel: ok(R.Channel), deleteChannel: gone,
  rotateChannelSecret: ok(R.ChannelSecret), testChannel: [json(202, R.ChannelTestSent, 'The test event, its delivery under way')],
  triggerWebhook: [json(201, R.WebhookRuns, 'The runs started'), json(202, R.WebhookRuns, 'Ignored (why is in `ignored`)')],
  heartbeat: ok(R.Heartbeat),
  ackCommand: ok(R.Command), acknowledgeCommand: ok(R.Command), startCommand: ok(R.Command),
  completeCommand: ok(R.Command), failCommand: ok(R.Command),
  uploadCommandOutput: [json(200, R.OutputAppended), json(416, R.ErrorBody, 'The range does not start at the current length (`length` in the error)')],
  ingestReport: created(R.IngestResult), ingestSarif: created(R.IngestResult), checkFingerprints: ok(R.FingerprintsChecked),
  ingestChunk: created(R.ChunkResult), ingestCredentials: created(R.IngestResult),
  createAgentScan: created(R.AgentScan), finishAgentScan: ok(R.AgentScan),
};

/** Query strings of mutating endpoints. */
const queriesOf: Partial<Record<EndpointName, ObjectSchema[]>> = { uploadCommandOutput: [UploadQuery] };
/** Media types a JSON body is also taken as. */
const alsoAs: Partial<Record<EndpointName, string[]>> = { ingestSarif: ['application/sarif+json'] };

// ---- conversion -------------------------------------------------------------------------

/** A RegExp flag JSON Schema patterns lack: case-insensitivity, written into the pattern. */
function caseless(source: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const ch = source[i];
    if (ch === '\\') {
      out += ch + (source[++i] ?? '');
      continue;
    }
    if (inClass) {
      if (ch === ']') inClass = false;
      const range = /^([a-zA-Z])-([a-zA-Z])/.exec(source.slice(i));
      if (range) {
        out += `${range[1].toLowerCase()}-${range[2].toLowerCase()}${range[1].toUpperCase()}-${range[2].toUpperCase()}`;
        i += 2;
        continue;
      }
      out += /[a-zA-Z]/.test(ch) ? ch.toLowerCase() + ch.toUpperCase() : ch;
      continue;
    }
    if (ch === '[') inClass = true;
    out += /[a-zA-Z]/.test(ch) ? `[${ch.toLowerCase()}${ch.toUpperCase()}]` : ch;
  }
  return out;
}

const conversion: ConversionConfig = {
  target: 'draft-2020-12',
  // Requests are documented as sent (a query's "10", before it becomes 10).
  typeMode: 'input',
  overrideAction({ valibotAction, jsonSchema }) {
    const action = valibotAction as { type: string; requirement?: unknown };
    // Checks JSON Schema cannot say (a cron expression parses, a date is real) and
    // normalizations (trim) leave the schema as it is; their rule is in the description
    // or the examples.
    if (['trim', 'trim_start', 'trim_end', 'to_lower_case', 'to_upper_case', 'check', 'custom', 'raw_check', 'forward', 'partial_check'].includes(action.type)) {
      return jsonSchema;
    }
    // JSON Schema patterns are Unicode-aware already ('u'); 'i' is written into the pattern.
    if (action.type === 'regex' && action.requirement instanceof RegExp && action.requirement.flags !== '') {
      const re = action.requirement;
      return { ...jsonSchema, pattern: re.flags.includes('i') ? caseless(re.source) : re.source };
    }
    return undefined;
  },
  overrideSchema({ valibotSchema }) {
    // A transformation's output is not the input: documented as the input type alone.
    if ((valibotSchema as { type: string }).type === 'custom') return {};
    return undefined;
  },
};

function schemaOf(schema: Schema): JsonSchema {
  const out = toJsonSchema(schema, conversion) as JsonSchema & { $schema?: string };
  delete out.$schema;
  return out;
}

// ---- the document -----------------------------------------------------------------------

const AUTH_TEXT: Record<ReadAuth, string> = {
  admin: 'the instance admin token',
  tenant: 'a tenant token',
  agent: 'an agent API key',
  webhook: 'the pipeline\'s webhook token (or a tenant token)',
  none: 'no credential',
  session: 'the dashboard\'s session cookie',
  page: 'the dashboard\'s session cookie (without one, the page is the sign-in form)',
  metrics: 'the METRICS_TOKEN as a bearer, when one is set',
};

function securityOf(auth: ReadAuth): Record<string, string[]>[] {
  switch (auth) {
    case 'none': return [];
    case 'metrics': return [{ bearer: [] }, {}];
    case 'webhook': return [{ webhookToken: [] }, { gitlabToken: [] }, { bearer: [] }, { apiKey: [] }];
    case 'agent': return [{ bearer: [] }, { apiKey: [] }];
    case 'session': return [{ session: [] }];
    case 'page': return [{ session: [] }, {}];
    // Admin and tenant routes take the dashboard's session too (changes with its X-CSRF-Token).
    default: return [{ bearer: [] }, { apiKey: [] }, { session: [] }];
  }
}

/** Hono's path (`:id`) as OpenAPI's (`{id}`), with its parameters. */
function pathOf(honoPath: string): { path: string; params: Record<string, unknown>[] } {
  const params: Record<string, unknown>[] = [];
  const path = honoPath.replace(/:(\w+)/g, (_, name: string) => {
    params.push({
      name, in: 'path', required: true,
      schema: name === 'stepKey' ? { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,100}$' }
        : name === 'file' ? { type: 'string' }
        : { type: 'string', format: 'uuid' },
      description: name === 'stepKey' ? 'The step\'s key in the pipeline' : name === 'file' ? 'A file name' : 'An id (anything else is a 404)',
    });
    return `{${name}}`;
  });
  return { path, params };
}

function queryParams(schemas: ObjectSchema[] | undefined): Record<string, unknown>[] {
  const params = new Map<string, Record<string, unknown>>();
  for (const schema of schemas ?? []) {
    const converted = schemaOf(schema) as { properties?: Record<string, JsonSchema>; required?: string[] };
    for (const [name, s] of Object.entries(converted.properties ?? {})) {
      params.set(name, { name, in: 'query', required: converted.required?.includes(name) ?? false, schema: s });
    }
  }
  return [...params.values()];
}

const ERROR_ANSWERS: Record<string, string> = {
  400: 'Invalid input: `details` names each field and problem',
  401: 'No credential, or not a valid one',
  403: 'The credential may not do this (wrong kind, module not enabled, agent disabled)',
  404: 'Not found (ids of other tenants are not found either)',
  409: 'Conflicts with the current state (a name taken, a transition already made otherwise)',
  413: 'The body is too large (after decompression)',
  415: 'The body\'s media type is not one this endpoint takes',
  500: 'A bug: logged with its request id, answered without detail',
  503: 'The database is busy; retry shortly',
};

export type OpenApiDocument = Record<string, unknown> & { paths: Record<string, Record<string, unknown>> };

export function buildOpenApi(): OpenApiDocument {
  const components: Record<string, JsonSchema> = {};
  const names = new Map<Schema, string>();
  const refTo = (schema: Schema, name: string) => {
    let known = names.get(schema);
    if (!known) {
      known = name;
      for (let n = 2; components[known]; n++) known = `${name}${n}`;
      names.set(schema, known);
      components[known] = schemaOf(schema);
    }
    return { $ref: `#/components/schemas/${known}` };
  };
  const responseNames = new Map<Schema, string>(
    Object.entries(R).filter(([, s]) => typeof s === 'object' && s !== null && 'kind' in s).map(([n, s]) => [s as Schema, n]),
  );
  // The error shape is one component, whichever answer names it.
  refTo(R.ErrorBody, 'Error');
  const answerSchema = (schema: Schema) => {
    const name = responseNames.get(schema);
    return name ? refTo(schema, name) : schemaOf(schema);
  };

  const responses = (answers: Answer[], auth: ReadAuth, hasInput: boolean) => {
    const out: Record<string, unknown> = {};
    for (const a of answers) {
      const media = a.media ?? 'application/json';
      const entry = (out[a.status] ??= { description: a.description, content: {} }) as { content: Record<string, unknown> };
      if (a.status !== 204) entry.content[media] = a.schema ? { schema: answerSchema(a.schema) } : {};
      if (a.status === 204) delete (out[a.status] as { content?: unknown }).content;
    }
    const errors = ['404', '500'];
    if (hasInput) errors.push('400');
    if (auth !== 'none') errors.push('401');
    if (auth !== 'none' && auth !== 'metrics') errors.push('403');
    for (const status of errors.sort()) {
      out[status] ??= { description: ERROR_ANSWERS[status], content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    }
    return out;
  };

  const paths: OpenApiDocument['paths'] = {};
  const add = (method: string, honoPath: string, operation: Record<string, unknown>) => {
    const { path, params } = pathOf(honoPath);
    const parameters = [...params, ...((operation.parameters as unknown[]) ?? [])];
    (paths[path] ??= {})[method.toLowerCase()] = { ...operation, ...(parameters.length ? { parameters } : {}) };
  };

  for (const [path, read] of Object.entries(reads)) {
    const parameters = queryParams(read.query);
    add('GET', path, {
      operationId: read.operationId ?? operationIdOf('GET', path),
      summary: read.summary,
      description: `Credential: ${AUTH_TEXT[read.auth]}.`,
      tags: [tagOf(path)],
      security: securityOf(read.auth),
      parameters,
      responses: responses(read.answers, read.auth, parameters.length > 0),
    });
  }

  for (const [name, e] of Object.entries(endpoints) as [EndpointName, Endpoint][]) {
    const parameters = queryParams(queriesOf[name]);
    const aliases = Object.entries(e.aliases ?? {});
    const body = e.body
      ? { required: true, content: Object.fromEntries(['application/json', ...(alsoAs[name] ?? [])].map((m) => [m, { schema: refTo(e.body!, `${upper(name)}Body`) }])) }
      : e.media
        ? { required: true, content: Object.fromEntries(e.media.map((m) => [m, { schema: { type: 'string', format: 'binary' } }])) }
        : undefined;
    const notes = [
      `Credential: ${AUTH_TEXT[e.auth]}.`,
      ...(aliases.length ? [`Also accepted: ${aliases.map(([a, f]) => `\`${a}\` for \`${f}\``).join(', ')}.`] : []),
      ...(e.path.startsWith('/api/v1/agent/') ? ['The body may be sent with Content-Encoding gzip or zstd.'] : []),
      ...(e.body === null && !e.media ? ['Takes no body (one sent is ignored).'] : []),
    ];
    add(e.method, e.path, {
      operationId: name,
      summary: name.replace(/([A-Z])/g, ' $1').replace(/^./, (c) => c.toUpperCase()),
      description: notes.join(' '),
      tags: [tagOf(e.path)],
      security: securityOf(e.auth),
      parameters,
      ...(body ? { requestBody: body } : {}),
      responses: responses(answersOf(name, e), e.auth, body !== undefined || parameters.length > 0),
    });
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'scanflow',
      version: '1',
      description: 'Security-scan orchestrator: pipelines as DAGs, pull-based agents, findings, events. '
        + 'Errors are `{error: {code, message, details}}`; lists are `{items, next_cursor}` (pass `?cursor=`). '
        + 'Every response carries X-Request-Id (yours, when you send a plain one of at most 128 characters).',
    },
    servers: [{ url: '/' }],
    tags: [...new Set(Object.values(paths).flatMap((ops) => Object.values(ops).flatMap((op) => (op as { tags: string[] }).tags)))]
      .sort().map((name) => ({ name })),
    paths,
    components: {
      schemas: components,
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <token>: the admin token, a tenant token, an agent API key or the METRICS_TOKEN, as the operation says' },
        apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'The same credential in X-API-Key' },
        webhookToken: { type: 'apiKey', in: 'header', name: 'X-Webhook-Token', description: 'A pipeline\'s webhook token' },
        gitlabToken: { type: 'apiKey', in: 'header', name: 'X-Gitlab-Token', description: 'A pipeline\'s webhook token, where GitLab sends its secret' },
        session: {
          type: 'apiKey', in: 'cookie', name: 'scanflow_session',
          description: 'The dashboard\'s session (POST /api/v1/session), used when no header credential is sent. '
            + 'A change made with it must come from this origin and carry X-CSRF-Token (GET /api/v1/session answers it)',
        },
      },
    },
  };
}

function answersOf(name: EndpointName, e: Endpoint): Answer[] {
  const known = responsesOf[name];
  if (known) return known;
  return [json(e.method === 'POST' ? 201 : 200, v.record(v.string(), v.unknown()), 'Done (the answer\'s shape is not written down yet)')];
}

function upper(name: string): string {
  return name[0].toUpperCase() + name.slice(1);
}

/** getPipelineRunsIdStepsStepKeyLogs, from GET /api/v1/pipeline-runs/:id/steps/:stepKey/logs. */
function operationIdOf(method: string, path: string): string {
  const words = path.replace(/^\/api\/v1\//, '/').split(/[/.:-]+/).filter(Boolean);
  return method.toLowerCase() + words.map(upper).join('');
}

function tagOf(path: string): string {
  const m = /^\/api\/v1\/([^/]+)(?:\/([^/]+))?/.exec(path);
  if (!m) return 'operations';
  if (m[1] === 'agent') return m[2] === 'ingest' || m[2] === 'credentials' ? 'ingest' : 'agent API';
  return m[1];
}

let cached: OpenApiDocument | null = null;
/** The document (built once per process: the schemas do not change while it runs). */
export function openApiDocument(): OpenApiDocument {
  cached ??= buildOpenApi();
  return cached;
}
