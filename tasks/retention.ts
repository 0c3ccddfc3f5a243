// A retention pass (src/progression/retention.ts): a graphile-worker cron item (src/worker.ts,
// RETENTION_CRON), so once per tick across every process. Each batch takes a pooled client
// of its own for its short transaction; the pass stops when the worker shuts down (the next
// tick carries on). The payload (graphile-worker's _cron) is not read.
import type { Task } from 'graphile-worker';
import type { TaskDeps } from '../src/worker.ts';
import { retentionPass } from '../src/progression/retention.ts';
import { currentLog } from '../src/observability/context.ts';

export default (deps: TaskDeps): Task => async (_payload, helpers) => {
  const report = await retentionPass((fn) => helpers.withPgClient(fn), deps.orchestration.retention, { signal: helpers.abortSignal });
  const removed = Object.fromEntries(Object.entries(report.kinds).filter(([, k]) => k.rows > 0).map(([kind, k]) => [kind, k.rows]));
  const log = currentLog();
  if (Object.keys(removed).length > 0) log.info({ retention: { pass_id: report.passId, removed, ms: report.ms, stopped: report.stopped } }, 'retention removed old history');
  else log.debug({ retention: { pass_id: report.passId, ms: report.ms } }, 'retention: nothing old enough');
};
