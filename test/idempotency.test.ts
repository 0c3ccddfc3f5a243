// Idempotency-Key on the POSTs that create or start something: a retry answers what the
// first attempt answered and creates nothing new, under concurrency and across crashes.
// Crashes are made in the database: a key left committed without an answer (the process
// died between its commit and storing the answer), a reservation never committed (it died
// before committing), a key taken over while its request was running.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startHarness, type Harness, type RequestOptions, type Response } from './support/harness.ts';
import { createAsset, createPipeline, createTenant, step, type Tenant } from './support/fixtures.ts';
import { createScan, oneStep, type Json } from './scan-support.ts';
import {
  IDEMPOTENCY_KEY_TTL_SECONDS, RESERVATION_LOST, purgeIdempotencyKeys, requestHash,
} from '../src/api/idempotency.ts';
import { carryingWrites, withTransaction, type Tx } from '../src/db/transaction.ts';
import { one } from '../src/store/query.ts';
import { sweep } from '../src/progression/maintenance.ts';
import { assetsSql, idempotencySql } from '../src/store/queries.ts';

let h: Harness;

before(async () => {
  // No worker: runs stay as created, so counting them counts what the API created.
  h = await startHarness({ worker: false });
});
after(() => h.close());

const key = () => `key-${randomUUID()}`;

function send(method: string, path: string, idempotencyKey: string | null, opts: RequestOptions = {}): Promise<Response> {
  const headers = { ...opts.headers, ...(idempotencyKey === null ? {} : { 'idempotency-key': idempotencyKey }) };
  return h.request(method, path, { ...opts, headers });
}

