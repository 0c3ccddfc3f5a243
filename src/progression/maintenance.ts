// Worker liveness and the maintenance sweep. graphile-worker locks the jobs it fetches under
// its pool's id and keeps a dead process's locks for 4 hours; a process killed with SIGKILL
// would leave the runs behind those jobs stuck that long. So every worker process
// heartbeats into worker_processes, and every WORKER_HEARTBEAT_INTERVAL any live process
// (one at a time, under an advisory lock) sweeps:
//   1. releases the jobs of processes silent past their WORKER_DEAD_AFTER (orphaned_jobs),
//      deleting those graphile-worker had already spent (see DiscardSpentOrphans);
//   2. requests an advance for every run that nothing would move (stalled_runs), re-arms
//      lost run timers (at most STALLED_RUNS_PER_SWEEP runs per sweep, with one add_jobs
//      call per kind of job), agent health checks and the scheduler tick;
//   3. forgets processes gone for a day, and idempotency keys past their 24 hours.
// (History past its retention, step output included, is the retention task's:
// src/progression/retention.ts.)
// This is a timer in each process rather than a graphile-worker job on purpose: a job could
// itself be held by the dead process it is meant to recover from. Every step is idempotent,
// so a sweep killed halfway (its transaction rolls back) or two processes sweeping in turn
// change nothing twice. Worst case from a kill to its jobs running again: dead_after plus
// one interval (20 s + 5 s by default).
import { hostname } from 'node:os';
import type pg from 'pg';
import type { Logger } from 'pino';
import { withTransaction } from '../db/transaction.ts';
import { one } from '../store/query.ts';
import { idempotencySql, maintenanceSql } from '../store/queries.ts';
import { IDEMPOTENCY_KEY_TTL_SECONDS, IDEMPOTENCY_PURGE_BATCH } from '../api/idempotency.ts';
import type { OrchestrationConfig } from '../config.ts';

export type SweepReport = {
  discardedJobs: { id: number; task_identifier: string; payload: unknown; last_error: string | null }[];
  releasedJobs: { locked_by: string; jobs: number; tasks: string[] }[];
  deadWorkers: { pool_id: string; hostname: string; pid: number; last_heartbeat_at: Date }[];
  advancedRuns: { pipeline_run_id: string; problem: string }[];
  rearmedTimers: number;
  rearmedAgentChecks: number;
  rearmedScheduler: boolean;
  /** Idempotency keys past their 24 hours, deleted (housekeeping, not news). */
  purgedIdempotencyKeys: number;
};

/**
 * How many stalled runs one sweep repairs (those stalled first); the others wait for the next
 * sweep (every WORKER_HEARTBEAT_INTERVAL), so a sweep's transaction stays short however many
 * runs lost their jobs. With 10,000 live runs that all lost their timers (PostgreSQL 15,
 * load 4): 0.52-0.66 s for a sweep's 1,000, 4.2-5.3 s for all 10,000 at once.
 */
export const STALLED_RUNS_PER_SWEEP = 1000;

/**
 * One sweep, in one transaction. Returns null when another process is sweeping right now
 * (the advisory lock is taken); that process does the work.
 */
