// Refreshes the planner's statistics of the findings tables after a large ingest
// (RequestFindingsAnalyze in sql/findings.sql: job_key findings_analyze, so one job for a
// burst of ingests) instead of leaving it to autovacuum, which may not come for a tenant's
// first large upload to a big table. ANALYZE samples each table: its cost is bounded.
import type { Task } from 'graphile-worker';
import type { TaskDeps } from '../src/worker.ts';
import { findingsSql } from '../src/store/queries.ts';

export default (_deps: TaskDeps): Task => async (_payload, helpers) => {
  await helpers.withPgClient((c) => c.query(findingsSql.AnalyzeFindings.text));
};
