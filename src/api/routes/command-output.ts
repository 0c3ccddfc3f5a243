// Step output uploads (API.md Part 2 "Step output (logs)"): the agent holding a command
// appends its tool's output, positioned by `Content-Range: bytes S-E[/total]` or `?offset=S`
// (or, with neither, at the end). A chunk must start at the current length; a repeated
// chunk is a no-op; anything else is a 416 that says the length to resume from. Reads are
// in runs.ts (GET /pipeline-runs/{id}/steps/{stepKey}/logs).
import { Hono } from 'hono';
import * as v from 'valibot';
import type { AppDeps } from '../app.ts';
import { requireAgent, type AppEnv } from '../auth.ts';
import { ApiError, invalid, notFound } from '../errors.ts';
import { endpoints } from '../contract.ts';
import { pathId, queryOf, readBodyBytes } from '../input.ts';
import { one } from '../../store/query.ts';
import { commandOutputSql } from '../../store/queries.ts';
import { parseContentRange, planAppend, truncationMarker, type AppendPlan } from '../../domain/output.ts';

/**
 * How long after a command finished its agent may still upload output: agents flush the
 * last of it after reporting completion, and retry a failed upload with backoff.
 */
export const OUTPUT_GRACE_SECONDS = 300;
/**
 * An append that misses and finds the output at its offset after all tries again (so does
 * one without a position that another append beat to the end), this many times at most.
 */
const APPEND_TRIES = 5;

export const UploadQuery = v.object({
  offset: v.optional(v.pipe(v.string(), v.regex(/^\d{1,15}$/, 'must be a byte offset (a whole number)'), v.transform(Number))),
});

type Head = {
  id: string;
  tenant_id: string;
  status: string;
  open: boolean;
  received_bytes: number;
  kept_bytes: number;
  truncated: boolean;
};
type Appended = { received_bytes: number; stored_bytes: number; truncated: boolean };
export type UploadResult = { length: number; truncated: boolean; duplicate: boolean };

/** A chunk that does not start at the current length: 416, with the length to resume from. */
class RangeMismatch extends ApiError {
  readonly length: number;
  constructor(code: string, message: string, length: number) {
    super(416, code, message, [{ path: 'length', message: String(length) }], { length });
    this.length = length;
  }
}

export function commandOutputRoutes(deps: AppDeps) {
  const r = new Hono<AppEnv>();

  r.post('/:id/logs', requireAgent(deps, 'scans'), async (c) => {
    const agent = c.get('agent');
    const id = pathId(c, 'id', 'command');
    const q = queryOf(c, UploadQuery, ['offset']);
    // Decoded (gzip, zstd) and bounded by the app's body limit like every route's body. A
    // JSON body is refused (415), not unwrapped: output is the bytes the tool printed.
    const body = await readBodyBytes(c, endpoints.uploadCommandOutput);
    const position = positionOf(c.req.header('content-range'), q.offset, body.byteLength);
    try {
      const result = await appendOutput(deps, id, agent.id, position, body);
      return c.json({ command_id: id, ...result }, 200, { 'X-Next-Offset': String(result.length) });
    } catch (err) {
      if (!(err instanceof RangeMismatch)) throw err;
      // As HTTP answers an unsatisfiable range: the current length in Content-Range too.
      return c.json(err.toBody(), 416, { 'Content-Range': `bytes */${err.length}`, 'X-Next-Offset': String(err.length) });
    }
  });

  return r;
}

/** Where the chunk goes: Content-Range or ?offset (which must agree when both are given), else null (the end). */
function positionOf(contentRange: string | undefined, offset: number | undefined, bodyBytes: number): number | null {
  if (contentRange === undefined) return offset ?? null;
  const range = parseContentRange(contentRange, bodyBytes);
  if ('path' in range) throw invalid([range]);
  if (offset !== undefined && offset !== range.start) {
    throw invalid([{ path: 'offset', message: `says ${offset} but Content-Range starts at ${range.start}` }]);
  }
  return range.start;
}

