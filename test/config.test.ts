// Process configuration from the environment: defaults, and refusals that name the variable.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, DEFAULT_DELIVERY, DEFAULT_ORCHESTRATION, DEFAULT_RETENTION, loadConfig } from '../src/config.ts';

function configError(env: Record<string, string | undefined>): ConfigError {
  let caught: unknown;
  try {
    loadConfig(env);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError for ${JSON.stringify(env)}, got ${String(caught)}`);
  return caught;
}

describe('loadConfig defaults', () => {
  const config = loadConfig({});

  it('listens on 127.0.0.1:8080 and runs every role', () => {
    assert.equal(config.port, 8080);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.role, 'all');
    assert.equal(config.logLevel, 'info');
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.adminToken, undefined);
    assert.equal(config.dataDir, '.data');
    assert.equal(config.embeddedPgPort, 54329);
    assert.equal(config.workerConcurrency, 8);
  });

  it('durations in seconds: ACK_TIMEOUT 30s, QUEUE_TIMEOUT 1h, AGENT_OFFLINE_AFTER 45s', () => {
    const o = config.orchestration;
    assert.equal(o.ackTimeoutSeconds, 30);
    assert.equal(o.queueTimeoutSeconds, 3600);
    assert.equal(o.agentOfflineAfterSeconds, 45);
    assert.ok(o.agentOfflineAfterSeconds <= 60, 'an agent is declared offline within a minute');
    assert.ok(o.agentOfflineAfterSeconds > o.heartbeatIntervalSeconds, 'a single late heartbeat does not make an agent offline');
    assert.deepEqual(o, DEFAULT_ORCHESTRATION);
  });

  it('step output: LOG_MAX_BYTES 10 MiB', () => {
    assert.equal(config.orchestration.logMaxBytes, 10 * 1024 * 1024);
  });

  it('retention: output, events and deliveries 30 days, finished commands 90 days', () => {
    assert.deepEqual(config.orchestration.retention, { output: 30 * 86_400, events: 30 * 86_400, commands: 90 * 86_400, deliveries: 30 * 86_400 });
  });

  it('ingest bodies: INGEST_MAX_BYTES 50 MiB (after decoding)', () => {
    assert.equal(config.orchestration.ingestMaxBytes, 50 * 1024 * 1024);
  });

  it('empty variables count as unset', () => {
    const c = loadConfig({ PORT: '', ROLE: '', ACK_TIMEOUT: '' });
    assert.equal(c.port, 8080);
    assert.equal(c.role, 'all');
    assert.equal(c.orchestration.ackTimeoutSeconds, 30);
  });

  it('does not read unrelated variables', () => {
    assert.deepEqual(loadConfig({ HOME: '/root', PATH: '/bin' }), config);
  });
});

describe('loadConfig reads the environment', () => {
  it('takes given values', () => {
    const c = loadConfig({
      DATABASE_URL: 'postgres://u:p@db:5432/scanflow', PORT: '9090', HOST: '0.0.0.0', ADMIN_TOKEN: 'a'.repeat(32),
      LOG_LEVEL: 'warn', ROLE: 'worker', WORKER_CONCURRENCY: '3', ACK_TIMEOUT: '2m', QUEUE_TIMEOUT: '1h30m',
      AGENT_OFFLINE_AFTER: '90', HEARTBEAT_INTERVAL: '20s', POLL_INTERVAL: '1s', EMBEDDED_PG_PORT: '5555', DATA_DIR: '/tmp/x',
      WORKER_HEARTBEAT_INTERVAL: '2s', WORKER_DEAD_AFTER: '1m', LOG_MAX_BYTES: '65536', OUTPUT_RETENTION: '7d',
      INGEST_MAX_BYTES: '104857600',
    });
    assert.equal(c.databaseUrl, 'postgres://u:p@db:5432/scanflow');
    assert.equal(c.port, 9090);
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.adminToken, 'a'.repeat(32));
    assert.equal(c.logLevel, 'warn');
    assert.equal(c.role, 'worker');
    assert.equal(c.workerConcurrency, 3);
    assert.equal(c.embeddedPgPort, 5555);
    assert.equal(c.dataDir, '/tmp/x');
    assert.deepEqual(c.orchestration, {
      ackTimeoutSeconds: 120, queueTimeoutSeconds: 5400, agentOfflineAfterSeconds: 90, heartbeatIntervalSeconds: 20, pollIntervalSeconds: 1,
      workerHeartbeatSeconds: 2, workerDeadAfterSeconds: 60, logMaxBytes: 65_536,
      retention: { ...DEFAULT_RETENTION, output: 7 * 86_400 },
      ingestMaxBytes: 100 * 1024 * 1024,
      delivery: { ...DEFAULT_DELIVERY, publicUrl: 'http://127.0.0.1:9090' },
    });
  });

  it('events out: DELIVERY_TIMEOUT 10s, DELIVERY_CONCURRENCY 10, links to this process, no SMTP, the secrets key from the database', () => {
    assert.deepEqual(loadConfig({}).orchestration.delivery, DEFAULT_DELIVERY);
    const hex = 'ab'.repeat(32);
    const c = loadConfig({
      DELIVERY_TIMEOUT: '30s', DELIVERY_CONCURRENCY: '4', SMTP_URL: 'smtp://mail.example:25', SMTP_FROM: 'scans@example.com',
      PUBLIC_URL: 'https://scanflow.example/', SECRETS_KEY: hex, DELIVERY_PRIVATE_NETWORKS: 'deny',
    }).orchestration.delivery;
    assert.deepEqual({ ...c, secretsKey: c.secretsKey?.toString('hex') }, {
      timeoutSeconds: 30, concurrency: 4, smtpUrl: 'smtp://mail.example:25', smtpFrom: 'scans@example.com',
      publicUrl: 'https://scanflow.example', secretsKey: hex, privateNetworks: 'deny',
    });
    const b64 = Buffer.alloc(32, 9).toString('base64');
    assert.equal(loadConfig({ SECRETS_KEY: b64 }).orchestration.delivery.secretsKey?.toString('base64'), b64);
  });

  it('PORT=0 picks a free port', () => assert.equal(loadConfig({ PORT: '0' }).port, 0));

  it('retention settings: durations, and 0 or off keeps a kind forever', () => {
    assert.deepEqual(loadConfig({ OUTPUT_RETENTION: '12h', EVENT_RETENTION: '0', COMMAND_RETENTION: 'off', DELIVERY_RETENTION: '1d' })
      .orchestration.retention, { output: 12 * 3600, events: null, commands: null, deliveries: 86_400 });
    assert.equal(loadConfig({ EVENT_RETENTION: 'OFF' }).orchestration.retention.events, null);
    assert.equal(loadConfig({ COMMAND_RETENTION: '180d' }).orchestration.retention.commands, 180 * 86_400);
  });
});

describe('loadConfig errors name the variable', () => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PORT: '-1' }, 'PORT'],
    [{ ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ ACK_TIMEOUT: '10x' }, 'ACK_TIMEOUT'],
    [{ WORKER_HEARTBEAT_INTERVAL: '10s', WORKER_DEAD_AFTER: '15s' }, 'WORKER_DEAD_AFTER'],
    [{ QUEUE_TIMEOUT: '0s' }, 'QUEUE_TIMEOUT'],
    [{ ROLE: 'everything' }, 'ROLE'],
    [{ LOG_MAX_BYTES: '10MB' }, 'LOG_MAX_BYTES'],
    [{ LOG_MAX_BYTES: '100' }, 'LOG_MAX_BYTES'],
    [{ OUTPUT_RETENTION: 'forever' }, 'OUTPUT_RETENTION'],
    [{ OUTPUT_RETENTION: '30m' }, 'OUTPUT_RETENTION'],
    [{ EVENT_RETENTION: '1d' }, 'EVENT_RETENTION'],
    [{ EVENT_RETENTION: '30 days' }, 'EVENT_RETENTION'],
    [{ COMMAND_RETENTION: '-1' }, 'COMMAND_RETENTION'],
    [{ COMMAND_RETENTION: '3600' }, 'COMMAND_RETENTION'],
    [{ DELIVERY_RETENTION: 'never' }, 'DELIVERY_RETENTION'],
    [{ INGEST_MAX_BYTES: '50MB' }, 'INGEST_MAX_BYTES'],
    [{ DELIVERY_PRIVATE_NETWORKS: 'no' }, 'DELIVERY_PRIVATE_NETWORKS'],
    [{ INGEST_MAX_BYTES: '1000' }, 'INGEST_MAX_BYTES'],
    [{ DATABASE_URL: 'mysql://x/y' }, 'DATABASE_URL'],
    [{ WORKER_CONCURRENCY: '0' }, 'WORKER_CONCURRENCY'],
    [{ SECRETS_KEY: 'too-short' }, 'SECRETS_KEY'],
    [{ SECRETS_KEY: Buffer.alloc(16).toString('base64') }, 'SECRETS_KEY'],
    [{ SMTP_URL: 'http://mail.example' }, 'SMTP_URL'],
    [{ PUBLIC_URL: 'scanflow.example' }, 'PUBLIC_URL'],
    [{ DELIVERY_TIMEOUT: '0s' }, 'DELIVERY_TIMEOUT'],
    [{ DELIVERY_TIMEOUT: '1h' }, 'DELIVERY_TIMEOUT'],
  ];
  for (const [env, name] of cases) {
    it(`${JSON.stringify(env)} → ${name}`, () => {
      const err = configError(env);
      assert.match(err.message, new RegExp(`(^|\\s)${name}: \\S`, 'm'), err.message);
    });
  }

  it('the messages say what is expected', () => {
    assert.match(configError({ PORT: 'abc' }).message, /PORT: must be a whole number/);
    assert.match(configError({ ADMIN_TOKEN: 'short' }).message, /ADMIN_TOKEN: must be at least 16 characters/);
    assert.match(configError({ ACK_TIMEOUT: '10x' }).message, /ACK_TIMEOUT: must be a duration/);
    assert.match(configError({ EVENT_RETENTION: 'forever' }).message, /EVENT_RETENTION: must be a duration like "30d" or "12h", or 0 or off to keep it forever/);
    assert.match(configError({ EVENT_RETENTION: '1d' }).message, /EVENT_RETENTION: must be at least 7d/);
  });

  it('never echoes a rejected ADMIN_TOKEN', () => {
    assert.doesNotMatch(configError({ ADMIN_TOKEN: 'sekrit-123' }).message, /sekrit-123/);
  });

  it('never echoes a rejected SECRETS_KEY', () => {
    assert.doesNotMatch(configError({ SECRETS_KEY: 'sekrit-key-456' }).message, /sekrit-key-456/);
  });

  it('every bad variable is reported at once', () => {
    const err = configError({ PORT: 'abc', LOG_LEVEL: 'loud', ACK_TIMEOUT: '10x' });
    for (const name of ['PORT', 'LOG_LEVEL', 'ACK_TIMEOUT']) assert.match(err.message, new RegExp(`${name}:`));
  });
});
