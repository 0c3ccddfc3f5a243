// A command's tool output, streamed to POST /api/v1/agent/commands/{id}/logs while the tool
// runs (API.md Part 2 "Step output"): what the tool printed is sent at least every second or
// every 64 KB, one upload at a time, each at the offset the server has (Content-Range). A 416
// says the length the server has: the upload resumes there (bytes it already has are not
// sent again). While the server is unreachable the output waits, up to a bound; past it the
// excess is dropped and the log says how much.
import type { Logger } from 'pino';
import { ServerError, Unreachable, describe, type AgentClient } from './client.ts';

export type OutputUploadOptions = {
  flushBytes?: number;
  flushMs?: number;
  /** Output kept while uploads fail; more is dropped (and counted). */
  maxPendingBytes?: number;
  /** The largest body of one upload. */
  maxUploadBytes?: number;
};

const FLUSH_BYTES = 64 * 1024;
const FLUSH_MS = 1_000;
const MAX_PENDING = 16 * 1024 * 1024;
const MAX_UPLOAD = 1024 * 1024;
/** An upload is retried (server down, 5xx) this long before the output waits for the next flush. */
const UPLOAD_RETRY_MS = 15_000;

export class OutputUpload {
  private readonly client: AgentClient;
  private readonly commandId: string;
  private readonly logger: Logger;
  private readonly o: Required<OutputUploadOptions>;
  /** Bytes the server has (the next upload's start). */
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private dropped = 0;
  private timer: NodeJS.Timeout | null = null;
  private uploading: Promise<void> | null = null;
  /** The server will take no more (the command is not this agent's, or its output closed). */
  private refused = false;
  private deadline: () => number = () => Date.now() + UPLOAD_RETRY_MS;

  constructor(client: AgentClient, commandId: string, logger: Logger, opts: OutputUploadOptions = {}) {
    this.client = client;
    this.commandId = commandId;
    this.logger = logger;
    this.o = {
      flushBytes: opts.flushBytes ?? FLUSH_BYTES,
      flushMs: opts.flushMs ?? FLUSH_MS,
      maxPendingBytes: opts.maxPendingBytes ?? MAX_PENDING,
      maxUploadBytes: opts.maxUploadBytes ?? MAX_UPLOAD,
    };
  }

  /** The bytes the server acknowledged so far. */
  get length(): number {
    return this.offset;
  }

  write(chunk: Buffer): void {
    if (this.refused || chunk.byteLength === 0) return;
    if (this.pendingBytes + chunk.byteLength > this.o.maxPendingBytes) {
      this.dropped += chunk.byteLength;
      return;
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    if (this.pendingBytes >= this.o.flushBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.o.flushMs);
  }

  /** Starts an upload of what is pending, unless one is under way (it takes the rest after). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.uploading ??= this.drain().finally(() => {
      this.uploading = null;
      // Output that arrived during a failed upload waits for its own timer.
      if (this.pendingBytes > 0 && !this.refused) this.timer ??= setTimeout(() => this.flush(), this.o.flushMs);
    });
  }

  /**
   * The last of the output, uploaded before the command is reported (retried until `until`).
   * Never throws: output is worth trying for, not worth failing a command over.
   */
  async close(until: () => number): Promise<void> {
    this.deadline = until;
    if (this.dropped > 0) {
      const note = Buffer.from(`\n[scanflow-agent] ${this.dropped} bytes of output were dropped while the server could not take them\n`);
      this.pending.push(note);
      this.pendingBytes += note.byteLength;
      this.dropped = 0;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (this.pendingBytes > 0 && !this.refused && Date.now() < until()) {
      this.flush();
      await this.uploading;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pendingBytes > 0 && !this.refused) {
      this.logger.warn({ command_id: this.commandId, bytes: this.pendingBytes }, 'the end of the tool output could not be uploaded');
    }
  }

  private async drain(): Promise<void> {
    while (this.pendingBytes > 0 && !this.refused) {
      const body = Buffer.concat(this.pending, this.pendingBytes).subarray(0, this.o.maxUploadBytes);
      const start = this.offset;
      try {
        const answer = await this.client.request<{ length?: number }>('POST', `/api/v1/agent/commands/${this.commandId}/logs`, {
          bytes: body,
          contentType: 'application/octet-stream',
          headers: { 'content-range': `bytes ${start}-${start + body.byteLength - 1}` },
          retry: { until: () => Math.min(this.deadline(), Date.now() + UPLOAD_RETRY_MS) },
        });
        this.advance(start, typeof answer.body?.length === 'number' ? answer.body.length : start + body.byteLength);
      } catch (err) {
        if (err instanceof ServerError && err.status === 416) {
          const length = lengthOf(err);
          if (length === null) return this.refuse(err);
          if (length < start) {
            // The server has less than it acknowledged before: the gap cannot be sent again.
            this.logger.warn({ command_id: this.commandId, server_length: length, sent: start }, 'the server lost part of the tool output');
            this.offset = length;
          } else this.advance(start, length);
          continue;
        }
        if (err instanceof ServerError) return this.refuse(err);
        if (!(err instanceof Unreachable)) this.logger.warn({ command_id: this.commandId, error: describe(err) }, 'output upload failed');
        return; // unreachable for now: the output waits for the next flush
      }
    }
  }

  /** The server has `length` bytes: drop what it has from the front of what is pending. */
  private advance(start: number, length: number): void {
    let skip = Math.min(Math.max(length - start, 0), this.pendingBytes);
    this.offset = length;
    while (skip > 0) {
      const head = this.pending[0];
      if (head.byteLength <= skip) {
        this.pending.shift();
        skip -= head.byteLength;
        this.pendingBytes -= head.byteLength;
      } else {
        this.pending[0] = head.subarray(skip);
        this.pendingBytes -= skip;
        skip = 0;
      }
    }
  }

  private refuse(err: ServerError): void {
    this.logger.warn({ command_id: this.commandId, error: describe(err) }, 'the server takes no more output for this command');
    this.refused = true;
    this.pending = [];
    this.pendingBytes = 0;
  }
}

/** The length a 416 says to resume from: X-Next-Offset, `Content-Range: bytes *\/N`, or the error's details. */
export function lengthOf(err: ServerError): number | null {
  const next = Number(err.headers.get('x-next-offset') ?? NaN);
  if (Number.isSafeInteger(next) && next >= 0) return next;
  const range = /^bytes \*\/(\d+)$/.exec(err.headers.get('content-range') ?? '');
  if (range) return Number(range[1]);
  const details = (err.body as { error?: { details?: { path?: string; message?: string }[] } })?.error?.details ?? [];
  const detail = details.find((d) => d.path === 'length');
  return detail && /^\d+$/.test(detail.message ?? '') ? Number(detail.message) : null;
}
