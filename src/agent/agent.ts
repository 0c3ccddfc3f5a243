// The agent loop (ARCHITECTURE.md "The reference agent"; API.md "Agent API"): heartbeats at
// the interval the server asks, reporting the commands it runs and stopping those the
// answer lists in cancel_command_ids; a long poll for as many commands as it has free
// slots; each command acknowledged, started, run (runScanStep, its output streamed), its
// findings ingested and the command completed or failed. Every report is retried with
// backoff while the server is away (replays are safe by contract): tools keep running.
// On SIGTERM it stops polling, lets running tools finish within a grace period, then stops
// them and fails their commands with agent_shutdown so the server retries them elsewhere.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import * as v from 'valibot';
import { AgentClient, ServerError, Unreachable, backoffDelay, describe, sleep, type Retry } from './client.ts';
import type { AgentConfig } from './config.ts';
import { OutputUpload } from './output-upload.ts';
import { runScanStep, type ScanStepResult } from './scan-step.ts';
import type { Toolbox } from './toolbox.ts';
import { ToolError, tail, type Detection } from './tools/tool.ts';

/** The longest a poll is held by the server (API.md: `wait` at most 60). */
const POLL_WAIT_SECONDS = 30;
/** How long a report (ack, start, ingest, complete, fail) is retried while the server is away. */
const REPORT_RETRY_MS = 10 * 60_000;
/** After the grace period, how long the agent_shutdown reports may take before the process exits. */
const SHUTDOWN_REPORT_MS = 15_000;
/** How much of an error message a failure carries (the API takes 10,000 characters). */
const MAX_ERROR_MESSAGE = 8_000;

const HeartbeatAnswer = v.looseObject({
  agent_id: v.string(),
  tenant_id: v.optional(v.string()),
  heartbeat_interval_seconds: v.optional(v.pipe(v.number(), v.minValue(1)), 15),
  poll_interval_seconds: v.optional(v.pipe(v.number(), v.minValue(0)), 5),
  cancel_command_ids: v.optional(v.array(v.string()), []),
  max_concurrent_jobs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  tools: v.optional(v.array(v.string())),
  capabilities: v.optional(v.array(v.string())),
});
export type HeartbeatAnswer = v.InferOutput<typeof HeartbeatAnswer>;

const PolledCommand = v.looseObject({
  id: v.string(),
  attempt: v.optional(v.number()),
  timeout_seconds: v.optional(v.nullable(v.number())),
  payload: v.looseObject({
    step_key: v.optional(v.nullable(v.string())),
    tool: v.optional(v.nullable(v.string())),
    attempt: v.optional(v.nullable(v.number())),
    timeout_seconds: v.optional(v.nullable(v.number())),
  }),
});
type PolledCommand = v.InferOutput<typeof PolledCommand>;

const IngestAnswer = v.looseObject({
  findings_created: v.optional(v.number(), 0),
  findings_updated: v.optional(v.number(), 0),
  findings_reopened: v.optional(v.number(), 0),
  findings_resolved: v.optional(v.number(), 0),
  findings_skipped: v.optional(v.number(), 0),
  errors: v.optional(v.array(v.string()), []),
});
type IngestAnswer = v.InferOutput<typeof IngestAnswer>;

/** The agent cannot start: a message for the person who started it. */
export class StartError extends Error {}

type Job = {
  id: string;
  attempt: number;
  controller: AbortController;
  /** Why its tool was stopped, when it was. */
  stop: 'cancelled' | 'shutdown' | null;
};

export type AgentDeps = {
  config: AgentConfig;
  toolbox: Toolbox;
  detections: Detection[];
  logger: Logger;
  version: string;
  /** SIGTERM → SIGKILL grace when a tool is stopped (default 5 s). */
  killGraceMs?: number;
};

export class Agent {
  readonly client: AgentClient;
  private readonly d: AgentDeps;
  private readonly logger: Logger;
  private readonly jobs = new Map<string, Job>();
  private readonly started = Date.now();
  private workRoot = '';
  private ownWorkRoot = false;
  private agentId = '';
  private heartbeatMs = 15_000;
  private pollIntervalMs = 5_000;
  private serverConcurrency: number | null = null;
  private concurrencyWarned = false;
  private finished = 0;
  private failed = 0;
  /** Set by SIGTERM (or a fatal answer): no more polls. */
  private stopping: string | null = null;
  /** When stopping: reports are not retried past this. */
  private hardStopAt = Infinity;
  private graceTimer: NodeJS.Timeout | null = null;
  private readonly pollAbort = new AbortController();
  private readonly heartbeatAbort = new AbortController();
  private slotWaiters: (() => void)[] = [];
  /** A 401 while running: the key was revoked or replaced; the process exits non-zero. */
  fatal: string | null = null;

