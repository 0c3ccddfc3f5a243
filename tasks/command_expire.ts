// A run's expiry timer (job_key command_expire:<run id>, run_at = run_next_deadline()):
// expires the commands past their deadline (queue_timeout or step_timeout), advances the
// run, and sets the timer for the next deadline.
import * as v from 'valibot';
import { expireRunCommands } from '../src/progression/runs.ts';
import { transactionalTask } from '../src/worker.ts';

export default transactionalTask('command_expire', v.object({ run_id: v.pipe(v.string(), v.uuid()) }), (tx, { run_id }, deps) =>
  expireRunCommands(tx, run_id, deps.orchestration),
);
