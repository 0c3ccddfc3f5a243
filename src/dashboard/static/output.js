// The selected step's output (GET /api/v1/pipeline-runs/{id}/steps/{key}/logs as text,
// tailing by byte offset). Output appends are not events, so while the step is queued or
// running its tail is read once a second (and not while the tab is hidden); once the step
// has ended, one last read and no more.

const TAIL_EVERY_MS = 1000;
/** Bytes read at once; a longer output shows its last TAIL_START bytes first. */
const READ_BYTES = 256 * 1024;
const TAIL_START = 64 * 1024;
/** Characters kept in the page: the oldest go first. */
const KEEP_CHARS = 512 * 1024;

export function startOutput() {
  const pre = document.getElementById('step-output');
  if (!pre) return { update() {} };
  const runId = pre.dataset.run;
  const stateEl = document.getElementById('output-state');
  let key = null;
  let attempt = null;
  let offset = 0;
  let timer = null;
  let reading = false;
  let started = false;

  const selected = () => {
    const d = document.getElementById('step-detail');
    return { key: d?.dataset.step || null, status: d?.dataset.status || '' };
  };
  const active = (status) => status === 'queued' || status === 'running';

  const append = (text) => {
    if (!text) return;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    let all = pre.textContent + text;
    if (all.length > KEEP_CHARS) all = `…\n${all.slice(all.length - KEEP_CHARS)}`;
    pre.textContent = all;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };

  const read = async () => {
    if (reading || !key) return;
    reading = true;
    const asked = key;
    try {
      for (;;) {
        const url = `/api/v1/pipeline-runs/${runId}/steps/${encodeURIComponent(asked)}/logs?offset=${offset}&limit=${READ_BYTES}`;
        const res = await fetch(url, { headers: { accept: 'text/plain' }, credentials: 'same-origin' });
        if (asked !== key || !res.ok) return;
        const readAttempt = res.headers.get('x-attempt');
        if (attempt !== null && readAttempt !== attempt) {
          // A new attempt: its output starts over.
          attempt = readAttempt;
          offset = 0;
          pre.textContent = '';
          continue;
        }
        attempt = readAttempt;
        const length = Number(res.headers.get('x-output-length') ?? 0);
        const next = Number(res.headers.get('x-next-offset') ?? offset);
        const text = await res.text();
        if (!started && length - next > TAIL_START) {
          // Far behind on the first read: jump to the end.
          started = true;
          offset = length - TAIL_START;
          pre.textContent = `… (${length - TAIL_START} earlier bytes not shown)\n`;
          continue;
        }
        started = true;
        append(text);
        offset = next;
        if (res.headers.get('x-output-truncated') === 'true' && next >= length) stateEl && (stateEl.textContent = 'truncated at the server\'s limit');
        if (next >= length) return;
      }
    } catch {
      // The next tick tries again.
    } finally {
      reading = false;
    }
  };

  const tick = async () => {
    timer = null;
    const s = selected();
    if (document.visibilityState === 'visible') await read();
    if (active(s.status)) timer = setTimeout(tick, TAIL_EVERY_MS);
  };

  /** After the page's parts changed: another step, or the step's state changed. */
  const update = () => {
    const s = selected();
    if (s.key !== key) {
      key = s.key;
      attempt = null;
      offset = 0;
      started = false;
      pre.textContent = '';
    }
    pre.dataset.step = key ?? '';
    pre.dataset.status = s.status;
    if (stateEl) stateEl.textContent = active(s.status) ? '(following)' : s.status ? `(${s.status})` : '';
    if (timer) clearTimeout(timer);
    timer = null;
    tick();
  };

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && !timer && active(selected().status)) tick();
  });
  update();
  return { update };
}
