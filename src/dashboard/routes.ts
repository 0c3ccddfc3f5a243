// GET / and the dashboard's other pages (API.md Part 2 "The dashboard"), served by this
// process from server-rendered HTML; its script and stylesheet are plain files of
// src/dashboard/static (ES modules, no build step). Every page reads the public API
// in-process with the browser's cookie (api-client.ts) and is live through the event stream:
// its script asks for the page's changed parts (?part=live) when an event concerns them.
import { readFile } from 'node:fs/promises';
import { Hono, type Context } from 'hono';
import * as v from 'valibot';
import type { AppEnv } from '../api/auth.ts';
import { notFound } from '../api/errors.ts';
import { ApiAnswer, ApiClient, type AppFetch } from './api-client.ts';
import { fragment, h, notice, page, type Html, type Section, type SessionView } from './layout.ts';
import { RUN_STATUSES, loadRuns, loadRunsFilters, runsBody, runsRegions } from './runs-page.ts';
import { loadRun, runBody, runRegions } from './run-page.ts';
import { agentsBody, agentsRegions, loadAgents } from './agents-page.ts';
import { loadScans, scansBody, scansRegions } from './scans-page.ts';
import { FINDING_STATUSES, SEVERITIES, findingsBody, findingsRegions, loadFindings } from './findings-page.ts';
import { signInBody, tenantsBody } from './sign-in-page.ts';

// ---- the pages' query strings: validated field by field (a bad value is dropped, the page still shows) ----

const Uuid = v.pipe(v.string(), v.regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i), v.toLowerCase());
const Cursor = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,500}$/));
const Part = v.picklist(['live']);
export const LivePageQuery = v.object({
  part: v.optional(v.pipe(Part, v.description('`live`: only the parts of the page that live updates replace'))),
});
export const RunsPageQuery = v.object({
  ...LivePageQuery.entries,
  status: v.optional(v.picklist(RUN_STATUSES)), pipeline_id: v.optional(Uuid), asset_id: v.optional(Uuid), scan_id: v.optional(Uuid),
  cursor: v.optional(Cursor),
});
export const RunPageQuery = v.object({
  ...LivePageQuery.entries,
  step: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,100}$/), v.description('The step shown (its key)'))),
});
export const FindingsPageQuery = v.object({
  ...LivePageQuery.entries,
  status: v.optional(v.pipe(v.string(), v.check((s) => s.split(',').every((x) => FINDING_STATUSES.includes(x))))),
  severity: v.optional(v.picklist(SEVERITIES)),
  tool: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(255))),
  q: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(200))),
  asset_id: v.optional(Uuid), pipeline_run_id: v.optional(Uuid),
  sort: v.optional(v.picklist(['severity', 'last_seen', 'first_seen'])),
  cursor: v.optional(Cursor),
});

type Fields<S extends v.ObjectSchema<v.ObjectEntries, undefined>> = { [K in keyof S['entries']]?: string };

/** The page's query: each field its schema accepts; the others are dropped. */
function pageQuery<S extends v.ObjectSchema<v.ObjectEntries, undefined>>(c: Context, schema: S): Fields<S> {
  const out: Record<string, string> = {};
  for (const [name, field] of Object.entries(schema.entries)) {
    const raw = c.req.query(name);
    if (raw === undefined || raw === '') continue;
    const parsed = v.safeParse(field, raw);
    if (parsed.success && typeof parsed.output === 'string') out[name] = parsed.output;
  }
  return out as Fields<S>;
}

// ---- static files -----------------------------------------------------------------------------

const STATIC_DIR = new URL('./static/', import.meta.url);
const STATIC_FILES: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'live.js': 'text/javascript; charset=utf-8',
  'forms.js': 'text/javascript; charset=utf-8',
  'output.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
  'favicon.svg': 'image/svg+xml',
};

// Scripts and styles only from this origin, nothing inline, no frames: markup that slipped
// past escaping still could not run.
const CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
  "form-action 'self'", "base-uri 'none'", "frame-ancestors 'none'",
].join('; ');

function htmlAnswer(c: Context, markup: Html, status: 200 | 401 | 404 = 200): Response {
  return c.body(String(markup), status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Security-Policy': CSP,
    'Referrer-Policy': 'same-origin',
    'X-Frame-Options': 'DENY',
  });
}

// ---- the pages ------------------------------------------------------------------------------

type View = { title: string; body: Html; regions: Html[]; data?: Record<string, string> };

/** The event types a page listens to (the stream's ?type=). */
const STREAM_TYPES: Partial<Record<Section, string>> = {
  runs: 'pipeline.*',
  agents: 'pipeline.step.*,agent.offline',
  scans: 'scan.fired',
  findings: 'finding.*',
};

