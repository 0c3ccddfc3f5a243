// Every named query of sql/, loaded once. Callers use them through one/many/exec.
import { loadQueries } from '../db/sql.ts';

export const tenantsSql = loadQueries('tenants.sql', [
  'InsertTenant', 'GetTenant', 'ListTenants', 'InsertApiToken', 'FindTenantByTokenHash', 'GetSetting',
  'InsertSettingIfAbsent', 'TenantNamed', 'UpdateTenantDeclared',
] as const);

export const assetsSql = loadQueries('assets.sql', [
  'InsertAsset', 'GetAsset', 'GetAssetById', 'LockAsset', 'ListAssets', 'UpdateAsset', 'DeleteAsset', 'UpsertIngestAssets',
] as const);

export const agentsSql = loadQueries('agents.sql', [
  'InsertAgent', 'GetAgent', 'LockAgent', 'ListAgents', 'UpdateAgent', 'SetAgentStatus', 'SetAgentKey',
  'FindAgentByKeyHash', 'RecordContacts', 'CommandsToStop', 'LockAgentById', 'MarkAgentOffline',
  'RearmAgentHealth', 'LockAgentForClaim',
] as const);

export const pipelinesSql = loadQueries('pipelines.sql', [
  'InsertPipeline', 'BumpPipelineVersion', 'InsertPipelineVersion', 'GetPipeline', 'LockPipeline',
  'GetPipelineVersion', 'ListPipelines', 'ListVersionSteps', 'ListStepsOfVersions', 'SoftDeletePipeline',
  'SetWebhookToken', 'FindPipelineByWebhookToken', 'PipelinesDiscovering', 'DiscoveryRunExists', 'PipelineNamed',
  'ConfigPipelines',
] as const);

export const runsSql = loadQueries('pipeline_runs.sql', [
  'InsertRun', 'AdmitRuns', 'GetRunsByIds', 'GetRun', 'RunListHead', 'RunWhereStatus', 'RunWherePipeline', 'RunWhereAsset',
  'RunWhereScan', 'RunListAfter', 'RunListOrder', 'LockRun', 'LockTenantRun', 'StartRun', 'SettleRun', 'FinishRun',
  'ReopenRun', 'ListRunEvents',
] as const);

export const scansSql = loadQueries('scans.sql', [
  'InsertScan', 'GetScan', 'LockScan', 'ListScans', 'UpdateScan', 'DeleteScan', 'ArmScheduler', 'AddSchedulerTicks',
  'TargetAssets', 'ListScanFires', 'TriggerScansOfPipeline', 'DeleteScanById', 'ScanNamed', 'ScanNamedRow', 'ConfigScans',
] as const);

export const stepRunsSql = loadQueries('step_runs.sql', [
  'StepRunsForAdvance', 'ListStepRuns', 'GetStepRun', 'CompleteStep', 'FailStep', 'ScheduleStepRetry', 'SkipStep',
  'RecordConditionMet', 'CancelRunSteps', 'ResetStepsForRetry',
] as const);

export const commandsSql = loadQueries('commands.sql', [
  'DispatchStep', 'ClaimCommands', 'AfterEmptyClaim', 'GetAgentCommand', 'AckCommand', 'StartCommand', 'FinishCommand', 'GetCommand',
  'CommandListHead', 'CommandWhereStatus', 'CommandWhereAgent', 'CommandWhereRun', 'CommandListAfter', 'CommandListOrder',
  'ListStepCommands', 'ExpireRunCommands', 'ArmRunTimer', 'CancelRunCommands',
  'FailLostAgentCommands',
] as const);

export const maintenanceSql = loadQueries('maintenance.sql', [
  'RecordWorkerHeartbeat', 'MarkWorkerStopped', 'TryLockSweep', 'SweepWithoutJit', 'DiscardSpentOrphans', 'ReleaseOrphanedJobs', 'DeclareSilentWorkersDead',
  'RepairStalledRuns', 'RearmAgentHealthChecks', 'RearmLostScheduler', 'PruneWorkerProcesses',
] as const);

