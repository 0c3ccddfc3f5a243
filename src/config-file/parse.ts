// The config file: pipelines (seed 001's template YAML, verbatim) and scans, per tenant.
// Parsing and validation only; every problem names the file, the line, the path inside the
// document and what is wrong, and nothing is applied while there is one.
import { readFile } from 'node:fs/promises';
import * as v from 'valibot';
import { LineCounter, parseDocument } from 'yaml';
import { validatePipeline, type PipelineDoc } from '../domain/pipeline.ts';
import { ScanInput, scheduleProblems, type ScanInputValue } from '../domain/scans.ts';
import { issuesToProblems, formatPath, type Problem } from '../domain/problems.ts';
import { JsonObject } from '../domain/json.ts';

export type DeclaredScan = Omit<ScanInputValue, 'pipeline_id' | 'next_run_at'> & { pipeline: string };

export type DeclaredTenant = {
  name: string;
  modules?: string[];
  max_active_runs?: number;
  pipelines: PipelineDoc[];
  scans: DeclaredScan[];
};

export type ConfigDoc = { tenants: DeclaredTenant[] };

export type FileProblem = Problem & { file: string; line: number | null };

export function formatProblem(p: FileProblem): string {
  return `${p.file}${p.line ? `:${p.line}` : ''}: ${p.path}: ${p.message}`;
}

const Name = v.pipe(v.string(), v.trim(), v.minLength(1, 'must not be empty'), v.maxLength(255));

// A scan as the API takes it, naming its pipeline by name (and with no next_run_at: the
// file declares schedules, not one-off fires).
const { pipeline_id: _pipelineId, next_run_at: _nextRunAt, ...scanEntries } = ScanInput.entries;
const ScanDecl = v.strictObject({ ...scanEntries, pipeline: Name }, 'has an unknown field');

const TenantDecl = v.strictObject(
  {
    name: Name,
    modules: v.optional(v.array(v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_]{0,49}$/, 'must be a lowercase module name')))),
    max_active_runs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(100_000))),
    pipelines: v.optional(v.array(JsonObject), []),
    scans: v.optional(v.array(v.unknown()), []),
  },
  'has an unknown field: a tenant takes name, modules, max_active_runs, pipelines and scans',
);

const Root = v.strictObject(
  { tenants: v.array(v.unknown()) },
  'has an unknown field: the file declares `tenants:`',
);

export type Parsed = { ok: true; value: ConfigDoc } | { ok: false; problems: FileProblem[] };

/** Validates the text of a config file (YAML, or JSON which is YAML too). */
export function parseConfig(text: string, file: string): Parsed {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => ({ file, line: e.linePos?.[0]?.line ?? null, path: '(file)', message: `is not valid YAML: ${e.message.split('\n')[0]}` })),
    };
  }
  const lineOf = (segments: (string | number)[]): number | null => {
    for (let n = segments.length; n >= 0; n--) {
      const node = doc.getIn(segments.slice(0, n), true) as { range?: [number, number] } | undefined;
      if (node && node.range) return lineCounter.linePos(node.range[0]).line;
    }
    return null;
  };
  const problems: FileProblem[] = [];
  const add = (prefix: (string | number)[], list: Problem[]) => {
    for (const p of list) {
      const full = p.path === '(body)' ? formatPath(prefix) : `${formatPath(prefix)}${p.path.startsWith('[') || prefix.length === 0 ? '' : '.'}${p.path}`;
      problems.push({ file, line: lineOf(toSegments(full)), path: full || '(file)', message: p.message });
    }
  };

  const input = doc.toJS() as unknown;
  const root = v.safeParse(Root, input ?? {});
  if (!root.success) {
    add([], issuesToProblems(root.issues));
    return { ok: false, problems };
  }
  const tenants: DeclaredTenant[] = [];
  const tenantNames = new Map<string, number>();
  root.output.tenants.forEach((rawTenant, ti) => {
    const tp = v.safeParse(TenantDecl, rawTenant);
    if (!tp.success) {
      add(['tenants', ti], issuesToProblems(tp.issues));
      return;
    }
    const t = tp.output;
    const seen = tenantNames.get(t.name.toLowerCase());
    if (seen !== undefined) add(['tenants', ti, 'name'], [{ path: '(body)', message: `tenant '${t.name}' is declared twice (also tenants[${seen}])` }]);
    tenantNames.set(t.name.toLowerCase(), ti);

    const pipelines: PipelineDoc[] = [];
    const pipelineNames = new Map<string, number>();
    t.pipelines.forEach((raw, pi) => {
      const checked = validatePipeline(raw);
      if (!checked.ok) {
        add(['tenants', ti, 'pipelines', pi], checked.problems);
        return;
      }
      const other = pipelineNames.get(checked.value.name.toLowerCase());
      if (other !== undefined) {
        add(['tenants', ti, 'pipelines', pi, 'name'], [{ path: '(body)', message: `pipeline '${checked.value.name}' is declared twice (also pipelines[${other}])` }]);
      }
      pipelineNames.set(checked.value.name.toLowerCase(), pi);
      pipelines.push(checked.value);
    });

    const scans: DeclaredScan[] = [];
    const scanNames = new Map<string, number>();
    t.scans.forEach((raw, si) => {
      const sp = v.safeParse(ScanDecl, raw);
      if (!sp.success) {
        add(['tenants', ti, 'scans', si], issuesToProblems(sp.issues));
        return;
      }
      const s = sp.output;
      add(['tenants', ti, 'scans', si], scheduleProblems(s));
      const other = scanNames.get(s.name.toLowerCase());
      if (other !== undefined) add(['tenants', ti, 'scans', si, 'name'], [{ path: '(body)', message: `scan '${s.name}' is declared twice (also scans[${other}])` }]);
      scanNames.set(s.name.toLowerCase(), si);
      scans.push(s);
    });
    tenants.push({ name: t.name, modules: t.modules, max_active_runs: t.max_active_runs, pipelines, scans });
  });
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, value: { tenants } };
}

export async function readConfigFile(file: string): Promise<Parsed> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return { ok: false, problems: [{ file, line: null, path: '(file)', message: `cannot be read: ${(err as Error).message}` }] };
  }
  return parseConfig(text, file);
}

/** `tenants[0].pipelines[1].steps[2].depends_on[0]` → ['tenants', 0, 'pipelines', 1, ...]. */
function toSegments(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) out.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return out;
}