  constructor(deps: AgentDeps) {
    this.d = deps;
    this.logger = deps.logger;
    this.client = new AgentClient({
      baseUrl: deps.config.url, apiKey: deps.config.apiKey, userAgent: `scanflow-agent/${deps.version}`, logger: deps.logger,
    });
  }

  get id(): string {
    return this.agentId;
  }

  get workDirectory(): string {
    return this.workRoot;
  }

  /** Commands run at once: the configured number, else the agent's max_concurrent_jobs on the server. */
  get concurrency(): number {
    return this.d.config.concurrency ?? this.serverConcurrency ?? 1;
  }

  private get available(): string[] {
    return this.d.detections.filter((x) => x.available).map((x) => x.tool);
  }

  /**
   * The first heartbeat, retried until SCANFLOW_START_TIMEOUT: the key is checked, the
   * intervals and the agent's settings learned. Throws StartError with the reason.
   */
  async connect(): Promise<HeartbeatAnswer> {
    const { url, startTimeoutSeconds } = this.d.config;
    const until = Date.now() + startTimeoutSeconds * 1000;
    let answer: HeartbeatAnswer;
    try {
      answer = await this.heartbeat({ until: () => until });
    } catch (err) {
      if (err instanceof ServerError && err.status === 401) {
        throw new StartError(
          `the server at ${url} refused SCANFLOW_AGENT_KEY (401 ${err.code}: ${err.message}). ` +
            'Use the api_key shown when the agent was created (POST /api/v1/agents) or its key was regenerated (POST /api/v1/agents/{id}/regenerate-key).',
        );
      }
      if (err instanceof ServerError && err.status === 403) {
        throw new StartError(`the server at ${url} refuses this agent (403 ${err.code}: ${err.message}); activate it with POST /api/v1/agents/{id}/activate`);
      }
      if (err instanceof Unreachable) {
        throw new StartError(
          `cannot reach the scanflow API at ${url}: ${describe(err.cause)} (${err.attempts} attempts in ${startTimeoutSeconds}s). ` +
            'Is the server running (npm start), and is SCANFLOW_URL its address?',
        );
      }
      if (err instanceof ServerError) throw new StartError(`${url} does not answer as the scanflow API does (${describe(err)}); check SCANFLOW_URL`);
      throw new StartError(`the first heartbeat to ${url} failed: ${describe(err)}`);
    }
    if (this.d.config.workDir) this.workRoot = path.resolve(this.d.config.workDir);
    else {
      this.workRoot = await mkdtemp(path.join(os.tmpdir(), 'scanflow-agent-'));
      this.ownWorkRoot = true;
    }
    return answer;
  }

  /** Heartbeats and polls until shutdown() (or a fatal answer), then waits for the running commands. */
  async run(): Promise<void> {
    const heartbeats = this.heartbeatLoop();
    await this.pollLoop();
    while (this.jobs.size > 0) await this.slotFreed();
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.heartbeatAbort.abort();
    await heartbeats;
    if (this.ownWorkRoot) await rm(this.workRoot, { recursive: true, force: true, maxRetries: 3 }).catch(() => {});
    this.logger.info({ finished: this.finished, failed: this.failed }, 'agent stopped');
  }

  /**
   * SIGTERM: no more polls; running tools may finish within the grace period, then they are
   * stopped and their commands failed with agent_shutdown. A second call stops them at once.
   */
  shutdown(reason: string): void {
    if (this.stopping) {
      this.logger.warn({ reason, running: this.jobs.size }, 'stopping the running tools now');
      this.hardStopAt = Math.min(this.hardStopAt, Date.now() + 5_000);
      this.stopTools();
      return;
    }
    this.stopping = reason;
    const graceMs = this.d.config.shutdownGraceSeconds * 1000;
    this.hardStopAt = Date.now() + graceMs + SHUTDOWN_REPORT_MS;
    this.pollAbort.abort();
    this.wakeSlotWaiters();
    if (this.jobs.size > 0) {
      this.logger.info({ reason, running: [...this.jobs.keys()], grace_seconds: this.d.config.shutdownGraceSeconds },
        'stopping: no new commands; the running tools may finish within the grace period');
      this.graceTimer = setTimeout(() => {
        if (this.jobs.size === 0) return;
        this.logger.warn({ running: [...this.jobs.keys()] }, 'grace period over: stopping the running tools (agent_shutdown)');
        this.stopTools();
      }, graceMs);
    } else {
      this.logger.info({ reason }, 'stopping: nothing running');
    }
  }

