// The dashboard's script (an ES module; no build step): forms that call the API, times in the
// reader's zone, ticking durations, live updates from the event stream, a step's output.
import { bindForms } from './forms.js';
import { startLive } from './live.js';
import { startOutput } from './output.js';

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** Timestamps come in UTC; shown in the reader's zone, UTC in the title. Times of a scan's own zone stay. */
function localizeTimes(root = document) {
  for (const t of root.querySelectorAll('time[datetime]:not(.in-zone):not([data-local])')) {
    const at = new Date(t.dateTime);
    if (Number.isNaN(at.getTime())) continue;
    t.title = t.dateTime;
    t.textContent = dateTime.format(at);
    t.dataset.local = '1';
  }
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = formatDuration((now - Date.parse(el.dataset.since)) / 1000);
  for (const el of document.querySelectorAll('[data-ago]')) el.textContent = `(${formatDuration((now - Date.parse(el.dataset.ago)) / 1000)} ago)`;
}

/** Which events concern the page (the stream's ?type= already chose their kinds). */
function relevance(page) {
  const runId = document.body.dataset.run;
  if (runId) return (e) => e.data?.pipeline_run_id === runId;
  if (page === 'runs') {
    return (e) => {
      const row = document.querySelector(`tr[data-run-id="${CSS.escape(String(e.data?.pipeline_run_id ?? ''))}"]`);
      if (row) return true;
      // A new run shows on the first page only.
      return e.event.startsWith('pipeline.run.') && document.getElementById('runs-table')?.dataset.firstPage === 'true';
    };
  }
  return () => true;
}

bindForms();
localizeTimes();
tick();
setInterval(tick, 1000);

const page = document.body.dataset.page;
const signedIn = document.querySelector('meta[name="csrf-token"]') !== null;
/** Rows that came with a live update are marked for a moment. */
const rowIds = () => new Set([...document.querySelectorAll('tr[data-run-id]')].map((tr) => tr.dataset.runId));
let knownRows = rowIds();
function markArrivals() {
  for (const tr of document.querySelectorAll('tr[data-run-id]')) if (!knownRows.has(tr.dataset.runId)) tr.classList.add('arrived');
  knownRows = rowIds();
}

if (signedIn && document.body.dataset.stream) {
  const output = document.body.dataset.run ? startOutput() : null;
  startLive({
    types: document.body.dataset.stream,
    wants: relevance(page),
    onSwap: () => {
      localizeTimes();
      tick();
      markArrivals();
      output?.update();
    },
  });
}
