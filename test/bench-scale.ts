// The bench's scale section (`npm run bench -- scale`, or one part: `scale-history`,
// `scale-agents`, `scale-burst`, `scale-processes`): how scanflow holds up with months of
// history, a thousand long-polling agents, bursts of due scans and several processes on one
// database. Each part is a module of its own (test/bench-scale-<part>.ts) that makes its own
// scratch database and orchestrator(s), prints its figures and its targets (✔/✘) through
// `out`, and answers the problems it saw (misbehaviour: a run lost or run twice, an HTTP
// error); a missed target is a figure, not a problem.

export const SCALE_PARTS = ['history', 'agents', 'burst', 'processes', 'retention', 'replica'] as const;
export type ScalePart = (typeof SCALE_PARTS)[number];

export type ScaleContext = {
  /** A line of the report (stdout). */
  out: (line?: string) => void;
  /** A progress line (stderr). */
  progress: (line: string) => void;
};

/** What a part exports as its default. */
export type ScalePartRun = (ctx: ScaleContext) => Promise<{ problems: string[]; report: Record<string, unknown> }>;

/** `scale` is every part; `scale-x` is part x. Unknown names are for the caller to refuse. */
export function scalePartsOf(args: string[]): Set<ScalePart> {
  const parts = new Set<ScalePart>();
  for (const a of args) {
    if (a === 'scale') SCALE_PARTS.forEach((p) => parts.add(p));
    else if (a.startsWith('scale-') && (SCALE_PARTS as readonly string[]).includes(a.slice(6))) parts.add(a.slice(6) as ScalePart);
  }
  return parts;
}

export function isScaleSection(a: string): boolean {
  return a === 'scale' || (a.startsWith('scale-') && (SCALE_PARTS as readonly string[]).includes(a.slice(6)));
}

/** Runs the parts in order; answers every problem they saw. */
export async function benchScale(parts: Set<ScalePart>, ctx: ScaleContext): Promise<string[]> {
  const problems: string[] = [];
  const report: Record<string, unknown> = {};
  for (const part of SCALE_PARTS) {
    if (!parts.has(part)) continue;
    ctx.out('');
    ctx.out(`== scale: ${part} ==`);
    const mod = (await import(`./bench-scale-${part}.ts`)) as { default: ScalePartRun };
    const r = await mod.default(ctx);
    report[part] = r.report;
    problems.push(...r.problems.map((p) => `scale-${part}: ${p}`));
  }
  ctx.out(JSON.stringify({ bench: 'scanflow-scale', ...report, problems }));
  return problems;
}
