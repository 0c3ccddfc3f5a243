// The channels API (API.md Part 2 "Events out: notification channels"): what a channel may
// be, the secret shown once and stored encrypted (never as itself, never usable from another
// row or under another key), rotation, listing, changing, deleting, other tenants' ids.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import { createPipeline, createTenant, step, type Tenant } from './support/fixtures.ts';
import { DEFAULT_DELIVERY } from '../src/config.ts';
import { SecretBox, SecretUnreadable, secretBox } from '../src/delivery/secrets.ts';

let h: Harness;
let t: Tenant;

before(async () => {
  h = await startHarness({ worker: false, orchestration: { delivery: { ...DEFAULT_DELIVERY, smtpUrl: 'smtp://127.0.0.1:25' } } });
  t = await createTenant(h, 'channels');
});
after(() => h.close());

const post = (body: unknown, tenant = t) => h.request('POST', '/api/v1/channels', { token: tenant.token, body });

describe('creating a channel', () => {
  it('a webhook: 201 with its secret once; GET never shows it', async () => {
    const p = await createPipeline(h, t, { name: 'Watched', steps: [step('a')] });
    const res = await post({
      name: '  Ops hook ', type: 'webhook', url: 'https://hooks.example.com/scanflow', events: ['pipeline.run.failed', 'finding.*', 'pipeline.run.failed'],
      min_severity: 'high', pipeline_ids: [p.id.toUpperCase()],
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const { channel, secret } = res.body;
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.deepEqual({ ...channel, id: undefined, created_at: undefined, updated_at: undefined }, {
      id: undefined, tenant_id: t.id, name: 'Ops hook', type: 'webhook', url: 'https://hooks.example.com/scanflow', to: null,
      events: ['pipeline.run.failed', 'finding.*'], min_severity: 'high', pipeline_ids: [p.id], enabled: true,
      disabled_reason: null, disabled_at: null, secret_prefix: secret.slice(0, 10), previous_secret_until: null,
      failing_since: null, last_error: null, last_attempt_at: null, last_success_at: null, created_at: undefined, updated_at: undefined,
    });
    const got = await h.request('GET', `/api/v1/channels/${channel.id}`, { token: t.token });
    assert.equal(got.status, 200);
    assert.doesNotMatch(JSON.stringify(got.body), new RegExp(secret.slice(10, 30).replace(/[+/]/g, '\\$&')));
    const list = await h.request('GET', '/api/v1/channels', { token: t.token });
    assert.ok(list.body.items.some((c: any) => c.id === channel.id));
    assert.doesNotMatch(JSON.stringify(list.body), new RegExp(secret.slice(10, 30).replace(/[+/]/g, '\\$&')));
  });

  it('Slack and email need no secret; email takes one address or a list', async () => {
    const slack = await post({ name: 'slack', type: 'slack', url: 'https://hooks.slack.com/services/T/B/x', events: ['*'] });
    assert.equal(slack.status, 201, JSON.stringify(slack.body));
    assert.equal(slack.body.secret, undefined);
    assert.equal(slack.body.channel.secret_prefix, null);
    const mail = await post({ name: 'mail', type: 'email', to: 'sec@example.com' });
    assert.equal(mail.status, 201, JSON.stringify(mail.body));
    assert.deepEqual([mail.body.channel.to, mail.body.channel.events, mail.body.channel.url], [['sec@example.com'], [], null]);
  });

  it('refuses what cannot be delivered to, naming the field', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ name: 'x', type: 'webhook', url: 'ftp://example.com/x' }, 'url', /http:\/\/ or https:\/\//],
      [{ name: 'x', type: 'webhook', url: 'file:///etc/passwd' }, 'url', /http:\/\/ or https:\/\//],
      [{ name: 'x', type: 'webhook', url: 'not a url' }, 'url', /absolute/],
      // Where clouds serve instance credentials, however the address is written.
      [{ name: 'x', type: 'webhook', url: 'http://169.254.169.254/latest/meta-data/' }, 'url', /must not point at 169\.254\.169\.254 \(a link-local/],
      [{ name: 'x', type: 'webhook', url: 'http://2852039166/' }, 'url', /link-local/],
      [{ name: 'x', type: 'slack', url: 'http://[::ffff:169.254.169.254]/' }, 'url', /link-local/],
      [{ name: 'x', type: 'webhook', url: 'http://[fe80::1]:8080/' }, 'url', /link-local/],
      [{ name: 'x', type: 'webhook', url: 'http://0.0.0.0:8080/' }, 'url', /unspecified/],
      [{ name: 'x', type: 'webhook' }, 'url', /required/],
      [{ name: 'x', type: 'slack', to: ['a@example.com'] }, 'url', /required/],
      [{ name: 'x', type: 'email', url: 'https://example.com' }, 'to', /required/],
      [{ name: 'x', type: 'email', to: ['not-an-address'] }, 'to[0]', /email address/],
      [{ name: 'x', type: 'sms', url: 'https://example.com' }, 'type', /webhook, slack or email/],
      [{ name: 'x', type: 'webhook', url: 'https://example.com', events: ['pipeline.run.finished'] }, 'events[0]', /selects no event/],
      [{ name: 'x', type: 'webhook', url: 'https://example.com', events: ['Pipeline Run'] }, 'events[0]', /not an event name/],
      [{ name: 'x', type: 'webhook', url: 'https://example.com', min_severity: 'urgent' }, 'min_severity', /critical, high/],
      [{ name: 'x', type: 'webhook', url: 'https://example.com', pipeline_ids: ['nope'] }, 'pipeline_ids[0]', /UUID/],
      [{ name: 'x', type: 'webhook', url: 'https://example.com', pipeline_ids: ['00000000-0000-4000-8000-000000000000'] }, 'pipeline_ids[0]', /unknown pipeline/],
      [{ name: '', type: 'webhook', url: 'https://example.com' }, 'name', /empty/],
    ];
    for (const [body, path, message] of cases) {
      const res = await post(body);
      assert.equal(res.status, 400, `${JSON.stringify(body)} → ${res.status} ${JSON.stringify(res.body)}`);
      const d = res.body.error.details.find((x: any) => x.path === path);
      assert.ok(d, `${JSON.stringify(body)}: no problem at ${path}: ${JSON.stringify(res.body.error.details)}`);
      assert.match(d.message, message);
    }
    assert.equal((await h.pool.query(`SELECT count(*)::int AS n FROM channels WHERE name = 'x'`)).rows[0].n, 0);
  });

  it('email channels need SMTP_URL on the server', async () => {
    const bare = await startHarness({ worker: false });
    try {
      const t2 = await createTenant(bare, 'no-smtp');
      const res = await bare.request('POST', '/api/v1/channels', { token: t2.token, body: { name: 'm', type: 'email', to: 'a@example.com' } });
      assert.equal(res.status, 400);
      assert.deepEqual(res.body.error.details, [{ path: 'type', message: 'email channels need SMTP_URL to be set on the server' }]);
    } finally {
      await bare.close();
    }
  });

  it('a name is taken once per tenant (ignoring case); another tenant may use it', async () => {
    assert.equal((await post({ name: 'Dup', type: 'slack', url: 'https://example.com/a' })).status, 201);
    const again = await post({ name: 'dup', type: 'slack', url: 'https://example.com/b' });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'name_taken');
    const other = await createTenant(h, 'channels-other');
    assert.equal((await post({ name: 'Dup', type: 'slack', url: 'https://example.com/a' }, other)).status, 201);
  });
});

