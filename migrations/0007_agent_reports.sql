-- What agents report (issue 9, the seed SDK's wire format): about a command they finished,
-- its exit code, duration, status and completion time as the agent gives them (its
-- CommandResult); about themselves, the scanners and collectors they run, and their status,
-- message and system figures as their last report (its HeartbeatRequest). The agent's word,
-- kept beside ours: commands.completed_at stays the time we recorded the outcome.
ALTER TABLE commands
  ADD COLUMN exit_code             integer,
  ADD COLUMN duration_ms           bigint CHECK (duration_ms >= 0),
  ADD COLUMN reported_status       text CHECK (length(reported_status) <= 50),
  ADD COLUMN reported_completed_at timestamptz;

-- Replaced by every heartbeat (the SDK omits empty lists: absent means none).
ALTER TABLE agents
  ADD COLUMN scanners    text[] NOT NULL DEFAULT '{}',
  ADD COLUMN collectors  text[] NOT NULL DEFAULT '{}',
  -- {name, status, message, uptime_seconds, total_scans, errors, cpu_percent, memory_percent,
  -- active_jobs, region}: null until the first heartbeat.
  ADD COLUMN last_report jsonb;