async function count(sql: string, values: unknown[]): Promise<number> {
  const { rows } = await h.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM (${sql}) s`, values);
  return rows[0].n;
}

const runsOf = (pipelineId: string) => count('SELECT 1 FROM pipeline_runs WHERE pipeline_id = $1', [pipelineId]);

async function keyRow(tenantId: string, k: string): Promise<Json | undefined> {
  const { rows } = await h.pool.query('SELECT * FROM idempotency_keys WHERE tenant_id = $1 AND key = $2', [tenantId, k]);
  return rows[0];
}

/** The second answer replays the first: same status, body and Content-Type, marked replayed. */
function assertReplayed(first: Response, second: Response): void {
  assert.equal(second.status, first.status, JSON.stringify(second.body));
  assert.deepEqual(second.body, first.body);
  assert.equal(second.headers.get('content-type'), first.headers.get('content-type'));
  assert.equal(first.headers.get('idempotent-replayed'), null);
  assert.equal(second.headers.get('idempotent-replayed'), 'true');
}

function assertError(res: Response, status: number, code: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.error.code, code, JSON.stringify(res.body));
  assert.equal(typeof res.body.error.message, 'string');
}

async function pipelineOf(t: Tenant, extra: Json = {}): Promise<Json> {
  return createPipeline(h, t, { name: `p-${randomUUID().slice(0, 8)}`, steps: [step('a')], ...extra });
}

describe('each covered route: the same key twice creates once and answers the same', () => {
  it('POST /pipelines/{id}/run', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    const body = { context: { commit: 'abc' } };
    const first = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const second = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body });
    assertReplayed(first, second);
    assert.equal(await runsOf(p.id), 1);
    assert.equal((await keyRow(t.id, k))?.status, 'completed');
  });

  it('POST /scans/{id}/trigger', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const scan = await createScan(h, t, { name: 'manual scan', pipeline_id: p.id });
    const k = key();
    const first = await send('POST', `/api/v1/scans/${scan.id}/trigger`, k, { token: t.token, body: {} });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const second = await send('POST', `/api/v1/scans/${scan.id}/trigger`, k, { token: t.token, body: {} });
    assertReplayed(first, second);
    assert.equal(await runsOf(p.id), 1);
    assert.equal(await count('SELECT 1 FROM scan_fires WHERE scan_id = $1', [scan.id]), 1);
  });

  it('POST /webhooks/{id}, with the webhook token and with a tenant token: the key is the tenant\'s either way', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t, { triggers: ['webhook'] });
    const tok = await h.request('POST', `/api/v1/pipelines/${p.id}/webhook-token`, { token: t.token });
    assert.equal(tok.status, 201, JSON.stringify(tok.body));
    const k = key();
    const body = { ref: 'refs/heads/main' };
    const first = await send('POST', `/api/v1/webhooks/${p.id}`, k, { headers: { 'x-webhook-token': tok.body.token }, body });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const second = await send('POST', `/api/v1/webhooks/${p.id}`, k, { headers: { 'x-webhook-token': tok.body.token }, body });
    assertReplayed(first, second);
    // The same request authenticated by a tenant token of the pipeline's tenant: same key space.
    const third = await send('POST', `/api/v1/webhooks/${p.id}`, k, { token: t.token, body });
    assertReplayed(first, third);
    assert.equal(await runsOf(p.id), 1);
    // The event header is part of the request: another event under the key is another request.
    const push = await send('POST', `/api/v1/webhooks/${p.id}`, k, { token: t.token, body, headers: { 'x-github-event': 'push' } });
    assertError(push, 422, 'idempotency_key_reused');
    assert.equal(await runsOf(p.id), 1);
  });

  it('POST /pipelines', async () => {
    const t = await createTenant(h);
    const k = key();
    const doc = oneStep('created once');
    const first = await send('POST', '/api/v1/pipelines', k, { token: t.token, body: doc });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const second = await send('POST', '/api/v1/pipelines', k, { token: t.token, body: doc });
    assertReplayed(first, second); // not 409 name_taken: the retry is the same request
    assert.equal(await count('SELECT 1 FROM pipeline_templates WHERE tenant_id = $1', [t.id]), 1);
  });

  it('POST /scans', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    const body = { name: 'nightly', pipeline_id: p.id, schedule_type: 'daily' };
    const first = await send('POST', '/api/v1/scans', k, { token: t.token, body });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const second = await send('POST', '/api/v1/scans', k, { token: t.token, body });
    assertReplayed(first, second);
    assert.equal(await count('SELECT 1 FROM scans WHERE tenant_id = $1', [t.id]), 1);
  });

  it('POST /assets (now one transaction with the key\'s marker)', async () => {
    const t = await createTenant(h);
    const k = key();
    const body = { type: 'domain', name: 'example.com', tags: ['prod'] };
    const first = await send('POST', '/api/v1/assets', k, { token: t.token, body });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const second = await send('POST', '/api/v1/assets', k, { token: t.token, body });
    assertReplayed(first, second);
    assert.equal(await count('SELECT 1 FROM assets WHERE tenant_id = $1', [t.id]), 1);
  });
});

describe('what a key stands for', () => {
  it('the same key with another body, path or method is 422 idempotency_key_reused and creates nothing', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const other = await pipelineOf(t);
    const k = key();
    const first = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: { context: { n: 1 } } });
    assert.equal(first.status, 201);
    const changedBody = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: { context: { n: 2 } } });
    assertError(changedBody, 422, 'idempotency_key_reused');
    const changedPath = await send('POST', `/api/v1/pipelines/${other.id}/run`, k, { token: t.token, body: { context: { n: 1 } } });
    assertError(changedPath, 422, 'idempotency_key_reused');
    const asset = await send('POST', '/api/v1/assets', k, { token: t.token, body: { type: 'domain', name: 'x.example' } });
    assertError(asset, 422, 'idempotency_key_reused');
    assert.equal(await runsOf(p.id), 1);
    assert.equal(await runsOf(other.id), 0);
    assert.equal(await count('SELECT 1 FROM assets WHERE tenant_id = $1', [t.id]), 0);
    // The original is still replayed.
    assertReplayed(first, await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: { context: { n: 1 } } }));
  });

  it('the body is compared in a canonical form: key order and whitespace do not make another request', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    const first = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, raw: '{"context":{"a":1,"b":[1,2]},"triggered_by":"ci"}' });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const reordered = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, raw: '{ "triggered_by": "ci",\n  "context": {"b": [1, 2], "a": 1.0} }' });
    assertReplayed(first, reordered);
    assert.equal(await runsOf(p.id), 1);
    // Order inside an array is meaning, not form.
    const swapped = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, raw: '{"context":{"a":1,"b":[2,1]},"triggered_by":"ci"}' });
    assertError(swapped, 422, 'idempotency_key_reused');
  });

  it('a deeply nested body is hashed without recursion', () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const a = requestHash('POST', '/x', deep);
    assert.equal(a.length, 32);
    assert.ok(a.equals(requestHash('post', '/x', deep)));
    assert.ok(!a.equals(requestHash('POST', '/x', '['.repeat(99_999) + ']'.repeat(99_999))));
  });

  it('keys are per tenant: two tenants use the same key independently', async () => {
    const k = key();
    for (let i = 0; i < 2; i++) {
      const t = await createTenant(h);
      const p = await pipelineOf(t);
      const res = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: {} });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.headers.get('idempotent-replayed'), null);
      assert.equal(await runsOf(p.id), 1);
    }
    assert.equal(await count('SELECT 1 FROM idempotency_keys WHERE key = $1', [k]), 2);
  });

  it('a key must be 1 to 255 printable ASCII characters, else 400 naming the header', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    for (const bad of ['', 'x'.repeat(256), 'clé', 'a\tb']) {
      const res = await send('POST', `/api/v1/pipelines/${p.id}/run`, bad, { token: t.token, body: {} });
      assertError(res, 400, 'invalid_request');
      assert.equal(res.body.error.details[0].path, 'Idempotency-Key', JSON.stringify(res.body));
    }
    assert.equal(await runsOf(p.id), 0);
    const longest = await send('POST', `/api/v1/pipelines/${p.id}/run`, `${'k'.repeat(250)} ~!{}`, { token: t.token, body: {} });
    assert.equal(longest.status, 201, JSON.stringify(longest.body));
  });

  it('a request without the header behaves as before: every request creates, nothing is recorded', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    for (let i = 0; i < 2; i++) {
      const res = await send('POST', `/api/v1/pipelines/${p.id}/run`, null, { token: t.token, body: {} });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.headers.get('idempotent-replayed'), null);
    }
    await createAsset(h, t, { type: 'domain', name: 'a.example' });
    await createAsset(h, t, { type: 'domain', name: 'a.example' });
    assert.equal(await runsOf(p.id), 2);
    assert.equal(await count('SELECT 1 FROM assets WHERE tenant_id = $1', [t.id]), 2);
    assert.equal(await count('SELECT 1 FROM idempotency_keys WHERE tenant_id = $1', [t.id]), 0);
  });
});

describe('errors', () => {
  it('a 4xx is stored and replayed like a success (nothing was created)', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    const assetId = randomUUID();
    const body = { asset_id: assetId };
    const first = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body });
    assertError(first, 400, 'invalid_request'); // unknown asset
    // Even once the asset exists, the key answers what it answered.
    await h.pool.query(`INSERT INTO assets (id, tenant_id, type, name) VALUES ($1, $2, 'domain', 'late.example')`, [assetId, t.id]);
    assertReplayed(first, await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body }));
    assert.equal(await runsOf(p.id), 0);
  });

  it('a 5xx releases the key: the retry runs, once', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    // A fault in the database while the run is created.
    await h.pool.query(`
      CREATE FUNCTION test_fail_run() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'disk on fire' USING ERRCODE = 'XX000'; END $$;
      CREATE TRIGGER test_fail_run BEFORE INSERT ON pipeline_runs FOR EACH ROW EXECUTE FUNCTION test_fail_run();`);
    try {
      const failed = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: {} });
      assertError(failed, 500, 'internal_error');
      assert.equal(await keyRow(t.id, k), undefined, 'released');
    } finally {
      await h.pool.query('DROP TRIGGER test_fail_run ON pipeline_runs; DROP FUNCTION test_fail_run()');
    }
    const retried = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: {} });
    assert.equal(retried.status, 201, JSON.stringify(retried.body));
    assertReplayed(retried, await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: {} }));
    assert.equal(await runsOf(p.id), 1);
  });
});

describe('concurrency', () => {
  it('10 identical requests at once create exactly one run; the others replay it or are told to retry', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    const answers = await Promise.all(Array.from({ length: 10 }, () =>
      send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: { context: { build: 7 } } })));
    assert.equal(await runsOf(p.id), 1);
    const created = answers.filter((a) => a.status === 201);
    assert.ok(created.length >= 1, JSON.stringify(answers.map((a) => a.status)));
    for (const a of created) assert.deepEqual(a.body, created[0].body);
    for (const a of answers.filter((x) => x.status !== 201)) {
      assertError(a, 409, 'idempotency_key_in_progress');
      assert.equal(a.headers.get('retry-after'), '1');
    }
    // Once settled, every retry gets the run.
    const again = await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: { context: { build: 7 } } });
    assert.equal(again.status, 201);
    assert.deepEqual(again.body, created[0].body);
  });

  it('10 identical asset creations at once create one asset', async () => {
    const t = await createTenant(h);
    const k = key();
    const answers = await Promise.all(Array.from({ length: 10 }, () =>
      send('POST', '/api/v1/assets', k, { token: t.token, body: { type: 'domain', name: 'once.example' } })));
    assert.ok(answers.every((a) => a.status === 201 || a.status === 409), JSON.stringify(answers.map((a) => a.status)));
    assert.equal(await count('SELECT 1 FROM assets WHERE tenant_id = $1', [t.id]), 1);
  });
});

describe('crashes', () => {
  /** A key as a process left it when it died, for the request `POST path` with `body`. */
  async function leftBehind(t: Tenant, k: string, path: string, body: Json, status: 'processing' | 'committed', reservedAgo: string) {
    await h.pool.query(
      `INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, owner, reserved_at, created_at)
       VALUES ($1, $2, $3, $4, $5, now() - $6::interval, now() - $6::interval)`,
      [t.id, k, requestHash('POST', path, JSON.stringify(body)), status, randomUUID(), reservedAgo],
    );
  }

  it('committed without an answer (died between its commit and storing the answer): never carried out again, 409', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const path = `/api/v1/pipelines/${p.id}/run`;
    const k = key();
    await leftBehind(t, k, path, {}, 'committed', '5 minutes');
    const res = await send('POST', path, k, { token: t.token, body: {} });
    assertError(res, 409, 'idempotency_key_response_lost');
    assert.match(res.body.error.message, /carried out/);
    assert.equal(await runsOf(p.id), 0);
    // Still the same on every retry, and the key is left as it was.
    assertError(await send('POST', path, k, { token: t.token, body: {} }), 409, 'idempotency_key_response_lost');
    assert.equal((await keyRow(t.id, k))?.status, 'committed');
    // Committed a moment ago: the answer is probably being stored; retry shortly.
    const recent = key();
    await leftBehind(t, recent, path, {}, 'committed', '1 second');
    assertError(await send('POST', path, recent, { token: t.token, body: {} }), 409, 'idempotency_key_in_progress');
    assert.equal(await runsOf(p.id), 0);
  });

  it('a reservation never committed (died before committing): in progress within the lease, then a retry takes it over and runs once', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const path = `/api/v1/pipelines/${p.id}/run`;
    const fresh = key();
    await leftBehind(t, fresh, path, {}, 'processing', '2 seconds');
    const inProgress = await send('POST', path, fresh, { token: t.token, body: {} });
    assertError(inProgress, 409, 'idempotency_key_in_progress');
    assert.equal(inProgress.headers.get('retry-after'), '1');
    assert.equal(await runsOf(p.id), 0);

    const stale = key();
    await leftBehind(t, stale, path, {}, 'processing', '5 minutes');
    // Another request under a stale key is still another request.
    assertError(await send('POST', path, stale, { token: t.token, body: { triggered_by: 'x' } }), 422, 'idempotency_key_reused');
    const answers = await Promise.all(Array.from({ length: 5 }, () => send('POST', path, stale, { token: t.token, body: {} })));
    assert.equal(answers.filter((a) => a.status === 201).length >= 1, true, JSON.stringify(answers.map((a) => a.status)));
    assert.equal(await runsOf(p.id), 1);
    const replay = await send('POST', path, stale, { token: t.token, body: {} });
    assert.equal(replay.status, 201);
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.equal(await runsOf(p.id), 1);
  });

  it('a request that loses its key before its work commits rolls the work back and answers 409', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const routes = [
      { path: `/api/v1/pipelines/${p.id}/run`, body: {}, created: () => runsOf(p.id) },
      { path: '/api/v1/assets', body: { type: 'domain', name: 'lost.example' }, created: () => count('SELECT 1 FROM assets WHERE tenant_id = $1', [t.id]) },
    ];
    const keys = routes.map(() => key());
    // The marker finds the key no longer this request's (as after a takeover).
    await h.pool.query(`
      CREATE FUNCTION test_steal_key() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.status = 'committed' THEN RETURN NULL; END IF; RETURN NEW; END $$;
      CREATE TRIGGER test_steal_key BEFORE UPDATE ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION test_steal_key();`);
    try {
      for (const [i, r] of routes.entries()) {
        const lost = await send('POST', r.path, keys[i], { token: t.token, body: r.body });
        assertError(lost, 409, 'idempotency_key_in_progress');
        assert.equal(await r.created(), 0, `${r.path}: the work was rolled back with the marker`);
        assert.equal((await keyRow(t.id, keys[i]))?.status, 'processing', 'left to the request that holds it');
      }
    } finally {
      await h.pool.query('DROP TRIGGER test_steal_key ON idempotency_keys; DROP FUNCTION test_steal_key()');
    }
    // The holder died: after the lease a retry runs.
    for (const [i, r] of routes.entries()) {
      await h.pool.query(`UPDATE idempotency_keys SET reserved_at = now() - interval '1 hour' WHERE tenant_id = $1 AND key = $2`, [t.id, keys[i]]);
      assert.equal((await send('POST', r.path, keys[i], { token: t.token, body: r.body })).status, 201);
      assert.equal(await r.created(), 1);
    }
  });

  it('a takeover waits for a transaction that is committing the key, then finds it committed', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const path = `/api/v1/pipelines/${p.id}/run`;
    const k = key();
    // The first request's reservation looks older than the lease from the start, and its
    // transaction is slow after the marker was written: a retry tries to take the key over.
    await h.pool.query(`
      CREATE FUNCTION test_old_reservation() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN NEW.reserved_at := now() - interval '1 hour'; RETURN NEW; END $$;
      CREATE TRIGGER test_old_reservation BEFORE INSERT ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION test_old_reservation();
      CREATE FUNCTION test_slow_run() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
      CREATE TRIGGER test_slow_run BEFORE INSERT ON pipeline_runs FOR EACH ROW EXECUTE FUNCTION test_slow_run();`);
    try {
      const first = send('POST', path, k, { token: t.token, body: {} });
      let sleeping = false;
      for (let i = 0; i < 400 && !sleeping; i++) {
        const { rows } = await h.pool.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'`);
        sleeping = rows.length > 0;
        if (!sleeping) await new Promise((r) => setTimeout(r, 5));
      }
      assert.ok(sleeping, 'the first request is inside its transaction');
      const second = await send('POST', path, k, { token: t.token, body: {} });
      const answer = await first;
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      // Committed (answer not yet stored) or completed: either way not carried out again.
      if (second.status === 201) assertReplayed(answer, second);
      else assertError(second, 409, 'idempotency_key_response_lost');
      assert.equal(await runsOf(p.id), 1);
    } finally {
      await h.pool.query(`
        DROP TRIGGER test_old_reservation ON idempotency_keys; DROP FUNCTION test_old_reservation();
        DROP TRIGGER test_slow_run ON pipeline_runs; DROP FUNCTION test_slow_run();`);
    }
  });
});