describe('the secret at rest', () => {
  it('is stored AES-256-GCM-encrypted, bound to its channel: the row holds neither it nor its bytes, another row cannot use it', async () => {
    const a = (await post({ name: 'rest-a', type: 'webhook', url: 'https://example.com/a' })).body;
    const b = (await post({ name: 'rest-b', type: 'webhook', url: 'https://example.com/b' })).body;
    const { rows } = await h.pool.query<{ id: string; secret: Buffer }>(`SELECT id, secret FROM channels WHERE id = ANY ($1) ORDER BY name`, [[a.channel.id, b.channel.id]]);
    const raw = Buffer.from(a.secret.slice(6), 'base64');
    assert.ok(!rows[0].secret.includes(raw), 'the key bytes are not in the row');
    assert.ok(!rows[0].secret.toString('latin1').includes(a.secret), 'nor the secret as text');
    assert.equal(rows[0].secret.length, 1 + 8 + 12 + a.secret.length + 16, 'version, key id, nonce, ciphertext, tag');
    const box = await secretBox(h.pool, null);
    assert.equal(box.decrypt(rows[0].secret, a.channel.id), a.secret);
    assert.throws(() => box.decrypt(rows[0].secret, b.channel.id), SecretUnreadable, 'bound to its channel id');
    const other = new SecretBox([Buffer.alloc(32, 1)]);
    assert.throws(() => other.decrypt(rows[0].secret, a.channel.id), /another secrets key/);
    const tampered = Buffer.from(rows[0].secret);
    tampered[30] ^= 1;
    assert.throws(() => box.decrypt(tampered, a.channel.id), /does not decrypt/);
  });

  it('with SECRETS_KEY, new secrets are encrypted under it; the generated key still reads the old ones', async () => {
    const key = Buffer.alloc(32, 42);
    const generated = await secretBox(h.pool, null);
    const old = generated.encrypt('whsec_old', 'c1');
    const withKey = await secretBox(h.pool, key);
    assert.equal(withKey.keyInDatabase, false);
    assert.equal(withKey.decrypt(old, 'c1'), 'whsec_old');
    const fresh = withKey.encrypt('whsec_new', 'c1');
    assert.equal(new SecretBox([key]).decrypt(fresh, 'c1'), 'whsec_new', 'only SECRETS_KEY is needed for new ones');
    assert.throws(() => new SecretBox([Buffer.alloc(32, 3)]).decrypt(fresh, 'c1'), SecretUnreadable);
  });
});