  private stopTools(): void {
    for (const job of this.jobs.values()) {
      if (job.stop !== null) continue;
      job.stop = 'shutdown';
      job.controller.abort();
    }
  }

  // ---- heartbeats -------------------------------------------------------------------------

  private heartbeatBody(): Record<string, unknown> {
    const load = os.loadavg()[0];
    return {
      version: this.d.version,
      hostname: os.hostname(),
      status: this.stopping ? 'stopping' : 'online',
      active_jobs: this.jobs.size,
      running_command_ids: [...this.jobs.keys()],
      // The seed SDK's agent reports the scanners it has: the tools installed on this host.
      scanners: this.available,
      uptime_seconds: Math.floor((Date.now() - this.started) / 1000),
      total_scans: this.finished,
      errors: this.failed,
      cpu_percent: Math.min(Math.round((load / Math.max(os.availableParallelism(), 1)) * 1000) / 10, 102_400),
      memory_percent: Math.round((1 - os.freemem() / os.totalmem()) * 1000) / 10,
    };
  }

  private async heartbeat(retry: Retry): Promise<HeartbeatAnswer> {
    const answer = await this.client.request('POST', '/api/v1/agent/heartbeat', { json: this.heartbeatBody(), retry });
    const parsed = v.safeParse(HeartbeatAnswer, answer.body);
    if (!parsed.success) throw new Error(`the heartbeat's answer is not the API's: ${parsed.issues[0].message}`);
    const a = parsed.output;
    this.agentId = a.agent_id;
    this.heartbeatMs = a.heartbeat_interval_seconds * 1000;
    this.pollIntervalMs = a.poll_interval_seconds * 1000;
    if (a.max_concurrent_jobs !== undefined) {
      this.serverConcurrency = a.max_concurrent_jobs;
      if (this.d.config.concurrency !== null && this.d.config.concurrency > a.max_concurrent_jobs && !this.concurrencyWarned) {
        this.concurrencyWarned = true;
        this.logger.warn({ concurrency: this.d.config.concurrency, max_concurrent_jobs: a.max_concurrent_jobs },
          'SCANFLOW_AGENT_CONCURRENCY is more than the agent\'s max_concurrent_jobs: the server sends at most that many commands at once');
      }
    }
    for (const id of a.cancel_command_ids) {
      const job = this.jobs.get(id);
      if (!job || job.stop !== null) continue;
      job.stop = 'cancelled';
      job.controller.abort();
      this.logger.info({ command_id: id }, 'the server cancelled the command: stopping its tool');
    }
    return a;
  }

  private async heartbeatLoop(): Promise<void> {
    let failures = 0;
    while (!this.heartbeatAbort.signal.aborted) {
      await sleep(failures === 0 ? this.heartbeatMs : Math.min(this.heartbeatMs, backoffDelay(failures, this.client.backoff)), this.heartbeatAbort.signal);
      if (this.heartbeatAbort.signal.aborted) return;
      try {
        await this.heartbeat({ until: () => 0, signal: this.heartbeatAbort.signal });
        if (failures > 0) this.logger.info({ failures }, 'heartbeats go through again');
        failures = 0;
      } catch (err) {
        if (this.heartbeatAbort.signal.aborted) return;
        if (err instanceof ServerError && err.status === 401) return this.die(err);
        failures++;
        if (failures === 1 || failures % 10 === 0) this.logger.warn({ failures, error: describe(err) }, 'heartbeat failed');
      }
    }
  }

  /** The key stopped working (revoked, regenerated): nothing can be reported any more. */
  private die(err: ServerError): void {
    if (this.fatal) return;
    this.fatal = `the server no longer accepts this agent's key (${describe(err)}); stopping`;
    this.logger.error(this.fatal);
    this.shutdown('key refused');
    this.hardStopAt = Date.now();
    this.stopTools();
  }

  // ---- polls ------------------------------------------------------------------------------

