// A step run's agent_id (migration 0015): no foreign key checks it on every acknowledgement
// any more (it is always the agent of the step's command, which commands.agent_id's own key
// protects); deleting an agent still sets it to NULL, as the key's ON DELETE SET NULL did,
// and an agent that still has commands still cannot be deleted.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from './support/harness.ts';
import { TestAgent, createPipeline, createTenant, startRun, step } from './support/fixtures.ts';

let h: Harness;

before(async () => {
  h = await startHarness();
});
after(() => h.close());

describe("a step run's agent", () => {
  it('is the agent that ran the step; deleting the agent (its commands gone) clears it, other agents stay named', async () => {
    const tenant = await createTenant(h);
    const pipeline = await createPipeline(h, tenant, { name: 'two steps', steps: [step('a'), step('b')] });
    const gone = await TestAgent.create(h, tenant, { tools: ['tool-a'] });
    const stays = await TestAgent.create(h, tenant, { tools: ['tool-b'] });
    const run = await startRun(h, tenant, pipeline.id);
    await h.settle();
    for (const agent of [gone, stays]) {
      const [command] = await agent.poll();
      assert.ok(command, 'a command to run');
      await agent.finish(command.id);
      await h.settle();
    }
    const agentsOf = async () => Object.fromEntries((await h.pool.query(
      'SELECT step_key, agent_id FROM step_runs WHERE pipeline_run_id = $1', [run.id])).rows.map((r) => [r.step_key, r.agent_id]));
    assert.deepEqual(await agentsOf(), { a: gone.id, b: stays.id });

    // While it has commands, commands.agent_id's foreign key refuses the delete.
    await assert.rejects(h.pool.query('DELETE FROM agents WHERE id = $1', [gone.id]), (err: { code?: string }) => err.code === '23503');
    assert.deepEqual(await agentsOf(), { a: gone.id, b: stays.id });

    // Its commands removed (as retention removes old ones), the delete goes through.
    await h.pool.query('UPDATE step_runs SET command_id = NULL WHERE pipeline_run_id = $1 AND agent_id = $2', [run.id, gone.id]);
    await h.pool.query('DELETE FROM commands WHERE agent_id = $1', [gone.id]);
    assert.equal((await h.pool.query('DELETE FROM agents WHERE id = $1', [gone.id])).rowCount, 1);
    assert.deepEqual(await agentsOf(), { a: null, b: stays.id });
  });
});