describe('the marker commits with the work (db/transaction.ts scope)', () => {
  async function reserve(t: Tenant, k: string, owner: string) {
    await h.pool.query(`INSERT INTO idempotency_keys (tenant_id, key, request_hash, owner) VALUES ($1, $2, '\\x00', $3)`, [t.id, k, owner]);
  }
  const marker = (t: Tenant, k: string, owner: string) => ({
    statements: [{ q: idempotencySql.MarkIdempotencyKeyCommitted, values: [t.id, k, owner] }],
  });
  const insertAsset = (t: Tenant, name: string) => (tx: Tx) =>
    one(tx, assetsSql.InsertAsset, [t.id, 'domain', name, null, [], 'medium', {}]);
  const assets = (t: Tenant) => count('SELECT 1 FROM assets WHERE tenant_id = $1', [t.id]);

  it('commits with the transaction, rolls back with it, and is not carried outside the scope', async () => {
    const t = await createTenant(h);
    const k = key();
    const owner = randomUUID();
    await reserve(t, k, owner);
    await assert.rejects(carryingWrites(marker(t, k, owner), () => withTransaction(h.pool, async (tx) => {
      await insertAsset(t, 'rolled-back.example')(tx);
      throw new Error('handler failed');
    })), /handler failed/);
    assert.equal((await keyRow(t.id, k))?.status, 'processing');
    assert.equal(await assets(t), 0);

    await carryingWrites(marker(t, k, owner), () => withTransaction(h.pool, insertAsset(t, 'kept.example')));
    assert.equal((await keyRow(t.id, k))?.status, 'committed');
    assert.equal(await assets(t), 1);

    // Outside any scope a transaction carries nothing (the key stays as it is).
    await h.pool.query(`UPDATE idempotency_keys SET status = 'processing' WHERE tenant_id = $1 AND key = $2`, [t.id, k]);
    await withTransaction(h.pool, insertAsset(t, 'plain.example'));
    assert.equal((await keyRow(t.id, k))?.status, 'processing');
  });

  it('a transaction whose request no longer holds the key fails and keeps nothing', async () => {
    const t = await createTenant(h);
    const k = key();
    await reserve(t, k, randomUUID()); // another owner took it over
    await assert.rejects(
      carryingWrites(marker(t, k, randomUUID()), () => withTransaction(h.pool, insertAsset(t, 'lost.example'))),
      (err: { code?: string }) => err.code === RESERVATION_LOST,
    );
    assert.equal(await assets(t), 0);
  });
});

