// The hot statements of scanflow and the plans they must have on a database full of history
// (test/history-plans.test.ts, issue 13): the claim and what an agent does with a command, the
// advance, heartbeats, the run, command and findings lists and a run's findings. Each is the
// statement the application runs (a named query of sql/*.sql, prepared by pg, so its generic
// plan is checked as well as its plan for these values; or a list composed per filter, run
// unprepared, so planned with its values), EXPLAINed without running it.
import type pg from 'pg';
import type { ComposedStatement } from '../../src/db/sql.ts';
import { agentsSql, commandsSql, findingsApiSql, metricsSql, runsSql, stepRunsSql } from '../../src/store/queries.ts';
import { listCommandsStatement, listRunsStatement } from '../../src/store/lists.ts';
import { listFindingsStatement } from '../../src/store/findings-api.ts';

/** The tables history fills: none of them may be read whole by a hot statement. */
export const BIG_TABLES = [
  'pipeline_runs', 'step_runs', 'commands', 'events', 'findings', 'finding_sightings', 'command_output_chunks',
] as const;

export type HotStatement = {
  name: string;
  text: string;
  values: unknown[];
  /** A named query: pg prepares it, so PostgreSQL may switch to its generic plan. */
  prepared: boolean;
  /** Indexes the plan must use (each at least once; a list: any one of them). */
  indexes: (string | string[])[];
  /** Indexes the plan must not use (an index that fits the condition but reads far more). */
  avoid?: string[];
};

/** Ids of rows in the filled database the statements are EXPLAINed with. */
export type HotIds = {
  tenantId: string;
  agentId: string;
  runId: string;
  /** A run that saw many findings (the run's findings page walks the severity order). */
  bigRunId: string;
  pipelineId: string;
  assetId: string;
  scanId: string;
  commandId: string;
};

type Indexes = HotStatement['indexes'];
const named = (q: { name: string; text: string }, values: unknown[], indexes: Indexes): HotStatement => ({
  name: q.name, text: q.text, values, prepared: true, indexes,
});
const composed = (name: string, s: ComposedStatement, indexes: Indexes): HotStatement => ({
  name, text: s.text, values: s.values, prepared: false, indexes,
});

