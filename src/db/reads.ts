// Where reads go when DATABASE_READ_URL names a streaming replica of DATABASE_URL.
//
// The replica answers list and detail reads (API routes, the dashboard through them, the
// /metrics gauges); everything that writes, or must see the latest state to act on it, stays
// on the primary: authentication and sessions, the agent protocol, every transaction, the
// event feed and stream (events_horizon() judges which transactions are still open from
// the primary's pg_stat_activity and snapshot, and the stream wakes on the primary's
// NOTIFY, which a standby neither receives nor can LISTEN for).
//
// A replica replays the primary's WAL a little later (milliseconds when healthy). Two rules
// keep that lag out of sight where a client would notice it:
//   - Read your writes: after a tenant (or the admin) changed something through this
//     process, its reads go to the primary until the replica has replayed past that change
//     (the primary's WAL insert position taken after the write; the replica's
//     pg_last_wal_replay_lsn()).
//   - Causal dashboard: a read made through a dashboard session must see everything
//     committed before it began (the page reloads parts after an event of the stream, which
//     follows the primary): it waits up to READ_WAIT_MS for the replica to replay that far,
//     then reads the primary.
// Read your writes holds within a process: with several API processes behind a balancer, a
// client's next request may reach one that did not see its write and reads the replica as it
// is (the dashboard's reads are causal in any process: they ask the primary where it is).
// Other reads (API clients' lists, /metrics) take the replica as it is. A replica that fails
// a query (down, restarting, a recovery conflict) is left alone for REPLICA_REST_MS and the
// read is made on the primary: a replica costs latency, never an error.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Queryable } from './pool.ts';

/** How long a read waits for the replica to replay what it must see before reading the primary. */
export const READ_WAIT_MS = 250;
/** After a replica error, reads go to the primary this long. */
export const REPLICA_REST_MS = 5_000;
const POLL_MS = 3;
const REPLAYED_TRUST_MS = 1_000;

