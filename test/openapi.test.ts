// GET /openapi.json and /docs: every route the app serves is documented (and nothing else),
// the document is valid OpenAPI 3.1 (@seriousme/openapi-schema-validator), and the answers of
// the main calls of a scan's life validate against its schemas (ajv, JSON Schema 2020-12):
// every request this file makes goes through `call`, which checks its answer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { startHarness, ADMIN_TOKEN, type Harness, type RequestOptions, type Response } from './support/harness.ts';
import { step } from './support/fixtures.ts';

type Doc = { openapi: string; paths: Record<string, Record<string, any>>; components: Record<string, any> };

let h: Harness;
let doc: Doc;
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
ajv.addFormat('date-time', { validate: (s: string) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)) });
ajv.addFormat('binary', true);

/** The answers checked, as "METHOD /path/{template} status". */
const checked = new Set<string>();

/** The documented operation of a concrete path. */
function operationOf(method: string, path: string): { template: string; op: any } {
  const bare = path.split('?')[0];
  for (const [template, ops] of Object.entries(doc.paths)) {
    const re = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (re.test(bare) && ops[method.toLowerCase()]) {
      // A literal path wins over a template that also matches (/findings/summary, /findings/{id}).
      const literal = doc.paths[bare]?.[method.toLowerCase()];
      return literal ? { template: bare, op: literal } : { template, op: ops[method.toLowerCase()] };
    }
  }
  throw new Error(`${method} ${bare} is not in the document`);
}

/** A request whose answer must match the document: status documented, JSON body valid. */
async function call<T = any>(method: string, path: string, opts: RequestOptions = {}): Promise<Response<T>> {
  const res = await h.request<T>(method, path, opts);
  const { template, op } = operationOf(method, path);
  const answer = op.responses[String(res.status)];
  assert.ok(answer, `${method} ${template} answered ${res.status}, which the document does not list: ${JSON.stringify(res.body)}`);
  const type = (res.headers.get('content-type') ?? '').split(';')[0];
  if (type === 'application/json') {
    const media = answer.content?.['application/json'];
    assert.ok(media, `${method} ${template} ${res.status}: JSON is not documented`);
    const pointer = `doc#/paths/${template.replaceAll('~', '~0').replaceAll('/', '~1')}/${method.toLowerCase()}/responses/${res.status}/content/application~1json/schema`;
    const validate = ajv.getSchema(pointer) ?? ajv.compile({ $ref: pointer });
    assert.ok(validate(res.body), `${method} ${template} ${res.status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(res.body).slice(0, 2000)}`);
  }
  checked.add(`${method} ${template} ${res.status}`);
  return res;
}

before(async () => {
  h = await startHarness();
  const res = await h.request('GET', '/openapi.json');
  assert.equal(res.status, 200);
  doc = res.body;
  ajv.addSchema({ ...doc, $id: 'doc' });
});
after(() => h.close());