describe('changing a channel', () => {
  it('PUT changes what is given and keeps the rest; the type cannot change; disabling says so', async () => {
    const { channel } = (await post({ name: 'changing', type: 'webhook', url: 'https://example.com/a', events: ['agent.offline'] })).body;
    const res = await h.request('PUT', `/api/v1/channels/${channel.id}`, { token: t.token, body: { events: ['scan.fired'], enabled: false } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual([res.body.events, res.body.url, res.body.enabled, res.body.disabled_reason], [['scan.fired'], 'https://example.com/a', false, 'disabled by request']);
    const type = await h.request('PUT', `/api/v1/channels/${channel.id}`, { token: t.token, body: { type: 'slack' } });
    assert.equal(type.status, 400);
    assert.equal(type.body.error.details[0].path, 'type');
    const url = await h.request('PUT', `/api/v1/channels/${channel.id}`, { token: t.token, body: { url: 'gopher://x' } });
    assert.equal(url.status, 400);
    const on = await h.request('PUT', `/api/v1/channels/${channel.id}`, { token: t.token, body: { enabled: true } });
    assert.deepEqual([on.body.enabled, on.body.disabled_reason, on.body.disabled_at], [true, null, null]);
  });

  it('rotate-secret answers the new secret once; Slack and email have none', async () => {
    const { channel, secret } = (await post({ name: 'rotate', type: 'webhook', url: 'https://example.com/r' })).body;
    const res = await h.request('POST', `/api/v1/channels/${channel.id}/rotate-secret`, { token: t.token, body: { grace_seconds: 600 } });
    assert.equal(res.status, 200);
    assert.notEqual(res.body.secret, secret);
    assert.ok(Math.abs(Date.parse(res.body.channel.previous_secret_until) - Date.now() - 600_000) < 10_000);
    const bad = await h.request('POST', `/api/v1/channels/${channel.id}/rotate-secret`, { token: t.token, body: { grace_seconds: -1 } });
    assert.equal(bad.status, 400);
    const slack = (await post({ name: 'rotate-slack', type: 'slack', url: 'https://example.com/s' })).body.channel;
    const none = await h.request('POST', `/api/v1/channels/${slack.id}/rotate-secret`, { token: t.token, body: {} });
    assert.equal(none.status, 409);
  });

  it('another tenant\'s channel is a 404 everywhere; DELETE removes it with its deliveries', async () => {
    const { channel } = (await post({ name: 'mine', type: 'webhook', url: 'https://example.com/m', events: ['*'] })).body;
    const other = await createTenant(h, 'channels-intruder');
    for (const [method, path, body] of [
      ['GET', `/api/v1/channels/${channel.id}`], ['PUT', `/api/v1/channels/${channel.id}`, { enabled: false }],
      ['DELETE', `/api/v1/channels/${channel.id}`], ['POST', `/api/v1/channels/${channel.id}/rotate-secret`, {}],
      ['POST', `/api/v1/channels/${channel.id}/test`], ['GET', `/api/v1/channels/${channel.id}/deliveries`],
    ] as [string, string, unknown?][]) {
      const res = await h.request(method, path, { token: other.token, body });
      assert.equal(res.status, 404, `${method} ${path}: ${res.status}`);
    }
    assert.equal((await h.request('POST', `/api/v1/channels/${channel.id}/test`, { token: t.token })).status, 202);
    assert.equal((await h.pool.query(`SELECT count(*)::int AS n FROM deliveries WHERE channel_id = $1`, [channel.id])).rows[0].n, 1);
    assert.equal((await h.request('DELETE', `/api/v1/channels/${channel.id}`, { token: t.token })).status, 204);
    assert.equal((await h.request('GET', `/api/v1/channels/${channel.id}`, { token: t.token })).status, 404);
    assert.equal((await h.pool.query(`SELECT count(*)::int AS n FROM deliveries WHERE channel_id = $1`, [channel.id])).rows[0].n, 0);
  });
});