/** A WAL position ("16/B374D848") as a number that compares. */
export function lsnOf(text: string): bigint {
  const [hi, lo] = text.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

const INSERT_POSITION: pg.QueryConfig = { name: 'scanflow_wal_insert_lsn', text: 'SELECT pg_current_wal_insert_lsn()::text AS lsn' };
// NULL when the server is not in recovery (a primary given as the replica): nothing replays
// there, and a read that must wait for replay may not go there as if it had.
const REPLAY_POSITION: pg.QueryConfig = { name: 'scanflow_wal_replay_lsn', text: 'SELECT pg_last_wal_replay_lsn()::text AS lsn' };

/**
 * What a read must see. key: whose reads these are (a tenant id, 'admin'; null: nobody's):
 * their own recent writes. causal: everything committed before the read began.
 */
export type ReadNeed = { key: string | null; causal: boolean };

export class ReadRouting {
  readonly primary: pg.Pool;
  readonly replica: pg.Pool | null;
  private readonly logger: Logger;
  /** Per key: the primary's insert position after its last write through this process. */
  private readonly written = new Map<string, bigint>();
  /**
   * The replica's replay position as last read, and when: a lower bound of where it is now
   * while it is the same server, trusted for REPLAYED_TRUST_MS only (a standby that crashed and
   * restarted shows its data as of where it replayed again, which can be behind).
   */
  private replayed = -1n;
  private replayedAt = 0;
  private replayRead: Promise<bigint> | null = null;
  private restUntil = 0;
  /**
   * Where the reads went, counted per request: replica at once, replica after waiting for its
   * replay, primary because the replica was behind (after READ_WAIT_MS) or failing.
   */
  readonly counts = { replica: 0, replicaAfterWait: 0, primaryBehind: 0, primaryFailing: 0 };

  constructor(primary: pg.Pool, replica: pg.Pool | null, logger: Logger) {
    this.primary = primary;
    this.replica = replica;
    this.logger = logger;
  }

  /**
   * The database of a request's reads, chosen at its first query and kept for the others
   * (one request, one view of the data).
   */
  reads(need: ReadNeed): Queryable {
    if (!this.replica) return this.primary;
    let chosen: Promise<pg.Pool> | null = null;
    return {
      query: async (config: pg.QueryConfig) => {
        chosen ??= this.choose(need);
        const db = await chosen;
        if (db === this.primary) return this.primary.query(config);
        try {
          return await db.query(config);
        } catch (err) {
          if (!replicaTrouble(err)) throw err;
          this.rest(err);
          this.counts.primaryFailing++;
          chosen = Promise.resolve(this.primary);
          return this.primary.query(config);
        }
      },
    };
  }

  /** After a write by `key`: its reads go to the primary until the replica has replayed this far. */
  async wrote(key: string): Promise<void> {
    if (!this.replica) return;
    const { rows } = await this.primary.query(INSERT_POSITION);
    const at = lsnOf(rows[0].lsn as string);
    if ((this.written.get(key) ?? -1n) < at) this.written.set(key, at);
  }

  private async choose(need: ReadNeed): Promise<pg.Pool> {
    const replica = this.replica!;
    if (Date.now() < this.restUntil) {
      this.counts.primaryFailing++;
      return this.primary;
    }
    const written = need.key === null ? undefined : this.written.get(need.key);
    let wanted = written !== undefined && written > this.knownReplay() ? written : undefined;
    if (need.causal) {
      const { rows } = await this.primary.query(INSERT_POSITION);
      const now = lsnOf(rows[0].lsn as string);
      if (wanted === undefined || now > wanted) wanted = now;
    }
    const until = Date.now() + READ_WAIT_MS;
    let waited = false;
    // A position read earlier is a lower bound (replay only moves forward): ask again until
    // the replica is there or the wait is over.
    for (let asked = false; wanted !== undefined && this.knownReplay() < wanted; asked = true) {
      if (asked) {
        if (Date.now() + POLL_MS > until) {
          this.counts.primaryBehind++;
          return this.primary;
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
      try {
        await this.replayPosition();
      } catch (err) {
        this.rest(err);
        this.counts.primaryFailing++;
        return this.primary;
      }
      waited = asked;
    }
    // The replica has the key's last write: its reads need not wait for it any more.
    if (written !== undefined && this.knownReplay() >= written && this.written.get(need.key!) === written) this.written.delete(need.key!);
    if (waited) this.counts.replicaAfterWait++;
    else this.counts.replica++;
    return replica;
  }

  private knownReplay(): bigint {
    return Date.now() - this.replayedAt <= REPLAYED_TRUST_MS ? this.replayed : -1n;
  }

  /** The replica's replay position, one query at a time however many reads wait for it. */
  private replayPosition(): Promise<bigint> {
    const asked = Date.now();
    this.replayRead ??= this.replica!.query(REPLAY_POSITION).then(
      ({ rows }) => {
        this.replayRead = null;
        const lsn = rows[0].lsn as string | null;
        if (lsn === null) throw new Error('DATABASE_READ_URL is not a standby in recovery (pg_last_wal_replay_lsn() is null)');
        // One position query at a time: each answer is the newest (a restarted standby's may be lower).
        this.replayed = lsnOf(lsn);
        this.replayedAt = asked;
        return this.replayed;
      },
      (err) => {
        this.replayRead = null;
        throw err;
      },
    );
    return this.replayRead;
  }

  private rest(err: unknown): void {
    this.replayed = -1n;
    if (Date.now() >= this.restUntil) {
      this.logger.warn({ err }, `the read replica failed; reads go to the primary for ${REPLICA_REST_MS / 1000} s`);
    }
    this.restUntil = Date.now() + REPLICA_REST_MS;
  }
}

/**
 * Errors of the replica rather than of the read: connection failures, a server shutting down
 * or starting, a query cancelled by a recovery conflict (40001 on a standby, 57P04 when its
 * database was dropped by replay). A statement the primary would refuse too (bad input:
 * classes 22, 23, 42) is the read's own error, and so is a write sent here by mistake
 * (25006, read-only transaction): it must show, not be hidden by a retry on the primary.
 */
function replicaTrouble(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true; // the connection itself (ECONNREFUSED, a timeout, a reset)
  return /^(08|40|53|57|58|XX)/.test(code);
}