/** The catalogue. Function bodies (run_step_counts, run_next_deadline) come from the database. */
export async function hotStatements(db: pg.Pool | pg.Client, ids: HotIds): Promise<HotStatement[]> {
  const body = async (fn: string) => {
    const { rows } = await db.query<{ src: string }>(`SELECT prosrc AS src FROM pg_proc WHERE proname = $1`, [fn]);
    return rows[0].src.replace(/\bp_run_id\b/g, '$1::uuid');
  };
  const { tenantId: t, agentId: a, runId: r } = ids;
  const none = '00000000-0000-0000-0000-000000000000';
  return [
    // The agent's side: the claim (and what a poll that claimed nothing reads), the command's
    // transitions, heartbeats.
    named(commandsSql.ClaimCommands, [a, t, 10, 30], ['commands_claimable_idx', 'commands_held_idx']),
    named(commandsSql.AfterEmptyClaim, [t, a], ['commands_claimable_idx']),
    named(commandsSql.GetAgentCommand, [ids.commandId, a], ['commands_pkey']),
    named(commandsSql.AckCommand, [ids.commandId, a], ['commands_pkey']),
    named(commandsSql.StartCommand, [ids.commandId, a], ['commands_pkey']),
    named(commandsSql.FinishCommand, [ids.commandId, a, 'completed', '{}', null, null, 0, 10, 'completed', null], ['commands_pkey']),
    named(agentsSql.CommandsToStop, [a, 300, [none], t], ['commands_agent_recent_idx', ['commands_pkey', 'commands_tenant_id_id_key']]),
    named(agentsSql.GetAgent, [t, a], ['commands_held_idx']),
    // /metrics at every scrape: what is live, never the history.
    named(metricsSql.TenantGauges, [], ['commands_claimable_idx', ['pipeline_runs_active_idx', 'pipeline_runs_tenant_status_idx']]),
    // The advance (src/progression/runs.ts) and the run's timer.
    named(runsSql.LockRun, [r], ['pipeline_runs_pkey']),
    named(stepRunsSql.StepRunsForAdvance, [r], ['step_runs_pipeline_run_id_step_key_key', 'commands_pkey']),
    named(commandsSql.ExpireRunCommands, [r], ['commands_run_idx']),
    named(commandsSql.CancelRunCommands, [r, 'cancelled'], ['commands_run_idx']),
    named(runsSql.SettleRun, [r, true, true], ['pipeline_runs_pkey']),
    named(runsSql.FinishRun, [r, 'completed', null], ['pipeline_runs_pkey']),
    named({ name: 'run_step_counts', text: await body('run_step_counts') }, [r], ['step_runs_pipeline_run_id_step_key_key']),
    named({ name: 'run_next_deadline', text: await body('run_next_deadline') }, [r], ['commands_run_idx', 'pipeline_runs_pkey']),
    named(stepRunsSql.ListStepRuns, [t, r], ['step_runs_pipeline_run_id_step_key_key']),
    // The run list: no filter, each filter, a status nobody has, the next page.
    composed('run list', listRunsStatement(t, {}, null, 51), ['pipeline_runs_tenant_created_idx']),
    composed('run list, status', listRunsStatement(t, { status: 'failed' }, null, 51), ['pipeline_runs_tenant_status_idx']),
    // (pending: the partial index of live runs serves it as well.)
    composed('run list, a status no run has', listRunsStatement(t, { status: 'pending' }, null, 51),
      [['pipeline_runs_tenant_status_idx', 'pipeline_runs_active_idx']]),
    composed('run list, pipeline', listRunsStatement(t, { pipeline_id: ids.pipelineId }, null, 51), ['pipeline_runs_pipeline_created_idx']),
    composed('run list, asset', listRunsStatement(t, { asset_id: ids.assetId }, null, 51), ['pipeline_runs_asset_created_idx']),
    composed('run list, scan', listRunsStatement(t, { scan_id: ids.scanId }, null, 51), ['pipeline_runs_scan_created_idx']),
    composed('run list, next page', listRunsStatement(t, {}, { at: new Date(Date.now() - 5 * 86400_000).toISOString(), id: none }, 51),
      ['pipeline_runs_tenant_created_idx']),
    // The command list.
    composed('command list', listCommandsStatement(t, {}, null, 51), ['commands_tenant_created_idx']),
    composed('command list, failed', listCommandsStatement(t, { status: 'failed' }, null, 51), ['commands_tenant_status_idx']),
    composed('command list, agent', listCommandsStatement(t, { agent_id: a }, null, 51), ['commands_agent_created_idx']),
    // The findings list and a run's findings.
    composed('findings list', listFindingsStatement(t, {}, 'first_seen', null, 51), ['findings_tenant_first_seen_idx']),
    composed('findings list by severity', listFindingsStatement(t, {}, 'severity', null, 51), ['findings_tenant_severity_idx']),
    composed('findings list, last seen', listFindingsStatement(t, {}, 'last_seen', null, 51), ['findings_tenant_last_seen_idx']),
    composed('findings list, open and high', listFindingsStatement(t, { status: ['open'], severity: ['high'] }, 'first_seen', null, 51), []),
    composed('findings list, a run', listFindingsStatement(t, { pipeline_run_id: r }, 'first_seen', null, 51), ['finding_sightings_run_idx']),
    // Both ways of a run's findings are in each plan (the run's sightings pick one as it runs).
    // (finding_sightings_run_new_idx holds every new sighting of a run: probing it for one
    // finding reads all of them, 0.8 s a page for a run of 10,000 findings.)
    { ...named({ name: 'ListRunFindings (a run)', text: findingsApiSql.ListRunFindings.text },
      [t, r, 5, 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 51],
      ['finding_sightings_run_idx', 'findings_pkey', 'findings_tenant_severity_idx']), avoid: ['finding_sightings_run_new_idx'] },
    { ...named({ name: 'ListRunFindings (a run with many)', text: findingsApiSql.ListRunFindings.text },
      [t, ids.bigRunId, 5, 'infinity', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 51],
      ['finding_sightings_run_idx', 'findings_pkey', 'findings_tenant_severity_idx']), avoid: ['finding_sightings_run_new_idx'] },
  ];
}

