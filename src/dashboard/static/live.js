// Live updates: the tenant's event stream (GET /api/v1/events/stream, Server-Sent Events,
// authenticated by the session cookie). An event that concerns the page asks the server for
// the page's live parts (?part=live) and replaces those whose version changed; bursts of
// events cost one request at a time. No polling: without events nothing is fetched.

const stateText = { connecting: 'connecting…', open: 'live', closed: 'not live (reload the page)' };

/** Form fields the reader changed (typed a reason, picked a status), kept across a replacement. */
function editedFields(region) {
  const kept = [];
  for (const el of region.querySelectorAll('form[data-api-path] [name]')) {
    const edited = el instanceof HTMLSelectElement
      ? [...el.options].some((o) => o.selected !== o.defaultSelected)
      : el.type !== 'hidden' && el.value !== el.defaultValue;
    if (edited) kept.push({ path: el.form.dataset.apiPath, name: el.name, value: el.value });
  }
  return kept;
}

function fieldOf(root, path, name) {
  for (const form of root.querySelectorAll('form[data-api-path]')) {
    if (form.dataset.apiPath === path) return form.elements.namedItem(name);
  }
  return null;
}

/** Replaces the regions of the page whose version differs in `doc`; keeps focus and edits. */
function swapRegions(doc) {
  let swapped = 0;
  for (const fresh of doc.querySelectorAll('[data-live-region]')) {
    const current = document.getElementById(fresh.id);
    if (!current || current.dataset.v === fresh.dataset.v) continue;
    const active = document.activeElement;
    const focus = active && current.contains(active)
      ? { id: active.id, path: active.form?.dataset.apiPath, name: active.name }
      : null;
    const edits = editedFields(current);
    const next = document.importNode(fresh, true);
    current.replaceWith(next);
    for (const e of edits) {
      const field = fieldOf(next, e.path, e.name);
      if (field && 'value' in field) field.value = e.value;
    }
    if (focus) {
      const target = (focus.id && document.getElementById(focus.id)) || (focus.path && fieldOf(next, focus.path, focus.name));
      if (target) target.focus({ preventScroll: true });
    }
    swapped++;
  }
  return swapped;
}

/**
 * Follows the stream. `types`: the stream's ?type= filter; `wants(event)`: whether an event
 * concerns the page; `onSwap()`: after parts were replaced.
 */
export function startLive({ types, wants, onSwap }) {
  const indicator = document.getElementById('live-state');
  let inFlight = false;
  let again = false;
  let timer = null;

  const setState = (state) => {
    document.body.dataset.live = state;
    if (indicator) indicator.textContent = stateText[state];
  };

  const refresh = async () => {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    again = false;
    try {
      const url = new URL(location.href);
      url.searchParams.set('part', 'live');
      const res = await fetch(url, { headers: { accept: 'text/html' }, credentials: 'same-origin' });
      if (res.status === 401) {
        location.reload(); // the session ended: the page shows the sign-in
        return;
      }
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
        if (swapRegions(doc)) onSwap();
      }
    } catch {
      // The server is away; the stream's reconnection will ask again.
    } finally {
      inFlight = false;
      document.body.dataset.refreshed = String(Date.now());
      if (again) schedule(0);
    }
  };

  // A short pause gathers the events of one transition (a step's completion, the next
  // step's queueing, the run's counters) into one request.
  const schedule = (delay = 30) => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      refresh();
    }, delay);
  };

  const connect = () => {
    setState('connecting');
    const source = new EventSource(`/api/v1/events/stream${types ? `?type=${encodeURIComponent(types)}` : ''}`);
    // Opened (or reopened after a drop, resuming from Last-Event-ID): whatever happened
    // between rendering and now is fetched once.
    source.onopen = () => {
      setState('open');
      schedule(0);
    };
    source.onmessage = (m) => {
      let event;
      try {
        event = JSON.parse(m.data);
      } catch {
        return;
      }
      document.body.dataset.lastEvent = String(event.id);
      if (wants(event)) schedule();
    };
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        setState('connecting'); // the browser reconnects by itself
        return;
      }
      // Refused (the session ended) or the server said no: ask whether we are still signed in.
      setState('closed');
      source.close();
      fetch('/api/v1/session', { credentials: 'same-origin' }).then((res) => {
        if (res.status === 401) location.reload();
        else setTimeout(connect, 2000);
      }, () => setTimeout(connect, 2000));
    };
  };

  document.addEventListener('live:refresh', () => schedule(0));
  connect();
}
