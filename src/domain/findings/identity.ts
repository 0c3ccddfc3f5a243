// The identity of a finding (API.md "Identity"): what makes two sightings, in two scans, the
// same finding. In this order:
//   1. the tool's own fingerprint (SARIF `fingerprints`, first key in sorted order; the
//      report's `fingerprint`): the tool knows best;
//   2. SARIF `partialFingerprints.primaryLocationLineHash` (a hash of the line's text, as
//      CodeQL writes it) with tool, rule and path;
//   3. a hash of tool, rule, asset, path and the normalized snippet (or, without one, the
//      normalized title).
// Never a line number: code that moved down ten lines is the same finding. (DefectDojo puts
// line numbers in its hash, so every edit above a finding closes it and opens a duplicate.)
// Without line numbers, two results of one rule in one file with the same text would be one;
// they are told apart by their order in the file instead, as CodeQL numbers equal line
// hashes ("…:1", "…:2"): the second gets its own identity, the first keeps the plain one, so
// moving the whole file keeps every identity and adding a second occurrence keeps the first's.
import { createHash } from 'node:crypto';

/** The fingerprint column holds at most this many characters (a longer tool fingerprint is hashed). */
export const MAX_FINGERPRINT_LENGTH = 512;

export type IdentityParts = {
  tool: string;
  rule_id: string | null;
  /** The asset the finding is on (its id), null for findings without one. */
  asset_id: string | null;
  path: string | null;
  tool_fingerprint: string | null;
  line_hash: string | null;
  snippet: string | null;
  title: string;
  /** Only to order equal identities within one report; never part of the identity. */
  start_line: number | null;
  start_column: number | null;
};

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

/** Whitespace collapsed: re-indented or re-wrapped code is the same code. */
export function normalizeSnippet(snippet: string): string {
  return snippet.replace(/\s+/g, ' ').trim();
}

/**
 * A title without what moves with the code: case and spacing, and positions some tools
 * write into messages ("on line 42", "lines 3-7", "column 9", "file.js:42:7").
 */
export function normalizeTitle(title: string): string {
  return title
    .toLowerCase()
    .replace(/\b(lines?|line no\.?|columns?|col)\s*[:#]?\s*\d+(\s*[-–]\s*\d+)?/g, '$1 #')
    .replace(/:\d+(:\d+)?\b/g, ':#')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The tool's fingerprint as our fingerprint: as is, or hashed when longer than the column holds. */
function ownFingerprint(fp: string): string {
  return fp.length <= MAX_FINGERPRINT_LENGTH ? fp : `sha256:${sha256(fp)}`;
}

/** The identity before ordering equal ones: a tool's, a line hash's, or the computed hash. */
function baseIdentity(p: IdentityParts): { fingerprint: string; numbered: boolean } {
  if (p.tool_fingerprint) return { fingerprint: ownFingerprint(p.tool_fingerprint), numbered: false };
  if (p.line_hash) {
    // CodeQL's line hash already numbers equal lines of a file (":1", ":2").
    return { fingerprint: sha256(['line-hash', p.tool, p.rule_id ?? '', p.path ?? '', p.line_hash].join('\u0000')), numbered: false };
  }
  const text = p.snippet && normalizeSnippet(p.snippet) !== '' ? `snippet:${normalizeSnippet(p.snippet)}` : `title:${normalizeTitle(p.title)}`;
  return {
    fingerprint: sha256(['computed', p.tool, p.rule_id ?? '', p.asset_id ?? '', p.path ?? '', text].join('\u0000')),
    numbered: true,
  };
}

/**
 * The fingerprint of each finding of one report, in the input's order. Computed identities
 * that are equal are numbered by position in the file (line, then column, then order in the
 * report): the first keeps the plain hash, the n-th gets a hash of it and n.
 */
export function fingerprintsOf(items: readonly IdentityParts[]): string[] {
  const out: string[] = new Array(items.length);
  const groups = new Map<string, number[]>();
  items.forEach((p, i) => {
    const { fingerprint, numbered } = baseIdentity(p);
    out[i] = fingerprint;
    if (!numbered) return;
    const group = groups.get(fingerprint);
    if (group) group.push(i);
    else groups.set(fingerprint, [i]);
  });
  const at = (n: number | null) => n ?? Number.MAX_SAFE_INTEGER;
  for (const [fingerprint, members] of groups) {
    if (members.length < 2) continue;
    members.sort((a, b) =>
      at(items[a].start_line) - at(items[b].start_line) || at(items[a].start_column) - at(items[b].start_column) || a - b);
    members.forEach((i, n) => {
      if (n > 0) out[i] = sha256(`${fingerprint}\u0000${n + 1}`);
    });
  }
  return out;
}