export async function sweep(
  pool: pg.Pool,
  orchestration: OrchestrationConfig,
  { stalledRunsPerSweep = STALLED_RUNS_PER_SWEEP }: { stalledRunsPerSweep?: number } = {},
): Promise<SweepReport | null> {
  return withTransaction(pool, async (tx) => {
    const [lock] = await tx.batch([{ q: maintenanceSql.TryLockSweep, values: [] }]);
    if (!(lock.rows[0] as { locked: boolean }).locked) return null;
    // In order, each seeing what the one before did: jobs released first, so the stalled
    // runs are judged with those jobs counted as the way forward they now are.
    const [, discarded, released, dead, stalled, agents, scheduler, , purged] = await tx.batch([
      { q: maintenanceSql.SweepWithoutJit, values: [] },
      { q: maintenanceSql.DiscardSpentOrphans, values: [] },
      { q: maintenanceSql.ReleaseOrphanedJobs, values: [] },
      { q: maintenanceSql.DeclareSilentWorkersDead, values: [] },
      { q: maintenanceSql.RepairStalledRuns, values: [stalledRunsPerSweep] },
      { q: maintenanceSql.RearmAgentHealthChecks, values: [orchestration.agentOfflineAfterSeconds] },
      { q: maintenanceSql.RearmLostScheduler, values: [] },
      { q: maintenanceSql.PruneWorkerProcesses, values: [] },
      { q: idempotencySql.PurgeIdempotencyKeys, values: [IDEMPOTENCY_KEY_TTL_SECONDS, IDEMPOTENCY_PURGE_BATCH] },
    ]);
    const repaired = stalled.rows as { pipeline_run_id: string; problem: string }[];
    return {
      discardedJobs: discarded.rows as SweepReport['discardedJobs'],
      releasedJobs: released.rows as SweepReport['releasedJobs'],
      deadWorkers: dead.rows as SweepReport['deadWorkers'],
      advancedRuns: repaired.filter((r) => r.problem !== 'no_timer').map(({ pipeline_run_id, problem }) => ({ pipeline_run_id, problem })),
      rearmedTimers: repaired.filter((r) => r.problem === 'no_timer').length,
      rearmedAgentChecks: agents.rowCount ?? 0,
      rearmedScheduler: (scheduler.rows[0] as { next_at: Date | null } | undefined)?.next_at != null,
      purgedIdempotencyKeys: (purged.rows[0] as { purged: number }).purged,
    };
  });
}

function hasNews(r: SweepReport): boolean {
  return r.discardedJobs.length + r.releasedJobs.length + r.deadWorkers.length + r.advancedRuns.length + r.rearmedTimers + r.rearmedAgentChecks > 0 ||
    r.rearmedScheduler;
}

/**
 * The liveness of one worker process (one graphile-worker pool): registers it, heartbeats
 * and sweeps every interval until stopped, then records the clean stop.
 */
export class WorkerLiveness {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly pool: pg.Pool;
  private readonly poolId: string;
  private readonly orchestration: OrchestrationConfig;
  private readonly log: Logger;

  constructor(pool: pg.Pool, poolId: string, orchestration: OrchestrationConfig, log: Logger) {
    this.pool = pool;
    this.poolId = poolId;
    this.orchestration = orchestration;
    this.log = log;
  }

  /** Registers the process and sweeps once at once (a restart recovers what it left behind). */
  async start(): Promise<void> {
    await this.heartbeat();
    this.running = this.sweepOnce();
    await this.running;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    // A little jitter so processes started together do not all wake at the same instant.
    const ms = this.orchestration.workerHeartbeatSeconds * 1000 * (0.9 + Math.random() * 0.2);
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => this.schedule());
    }, ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      await this.heartbeat();
    } catch (err) {
      this.log.warn({ err }, 'worker heartbeat failed');
      return;
    }
    await this.sweepOnce();
  }

  private async heartbeat(): Promise<void> {
    const row = await one<{ was_declared_dead_at: Date | null }>(this.pool, maintenanceSql.RecordWorkerHeartbeat, [
      this.poolId, hostname(), process.pid, this.orchestration.workerDeadAfterSeconds,
    ]);
    if (row?.was_declared_dead_at) {
      this.log.warn({ poolId: this.poolId, declaredDeadAt: row.was_declared_dead_at },
        'this worker process was silent past WORKER_DEAD_AFTER and declared dead; jobs it held were released to others');
    }
  }

  private async sweepOnce(): Promise<void> {
    try {
      const report = await sweep(this.pool, this.orchestration);
      if (report && hasNews(report)) this.log.warn({ sweep: report }, 'maintenance sweep recovered lost work');
    } catch (err) {
      this.log.warn({ err }, 'maintenance sweep failed; the next one retries');
    }
  }

  /** Stops heartbeating (after graphile-worker has stopped) and records the clean stop. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await one(this.pool, maintenanceSql.MarkWorkerStopped, [this.poolId]).catch((err) =>
      this.log.warn({ err }, 'could not record the worker stop'),
    );
  }
}