type PlanNode = { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; Plans?: PlanNode[] } & Record<string, unknown>;

export type PlanFacts = { seqScans: string[]; indexes: string[]; text: string };

function walk(n: PlanNode, f: (n: PlanNode) => void) {
  f(n);
  for (const c of n.Plans ?? []) walk(c, f);
}

/** The plan of a statement: for these values (`generic` false) or PostgreSQL's generic plan. */
export async function planOf(db: pg.Pool | pg.Client, s: HotStatement, generic: boolean): Promise<PlanFacts> {
  type Explained = { 'QUERY PLAN': { Plan: PlanNode }[] };
  const { rows } = await (generic
    ? db.query<Explained>(`EXPLAIN (GENERIC_PLAN, FORMAT JSON) ${s.text}`)
    : db.query<Explained>(`EXPLAIN (FORMAT JSON) ${s.text}`, s.values)
  ).catch((err: Error) => {
    throw new Error(`${s.name}: EXPLAIN failed: ${err.message}`);
  });
  const root = rows[0]['QUERY PLAN'][0].Plan;
  const seqScans: string[] = [];
  const indexes: string[] = [];
  walk(root, (n) => {
    if (n['Node Type'] === 'Seq Scan' && n['Relation Name'] && (BIG_TABLES as readonly string[]).includes(n['Relation Name'])) {
      seqScans.push(n['Relation Name']);
    }
    if (n['Index Name']) indexes.push(n['Index Name']);
  });
  const lines: string[] = [];
  const print = (n: PlanNode, depth: number) => {
    lines.push(`${'  '.repeat(depth)}${n['Node Type']}${n['Relation Name'] ? ` on ${n['Relation Name']}` : ''}${n['Index Name'] ? ` using ${n['Index Name']}` : ''}`);
    for (const c of n.Plans ?? []) print(c, depth + 1);
  };
  print(root, 0);
  return { seqScans, indexes, text: lines.join('\n') };
}

/** What is wrong with a statement's plans (empty: nothing). */
export async function planProblems(db: pg.Pool | pg.Client, s: HotStatement): Promise<string[]> {
  const problems: string[] = [];
  for (const generic of s.prepared ? [false, true] : [false]) {
    const p = await planOf(db, s, generic);
    const which = generic ? 'generic plan' : 'plan';
    if (p.seqScans.length) problems.push(`${s.name}: its ${which} reads ${p.seqScans.join(', ')} whole\n${p.text}`);
    const missing = s.indexes.filter((i) => !(Array.isArray(i) ? i : [i]).some((x) => p.indexes.includes(x)));
    const used = (s.avoid ?? []).filter((i) => p.indexes.includes(i));
    if (used.length) problems.push(`${s.name}: its ${which} uses ${used.join(', ')}\n${p.text}`);
    if (missing.length) problems.push(`${s.name}: its ${which} does not use ${missing.map((i) => [i].flat().join(' or ')).join(', ')}\n${p.text}`);
  }
  return problems;
}

/**
 * Work in flight beside the history, as a busy installation has: the tenant's latest `runs`
 * runs back to running, their commands pending (unclaimed), acknowledged or running. Without
 * it the partial indexes of live states are empty, and the planner rightly reads them for
 * anything live: a plan no busy database would get.
 */
export async function putWorkInFlight(db: pg.Pool | pg.Client, tenantId: string, runs: number): Promise<void> {
  await db.query(`
    WITH live AS (
      UPDATE pipeline_runs SET status = 'running', completed_at = NULL
      WHERE id IN (SELECT id FROM pipeline_runs WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2)
      RETURNING id
    )
    UPDATE commands c
    SET status = (ARRAY['pending', 'acknowledged', 'running'])[1 + (abs(hashtext(c.id::text)) % 3)],
        agent_id = CASE WHEN abs(hashtext(c.id::text)) % 3 = 0 THEN NULL ELSE c.agent_id END,
        completed_at = NULL, claim_expires_at = NULL, expires_at = now() + interval '30 minutes'
    FROM live WHERE c.pipeline_run_id = live.id`, [tenantId, runs]);
  await db.query('ANALYZE pipeline_runs, commands');
}
