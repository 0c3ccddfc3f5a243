// Agents of a tenant. The API key is shown once (creation, regenerate-key) and stored hashed.
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { forgetAgentCredential, newSecret, requireTenant, type AppEnv } from '../auth.ts';
import { readsOf } from '../reads.ts';
import { conflict, notFound } from '../errors.ts';
import { CreateAgent, endpoints } from '../contract.ts';
import { pageOf, pageResult, parseInput, pathId, queryOf, readBody } from '../input.ts';
import { presentAgent } from '../present.ts';
import { withTransaction } from '../../db/transaction.ts';
import { many, one } from '../../store/query.ts';
import { agentsSql } from '../../store/queries.ts';
import type { AgentRow } from '../../store/rows.ts';
import { stripUndefined } from './assets.ts';
import { releaseAgentWork } from '../../progression/commands.ts';

export const ListQuery = v.object({
  status: v.optional(v.picklist(['active', 'disabled', 'revoked'], 'must be active, disabled or revoked')),
  health: v.optional(v.picklist(['unknown', 'online', 'offline'], 'must be unknown, online or offline')),
});

export function agentRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();
  r.use('*', requireTenant(deps));

  r.post('/', async (c) => {
    const a = await readBody(c, endpoints.createAgent);
    const secret = newSecret('sfa');
    const row = await one<AgentRow>(deps.pool, agentsSql.InsertAgent, [
      c.get('tenant').id, a.name, secret.hash, secret.display, dedupe(a.tools), dedupe(a.capabilities),
      a.max_concurrent_jobs, a.labels,
    ]);
    return c.json({ agent: presentAgent(row!), api_key: secret.token }, 201);
  });

  r.get('/', async (c) => {
    const db = readsOf(deps, c);
    const page = pageOf(c);
    const f = queryOf(c, ListQuery, ['status', 'health']);
    const rows = await many<AgentRow & { cursor_at: string }>(db, agentsSql.ListAgents, [
      c.get('tenant').id, page.after?.at ?? null, page.after?.id ?? null, f.status ?? null, f.health ?? null, page.limit + 1,
    ]);
    return c.json(pageResult(rows, page, presentAgent));
  });

  r.get('/:id', async (c) => {
    const db = readsOf(deps, c);
    const row = await one<AgentRow>(db, agentsSql.GetAgent, [c.get('tenant').id, pathId(c, 'id', 'agent')]);
    if (!row) throw notFound('agent');
    return c.json(presentAgent(row));
  });

  r.put('/:id', async (c) => {
    const id = pathId(c, 'id', 'agent');
    const patch = await readBody(c, endpoints.updateAgent);
    const tenantId = c.get('tenant').id;
    const row = await withTransaction(deps.pool, async (tx) => {
      const current = await one<AgentRow>(tx, agentsSql.LockAgent, [tenantId, id]);
      if (!current) throw notFound('agent');
      const next = parseInput(CreateAgent, {
        name: current.name, tools: current.tools, capabilities: current.capabilities,
        max_concurrent_jobs: current.max_concurrent_jobs, labels: current.labels, ...stripUndefined(patch),
      });
      await one(tx, agentsSql.UpdateAgent, [
        tenantId, id, next.name, dedupe(next.tools), dedupe(next.capabilities), next.max_concurrent_jobs, next.labels,
      ]);
      return one<AgentRow>(tx, agentsSql.GetAgent, [tenantId, id]);
    });
    forgetAgentCredential(id);
    return c.json(presentAgent(row!));
  });

  const setStatus = (status: 'active' | 'disabled' | 'revoked') => async (c: Context<AppEnv>) => {
    const id = pathId(c, 'id', 'agent');
    const tenantId = c.get('tenant').id;
    const row = await withTransaction(deps.pool, async (tx) => {
      const current = await one<AgentRow>(tx, agentsSql.LockAgent, [tenantId, id]);
      if (!current) throw notFound('agent');
      if (current.status === 'revoked' && status !== 'revoked') throw conflict('agent_revoked', 'A revoked agent cannot be changed; register a new agent');
      await one(tx, agentsSql.SetAgentStatus, [tenantId, id, status]);
      // An agent that may no longer call in cannot finish its work: hand it back now
      // rather than after the offline grace.
      if (status !== 'active') await releaseAgentWork(tx, id, `agent '${current.name}' was ${status}`);
      return one<AgentRow>(tx, agentsSql.GetAgent, [tenantId, id]);
    });
    forgetAgentCredential(id);
    return c.json(presentAgent(row!));
  };
  r.post('/:id/activate', setStatus('active'));
  r.post('/:id/deactivate', setStatus('disabled'));
  r.delete('/:id', setStatus('revoked'));

  r.post('/:id/regenerate-key', async (c) => {
    const id = pathId(c, 'id', 'agent');
    const tenantId = c.get('tenant').id;
    const secret = newSecret('sfa');
    const row = await withTransaction(deps.pool, async (tx) => {
      const current = await one<AgentRow>(tx, agentsSql.LockAgent, [tenantId, id]);
      if (!current) throw notFound('agent');
      if (current.status === 'revoked') throw conflict('agent_revoked', 'A revoked agent cannot get a new key; register a new agent');
      await one(tx, agentsSql.SetAgentKey, [tenantId, id, secret.hash, secret.display]);
      return one<AgentRow>(tx, agentsSql.GetAgent, [tenantId, id]);
    });
    forgetAgentCredential(id);
    return c.json({ agent: presentAgent(row!), api_key: secret.token });
  });

  return r;
}


function dedupe(xs: string[]): string[] {
  return [...new Set(xs)];
}