const EMPTY = Buffer.alloc(0);
const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * Appends `body` at `position` (null: at the current end). One statement when the chunk is
 * at the current length; on a miss, one more to say why (or to recognise a repeat).
 */
export async function appendOutput(deps: AppDeps, id: string, agentId: string, position: number | null, body: Buffer): Promise<UploadResult> {
  const cap = deps.orchestration.logMaxBytes;
  let head: Head | null = null;
  // A truncated output whose cap was raised since stores nothing more (its marker stays last).
  let dropAll = false;
  for (let tries = 1; ; tries++) {
    if (body.byteLength === 0 || (position === null && !head)) head = await openHead(deps, id, agentId);
    if (body.byteLength === 0) {
      // Nothing to store: an answer with the length (a client asking where to resume).
      if (position !== null && position !== head!.received_bytes) throw gap(position, head!.received_bytes);
      return { length: head!.received_bytes, truncated: head!.truncated, duplicate: false };
    }
    const offset = position ?? head!.received_bytes;
    const plan: AppendPlan = dropAll ? { keep: EMPTY, marker: truncationMarker(cap) } : planAppend(offset, body, cap);
    const row = await one<Appended>(deps.pool, commandOutputSql.AppendCommandOutput, [
      id, agentId, offset, body.byteLength, asBuffer(plan.keep), plan.marker && asBuffer(plan.marker), OUTPUT_GRACE_SECONDS,
    ]);
    if (row) return { length: row.received_bytes, truncated: row.truncated, duplicate: false };

    head = await openHead(deps, id, agentId);
    // At the length after all: the output was truncated before (store nothing now), or its
    // first chunk committed after this statement began (it saw no output yet).
    const retry = head.received_bytes === offset || position === null;
    if (retry && tries < APPEND_TRIES) {
      dropAll ||= head.truncated;
      continue;
    }
    if (position === null || head.received_bytes === offset) {
      throw new ApiError(503, 'busy', 'Other appends to this output kept getting there first; retry shortly');
    }
    return repeated(deps, id, head, offset, body);
  }
}

/** The command as its agent may write its output: 404 if not this agent's, 409 once closed. */
async function openHead(deps: AppDeps, id: string, agentId: string): Promise<Head> {
  const head = await one<Head>(deps.pool, commandOutputSql.GetCommandOutputHead, [id, agentId, OUTPUT_GRACE_SECONDS]);
  if (!head) throw notFound('command');
  if (!head.open) {
    throw new ApiError(409, 'output_closed',
      `The command is ${head.status}; output is taken while it runs and for ${OUTPUT_GRACE_SECONDS} s after it finishes`);
  }
  return head;
}

/**
 * A chunk that is not at the current length: a repeat of bytes already received (the same
 * bytes where they were stored; past the cap nothing is stored to compare, so any range
 * received is a repeat) is a no-op; anything else is a 416.
 */
async function repeated(deps: AppDeps, id: string, head: Head, offset: number, body: Buffer): Promise<UploadResult> {
  const length = head.received_bytes;
  const end = offset + body.byteLength;
  if (end > length) throw gap(offset, length);
  const storedEnd = Math.min(end, head.kept_bytes);
  if (storedEnd > offset) {
    const stored = await one<{ data: Buffer }>(deps.pool, commandOutputSql.ReadCommandOutput, [id, offset, storedEnd - offset]);
    if (!stored || !stored.data.equals(body.subarray(0, storedEnd - offset))) {
      throw new RangeMismatch('output_conflict',
        `Bytes ${offset}-${end - 1} were already received with other content; the output is ${length} bytes long`, length);
    }
  }
  return { length, truncated: head.truncated, duplicate: true };
}

function gap(offset: number, length: number): RangeMismatch {
  return new RangeMismatch('offset_mismatch',
    `The chunk starts at byte ${offset} but the output is ${length} bytes long; send from byte ${length}`, length);
}
