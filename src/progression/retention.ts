// Retention: history older than its setting (RetentionConfig) is deleted by the retention
// task (tasks/retention.ts, a graphile-worker cron item: once per tick across every process)
// in batches, each one statement in a short transaction of its own (sql/retention.sql) that
// also adds what it removed to retention_log. A batch's size adapts per kind so that its
// transaction (and so every row lock it takes) lasts about BATCH_TARGET_MS: a row of one kind
// costs 20 times another's (a command's step run and ingest are updated with it; an event is
// one index entry), and a loaded machine makes every row dearer. The kinds take turns,
// one batch each, so a large backlog of one never starves the others; a pass stops after
// RETENTION_PASS_MS (or when its worker shuts down) and the next one carries on.
//
// Concurrency: a batch first takes its kind's transaction-level advisory lock without
// waiting (TryLockRetention); a pass that finds it taken leaves that kind to the process
// that holds it. Rows are locked FOR UPDATE SKIP LOCKED before they are deleted, so a batch
// never waits on anyone else's row either: no deadlock, and each row is counted by the one
// transaction that deleted it. lock_timeout and statement_timeout bound the rest (the
// foreign keys' actions on step runs and ingests).
//
// Kept: findings, their sightings and their events (a finding's history), pipeline runs and
// step runs (a run's page, counters and findings), ingests, scan fires.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { RetentionConfig } from '../config.ts';
import { retentionSql } from '../store/queries.ts';
import { inTransaction } from '../db/transaction.ts';

export type RetentionKind = 'output' | 'events' | 'deliveries' | 'commands';
/** The order of a round: output first (the bytes), commands last (their output is gone by then). */
export const RETENTION_KINDS: readonly RetentionKind[] = ['output', 'events', 'deliveries', 'commands'];

/**
 * Rows of a kind's first batch (output: chunks, at most OUTPUT_BATCH_BYTES of them); then each
 * batch is sized from the one before to take BATCH_TARGET_MS, between BATCH_MIN and BATCH_MAX
 * rows. See test/bench-scale-retention.ts for what a row of each kind costs.
 */
export const RETENTION_BATCH = 1_000;
export const BATCH_TARGET_MS = 200;
export const BATCH_MIN = 100;
export const BATCH_MAX = 5_000;
export const OUTPUT_BATCH_BYTES = 64 * 1024 * 1024;
/** A pass stops after this long; the next tick carries on. */
export const RETENTION_PASS_MS = 60_000;
/** The cron pattern of the retention task (src/worker.ts). */
export const RETENTION_CRON = '*/10 * * * *';

/** Connects a function to a client for one transaction: the worker's helpers.withPgClient, or a pool's. */
export type WithClient = <T>(fn: (client: pg.PoolClient) => Promise<T>) => Promise<T>;

export function withPoolClient(pool: pg.Pool): WithClient {
  return async (fn) => {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  };
}

export type RetentionOptions = {
  /** Every batch this many rows (tests); by default they adapt (see BATCH_TARGET_MS). */
  batchRows?: number;
  outputBatchBytes?: number;
  budgetMs?: number;
  signal?: AbortSignal;
  /** Called after each batch that ran (the bench times them). */
  onBatch?: (b: BatchReport) => void;
};

export type BatchReport = { kind: RetentionKind; rows: number; limit: number; ms: number; more: boolean };

export type KindReport = { rows: number; batches: number; bytes?: number; cutoff: Date; done: boolean; busy?: boolean };

export type RetentionReport = {
  passId: string;
  startedAt: Date;
  ms: number;
  /** Kinds with a setting (0/off keeps a kind forever: absent here). */
  kinds: Partial<Record<RetentionKind, KindReport>>;
  /** The pass stopped before every kind was done (its time ran out, or it was asked to stop). */
  stopped: boolean;
};

type Walk = {
  kind: RetentionKind;
  cutoff: Date;
  report: KindReport;
  /** events: where the walk goes on from, and whether everything up to it is old or kept. */
  cursor: number;
  contiguous: boolean;
  /** Rows the next batch may take. */
  limit: number;
};

