// The JSON shapes of the API (API.md): snake_case, RFC 3339 UTC timestamps.
import type { AgentRow, AgentScanRow, AssetRow, CommandRow, FindingRow, PipelineRow, PipelineStepRow, RunRow, StepRunRow, TenantRow } from '../store/rows.ts';
import { stepToDocument } from '../domain/pipeline.ts';
import { stepDefOf } from '../store/pipelines.ts';

const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);

export function presentTenant(t: TenantRow) {
  return { id: t.id, name: t.name, modules: t.modules, created_at: iso(t.created_at), updated_at: iso(t.updated_at) };
}

export function presentAsset(a: AssetRow) {
  return {
    id: a.id, tenant_id: a.tenant_id, type: a.type, name: a.name, value: a.value, tags: a.tags,
    criticality: a.criticality, metadata: a.metadata, created_at: iso(a.created_at), updated_at: iso(a.updated_at),
  };
}

export function presentAgent(a: AgentRow) {
  return {
    id: a.id, tenant_id: a.tenant_id, name: a.name, tools: a.tools, capabilities: a.capabilities,
    max_concurrent_jobs: a.max_concurrent_jobs, labels: a.labels, status: a.status, health: a.health,
    active_commands: a.active_commands ?? 0, version: a.version, hostname: a.hostname,
    scanners: a.scanners, collectors: a.collectors,
    // The agent's own word as of its last heartbeat, with the fields nothing else reads.
    last_report: a.last_report ? { ...a.last_report, at: iso(a.last_heartbeat_at), extra: a.heartbeat_data } : null,
    api_key_prefix: a.api_key_prefix, last_heartbeat_at: iso(a.last_heartbeat_at), last_seen_at: iso(a.last_seen_at),
    created_at: iso(a.created_at), updated_at: iso(a.updated_at),
  };
}

export function presentStep(s: PipelineStepRow) {
  return stepToDocument(stepDefOf(s));
}

type VersionFields = Pick<PipelineRow, 'name' | 'description' | 'triggers' | 'settings' | 'tags'>;

export function presentPipeline(p: PipelineRow, steps: PipelineStepRow[], version?: { version: number } & VersionFields) {
  const v = version ?? p;
  return {
    id: p.id, tenant_id: p.tenant_id, name: v.name, description: v.description,
    version: version?.version ?? p.version, current_version: p.version, triggers: v.triggers,
    settings: v.settings, tags: v.tags, is_active: p.is_active, managed_by: p.managed_by ?? null,
    steps: steps.map(presentStep), created_at: iso(p.created_at), updated_at: iso(p.updated_at),
  };
}

export function presentStepRun(s: StepRunRow) {
  return {
    id: s.id, step_key: s.step_key, name: s.name, order: s.step_order, depends_on: s.depends_on, status: s.status,
    attempt: s.attempt, max_attempts: s.max_attempts, agent_id: s.agent_id, command_id: s.command_id,
    condition_evaluated: s.condition_evaluated, condition_result: s.condition_result, skip_reason: s.skip_reason,
    findings_count: s.findings_count, output: s.output, error_code: s.error_code, error_message: s.error_message,
    retry_at: iso(s.retry_at), queued_at: iso(s.queued_at), started_at: iso(s.started_at),
    completed_at: iso(s.completed_at),
  };
}

export function presentRun(r: RunRow, stepRuns?: StepRunRow[]) {
  return {
    id: r.id, pipeline_id: r.pipeline_id, pipeline_version: r.pipeline_version, tenant_id: r.tenant_id,
    asset_id: r.asset_id, scan_id: r.scan_id, trigger_type: r.trigger_type, triggered_by: r.triggered_by,
    status: r.status, context: r.context, total_steps: r.total_steps, completed_steps: r.completed_steps,
    failed_steps: r.failed_steps, skipped_steps: r.skipped_steps, total_findings: r.total_findings,
    new_findings: r.new_findings,
    started_at: iso(r.started_at), completed_at: iso(r.completed_at), error_message: r.error_message,
    admitted_at: iso(r.admitted_at), deadline_at: iso(r.deadline_at),
    created_at: iso(r.created_at), updated_at: iso(r.updated_at),
    ...(stepRuns ? { step_runs: stepRuns.map(presentStepRun) } : {}),
  };
}

export function presentCommand(c: CommandRow) {
  return {
    id: c.id, type: c.type, priority: c.priority, status: c.status, agent_id: c.agent_id,
    pipeline_run_id: c.pipeline_run_id, step_run_id: c.step_run_id, attempt: c.attempt, tool: c.tool,
    capabilities: c.capabilities, timeout_seconds: c.timeout_seconds, payload: c.payload, result: c.result,
    error_code: c.error_code, error_message: c.error_message,
    exit_code: c.exit_code, duration_ms: c.duration_ms, reported_status: c.reported_status,
    reported_completed_at: iso(c.reported_completed_at), created_at: iso(c.created_at),
    claimed_at: iso(c.claimed_at), claim_expires_at: iso(c.claim_expires_at),
    acknowledged_at: iso(c.acknowledged_at), started_at: iso(c.started_at), completed_at: iso(c.completed_at),
    expires_at: iso(c.expires_at), updated_at: iso(c.updated_at),
  };
}

/** A finding (API.md "Findings (tenant)"): identity, what it is, where, and its lifecycle. */
export function presentFinding(f: FindingRow) {
  return {
    id: f.id, asset_id: f.asset_id, type: f.type, tool: f.tool, rule_id: f.rule_id, title: f.title,
    description: f.description, severity: f.severity, status: f.status, resolution: f.resolution,
    fingerprint: f.fingerprint, location: f.location, vulnerability: f.vulnerability, references: f.references,
    first_seen_at: iso(f.first_seen_at), last_seen_at: iso(f.last_seen_at), resolved_at: iso(f.resolved_at),
    occurrences: f.occurrences, first_run_id: f.first_run_id, last_run_id: f.last_run_id, last_step_key: f.last_step_key,
  };
}

export function presentAgentScan(s: AgentScanRow) {
  return {
    id: s.id, tenant_id: s.tenant_id, agent_id: s.agent_id, tool: s.tool, name: s.name, asset_id: s.asset_id,
    branch: s.branch, commit_sha: s.commit_sha, status: s.status, findings_count: s.findings_count,
    error_message: s.error_message, started_at: iso(s.started_at), completed_at: iso(s.completed_at),
    created_at: iso(s.created_at), updated_at: iso(s.updated_at),
  };
}
