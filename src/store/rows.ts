// Row shapes of the tables, as pg returns them (timestamps are Date).

export type TenantRow = { id: string; name: string; modules: string[]; created_at: Date; updated_at: Date };

export type AssetRow = {
  id: string;
  tenant_id: string;
  type: string;
  name: string;
  value: string | null;
  tags: string[];
  criticality: string;
  metadata: Record<string, unknown>;
  created_at: Date;
  updated_at: Date;
};

export type AgentRow = {
  id: string;
  tenant_id: string;
  name: string;
  api_key_prefix: string;
  tools: string[];
  capabilities: string[];
  max_concurrent_jobs: number;
  labels: Record<string, unknown>;
  status: 'active' | 'disabled' | 'revoked';
  health: 'unknown' | 'online' | 'offline';
  version: string | null;
  hostname: string | null;
  heartbeat_data: Record<string, unknown>;
  /** As the agent's last heartbeat named them. */
  scanners: string[];
  collectors: string[];
  /** Null until the first heartbeat. */
  last_report: AgentReport | null;
  last_heartbeat_at: Date | null;
  last_seen_at: Date | null;
  created_at: Date;
  updated_at: Date;
  active_commands?: number;
};

/** An agent's last heartbeat, but for what is kept elsewhere (version, hostname, scanners, collectors, other fields). */
export type AgentReport = {
  name: string | null;
  status: string | null;
  message: string | null;
  uptime_seconds: number | null;
  total_scans: number | null;
  errors: number | null;
  cpu_percent: number | null;
  memory_percent: number | null;
  active_jobs: number | null;
  region: string | null;
};

export type PipelineRow = {
  id: string;
  tenant_id: string;
  name: string;
  description: string | null;
  version: number;
  triggers: unknown[];
  settings: Record<string, unknown>;
  is_active: boolean;
  tags: string[];
  managed_by: string | null;
  created_at: Date;
  updated_at: Date;
};

export type PipelineStepRow = {
  id: string;
  pipeline_id: string;
  version: number;
  step_key: string;
  name: string;
  step_order: number;
  tool: string | null;
  capabilities: string[];
  config: Record<string, unknown>;
  timeout_seconds: number;
  depends_on: string[];
  condition: Record<string, unknown> | null;
  max_retries: number;
  retry_delay_seconds: number;
};

export type RunStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled' | 'timeout';

export type RunRow = {
  id: string;
  tenant_id: string;
  pipeline_id: string;
  pipeline_version: number;
  asset_id: string | null;
  scan_id: string | null;
  trigger_type: string;
  triggered_by: string | null;
  status: RunStatus;
  context: Record<string, unknown>;
  target: Record<string, unknown>;
  settings: Record<string, unknown>;
  total_steps: number;
  completed_steps: number;
  failed_steps: number;
  skipped_steps: number;
  total_findings: number;
  /** Findings this run saw first (its sightings that created a finding). */
  new_findings: number;
  started_at: Date | null;
  completed_at: Date | null;
  error_message: string | null;
  created_at: Date;
  updated_at: Date;
  /** NULL while the run waits for a slot under its scan's or tenant's limit. */
  admitted_at: Date | null;
  /** started_at + settings.timeout. */
  deadline_at: Date | null;
};

export type StepStatus = 'pending' | 'queued' | 'running' | 'completed' | 'failed' | 'skipped' | 'cancelled' | 'timeout';

export type StepRunRow = {
  id: string;
  tenant_id: string;
  pipeline_run_id: string;
  step_id: string;
  step_key: string;
  name: string;
  step_order: number;
  depends_on: string[];
  status: StepStatus;
  agent_id: string | null;
  command_id: string | null;
  condition_evaluated: boolean;
  condition_result: boolean | null;
  skip_reason: string | null;
  findings_count: number;
  output: Record<string, unknown>;
  attempt: number;
  max_attempts: number;
  /** Attempts lost with their agent and tried again without spending a retry (migrations/0018). */
  agent_retries: number;
  retry_at: Date | null;
  queued_at: Date | null;
  started_at: Date | null;
  completed_at: Date | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Date;
  updated_at: Date;
};

export type CommandStatus = 'pending' | 'acknowledged' | 'running' | 'completed' | 'failed' | 'cancelled' | 'expired';