/** One batch of one kind in a transaction of its own; null when another process holds the kind. */
async function batch(client: pg.PoolClient, w: Walk, passId: string, startedAt: Date, o: { outputBatchBytes: number }) {
  return inTransaction(client, async (tx) => {
    // A batch never waits long for anyone (the next pass tries again), nor runs long.
    const [, , lock] = await tx.batch([
      { q: retentionSql.RetentionLockTimeout, values: [] },
      { q: retentionSql.RetentionStatementTimeout, values: [] },
      { q: retentionSql.TryLockRetention, values: [w.kind] },
    ]);
    if (!(lock.rows[0] as { locked: boolean }).locked) return null;
    switch (w.kind) {
      case 'events': {
        const r = (await tx.finalRead(retentionSql.RetainEvents, [passId, w.cutoff, w.cursor, w.limit, startedAt, w.contiguous]))
          .rows[0] as { rows: number; old: number; young: number; window_to: string | null; scanned_to: string | null };
        if (r.window_to !== null) w.cursor = Number(r.window_to);
        if (w.contiguous && r.scanned_to !== null && r.window_to !== null && Number(r.scanned_to) < Number(r.window_to)) w.contiguous = false;
        return { rows: r.rows, more: r.window_to !== null && !(r.old === 0 && r.young > 0) };
      }
      case 'output': {
        const r = (await tx.finalRead(retentionSql.RetainOutput, [passId, w.cutoff, w.limit, o.outputBatchBytes, startedAt]))
          .rows[0] as { rows: number; bytes: string; outputs: number };
        w.report.bytes = (w.report.bytes ?? 0) + Number(r.bytes);
        return { rows: r.rows, more: r.rows > 0 || r.outputs > 0 };
      }
      case 'commands':
      case 'deliveries': {
        const q = w.kind === 'commands' ? retentionSql.RetainCommands : retentionSql.RetainDeliveries;
        const rows = ((await tx.finalRead(q, [passId, w.cutoff, w.limit, startedAt])).rows[0] as { rows: number }).rows;
        return { rows, more: rows > 0 };
      }
    }
  });
}

/**
 * One retention pass: every kind with a setting, a batch at a time in turn, until each has
 * nothing older than its cutoff left or the pass's time is up.
 */
export async function retentionPass(withClient: WithClient, config: RetentionConfig, opts: RetentionOptions = {}): Promise<RetentionReport> {
  const o = { outputBatchBytes: opts.outputBatchBytes ?? OUTPUT_BATCH_BYTES };
  const budgetMs = opts.budgetMs ?? RETENTION_PASS_MS;
  const passId = randomUUID();
  const started = performance.now();
  const start = await withClient(async (c) =>
    (await c.query<{ now: Date; events_scanned_to: string }>({ name: retentionSql.RetentionStart.name, text: retentionSql.RetentionStart.text })).rows[0]);
  const startedAt = start.now;
  const walks: Walk[] = [];
  for (const kind of RETENTION_KINDS) {
    const seconds = config[kind];
    if (seconds === null) continue;
    const cutoff = new Date(startedAt.getTime() - seconds * 1000);
    walks.push({ kind, cutoff, report: { rows: 0, batches: 0, cutoff, done: false }, cursor: Number(start.events_scanned_to), contiguous: true,
      limit: opts.batchRows ?? RETENTION_BATCH });
  }
  const report: RetentionReport = {
    passId,
    startedAt,
    ms: 0,
    kinds: Object.fromEntries(walks.map((w) => [w.kind, w.report])),
    stopped: false,
  };
  let active = walks;
  while (active.length > 0) {
    for (const w of active) {
      if (opts.signal?.aborted || performance.now() - started > budgetMs) {
        report.stopped = true;
        break;
      }
      const t0 = performance.now();
      const r = await withClient((c) => batch(c, w, passId, startedAt, o));
      if (r === null) {
        // Another process is deleting this kind right now: it carries on.
        w.report.busy = true;
        w.report.done = true;
        continue;
      }
      const ms = performance.now() - t0;
      w.report.rows += r.rows;
      if (r.rows > 0) w.report.batches++;
      w.report.done = !r.more;
      opts.onBatch?.({ kind: w.kind, rows: r.rows, limit: w.limit, ms, more: r.more });
      if (opts.batchRows === undefined && r.rows >= w.limit / 2) {
        // A batch that found rows enough to judge by: the next one sized to take the target.
        // At most twice the last, so one fast batch does not make the next a long one.
        const wanted = (w.limit * BATCH_TARGET_MS) / Math.max(ms, 1);
        w.limit = Math.round(Math.max(BATCH_MIN, Math.min(BATCH_MAX, w.limit * 2, wanted)));
      }
    }
    if (report.stopped) break;
    active = active.filter((w) => !w.report.done);
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}
