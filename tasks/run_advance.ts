// Advances one pipeline run: applies finished commands, retries, skips, dispatches ready
// steps, finishes the run. Enqueued by every transaction that makes progress possible
// (request_run_advance(): job_key run_advance:<run id> coalesces bursts); serialized per
// run by the run's row lock.
import * as v from 'valibot';
import { advanceRun } from '../src/progression/runs.ts';
import { transactionalTask } from '../src/worker.ts';

export default transactionalTask('run_advance', v.object({ run_id: v.pipe(v.string(), v.uuid()) }), (tx, { run_id }, deps) =>
  advanceRun(tx, run_id, deps.orchestration),
);
