// A worker process killed with SIGKILL while it delivers a webhook: the delivery's job stays
// locked under the dead process's pool and its lease stays taken. Once the process is past
// its dead_after (moved in time here, not waited for) and its lease has ended, a live
// process's maintenance sweep releases the job and the delivery is made: at least once, the
// receiver sees the same webhook-id both times, and the log counts one attempt (the killed
// one never recorded anything).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import { startHarness, type Harness } from './support/harness.ts';
import { killHard, killWorkerProcesses, startWorkerProcess, until } from './support/worker-process.ts';
import { TestAgent, createTenant, type Tenant } from './support/fixtures.ts';
import { HttpReceiver } from './support/receivers.ts';


let h: Harness;
let t: Tenant;
let recv: HttpReceiver;

before(async () => {
  h = await startHarness({ worker: false, orchestration: { workerHeartbeatSeconds: 1, workerDeadAfterSeconds: 3 } });
  t = await createTenant(h, 'delivery-crash');
  recv = await HttpReceiver.start();
});
after(async () => {
  killWorkerProcesses();
  await h.close();
  await recv.close();
});


const startWorkerChild = () => startWorkerProcess(h.db.url, { heartbeatSeconds: 1, deadAfterSeconds: 3, adminToken: 'delivery-crash-admin-token-0123' });

describe('a worker process killed between an event and its delivery', { timeout: 120_000 }, () => {
  it('the delivery is made afterwards by another process, under the same webhook-id', async () => {
    const created = await h.request('POST', '/api/v1/channels', {
      token: t.token, body: { name: 'crash-hook', type: 'webhook', url: `${recv.url}/hook`, events: ['agent.offline'] },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const secret = created.body.secret as string;
    recv.script.push('hang'); // the first attempt never gets an answer: the process dies holding it

    const child = startWorkerChild();
    await until('the child worker registering', 30_000, async () =>
      (await h.pool.query(`SELECT 1 FROM worker_processes WHERE pid = $1`, [child.pid])).rowCount === 2);
    const agent = await TestAgent.create(h, t, { name: 'crash-agent' });
    await h.pool.query(`UPDATE agents SET health = 'offline' WHERE id = $1`, [agent.id]); // writes agent.offline
    await recv.waitFor(1, 30_000);
    const [delivery] = (await h.pool.query(`SELECT * FROM deliveries WHERE channel_id = $1`, [created.body.channel.id])).rows;
    assert.ok(delivery.lease_until > new Date(), 'the child holds the delivery\'s lease');
    const locked = await h.pool.query(`SELECT j.locked_by FROM graphile_worker.jobs j WHERE j.task_identifier = 'event_deliver' AND j.locked_by IS NOT NULL`);
    assert.equal(locked.rowCount, 1, 'its job is locked by the child');

    await killHard(child);
    recv.otherwise = { status: 200, body: 'ok' };
    // Time moves on: the child is past its dead_after, and the lease it held has ended.
    await h.pool.query(`UPDATE worker_processes SET last_heartbeat_at = now() - interval '1 hour' WHERE pid = $1`, [child.pid]);
    await h.pool.query(`UPDATE deliveries SET lease_until = now() WHERE id = $1`, [delivery.id]);
    assert.equal((await h.pool.query(`SELECT * FROM deliveries WHERE id = $1`, [delivery.id])).rows[0].status, 'pending');

    // A live worker: its first sweep releases the dead process's job, which delivers.
    await h.startWorker();
    await recv.waitFor(2, 30_000);
    await h.settle();
    assert.equal(recv.received.length, 2, 'sent again, once');
    const [first, second] = recv.received;
    assert.equal(first.headers['webhook-id'], second.headers['webhook-id'], 'the receiver sees one webhook-id');
    assert.equal((new Webhook(secret).verify(second.body, second.headers) as { event: string }).event, 'agent.offline');
    const log = await h.request('GET', `/api/v1/channels/${created.body.channel.id}/deliveries`, { token: t.token });
    assert.deepEqual(log.body.items.map((a: any) => [a.attempt, a.outcome, a.message_id]), [[1, 'delivered', first.headers['webhook-id']]]);
    const [done] = (await h.pool.query(`SELECT status, lease_until FROM deliveries WHERE id = $1`, [delivery.id])).rows;
    assert.deepEqual(done, { status: 'delivered', lease_until: null });
    const dead = (await h.pool.query(`SELECT released_jobs FROM worker_processes WHERE pid = $1 AND released_jobs > 0`, [child.pid])).rows;
    assert.equal(dead.length, 1, 'the sweep released the dead process\'s job');
  });

  it('a job that finds the lease still taken comes back when it ends, and leaves the delivery alone until then', async () => {
    const created = await h.request('POST', '/api/v1/channels', {
      token: t.token, body: { name: 'leased-hook', type: 'webhook', url: `${recv.url}/leased`, events: [] },
    });
    const before = recv.received.length;
    // Another process holds the lease (it is sending): this process's job must not send too.
    await h.stopWorker();
    const sent = await h.request('POST', `/api/v1/channels/${created.body.channel.id}/test`, { token: t.token });
    assert.equal(sent.status, 202);
    await h.pool.query(`UPDATE deliveries SET lease_id = gen_random_uuid(), lease_until = now() + interval '1 hour' WHERE id = $1`, [sent.body.delivery.id]);
    await h.startWorker();
    const rearmed = await until('the job to come back at the lease\'s end', 10_000, async () => {
      const { rows } = await h.pool.query(
        `SELECT j.run_at FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks t ON t.id = j.task_id
         WHERE t.identifier = 'event_deliver' AND j.payload->>'delivery_id' = $1 AND j.run_at > now() + interval '30 minutes'`,
        [sent.body.delivery.id]);
      return rows[0] ?? null;
    });
    assert.ok(rearmed.run_at > new Date(Date.now() + 50 * 60_000));
    assert.equal(recv.received.length, before, 'nothing sent while another attempt holds it');
    // The holder died without a word: at the lease's end this job sends it.
    await h.pool.query(`UPDATE deliveries SET lease_until = now() WHERE id = $1`, [sent.body.delivery.id]);
    await h.pool.query(`UPDATE graphile_worker._private_jobs SET run_at = now() WHERE payload->>'delivery_id' = $1`, [sent.body.delivery.id]);
    await recv.waitFor(before + 1);
    await h.settle();
    assert.equal((await h.pool.query(`SELECT status FROM deliveries WHERE id = $1`, [sent.body.delivery.id])).rows[0].status, 'delivered');
  });
});