export const idempotencySql = loadQueries('idempotency_keys.sql', [
  'ReserveIdempotencyKey', 'GetIdempotencyKey', 'TakeOverIdempotencyKey', 'MarkIdempotencyKeyCommitted',
  'CompleteIdempotencyKey', 'ReleaseIdempotencyKey', 'PurgeIdempotencyKeys',
] as const);

export const commandOutputSql = loadQueries('command_output.sql', [
  'AppendCommandOutput', 'GetCommandOutputHead', 'ReadCommandOutput', 'ReadStepOutput',
] as const);

export const retentionSql = loadQueries('retention.sql', [
  'RetentionLockTimeout', 'RetentionStatementTimeout', 'TryLockRetention', 'RetentionStart', 'RetainEvents', 'RetainOutput',
  'RetainCommands', 'RetainDeliveries', 'EventsRemovedTo',
] as const);

export const findingsApiSql = loadQueries('findings_api.sql', [
  'FindingListHead', 'FindingWhereStatus', 'FindingWhereStatusIn', 'FindingWhereSeverity', 'FindingWhereSeverityIn',
  'FindingWhereMinSeverity', 'FindingWhereType', 'FindingWhereTypeIn', 'FindingWhereTool', 'FindingWhereRule',
  'FindingWhereAsset', 'FindingWhereRun', 'FindingWhereScan', 'FindingWhereText', 'FindingWhereFirstSeenAfter',
  'FindingAfterFirstSeen', 'FindingAfterLastSeen', 'FindingAfterSeverity', 'FindingListOrderFirstSeen',
  'FindingListOrderLastSeen', 'FindingListOrderSeverity', 'FindingSummaryHead', 'FindingSummaryTail',
  'FindingGroupByAssetHead', 'FindingGroupByToolHead', 'FindingGroupByRuleHead', 'FindingGroupCounts',
  'FindingGroupByAssetTail', 'FindingGroupByToolTail', 'FindingGroupByRuleTail', 'GetFinding', 'LockFinding', 'ListFindingSightings',
  'ListFindingEvents', 'TriageFinding', 'ListRunFindings',
] as const);

export const findingsSql = loadQueries('findings.sql', [
  'UpsertFindings', 'ResolveUnseenFindings', 'ExistingFingerprints', 'RequestFindingsAnalyze', 'AnalyzeFindings',
] as const);

export const ingestsSql = loadQueries('ingests.sql', [
  'IngestContext', 'InsertIngest', 'StartPendingChunk', 'FinishIngest', 'LockReportChunks', 'ReportChunks',
  'InsertPendingChunk', 'GetPendingChunk', 'GetIngest',
] as const);

export const agentScansSql = loadQueries('agent_scans.sql', ['InsertAgentScan', 'GetAgentScan', 'FinishAgentScan'] as const);

export const channelsSql = loadQueries('channels.sql', [
  'InsertChannel', 'GetChannel', 'LockChannel', 'ListChannels', 'UpdateChannel', 'DeleteChannel', 'SetChannelSecret',
  'KnownPipelines', 'SendTestEvent', 'ListChannelAttempts',
] as const);

export const deliveriesSql = loadQueries('deliveries.sql', [
  'ClaimDelivery', 'DeliveryState', 'RearmDelivery', 'CancelDelivery', 'DeliveryEvents', 'DeliveryRun', 'RecordAttempt',
] as const);

export const eventsSql = loadQueries('events.sql', [
  'EventPosition', 'EventsHead', 'ReadEvents', 'ListenForTenant', 'RefreshListener', 'StopListening',
] as const);

export const metricsSql = loadQueries('metrics.sql', ['TenantGauges'] as const);

export const sessionsSql = loadQueries('dashboard_sessions.sql', [
  'FindTokenForSession', 'InsertSession', 'FindSession', 'SessionTenant', 'RotateSession', 'DeleteSession', 'DeleteEndedSessions',
] as const);

export const schedulerSql = loadQueries('scheduler.sql', [
  'SchedulerBurst', 'TryLockDueTenant', 'LockDueTenant', 'ClaimDueScans', 'AdvanceSchedules', 'AssetsByIds',
  'AssetsByFilters', 'ActiveRunsOfScans', 'InsertRuns', 'AdmitTenants', 'InsertScanFires',
] as const);
