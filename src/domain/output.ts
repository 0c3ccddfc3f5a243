// Step output (API.md Part 2 "Step output (logs)"): the decisions about an uploaded chunk
// and a read window that need no database. Output is bytes; text is UTF-8 only where it is
// decoded for a JSON answer, and every cut made here falls between characters.
import type { Problem } from './problems.ts';

export type ContentRange = { start: number; end: number; total: number | null };

/**
 * `Content-Range: bytes S-E` or `bytes S-E/total` (E inclusive, total may be `*`), as the
 * position of an upload of `bodyBytes` bytes. A problem names the header.
 */
export function parseContentRange(header: string, bodyBytes: number): ContentRange | Problem {
  const m = /^\s*bytes\s+(\d{1,15})-(\d{1,15})(?:\/(\d{1,15}|\*))?\s*$/i.exec(header);
  const path = 'Content-Range';
  if (!m) return { path, message: 'must be "bytes S-E" or "bytes S-E/total" (E inclusive)' };
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === undefined || m[3] === '*' ? null : Number(m[3]);
  if (end < start) return { path, message: 'ends before it starts' };
  if (end - start + 1 !== bodyBytes) {
    return { path, message: `covers ${end - start + 1} bytes but the body has ${bodyBytes}` };
  }
  if (total !== null && end >= total) return { path, message: 'ends beyond its total' };
  return { start, end, total };
}

/** The line a truncated output ends with. */
export function truncationMarker(maxBytes: number): Uint8Array {
  return new TextEncoder().encode(
    `\n[scanflow: output truncated: it reached LOG_MAX_BYTES (${maxBytes} bytes); later output was not stored]\n`,
  );
}

export type AppendPlan = {
  /** The bytes of the chunk to store (all of it below the cap, a prefix when it crosses it, none past it). */
  keep: Uint8Array;
  /** The truncation marker, when this chunk reaches past the cap (stored once per command). */
  marker: Uint8Array | null;
};

/**
 * What of a chunk at `offset` (in the agent's bytes) is stored under a cap of `maxBytes`.
 * Below the cap nothing was truncated yet, so everything before `offset` is stored and the
 * room left is `maxBytes - offset`. A chunk that crosses the cap is cut at the last
 * character boundary within it, so the kept output never ends in half a character.
 */
export function planAppend(offset: number, body: Uint8Array, maxBytes: number): AppendPlan {
  if (offset + body.byteLength <= maxBytes) return { keep: body, marker: null };
  const room = Math.max(0, maxBytes - offset);
  return { keep: body.subarray(0, charBoundaryAtOrBefore(body, room)), marker: truncationMarker(maxBytes) };
}

const isContinuation = (b: number) => (b & 0xc0) === 0x80;

/**
 * The largest index ≤ i that does not cut a UTF-8 character of `bytes` in two (at most 3
 * back). Bytes that are not UTF-8 (binary output) have no characters to respect: if no
 * boundary is found within 3 bytes, `i` itself.
 */
export function charBoundaryAtOrBefore(bytes: Uint8Array, i: number): number {
  if (i >= bytes.byteLength) return bytes.byteLength;
  for (let j = i; j >= 0 && j >= i - 3; j--) {
    if (!isContinuation(bytes[j])) return j;
  }
  return i;
}

/**
 * The window of stored output a read answers: leading continuation bytes are skipped (a
 * client offset inside a character moves to the next one) and a character cut by the end
 * of the window is left for the next read. `start` is where the window starts in the
 * output, `bytes` what to answer; the next read starts at start + bytes.length.
 */
export function readWindow(data: Uint8Array, start: number): { start: number; bytes: Uint8Array } {
  let from = 0;
  while (from < 3 && from < data.byteLength && isContinuation(data[from])) from++;
  let to = data.byteLength;
  // A character whose lead byte is in the last 3 bytes and whose continuation bytes are not
  // all there yet.
  for (let j = to - 1; j >= from && j >= to - 3; j--) {
    const b = data[j];
    if (isContinuation(b)) continue;
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    if (j + need > to) to = j;
    break;
  }
  return { start: start + from, bytes: data.subarray(from, to) };
}

/** Whether an Accept header prefers text/plain over JSON (JSON wins ties and when absent). */
export function prefersText(accept: string | undefined): boolean {
  if (!accept) return false;
  const ranges = accept.split(',').map((part) => {
    const [range, ...params] = part.trim().toLowerCase().split(';').map((s) => s.trim());
    const q = Number(params.find((p) => p.startsWith('q='))?.slice(2) ?? 1);
    return { range, q: Number.isFinite(q) ? q : 0 };
  });
  // The q of the most specific range that matches the type (RFC 9110 12.5.1).
  const qualityOf = (type: string): number => {
    const [major] = type.split('/');
    let best = { specificity: 0, q: 0 };
    for (const { range, q } of ranges) {
      const specificity = range === type ? 3 : range === `${major}/*` ? 2 : range === '*/*' ? 1 : 0;
      if (specificity > best.specificity) best = { specificity, q };
    }
    return best.q;
  };
  const text = qualityOf('text/plain');
  return text > 0 && text > qualityOf('application/json');
}