  private slotFreed(): Promise<void> {
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  private wakeSlotWaiters(): void {
    const waiters = this.slotWaiters;
    this.slotWaiters = [];
    for (const w of waiters) w();
  }

  private async pollLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      const free = this.concurrency - this.jobs.size;
      if (free <= 0) {
        await this.slotFreed();
        continue;
      }
      const asked = Date.now();
      let commands: unknown[];
      try {
        const answer = await this.client.request<unknown>('GET', '/api/v1/agent/commands', {
          query: { limit: Math.min(free, 100), wait: POLL_WAIT_SECONDS },
          extraTimeoutMs: POLL_WAIT_SECONDS * 1000,
          signal: this.pollAbort.signal,
        });
        if (!Array.isArray(answer.body)) throw new Error('the poll did not answer a JSON array of commands');
        commands = answer.body;
        const interval = Number(answer.headers.get('x-poll-interval-seconds'));
        if (Number.isFinite(interval) && interval >= 0) this.pollIntervalMs = interval * 1000;
        failures = 0;
      } catch (err) {
        if (this.stopping) return;
        if (err instanceof ServerError && err.status === 401) return this.die(err);
        failures++;
        const delay = backoffDelay(failures, this.client.backoff);
        if (failures === 1 || failures % 10 === 0) this.logger.warn({ failures, retry_in_ms: delay, error: describe(err) }, 'poll failed');
        await sleep(delay, this.pollAbort.signal);
        continue;
      }
      if (this.stopping) {
        // Claimed as the agent began stopping: never acknowledged, they return to the queue
        // after the server's ack timeout, with no attempt spent.
        if (commands.length > 0) this.logger.info({ commands: commands.length }, 'stopping: leaving the commands just claimed to the server');
        return;
      }
      for (const raw of commands) this.launch(raw);
      // A server that answered an empty poll at once (it does not hold polls): its interval.
      if (commands.length === 0 && Date.now() - asked < 1_000) await sleep(this.pollIntervalMs, this.pollAbort.signal);
    }
  }

  private launch(raw: unknown): void {
    const parsed = v.safeParse(PolledCommand, raw);
    if (!parsed.success) {
      this.logger.error({ command: raw, problem: parsed.issues[0].message }, 'the poll answered something that is not a command; ignored');
      return;
    }
    const command = parsed.output;
    if (this.jobs.has(command.id)) return;
    const job: Job = { id: command.id, attempt: command.payload.attempt ?? command.attempt ?? 1, controller: new AbortController(), stop: null };
    this.jobs.set(job.id, job);
    void this.execute(job, command)
      .catch((err) => this.logger.error({ command_id: job.id, err }, 'the command ended with an unexpected error'))
      .finally(() => {
        this.jobs.delete(job.id);
        this.wakeSlotWaiters();
      });
  }

  // ---- one command ------------------------------------------------------------------------

  /** Reports are retried until REPORT_RETRY_MS from now, or the shutdown's end. */
  private reportRetry(): Retry {
    const until = Date.now() + REPORT_RETRY_MS;
    return { until: () => Math.min(until, this.hardStopAt) };
  }

  private async execute(job: Job, command: PolledCommand): Promise<void> {
    const p = command.payload;
    const log = this.logger.child({ command_id: job.id, step: p.step_key ?? null, tool: p.tool ?? null, attempt: job.attempt });
    const acknowledged = Date.now();
    if (!(await this.report(job, 'ack', log, undefined))) return;
    if (!(await this.report(job, 'start', log, undefined))) return;
    log.info('running');

    // The server counts the step's timeout from its acknowledgement: so does the tool's kill.
    const timeoutSeconds = p.timeout_seconds ?? command.timeout_seconds ?? null;
    const output = new OutputUpload(this.client, job.id, log);
    let result: ScanStepResult;
    try {
      result = await runScanStep({
        toolbox: this.d.toolbox,
        payload: p,
        workRoot: this.workRoot,
        signal: job.controller.signal,
        onOutput: (_stream, chunk) => output.write(chunk),
        killGraceMs: this.d.killGraceMs,
        deadline: timeoutSeconds ? acknowledged + timeoutSeconds * 1000 : undefined,
      });
    } catch (err) {
      await output.close(this.reportRetry().until);
      if (job.stop === 'cancelled') {
        log.info('stopped: the command was cancelled');
        return;
      }
      if (job.stop === 'shutdown') {
        await this.fail(job, log, 'agent_shutdown',
          `the agent was stopped (${this.stopping}) before ${p.tool ?? 'the tool'} finished; the step can run again on another agent`, null);
        return;
      }
      if (err instanceof ToolError) {
        const exit = err.exitCode !== null && !err.message.includes(`${err.exitCode}`) ? ` (exit code ${err.exitCode})` : '';
        await this.fail(job, log, err.code, `${err.message}${exit}`, err.exitCode);
        return;
      }
      log.error({ err }, 'the step failed in the agent');
      await this.fail(job, log, 'agent_error', `the agent failed running the step: ${(err as Error).message}`, null);
      return;
    }
    await output.close(this.reportRetry().until);

    let ingested: IngestAnswer | null;
    try {
      ingested = await this.ingest(job, result);
    } catch (err) {
      if (err instanceof ServerError && (err.status === 404 || err.status === 409)) {
        log.info({ error: describe(err) }, 'findings not ingested: the command is no longer this agent\'s');
        return;
      }
      await this.fail(job, log, 'ingest_failed', `${result.tool} ran (exit ${result.exitCode}) but its findings could not be ingested: ${describe(err)}`, result.exitCode);
      return;
    }
    if (ingested?.errors.length) log.warn({ skipped: ingested.findings_skipped, errors: ingested.errors.slice(0, 10) }, 'the server skipped some findings');

    // findings_count is left to the server: the distinct findings ingested for this command.
    const done = await this.report(job, 'complete', log, {
      output: result.output,
      result: { status: 'completed', exit_code: result.exitCode, duration_ms: result.durationMs, completed_at: new Date().toISOString() },
    });
    if (!done) return;
    this.finished++;
    log.info({
      exit_code: result.exitCode, duration_ms: result.durationMs,
      ...(ingested && {
        findings_created: ingested.findings_created, findings_updated: ingested.findings_updated,
        findings_reopened: ingested.findings_reopened, findings_resolved: ingested.findings_resolved,
      }),
    }, 'completed');
  }

  /**
   * The findings to the server, tied to the command (X-Command-Id). One Idempotency-Key per
   * command, attempt and part: a retried ingest whose first answer was lost counts nothing twice.
   */
  private async ingest(job: Job, result: ScanStepResult): Promise<IngestAnswer | null> {
    if (result.format === 'text') return null;
    const headers: Record<string, string> = {
      'x-command-id': job.id,
      'idempotency-key': `scanflow-agent:${job.id}:${job.attempt}:findings`,
    };
    let answer;
    try {
      if (result.format === 'sarif') {
        // SARIF counts as full coverage: a run over another branch than the default one
        // says partial, so it resolves nothing on the default branch's findings. (The
        // branch is in runs[].versionControlProvenance too.)
        const onDefault = result.target.kind !== 'repository' || result.target.branch.is_default_branch;
        answer = await this.client.request('POST', '/api/v1/agent/ingest/sarif', {
          json: result.document, contentType: 'application/sarif+json',
          headers: { ...headers, 'x-coverage': onDefault ? 'full' : 'partial' },
          retry: this.reportRetry(),
        });
      } else {
        const report = result.document;
        const metadata: Record<string, unknown> = { ...report.metadata, command_id: job.id };
        metadata.timestamp ??= new Date().toISOString();
        if (result.target.kind === 'repository' && metadata.branch === undefined) metadata.branch = result.target.branch;
        answer = await this.client.request('POST', '/api/v1/agent/ingest', { json: { ...report, metadata }, headers, retry: this.reportRetry() });
      }
    } catch (err) {
      // Committed by an earlier attempt whose answer was lost: the findings are in.
      if (err instanceof ServerError && err.code === 'idempotency_key_response_lost') return null;
      throw err;
    }
    const parsed = v.safeParse(IngestAnswer, answer.body);
    return parsed.success ? parsed.output : null;
  }

  private async fail(job: Job, log: Logger, code: string, message: string, exitCode: number | null): Promise<void> {
    this.failed++;
    const text = message.length > MAX_ERROR_MESSAGE ? tail(message, MAX_ERROR_MESSAGE) : message;
    // exit_code: the API records it from a completion's result; sent here for clients that read it.
    if (await this.report(job, 'fail', log, { error_code: code, error_message: text, ...(exitCode !== null && { exit_code: exitCode }) })) {
      log.info({ error_code: code, error: text.slice(0, 500) }, 'failed');
    }
  }

  /** A transition of the command; false when it is no longer this agent's (or the server stayed away). */
  private async report(job: Job, action: 'ack' | 'start' | 'complete' | 'fail', log: Logger, body: unknown): Promise<boolean> {
    try {
      await this.client.request('POST', `/api/v1/agent/commands/${job.id}/${action}`, { json: body, retry: this.reportRetry() });
      return true;
    } catch (err) {
      if (err instanceof ServerError && (err.status === 404 || err.status === 409)) {
        // Cancelled, expired, taken back (agent_lost) or claimed by another agent meanwhile.
        log.info({ action, error: describe(err) }, 'the command is no longer this agent\'s to report');
        return false;
      }
      if (err instanceof ServerError && err.status === 401) this.die(err);
      log.error({ action, error: describe(err) }, 'could not report to the server; it will expire the command');
      return false;
    }
  }
}