export type CommandRow = {
  id: string;
  tenant_id: string;
  agent_id: string | null;
  pipeline_run_id: string | null;
  step_run_id: string | null;
  attempt: number;
  type: string;
  priority: string;
  status: CommandStatus;
  tool: string | null;
  capabilities: string[];
  timeout_seconds: number;
  payload: Record<string, unknown>;
  result: Record<string, unknown> | null;
  error_code: string | null;
  error_message: string | null;
  /** What the agent said of the run when it finished the command (0007). */
  exit_code: number | null;
  duration_ms: number | null;
  reported_status: string | null;
  reported_completed_at: Date | null;
  claimed_at: Date | null;
  claim_expires_at: Date | null;
  acknowledged_at: Date | null;
  started_at: Date | null;
  completed_at: Date | null;
  expires_at: Date;
  created_at: Date;
  updated_at: Date;
};

export type ScanRow = {
  id: string;
  tenant_id: string;
  name: string;
  description: string | null;
  pipeline_id: string;
  targets: Record<string, unknown>;
  schedule_type: 'manual' | 'daily' | 'weekly' | 'monthly' | 'cron';
  cron_expression: string | null;
  timezone: string;
  status: 'active' | 'paused' | 'disabled';
  context: Record<string, unknown>;
  max_active_runs: number;
  next_run_at: Date | null;
  last_run_at: Date | null;
  managed_by: string | null;
  trigger_index: number | null;
  created_at: Date;
  updated_at: Date;
};

export type ScanFireRow = {
  id: number;
  tenant_id: string;
  scan_id: string;
  trigger_type: string;
  triggered_by: string | null;
  due_at: Date | null;
  fired_at: Date;
  run_ids: string[];
  waiting_runs: number;
  skipped: { asset_id: string | null; reason: string }[];
};

export type EventRow = {
  id: number;
  type: string;
  step_run_id: string | null;
  data: Record<string, unknown>;
  created_at: Date;
};

export type IdempotencyKeyRow = {
  owner: string;
  status: 'processing' | 'committed' | 'completed';
  request_hash: Buffer;
  response_status: number | null;
  response_content_type: string | null;
  response_body: Buffer | null;
  /** Older than the retention: the key behaves as new. */
  expired: boolean;
  /** Reserved longer ago than the lease. */
  stale: boolean;
};

export type FindingStatus = 'open' | 'in_progress' | 'resolved' | 'false_positive' | 'accepted_risk' | 'suppressed';
export type FindingSeverity = 'critical' | 'high' | 'medium' | 'low' | 'info';

export type FindingRow = {
  id: string;
  tenant_id: string;
  /** NULL only for findings that need no asset (credential_leak). */
  asset_id: string | null;
  fingerprint: string;
  tool_fingerprint: string | null;
  type: string;
  tool: string;
  rule_id: string | null;
  title: string;
  description: string | null;
  severity: FindingSeverity;
  /** critical 4 … info 0 (generated). */
  severity_rank: number;
  status: FindingStatus;
  resolution: string | null;
  location: Record<string, unknown>;
  vulnerability: Record<string, unknown> | null;
  references: unknown[];
  properties: Record<string, unknown>;
  occurrences: number;
  first_seen_at: Date;
  last_seen_at: Date;
  resolved_at: Date | null;
  first_run_id: string | null;
  last_run_id: string | null;
  last_step_key: string | null;
  last_ingest_id: string | null;
  /** The ingest that last reopened or auto-resolved it. */
  status_ingest_id: string | null;
  last_report_id: string | null;
  created_at: Date;
  updated_at: Date;
};

export type IngestRow = {
  id: string;
  tenant_id: string;
  agent_id: string | null;
  kind: 'report' | 'sarif' | 'chunk' | 'credentials';
  status: 'pending' | 'ingesting' | 'ingested';
  report_id: string | null;
  chunk_index: number | null;
  total_chunks: number | null;
  report_key: string | null;
  tool: string | null;
  coverage_type: 'full' | 'incremental' | 'partial';
  branch: string | null;
  is_default_branch: boolean | null;
  command_id: string | null;
  pipeline_run_id: string | null;
  step_run_id: string | null;
  step_key: string | null;
  agent_scan_id: string | null;
  default_asset_id: string | null;
  scope_tools: string[];
  scope_asset_ids: string[];
  asset_refs: Record<string, string>;
  assets_created: number;
  assets_updated: number;
  findings_created: number;
  findings_updated: number;
  findings_reopened: number;
  findings_resolved: number;
  findings_skipped: number;
  problems: { path: string; message: string }[];
  properties: Record<string, unknown>;
  created_at: Date;
  ingested_at: Date | null;
};

export type AgentScanRow = {
  id: string;
  tenant_id: string;
  agent_id: string | null;
  tool: string;
  name: string | null;
  asset_id: string | null;
  branch: string | null;
  commit_sha: string | null;
  status: 'running' | 'completed' | 'failed';
  findings_count: number | null;
  error_message: string | null;
  started_at: Date;
  completed_at: Date | null;
  created_at: Date;
  updated_at: Date;
};
