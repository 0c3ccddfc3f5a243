// Process configuration from the environment: defaults, and refusals that name the variable.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, DEFAULT_ORCHESTRATION, loadConfig } from '../src/config.ts';

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
    });
  });

  it('PORT=0 picks a free port', () => assert.equal(loadConfig({ PORT: '0' }).port, 0));
});

describe('loadConfig errors name the variable', () => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PORT: '-1' }, 'PORT'],
    [{ ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ ACK_TIMEOUT: '10x' }, 'ACK_TIMEOUT'],
    [{ QUEUE_TIMEOUT: '0s' }, 'QUEUE_TIMEOUT'],
    [{ ROLE: 'everything' }, 'ROLE'],
    [{ DATABASE_URL: 'mysql://x/y' }, 'DATABASE_URL'],
    [{ WORKER_CONCURRENCY: '0' }, 'WORKER_CONCURRENCY'],
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
  });

  it('never echoes a rejected ADMIN_TOKEN', () => {
    assert.doesNotMatch(configError({ ADMIN_TOKEN: 'sekrit-123' }).message, /sekrit-123/);
  });

  it('every bad variable is reported at once', () => {
    const err = configError({ PORT: 'abc', LOG_LEVEL: 'loud', ACK_TIMEOUT: '10x' });
    for (const name of ['PORT', 'LOG_LEVEL', 'ACK_TIMEOUT']) assert.match(err.message, new RegExp(`${name}:`));
  });
});
