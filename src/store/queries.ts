// Every named query of sql/, loaded once. Callers use them through one/many/exec.
import { loadQueries } from '../db/sql.ts';

export const tenantsSql = loadQueries('tenants.sql', [
  'InsertTenant', 'GetTenant', 'ListTenants', 'InsertApiToken', 'FindTenantByTokenHash', 'GetSetting',
  'InsertSettingIfAbsent', 'TenantNamed', 'UpdateTenantDeclared',
] as const);

export const assetsSql = loadQueries('assets.sql', [
  'InsertAsset', 'GetAsset', 'GetAssetById', 'LockAsset', 'ListAssets', 'UpdateAsset', 'DeleteAsset',
] as const);

export const agentsSql = loadQueries('agents.sql', [
  'InsertAgent', 'GetAgent', 'LockAgent', 'ListAgents', 'UpdateAgent', 'SetAgentStatus', 'SetAgentKey',
  'FindAgentByKeyHash', 'RecordHeartbeat', 'TouchAgent', 'CommandsToStop', 'LockAgentById', 'MarkAgentOffline',
  'RearmAgentHealth', 'LockAgentForClaim',
] as const);

export const pipelinesSql = loadQueries('pipelines.sql', [
  'InsertPipeline', 'BumpPipelineVersion', 'InsertPipelineVersion', 'GetPipeline', 'LockPipeline',
  'GetPipelineVersion', 'ListPipelines', 'ListVersionSteps', 'ListStepsOfVersions', 'SoftDeletePipeline',
  'SetWebhookToken', 'FindPipelineByWebhookToken', 'PipelinesDiscovering', 'DiscoveryRunExists', 'PipelineNamed',
  'ConfigPipelines',
] as const);

export const runsSql = loadQueries('pipeline_runs.sql', [
  'InsertRun', 'AdmitRuns', 'GetRunsByIds', 'GetRun', 'ListRuns', 'LockRun', 'LockTenantRun', 'StartRun', 'SettleRun', 'FinishRun',
  'ReopenRun', 'ListRunEvents',
] as const);

export const scansSql = loadQueries('scans.sql', [
  'InsertScan', 'GetScan', 'LockScan', 'ListScans', 'UpdateScan', 'DeleteScan', 'ClaimDueScan', 'CountDueScans',
  'AdvanceSchedule', 'ArmScheduler', 'AddSchedulerTicks', 'TargetAssets', 'ActiveScanRuns', 'InsertScanFire',
  'ListScanFires', 'TriggerScansOfPipeline', 'DeleteScanById', 'ScanNamed', 'ScanNamedRow', 'ConfigScans',
] as const);

export const stepRunsSql = loadQueries('step_runs.sql', [
  'StepRunsForAdvance', 'ListStepRuns', 'GetStepRun', 'CompleteStep', 'FailStep', 'ScheduleStepRetry', 'SkipStep',
  'RecordConditionMet', 'CancelRunSteps', 'ResetStepsForRetry',
] as const);

export const commandsSql = loadQueries('commands.sql', [
  'DispatchStep', 'ClaimCommands', 'AfterEmptyClaim', 'GetAgentCommand', 'AckCommand', 'StartCommand', 'FinishCommand', 'GetCommand',
  'ListCommands', 'ListStepCommands', 'ExpireRunCommands', 'ArmRunTimer', 'CancelRunCommands',
  'FailLostAgentCommands',
] as const);