describe('the OpenAPI document', () => {
  it('documents every route the app serves, and only those', () => {
    const served = new Set(h.app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`));
    const documented = new Set(Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)));
    assert.deepEqual([...served].filter((r) => !documented.has(r)), [], 'served but not documented');
    assert.deepEqual([...documented].filter((r) => !served.has(r)), [], 'documented but not served');
    assert.ok(served.size > 60);
  });

  it('is valid OpenAPI 3.1, every operation with an id, a 2xx answer and the error shape for 4xx', async () => {
    assert.equal(doc.openapi, '3.1.0');
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.ok(result.valid, JSON.stringify(result.errors, null, 2));
    assert.equal(validator.version, '3.1');
    const ids = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        assert.ok(op.operationId && !ids.has(op.operationId), `${method} ${path}: a unique operationId`);
        ids.add(op.operationId);
        assert.ok(Object.keys(op.responses).some((s) => /^2/.test(s)), `${method} ${path}: a success answer`);
        assert.deepEqual(op.responses['404'].content['application/json'].schema, { $ref: '#/components/schemas/Error' });
      }
    }
    // Every schema compiles, so every $ref resolves.
    for (const name of Object.keys(doc.components.schemas)) ajv.getSchema(`doc#/components/schemas/${name}`) ?? ajv.compile({ $ref: `doc#/components/schemas/${name}` });
    // Security: the two ways to send a credential, and operations that need none say so.
    assert.deepEqual(Object.keys(doc.components.securitySchemes).sort(), ['apiKey', 'bearer', 'gitlabToken', 'session', 'webhookToken']);
    assert.deepEqual(doc.paths['/healthz'].get.security, []);
    assert.deepEqual(doc.paths['/api/v1/assets'].post.security, [{ bearer: [] }, { apiKey: [] }, { session: [] }]);
    assert.deepEqual(doc.paths['/api/v1/agent/heartbeat'].post.security, [{ bearer: [] }, { apiKey: [] }]);
    assert.deepEqual(doc.paths['/api/v1/session'].post.security, []);
  });

  it('takes request bodies and query parameters from the schemas that validate them', () => {
    const schemas = doc.components.schemas;
    const run = doc.paths['/api/v1/pipelines/{id}/run'].post;
    assert.equal(run.requestBody.content['application/json'].schema.$ref, '#/components/schemas/RunPipelineBody');
    assert.deepEqual(Object.keys(schemas.RunPipelineBody.properties).sort(), ['asset_id', 'context', 'triggered_by']);
    // A case-insensitive regex becomes a pattern that says so.
    const assetId = schemas.RunPipelineBody.properties.asset_id.anyOf[0];
    assert.ok(new RegExp(assetId.pattern, 'u').test('0A1B2C3D-0000-4000-8000-00000000000F'));
    // Opaque checks carry their examples (a cron expression, a time zone).
    assert.match(JSON.stringify(schemas.CreateScanBody), /"examples":\[/);
    const poll = doc.paths['/api/v1/agent/commands'].get.parameters;
    assert.deepEqual(poll.map((p: any) => p.name), ['limit', 'wait']);
    assert.deepEqual(poll[0].schema, { type: 'string', pattern: '^\\d+$', default: '10' });
    const findings = doc.paths['/api/v1/findings'].get.parameters.map((p: any) => p.name);
    for (const name of ['status', 'severity', 'min_severity', 'q', 'sort', 'cursor', 'limit']) assert.ok(findings.includes(name), name);
    const logs = doc.paths['/api/v1/agent/commands/{id}/logs'].post;
    assert.deepEqual(Object.keys(logs.requestBody.content), ['text/*', 'application/octet-stream']);
    assert.deepEqual(logs.parameters.map((p: any) => `${p.in} ${p.name}`), ['path id', 'query offset']);
    assert.ok(doc.paths['/api/v1/agent/ingest/sarif'].post.requestBody.content['application/sarif+json']);
  });
});

describe('answers match the document', () => {
  it('through a scan\'s life: tenant, asset, agent, pipeline, run, commands, ingest, findings, scans, errors', async () => {
    const admin = { token: ADMIN_TOKEN };
    const tenant = (await call('POST', '/api/v1/tenants', { ...admin, body: { name: 'documented' } })).body;
    await call('GET', '/api/v1/tenants', admin);
    await call('GET', `/api/v1/tenants/${tenant.tenant.id}`, admin);
    const t = { token: tenant.token as string };

    const asset = (await call('POST', '/api/v1/assets', { ...t, body: { type: 'repository', name: 'app', value: 'https://git.example/app' } })).body;
    await call('GET', '/api/v1/assets', t);
    await call('GET', `/api/v1/assets/${asset.id}`, t);

    const agent = (await call('POST', '/api/v1/agents', { ...t, body: { name: 'documented', tools: ['tool-a'] } })).body;
    const a = { apiKey: agent.api_key as string };
    await call('POST', '/api/v1/agent/heartbeat', { ...a, body: { version: '1.0.0', scanners: ['tool-a'], cpu_percent: 3 } });
    await call('GET', `/api/v1/agents/${agent.agent.id}`, t);
    await call('GET', '/api/v1/agents', t);

    const pipeline = (await call('POST', '/api/v1/pipelines', { ...t, body: { name: 'documented', steps: [step('a')] } })).body;
    await call('GET', `/api/v1/pipelines/${pipeline.id}`, t);
    await call('GET', `/api/v1/pipelines/${pipeline.id}/steps`, t);
    await call('GET', '/api/v1/pipelines', t);
    const run = (await call('POST', `/api/v1/pipelines/${pipeline.id}/run`, { ...t, body: { asset_id: asset.id } })).body;
    await h.settle();

    const [command] = (await call('GET', '/api/v1/agent/commands?limit=1', a)).body;
    await call('POST', `/api/v1/agent/commands/${command.id}/ack`, a);
    await call('POST', `/api/v1/agent/commands/${command.id}/start`, a);
    await call('POST', `/api/v1/agent/commands/${command.id}/logs`, { ...a, raw: 'scanning\n', headers: { 'content-type': 'text/plain' } });
    await call('POST', '/api/v1/agent/ingest', {
      ...a, headers: { 'x-command-id': command.id },
      body: {
        version: '1.0', metadata: { timestamp: '2026-01-31T12:00:00Z', coverage_type: 'full' }, tool: { name: 'tool-a' },
        findings: [{ type: 'secret', title: 'AWS key', severity: 'high', rule_id: 'aws', location: { path: 'src/a.ts' } }],
      },
    });
    await call('POST', '/api/v1/agent/ingest/check', { ...a, body: { fingerprints: ['nope'] } });
    await call('POST', `/api/v1/agent/commands/${command.id}/complete`, { ...a, body: { output: { ok: true } } });
    await h.settle();

    await call('GET', `/api/v1/pipeline-runs/${run.id}`, t);
    await call('GET', '/api/v1/pipeline-runs', t);
    await call('GET', `/api/v1/pipeline-runs/${run.id}/steps`, t);
    await call('GET', `/api/v1/pipeline-runs/${run.id}/steps/a`, t);
    await call('GET', `/api/v1/pipeline-runs/${run.id}/steps/a/logs`, t);
    await call('GET', `/api/v1/pipeline-runs/${run.id}/events`, t);
    await call('GET', `/api/v1/pipeline-runs/${run.id}/findings`, t);
    await call('GET', '/api/v1/commands', t);
    await call('GET', `/api/v1/commands/${command.id}`, t);

    const findings = (await call('GET', '/api/v1/findings', t)).body;
    assert.equal(findings.items.length, 1);
    const finding = findings.items[0];
    await call('GET', `/api/v1/findings/${finding.id}`, t);
    await call('GET', '/api/v1/findings/summary?group_by=tool', t);
    await call('PATCH', `/api/v1/findings/${finding.id}`, { ...t, body: { status: 'accepted_risk', reason: 'test key' } });

    const scan = (await call('POST', '/api/v1/scans', { ...t, body: { name: 'nightly', pipeline_id: pipeline.id, schedule_type: 'cron', cron_expression: '0 3 * * *', targets: { asset_ids: [asset.id] } } })).body;
    await call('POST', `/api/v1/scans/${scan.id}/trigger`, { ...t, body: {} });
    await call('GET', `/api/v1/scans/${scan.id}/fires`, t);
    await call('GET', `/api/v1/scans/${scan.id}/runs`, t);

    // The error shape, for the 4xx the document lists.
    assert.equal((await call('POST', '/api/v1/pipelines', { ...t, body: { name: '', steps: [] } })).status, 400);
    assert.equal((await call('GET', `/api/v1/pipeline-runs/${agent.agent.id}`, t)).status, 404);
    assert.equal((await call('GET', '/api/v1/assets')).status, 401);
    assert.equal((await call('GET', '/api/v1/tenants', t)).status, 403);
    await call('GET', '/healthz');

    for (const answer of ['POST /api/v1/pipelines/{id}/run 201', 'GET /api/v1/pipeline-runs/{id} 200', 'POST /api/v1/agent/ingest 201', 'GET /api/v1/findings/{id} 200']) {
      assert.ok(checked.has(answer), answer);
    }
  });
});

describe('GET /docs', () => {
  it('serves Swagger UI from this process: the page, its files, this document; nothing else of the package', async () => {
    const page = await call('GET', '/docs');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.doesNotMatch(page.body, /https?:\/\//, 'no CDN, nothing outside this process');
    for (const src of (page.body as string).matchAll(/(?:src|href)="([^"]+)"/g)) {
      const res = await call('GET', src[1]);
      assert.equal(res.status, 200, src[1]);
    }
    const init = await h.request('GET', '/docs/docs.js');
    assert.match(init.body, /url: '\/openapi\.json'/);
    assert.match(init.body, /validatorUrl: null/);
    for (const path of ['/docs/package.json', '/docs/..%2Fpackage.json', '/docs/index.html']) {
      assert.equal((await call('GET', path)).status, 404, path);
    }
  });
});
