// Response headers (issue 7, part 7): every answer that carries a secret, every API answer
// (errors and 404s included) says `Cache-Control: no-store`; every answer says
// `X-Content-Type-Options: nosniff`; none says `X-Powered-By`. Health checks keep default
// caching. Through app.request, and once over a real socket (what the Node adapter sends).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { ADMIN_TOKEN, startHarness, type Harness, type Response } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, step, type Tenant } from './support/fixtures.ts';

let h: Harness;
let t: Tenant;
let agent: TestAgent;
let pipelineId: string;

before(async () => {
  h = await startHarness({ worker: false });
  t = await createTenant(h);
  agent = await TestAgent.create(h, t, { tools: ['headers-tool'] });
  pipelineId = (await createPipeline(h, t, { name: 'headers', steps: [step('a')] })).id;
});
after(() => h.close());

function assertNotStored(res: Response, status: number): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.headers.get('cache-control'), 'no-store');
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-powered-by'), null);
}

describe('answers that carry a secret are not stored', () => {
  it('a new tenant and its token', async () => {
    const res = await h.request('POST', '/api/v1/tenants', { token: ADMIN_TOKEN, body: { name: `headers-${randomUUID()}` } });
    assertNotStored(res, 201);
    assert.match(res.body.token, /^sft_/);
  });

  it('another tenant token', async () => {
    const res = await h.request('POST', `/api/v1/tenants/${t.id}/tokens`, { token: ADMIN_TOKEN, body: {} });
    assertNotStored(res, 201);
    assert.match(res.body.token, /^sft_/);
  });

  it('a new agent and its key, and a regenerated key', async () => {
    const created = await h.request('POST', '/api/v1/agents', { token: t.token, body: { name: `headers-${randomUUID()}`, tools: ['x'] } });
    assertNotStored(created, 201);
    assert.match(created.body.api_key, /^sfa_/);
    const regenerated = await h.request('POST', `/api/v1/agents/${created.body.agent.id}/regenerate-key`, { token: t.token });
    assertNotStored(regenerated, 200);
    assert.match(regenerated.body.api_key, /^sfa_/);
  });

  it('a webhook token', async () => {
    const res = await h.request('POST', `/api/v1/pipelines/${pipelineId}/webhook-token`, { token: t.token });
    assertNotStored(res, 201);
    assert.match(res.body.token, /^sfw_/);
  });
});

describe('authenticated API answers are not stored', () => {
  it('a tenant list and a read', async () => {
    assertNotStored(await h.request('GET', '/api/v1/pipelines', { token: t.token }), 200);
    assertNotStored(await h.request('GET', `/api/v1/pipelines/${pipelineId}`, { token: t.token }), 200);
  });

  it('the agent API', async () => {
    assertNotStored(await agent.heartbeat(), 200);
    assertNotStored(await h.request('GET', '/api/v1/agent/commands?wait=0', { apiKey: agent.apiKey }), 200);
  });
});

describe('errors and 404s', () => {
  it('401 without a credential', async () => {
    assertNotStored(await h.request('GET', '/api/v1/assets'), 401);
  });

  it('400 for a body that is not JSON', async () => {
    const res = await h.request('POST', '/api/v1/assets', { token: t.token, raw: '{not json' });
    assertNotStored(res, 400);
    assert.equal(res.body.error.code, 'invalid_json');
  });

  it('404 for an unknown id and for an unknown route', async () => {
    assertNotStored(await h.request('GET', `/api/v1/pipelines/${randomUUID()}`, { token: t.token }), 404);
    assertNotStored(await h.request('GET', '/api/v1/no-such-thing', { token: t.token }), 404);
    assertNotStored(await h.request('GET', '/no-such-page'), 404);
  });

  it('413 for a body over the limit', async () => {
    assertNotStored(await h.request('POST', '/api/v1/assets', { token: t.token, raw: `"${'x'.repeat(2 * 1024 * 1024)}"` }), 413);
  });
});

describe('health checks', () => {
  it('keep default caching but are not sniffed', async () => {
    for (const path of ['/healthz', '/readyz']) {
      const res = await h.request('GET', path);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('cache-control'), null, path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      assert.equal(res.headers.get('x-powered-by'), null, path);
    }
  });
});

describe('over a real socket', () => {
  it('the Node adapter sends the same headers', async () => {
    const { url } = await h.listen();
    const secret = await fetch(`${url}/api/v1/pipelines/${pipelineId}/webhook-token`, { method: 'POST', headers: { authorization: `Bearer ${t.token}` } });
    assert.equal(secret.status, 201);
    assert.equal(secret.headers.get('cache-control'), 'no-store');
    assert.equal(secret.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(secret.headers.get('x-powered-by'), null);
    await secret.arrayBuffer();

    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.headers.get('cache-control'), null);
    assert.equal(health.headers.get('x-content-type-options'), 'nosniff');
    await health.arrayBuffer();
  });
});
