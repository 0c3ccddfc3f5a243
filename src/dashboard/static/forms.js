// Every change the dashboard makes is a form whose data-api-method and data-api-path name the
// API call; its fields become the JSON body. Sent with the session cookie and the session's
// CSRF token (X-CSRF-Token, from the page's <meta>); the API's error message shows in the
// form's <output>. data-then: "reload" (sign-in), "home" (sign-out, choosing a tenant);
// otherwise the page's live parts are fetched again.

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? '';
}

function bodyOf(form) {
  const body = {};
  for (const [name, value] of new FormData(form)) {
    if (typeof value === 'string' && value.trim() !== '') body[name] = value.trim();
  }
  return body;
}

async function submit(form) {
  const method = form.dataset.apiMethod;
  const output = form.querySelector('output.form-error') ?? form.closest('[data-live-region]')?.querySelector('output.form-error');
  const buttons = [...form.querySelectorAll('button')];
  const headers = { accept: 'application/json' };
  const token = csrfToken();
  if (token) headers['x-csrf-token'] = token;
  let body;
  if (method !== 'DELETE') {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(bodyOf(form));
  }
  for (const b of buttons) b.disabled = true;
  form.setAttribute('aria-busy', 'true');
  if (output) output.textContent = '';
  try {
    const res = await fetch(form.dataset.apiPath, { method, headers, body, credentials: 'same-origin' });
    if (res.ok) {
      if (form.dataset.then === 'reload') location.reload();
      else if (form.dataset.then === 'home') location.assign('/');
      else document.dispatchEvent(new Event('live:refresh'));
      return;
    }
    const answer = await res.json().catch(() => null);
    if (res.status === 401 && form.dataset.then !== 'reload') {
      location.reload(); // the session ended
      return;
    }
    if (output) output.textContent = answer?.error?.message ?? `The server answered ${res.status}`;
  } catch {
    if (output) output.textContent = 'The server could not be reached.';
  } finally {
    for (const b of buttons) b.disabled = false;
    form.removeAttribute('aria-busy');
  }
}

export function bindForms() {
  document.addEventListener('submit', (event) => {
    const form = event.target instanceof HTMLFormElement && event.target.matches('form[data-api-path]') ? event.target : null;
    if (!form) return;
    event.preventDefault();
    submit(form);
  });
}