describe('expiry and the purge', () => {
  it('a key older than 24 hours behaves as new, and the purge deletes only expired keys', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const path = `/api/v1/pipelines/${p.id}/run`;
    const old = key();
    const young = key();
    assert.equal((await send('POST', path, old, { token: t.token, body: {} })).status, 201);
    assert.equal((await send('POST', path, young, { token: t.token, body: {} })).status, 201);
    await h.pool.query(`UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE tenant_id = $1 AND key = $2`, [t.id, old]);

    // Expired: a retry is a new request (a new run), even with another body.
    const renewed = await send('POST', path, old, { token: t.token, body: { triggered_by: 'tomorrow' } });
    assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
    assert.equal(renewed.headers.get('idempotent-replayed'), null);
    assert.equal(await runsOf(p.id), 3);
    // …and the key now stands for the new request, for another 24 hours.
    assertReplayed(renewed, await send('POST', path, old, { token: t.token, body: { triggered_by: 'tomorrow' } }));
    assert.equal(await runsOf(p.id), 3);

    await h.pool.query(`UPDATE idempotency_keys SET created_at = now() - make_interval(secs => $3 + 60) WHERE tenant_id = $1 AND key = $2`,
      [t.id, old, IDEMPOTENCY_KEY_TTL_SECONDS]);
    assert.equal(await purgeIdempotencyKeys(h.pool), 1);
    assert.equal(await keyRow(t.id, old), undefined);
    assert.equal((await keyRow(t.id, young))?.status, 'completed');
    assert.equal(await purgeIdempotencyKeys(h.pool), 0);

    // The purge never waits for a key a request holds: it leaves it for the next purge.
    await h.pool.query(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE tenant_id = $1 AND key = $2`, [t.id, young]);
    const holder = await h.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 FOR UPDATE', [t.id, young]);
      assert.equal(await purgeIdempotencyKeys(h.pool), 0);
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    assert.equal(await purgeIdempotencyKeys(h.pool), 1);
  });

  it('the maintenance sweep purges expired keys', async () => {
    const t = await createTenant(h);
    const p = await pipelineOf(t);
    const k = key();
    assert.equal((await send('POST', `/api/v1/pipelines/${p.id}/run`, k, { token: t.token, body: {} })).status, 201);
    await h.pool.query(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE tenant_id = $1 AND key = $2`, [t.id, k]);
    const report = await sweep(h.pool, h.orchestration);
    assert.equal(report?.purgedIdempotencyKeys, 1);
    assert.equal(await keyRow(t.id, k), undefined);
  });
});
