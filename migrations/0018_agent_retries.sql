-- An attempt lost with its agent (agent_lost: the agent went silent; agent_shutdown: it was
-- stopped and gave the command back) is not the step's failure: it is tried again at once on
-- another agent without spending the step's retries (src/domain/progression.ts), up to
-- AGENT_RETRIES times a step. Each such retry adds one to max_attempts (so "attempt 2 of 2"
-- after a lost first attempt of a step without retries) and is counted here; a manual retry
-- of the run starts the count over.
ALTER TABLE step_runs ADD COLUMN agent_retries integer NOT NULL DEFAULT 0 CHECK (agent_retries >= 0);
