// The dashboard's HTML: the page around every view, and the small pieces views share. All
// HTML goes through `h` (hono's html helper): every interpolated value is escaped, nested
// `h` results are not escaped twice. Nothing else builds markup.
import { createHash } from 'node:crypto';
import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';

export type Html = HtmlEscapedString;

/** html`` that must be synchronous (every value is fetched before rendering). */
export function h(strings: TemplateStringsArray, ...values: unknown[]): Html {
  const out = html(strings, ...values);
  if (out instanceof Promise) throw new Error('dashboard markup must not be asynchronous');
  return out;
}

/** The signed-in session as GET /api/v1/session answers it. */
export type SessionView = {
  tenant: { id: string; name: string } | null;
  admin: boolean;
  csrf_token: string;
  expires_at: string;
};

export type Section = 'runs' | 'agents' | 'scans' | 'findings' | 'tenants' | 'sign-in';

const NAV: { section: Section; href: string; label: string }[] = [
  { section: 'runs', href: '/', label: 'Runs' },
  { section: 'agents', href: '/agents', label: 'Agents' },
  { section: 'scans', href: '/scans', label: 'Scans' },
  { section: 'findings', href: '/findings', label: 'Findings' },
];

export type PageOptions = {
  title: string;
  section: Section;
  session: SessionView | null;
  body: Html;
  /** data-* attributes of <body> that the page's script reads (the run's id, the stream's types). */
  data?: Record<string, string>;
};

export function page(o: PageOptions): Html {
  const data = Object.entries(o.data ?? {}).map(([k, v]) => h` data-${k}="${v}"`);
  const s = o.session;
  return h`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${o.title} · scanflow</title>
<link rel="stylesheet" href="/ui/style.css">
<link rel="icon" href="/ui/favicon.svg" type="image/svg+xml">
${s ? h`<meta name="csrf-token" content="${s.csrf_token}">` : ''}
<script type="module" src="/ui/app.js"></script>
</head>
<body data-page="${o.section}"${data}>
<a class="skip" href="#main">Skip to content</a>
<header class="bar">
  <a class="brand" href="/">scanflow</a>
  ${s?.tenant ? h`<nav aria-label="Sections"><ul>${NAV.map((n) => h`<li><a href="${n.href}"${n.section === o.section ? h` aria-current="page"` : ''}>${n.label}</a></li>`)}</ul></nav>` : ''}
  <span class="who">${s ? h`${s.tenant ? h`<span class="tenant" title="Tenant">${s.tenant.name}</span>` : ''}${s.admin ? h` <a class="badge" href="/tenants" title="Signed in with the admin token: choose another tenant">admin</a>` : ''}` : ''}</span>
  <span class="live-state" id="live-state" role="status" aria-live="polite"></span>
  ${s ? h`<form class="sign-out" data-api-method="DELETE" data-api-path="/api/v1/session" data-then="home"><button type="submit">Sign out</button></form>` : ''}
</header>
<main id="main" tabindex="-1">
${o.body}
</main>
</body>
</html>`;
}

/**
 * A part of a page that live updates replace: the same markup comes as a fragment
 * (?part=live), and the version (a hash of the markup) tells the page whether it changed.
 */
export function region(id: string, content: Html, tag = 'section', attrs: Html | string = ''): Html {
  const v = createHash('sha1').update(String(content)).digest('base64url').slice(0, 12);
  return h`<${tag} id="${id}" data-live-region data-v="${v}"${attrs}>${content}</${tag}>`;
}

/** The answer to ?part=live: the regions alone. */
export function fragment(regions: Html[]): Html {
  return h`<!doctype html><html lang="en"><body>${regions}</body></html>`;
}

// ---- pieces ---------------------------------------------------------------------------------

/** A status chip: the class carries the colour, the text the state (colour is never the only cue). */
export function chip(status: string, label: string = status): Html {
  return h`<span class="chip s-${status}">${label.replace(/_/g, ' ')}</span>`;
}

/** A timestamp: UTC in the markup, the reader's zone once the page's script runs. */
export function time(iso: string | null | undefined, fallback = '—'): Html {
  if (!iso) return h`<span class="muted">${fallback}</span>`;
  return h`<time datetime="${iso}">${iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}</time>`;
}

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const hours = Math.floor(m / 60);
  return hours < 48 ? `${hours}h ${m % 60}m` : `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** From `from` to `to`; while `to` is absent, until now, ticking in the page. */
export function span(from: string | null, to: string | null): Html {
  if (!from) return h`<span class="muted">—</span>`;
  const end = to ? Date.parse(to) : Date.now();
  const text = formatDuration((end - Date.parse(from)) / 1000);
  return to ? h`<span>${text}</span>` : h`<span data-since="${from}">${text}</span>`;
}

/** Keys of ids are shown short; the whole id is in the title. */
export function shortId(id: string): Html {
  return h`<span class="id" title="${id}">${id.slice(0, 8)}</span>`;
}

/** A problem to show instead of a view (the API's message). */
export function notice(kind: 'error' | 'info', text: string): Html {
  return h`<p class="notice ${kind}" role="${kind === 'error' ? 'alert' : 'status'}">${text}</p>`;
}

/** The query of the current page with some keys changed (null: removed), as an href. */
export function hrefWith(path: string, query: Record<string, string | undefined>, change: Record<string, string | null>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...query, ...change })) if (v !== undefined && v !== null && v !== '') params.set(k, v);
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

export type Option = { value: string; label: string };

/** A labelled <select> of a filter form; the empty value means "any". */
export function select(name: string, label: string, options: Option[], current: string | undefined, any = 'any'): Html {
  return h`<label>${label}
    <select name="${name}">
      <option value="">${any}</option>
      ${options.map((o) => h`<option value="${o.value}"${o.value === current ? h` selected` : ''}>${o.label}</option>`)}
    </select></label>`;
}
