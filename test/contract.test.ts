// The API contract (src/api/contract.ts) is the app's: every route that changes something
// is in it and everything in it is routed, each asks for a credential, and a handler that
// reads another endpoint's body is caught. No database: these are answered before any query.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import * as v from 'valibot';
import { Hono } from 'hono';
import { createApp } from '../src/api/app.ts';
import { endpoints, type Endpoint } from '../src/api/contract.ts';
import { readBody } from '../src/api/input.ts';
import { ApiError } from '../src/api/errors.ts';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function appWithoutDatabase() {
  const pool = new Proxy({}, { get: () => { throw new Error('no database in this test'); } });
  return createApp({
    pool: pool as never, orchestration: {} as never, signals: {} as never, adminTokenHash: () => null, logger: pino({ level: 'silent' }),
  });
}

describe('the API contract', () => {
  const app = appWithoutDatabase();
  const key = (method: string, path: string) => `${method} ${path}`;
  const contract = new Map(Object.entries(endpoints).map(([name, e]) => [key(e.method, e.path), name]));

  it('lists every mutating route of the app, and routes nothing else', () => {
    const routed = new Set(app.routes.filter((r) => MUTATING.has(r.method)).map((r) => key(r.method, r.path)));
    assert.deepEqual([...routed].filter((k) => !contract.has(k)), [], 'mutating routes missing from src/api/contract.ts');
    assert.deepEqual([...contract.keys()].filter((k) => !routed.has(k)), [], 'contract entries the app does not route');
    assert.equal(contract.size, Object.keys(endpoints).length, 'two entries for one route');
  });

  it('every endpoint refuses a request without a credential (401, before reading the body)', async () => {
    for (const [name, e] of Object.entries(endpoints) as [string, Endpoint][]) {
      // The dashboard's sign-in takes its token in the body; signing out needs none (test/dashboard-session.test.ts).
      if (e.auth === 'none') continue;
      const path = e.path.replace(/:[A-Za-z]+/g, (p) => (p === ':stepKey' ? 'sast' : '00000000-0000-4000-8000-000000000000'));
      const res = await app.request(path, { method: e.method, body: '{not json', headers: { 'content-type': 'application/json' } });
      assert.equal(res.status, 401, `${name}: ${e.method} ${path} answered ${res.status}`);
    }
  });

  it('a handler that reads the body of another endpoint fails loudly (a 500 every test of the route sees)', async () => {
    const r = new Hono();
    r.post('/api/v1/tenants', async (c) => c.json(await readBody(c, endpoints.createAsset)));
    r.post('/api/v1/assets', async (c) => c.json(await readBody(c, endpoints.createAsset)));
    r.onError((err, c) => (err instanceof ApiError ? c.json(err.toBody(), err.status) : c.json({ bug: err.message }, 500)));
    const wrong = await r.request('/api/v1/tenants', { method: 'POST', body: '{"type":"domain","name":"x"}' });
    assert.equal(wrong.status, 500);
    assert.match(((await wrong.json()) as { bug: string }).bug, /POST \/api\/v1\/tenants reads the body of POST \/api\/v1\/assets/);
    const right = await r.request('/api/v1/assets', { method: 'POST', body: '{"type":"domain","name":"x"}' });
    assert.equal(right.status, 200);
    assert.equal(((await right.json()) as { criticality: string }).criticality, 'medium');
  });

  it('aliases are renamed before the schema sees the body (seed 003: pipeline_template_id)', async () => {
    const r = new Hono();
    const id = '11111111-1111-4111-8111-111111111111';
    r.post('/api/v1/scans', async (c) => c.json(await readBody(c, endpoints.createScan)));
    r.onError((err, c) => c.json({ error: err.message }, 500));
    const res = await r.request('/api/v1/scans', { method: 'POST', body: JSON.stringify({ name: 's', pipeline_template_id: id }) });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { pipeline_id: string }).pipeline_id, id);
    assert.equal(v.safeParse(endpoints.createScan.body, { name: 's', pipeline_template_id: id }).success, false, 'the schema itself knows only pipeline_id');
  });
});
