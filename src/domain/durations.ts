// Durations in pipeline documents: "30m", "2h", "45s", "1h30m", "1d" or a number of seconds.

const UNIT_SECONDS: Record<string, number> = { d: 86_400, h: 3_600, m: 60, s: 1 };
const DURATION = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

export const DURATION_HINT = 'must be a duration like "30m", "2h", "45s" or a number of seconds';

/** Seconds for a duration, or null when it is not one (or not positive, or not a safe integer). */
export function parseDuration(input: unknown): number | null {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input > 0 ? input : null;
  }
  if (typeof input !== 'string') return null;
  const text = input.trim().toLowerCase();
  if (/^\d+$/.test(text)) return parseDuration(Number(text));
  const m = DURATION.exec(text);
  if (!m || text === '') return null;
  const [, d, h, mi, s] = m;
  const total =
    Number(d ?? 0) * UNIT_SECONDS.d + Number(h ?? 0) * UNIT_SECONDS.h + Number(mi ?? 0) * UNIT_SECONDS.m + Number(s ?? 0);
  return total > 0 && Number.isSafeInteger(total) ? total : null;
}

/** The shortest document form of a number of seconds: 1800 → "30m". */
export function formatDuration(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400}d`;
  if (seconds % 3_600 === 0) return `${seconds / 3_600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}
