// The event feed reads only settled events: those of transactions that have ended
// (events_horizon(), sql/views.sql). A transaction still in progress in this database holds
// the feed back until it ends (so no event can appear before a reader's position); one in
// another database on the same server does not (transaction ids are server-wide, and a long
// or idle transaction elsewhere must not stall every tenant's feed and the dashboard).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startHarness, type Harness } from './support/harness.ts';
import { createTenant, type Tenant } from './support/fixtures.ts';
import { createTestDatabase, type TestDatabase } from './support/db.ts';

let h: Harness;
let t: Tenant;
let other: TestDatabase;

before(async () => {
  h = await startHarness({ worker: false });
  t = await createTenant(h, 'horizon-tenant');
  other = await createTestDatabase();
});
after(async () => {
  await h.close();
  await other.drop();
});

async function emit(): Promise<number> {
  const { rows } = await h.pool.query<{ id: string }>(
    `INSERT INTO events (tenant_id, type, data) VALUES ($1, 'agent.offline', '{}') RETURNING id`, [t.id]);
  return Number(rows[0].id);
}

async function feedIds(): Promise<number[]> {
  const res = await h.request('GET', '/api/v1/events?limit=200', { token: t.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return (res.body.items as { id: number | string }[]).map((e) => Number(e.id));
}

/** A session that holds a transaction with an xid open until released. */
async function holdTransaction(url: string): Promise<() => Promise<void>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query('BEGIN');
  await c.query('SELECT pg_current_xact_id()'); // takes an xid, as any write does
  return async () => {
    await c.query('ROLLBACK');
    await c.end();
  };
}

describe('the event feed horizon', () => {
  it('a transaction open in another database does not hold the feed back', async () => {
    const release = await holdTransaction(other.url);
    try {
      const id = await emit();
      assert.ok((await feedIds()).includes(id), 'the event is in the feed while another database has a transaction open');
    } finally {
      await release();
    }
  });

  it('a transaction open in this database holds back what committed after it began, until it ends', async () => {
    const release = await holdTransaction(h.db.url);
    let id: number;
    try {
      id = await emit();
      assert.ok(!(await feedIds()).includes(id), 'an event newer than a transaction in progress here is not settled yet');
    } finally {
      await release();
    }
    assert.ok((await feedIds()).includes(id!), 'settled once that transaction ended');
  });
});