export function dashboardRoutes(deps: { fetch: AppFetch }) {
  const r = new Hono<AppEnv>();
  const files = new Map<string, Promise<Buffer>>();

  const view = (section: Section, render: (api: ApiClient, c: Context<AppEnv>, session: SessionView) => Promise<View>) =>
    async (c: Context<AppEnv>) => {
      const api = new ApiClient(deps.fetch, c);
      const live = c.req.query('part') === 'live';
      const signIn = (reason: string | null) =>
        live ? c.body(null, 401) : htmlAnswer(c, page({ title: 'Sign in', section: 'sign-in', session: null, body: signInBody(reason) }));
      const session = await api.get<SessionView>('/api/v1/session').catch((err) => {
        if (err instanceof ApiAnswer && err.status === 401) return null;
        throw err;
      });
      if (!session) return signIn(null);
      if (!session.tenant) return c.redirect('/tenants', 303);
      try {
        const out = await render(api, c, session);
        if (live) return htmlAnswer(c, fragment(out.regions));
        return htmlAnswer(c, page({
          title: out.title, section, session, body: out.body,
          data: { stream: STREAM_TYPES[section] ?? 'pipeline.*,finding.*', ...out.data },
        }));
      } catch (err) {
        if (!(err instanceof ApiAnswer)) throw err;
        if (err.status === 401) return signIn('Your session has ended; sign in again.');
        if (err.code === 'tenant_not_chosen') return c.redirect('/tenants', 303);
        if (err.status === 404) {
          return htmlAnswer(c, page({ title: 'Not found', section, session, body: h`<h1>Not found</h1>${notice('error', err.message)}<p><a href="/">All runs</a></p>` }), 404);
        }
        throw err;
      }
    };

  r.get('/', view('runs', async (api, c) => {
    const query = pageQuery(c, RunsPageQuery);
    const { part: _part, ...filters } = query;
    if (c.req.query('part') === 'live') {
      return { title: 'Runs', body: h``, regions: runsRegions(await loadRuns(api, filters)) };
    }
    const lists = await loadRunsFilters(api);
    const data = await loadRuns(api, filters, lists);
    return { title: 'Runs', body: runsBody(data, lists), regions: [] };
  }));

  r.get('/runs/:id', view('runs', async (api, c) => {
    const id = c.req.param('id') ?? '';
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) throw new ApiAnswer(404, 'not_found', 'pipeline run not found');
    const query = pageQuery(c, RunPageQuery);
    const data = await loadRun(api, id.toLowerCase(), query.step);
    return {
      title: `Run ${data.run.id.slice(0, 8)}`, body: runBody(data), regions: runRegions(data),
      data: { run: data.run.id, stream: 'pipeline.*,finding.*' },
    };
  }));

  r.get('/agents', view('agents', async (api) => {
    const data = await loadAgents(api);
    return { title: 'Agents', body: agentsBody(data), regions: agentsRegions(data) };
  }));

  r.get('/scans', view('scans', async (api) => {
    const data = await loadScans(api);
    return { title: 'Scans', body: scansBody(data), regions: scansRegions(data) };
  }));

  r.get('/findings', view('findings', async (api, c) => {
    const { part: _part, ...query } = pageQuery(c, FindingsPageQuery);
    const data = await loadFindings(api, query);
    return { title: 'Findings', body: findingsBody(data), regions: findingsRegions(data) };
  }));

  // The admin's tenant picker.
  r.get('/tenants', async (c) => {
    const api = new ApiClient(deps.fetch, c);
    const session = await api.find<SessionView>('/api/v1/session').catch((err) => {
      if (err instanceof ApiAnswer && err.status === 401) return null;
      throw err;
    });
    if (!session) return htmlAnswer(c, page({ title: 'Sign in', section: 'sign-in', session: null, body: signInBody(null) }));
    if (!session.admin) return c.redirect('/', 303);
    const tenants = await api.get<{ items: { id: string; name: string; modules: string[] }[]; next_cursor: string | null }>('/api/v1/tenants', { limit: 200 });
    return htmlAnswer(c, page({
      title: 'Choose a tenant', section: 'tenants', session, body: tenantsBody(tenants.items, session.tenant?.id ?? null, tenants.next_cursor !== null),
    }));
  });

  r.get('/ui/:file', async (c) => {
    const file = c.req.param('file');
    const type = Object.hasOwn(STATIC_FILES, file) ? STATIC_FILES[file] : undefined;
    if (!type) throw notFound('file');
    let bytes = files.get(file);
    if (!bytes) files.set(file, (bytes = readFile(new URL(file, STATIC_DIR))));
    return c.body(new Uint8Array(await bytes), 200, { 'Content-Type': type });
  });

  return r;
}
