// Names of things people name (tenants, agents, pipelines, scans): 1 to 255 characters, as
// the request schemas and the tables' CHECKs say. A name made from another one (a copy of a
// pipeline, a pipeline's schedule-trigger scan) is cut to fit rather than refused: the
// request that makes it never named it.

export const MAX_NAME_LENGTH = 255;

/**
 * `base` followed by `suffix`, `base` cut between characters (code points, as PostgreSQL's
 * length() counts; never inside a surrogate pair) so the whole is at most MAX_NAME_LENGTH.
 */
export function nameWithSuffix(base: string, suffix: string): string {
  const room = MAX_NAME_LENGTH - [...suffix].length;
  const chars = [...base];
  return `${chars.length > room ? chars.slice(0, room).join('').trimEnd() : base}${suffix}`;
}
